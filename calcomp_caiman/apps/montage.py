"""Figures of classified components (matplotlib, imported inside the functions)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from calcomp_caiman.checks import check_gsig
from calcomp_caiman.classify import classify
from calcomp_caiman.evidence.patches import crop_checked, footprints_for
from calcomp_caiman.io.caiman_h5 import read_estimates, read_evidence
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.schema import CLASSES

__all__ = ["plot_montage", "write_montage"]


def write_montage(
    path: str | os.PathLike,
    model: CalcompModel,
    output: str | os.PathLike,
    *,
    gSig: float | None = None,
    reclassify: bool = False,
) -> Path:
    """Save a PNG of the components of a CaImAn result file, grouped by predicted class.

    The tiles are the patches the model sees (the evidence, model and crop of
    ``calcomp classify``), with the probabilities stored by ``calcomp classify`` or, when the
    file holds none for its components (or ``reclassify``), those it would store.

    Parameters
    ----------
    path : path-like
        A CaImAn ``.hdf5`` result file.
    model : CalcompModel
        Crops the patches (its scale rule and patch size), and classifies when needed.
    output : path-like
        The PNG to write.
    gSig : float, optional
        Overrides the file's ``params/init/gSig``.
    reclassify : bool
        Ignore stored ``class_probs``.

    Returns
    -------
    Path
        ``output``.

    Raises
    ------
    GsigError
        ``gSig`` outside ``(0, MAX_GSIG]`` (:func:`calcomp_caiman.checks.check_gsig`).
    InvalidFileError, FileNotFoundError
        ``path`` cannot be read.
    """
    gsig = check_gsig(gSig)
    evidence = read_evidence(path)
    if gsig is not None:
        evidence = dataclasses.replace(evidence, gSig=gsig)
    probs = None if reclassify else read_estimates(path).class_probs
    if probs is None or len(probs) != evidence.n:
        probs = classify(evidence, model, ood=False).probs
    flat, dims2, scale = footprints_for(evidence, model.scale_rule)
    patches = crop_checked(flat, dims2, scale, model.patch_size)
    return plot_montage(patches, probs, output, title=Path(path).name)


def plot_montage(
    patches: np.ndarray,
    probs: np.ndarray,
    path: str | os.PathLike,
    *,
    max_per_class: int = 40,
    columns: int = 10,
    title: str = "",
) -> Path:
    """Save a PNG of the components grouped by predicted class.

    Parameters
    ----------
    patches : (N, P, P) ndarray
        From :func:`calcomp_caiman.extract_patches`.
    probs : (N, 4) ndarray
        From :func:`calcomp_caiman.classify_footprints`.
    path : path-like
        Output PNG.
    max_per_class : int
        Tiles shown per class, most confident first (the count shown is the total).
    columns : int
        Tiles per row.
    title : str
        Figure title (e.g. the file name).

    Returns
    -------
    Path
        ``path``. Each tile is titled with the component index and the probability of its
        predicted class.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    predicted = np.asarray(probs).argmax(axis=1) if len(probs) else np.zeros(0, int)
    groups = []
    for k, name in enumerate(CLASSES):
        members = np.flatnonzero(predicted == k)
        members = members[np.argsort(-probs[members, k])] if len(members) else members
        groups.append((name, k, members))
    rows_per_group = [max(1, -(-min(len(m), max_per_class) // columns)) for _, _, m in groups]
    total_rows = sum(rows_per_group) + len(groups)
    # a Figure of its own (no pyplot): no display needed, the global backend is untouched
    fig = Figure(figsize=(columns * 1.1, total_rows * 1.15 + 0.6))
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(total_rows, columns, hspace=0.6, wspace=0.1)
    row = 0
    for (name, k, members), n_rows in zip(groups, rows_per_group):
        header = fig.add_subplot(grid[row, :])
        header.axis("off")
        header.text(0, 0.2, f"{name}: {len(members)} component(s)", fontsize=12, weight="bold")
        row += 1
        for i, index in enumerate(members[:max_per_class]):
            ax = fig.add_subplot(grid[row + i // columns, i % columns])
            ax.imshow(patches[index], cmap="gray", interpolation="nearest")
            ax.set_title(f"#{index} {probs[index, k]:.2f}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        row += n_rows
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    return path
