"""The built-in example: classify a real CaImAn result of a simulated movie, shipped with us.

``calcomp_caiman/data/demo_caiman_sim.hdf5`` is what CaImAn 1.12.1's batch CNMF saved for
a small simulated movie (footprints, traces, the correlation image and CaImAn's own
metrics); ``demo_caiman_sim_labels.npz`` holds the simulator's ground truth for each of
its components (provenance in ``calcomp_caiman/data/README.md``). CaImAn is not needed.
"""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

import numpy as np

from calcomp_caiman.apps.montage import plot_montage, rule_text
from calcomp_caiman.apps.one_file import classify_file, write_component_csv
from calcomp_caiman.classify import acceptance_rule, evidence_used
from calcomp_caiman.evidence.patches import crop_checked, footprints_for
from calcomp_caiman.io.caiman_h5 import read_estimates, read_evidence
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.schema import CLASSES

__all__ = ["run_demo", "demo_files"]

_DATA = "calcomp_caiman.data"
_RESULT = "demo_caiman_sim.hdf5"
_LABELS = "demo_caiman_sim_labels.npz"


def demo_files() -> tuple[Path, Path]:
    """The shipped demo result file and its ground-truth labels (read-only; copy first)."""
    root = resources.files(_DATA)
    return Path(str(root.joinpath(_RESULT))), Path(str(root.joinpath(_LABELS)))


def _truth(path: Path, n: int) -> np.ndarray:
    with np.load(path, allow_pickle=False) as data:
        key = "labels" if "labels" in data.files else "cnmf_labels"
        labels = np.asarray(data[key], dtype=np.int64)
    if len(labels) != n:
        raise ValueError(f"{path}: {len(labels)} labels for {n} components")
    return labels


def run_demo(out_dir: str | os.PathLike, *, model: CalcompModel) -> str:
    """Classify the shipped CaImAn result and return a text summary.

    Writes to ``out_dir``: ``demo_cnmf.hdf5`` (a copy of the shipped CaImAn result),
    ``demo_classified.hdf5`` (the same with the classification), ``demo_components.csv``
    (one row per component) and ``demo_montage.png``.

    Parameters
    ----------
    out_dir : path-like
        Created if missing; existing demo files in it are replaced.
    model : CalcompModel
        Loaded by the caller (``calcomp demo`` loads ``--model``, the bundled default).

    Returns
    -------
    str
        The evidence used, counts per class against the simulator's ground truth, what
        CaImAn's own SNR / r-value rule kept, and the files written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shipped, labels_path = demo_files()
    source = out / "demo_cnmf.hdf5"
    shutil.copyfile(shipped, source)
    os.chmod(source, 0o644)
    result, fields = classify_file(
        source, model=model, out_path=out / "demo_classified.hdf5", overwrite=True
    )
    evidence = read_evidence(source)
    truth = _truth(labels_path, evidence.n)
    table = write_component_csv(fields, out / "demo_components.csv")
    flat, dims, scale = footprints_for(evidence, model.scale_rule)
    patches = crop_checked(flat, dims, scale, model.patch_size)
    predicted = fields["class_labels"].astype(np.int64)
    accepted = np.zeros(evidence.n, bool)
    accepted[fields["idx_components"]] = True
    rule = rule_text(*acceptance_rule(model))  # the rule classify_file applied
    montage = plot_montage(patches, fields["class_probs"], out / "demo_montage.png",
                           accepted=accepted, evidence=evidence, rule=rule, title="calcomp demo")  # fmt: skip
    lines = [
        f"calcomp demo: {result.components} components that CaImAn 1.12.1 (batch CNMF) found "
        f"in a simulated {evidence.dims[0]}x{evidence.dims[1]} movie; model {model.name}, "
        f"evidence used: {', '.join(evidence_used(evidence, model))}",
        f"{'class':<10}{'true':>6}{'predicted':>11}{'correct':>9}",
    ]
    for code, name in enumerate(CLASSES, start=1):
        lines.append(
            f"{name:<10}{int(np.sum(truth == code)):>6}{int(np.sum(predicted == code)):>11}"
            f"{int(np.sum((truth == code) & (predicted == code))):>9}"
        )
    neurons = truth == 1
    lines.append(
        f"accuracy {np.mean(truth == predicted):.1%}; accepted {int(accepted.sum())}, of which "
        f"{int(np.sum(accepted & neurons))} true neurons (of {int(neurons.sum())})"
    )
    stored = _caiman_selection(shipped, evidence.n)
    if stored is not None:
        lines.append(
            f"CaImAn's own SNR/r-value rule kept {int(stored.sum())}, of which "
            f"{int(np.sum(stored & neurons))} true neurons"
        )
    lines.append(f"wrote {source}, {result.output}, {table}, {montage}")
    return "\n".join(lines)


def _caiman_selection(path: Path, n: int) -> np.ndarray | None:
    """CaImAn's ``idx_components`` of the shipped file as a mask (None if not stored)."""
    index = read_estimates(path).idx_components
    if index is None:
        return None
    mask = np.zeros(n, bool)
    mask[np.asarray(index, dtype=np.int64)] = True
    return mask
