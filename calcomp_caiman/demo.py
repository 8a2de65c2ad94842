"""The built-in example: simulate a field of view, save it as CaImAn would, classify it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._checks import CLASSES
from .batch import classify_file, write_component_csv
from .hdf5io import write_caiman_file
from .model import CalcompModel
from .patches import extract_patches
from .plots import plot_montage
from .simulate import simulate_session

__all__ = ["run_demo"]


def run_demo(
    out_dir: str | os.PathLike, *, model: CalcompModel | None = None, seed: int = 0
) -> str:
    """Run the whole job on a simulated session and return a text summary.

    Writes to ``out_dir``: ``demo_cnmf.hdf5`` (the simulated CNMF result in CaImAn's
    ``cnm.save`` layout), ``demo_classified.hdf5`` (the same with the classification),
    ``demo_components.csv`` (one row per component) and ``demo_montage.png``.

    Parameters
    ----------
    out_dir : path-like
        Created if missing; existing demo files in it are replaced.
    model : CalcompModel, optional
        Default: the bundled model.
    seed : int
        Seed of the simulation.

    Returns
    -------
    str
        Counts per class, agreement with the simulated ground truth, and the files written.
    """
    model = CalcompModel.load() if model is None else model
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    session = simulate_session(seed=seed)
    source = out / "demo_cnmf.hdf5"
    if source.exists():
        source.unlink()
    write_caiman_file(
        source, A=session.A, C=session.C, dims=session.dims, gSig=(session.gSig, session.gSig),
        b=session.b, f=session.f,
    )  # fmt: skip
    result, fields = classify_file(
        source, model=model, out_path=out / "demo_classified.hdf5", overwrite=True
    )
    table = write_component_csv(fields, out / "demo_components.csv")
    patches = extract_patches(session.A, session.dims, session.gSig)
    montage = plot_montage(
        patches, fields["class_probs"], out / "demo_montage.png", title="calcomp demo"
    )
    truth = np.asarray(session.labels)
    predicted = fields["class_labels"].astype(np.int64)
    lines = [
        f"calcomp demo: {result.components} simulated CNMF components on a "
        f"{session.dims[0]}x{session.dims[1]} FOV, model {model.name}",
        f"{'class':<10}{'true':>6}{'predicted':>11}{'correct':>9}",
    ]
    for code, name in enumerate(CLASSES, start=1):
        lines.append(
            f"{name:<10}{int(np.sum(truth == code)):>6}{int(np.sum(predicted == code)):>11}"
            f"{int(np.sum((truth == code) & (predicted == code))):>9}"
        )
    lines += [
        f"accuracy {np.mean(truth == predicted):.1%}; accepted (neuron): {result.accepted}",
        f"wrote {source}, {result.output}, {table}, {montage}",
    ]
    return "\n".join(lines)
