"""Figures of classified components (matplotlib, imported inside the functions)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from calcomp_caiman.schema import CLASSES

__all__ = ["plot_montage"]


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
