"""Figures of classified components (matplotlib, imported inside the functions)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from calcomp_caiman.checks import check_gsig
from calcomp_caiman.classify import accept_components, acceptance_rule, classify
from calcomp_caiman.evidence import Evidence
from calcomp_caiman.evidence.patches import crop_checked, footprints_for, project_checked
from calcomp_caiman.io.caiman_h5 import read_estimates, read_evidence
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.schema import CLASSES

__all__ = ["montage_figure", "plot_montage", "rule_text", "write_montage"]

ACCEPTED_COLOUR = "#1a9e1a"
"""Frame of an accepted component's tile, and its outline on the field-of-view map."""

REJECTED_COLOUR = "#d62728"
"""Frame and outline of a component that is not accepted."""

OUTLINE_LEVEL = 0.3
"""The field-of-view map outlines a footprint where it reaches this fraction of its maximum."""


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
    stored = None if reclassify else read_estimates(path)
    probs = None if stored is None else stored.class_probs
    if probs is None or len(probs) != evidence.n:
        record = classify(evidence, model, ood=False)
        probs, provenance = record.probs, record.provenance
    else:  # the rule the stored classification was made with
        provenance = stored.classification or {}
    accept, min_prob = provenance.get("accept"), provenance.get("min_prob")
    accept = json.loads(accept) if isinstance(accept, str) else accept
    if accept and min_prob in (None, "none"):  # recorded as "none": the most probable class
        min_prob = "argmax"
    rule = acceptance_rule(model, accept, min_prob)
    accepted = accept_components(probs, accept=rule.accept, min_prob=rule.min_prob)
    flat, dims2, scale = footprints_for(evidence, model.scale_rule)
    patches = crop_checked(flat, dims2, scale, model.patch_size)
    return plot_montage(patches, probs, output, accepted=accepted, evidence=evidence,
                        rule=rule_text(rule.accept, rule.min_prob), title=Path(path).name)  # fmt: skip


def rule_text(accept: Sequence[str], min_prob: float | None) -> str:
    """The acceptance rule in words, for a figure.

    Examples
    --------
    >>> rule_text(["neuron"], 0.45)
    'accepted: P(neuron) >= 0.45'
    >>> rule_text(["neuron", "doubtful"], None)
    'accepted: most probable class neuron or doubtful'
    """
    if min_prob is None:
        return f"accepted: most probable class {' or '.join(accept)}"
    return f"accepted: P({' + '.join(accept)}) >= {float(min_prob):.2f}"


def _label_image(A, dims: tuple[int, int]) -> np.ndarray:
    """(H, W) int: 1 + the component whose footprint (scaled to its own maximum) is largest
    at each pixel, where that reaches :data:`OUTLINE_LEVEL`; 0 elsewhere."""
    peak = np.zeros(A.shape[1])
    filled = np.diff(A.indptr) > 0
    if A.nnz:
        peak[filled] = np.maximum.reduceat(A.data, A.indptr[:-1][filled])
    column = np.repeat(np.arange(A.shape[1]), np.diff(A.indptr))
    level = A.data / np.where(peak[column] > 0, peak[column], 1.0)
    keep = level >= OUTLINE_LEVEL
    order = np.argsort(level[keep], kind="stable")  # the largest written last wins
    best = np.zeros(dims[0] * dims[1], np.int64)
    best[A.indices[keep][order]] = column[keep][order] + 1
    return best.reshape(dims, order="F")


def _draw_field_of_view(ax, evidence: Evidence, accepted: np.ndarray) -> None:
    """The accepted (green) and other (red) outlines over ``Cn``, the image or the footprints."""
    A, dims = project_checked(evidence.A, evidence.dims)
    if evidence.Cn is not None:
        background, name = np.asarray(evidence.Cn, float), "Cn (local correlation)"
    elif evidence.image is not None:
        background, name = np.asarray(evidence.image, float), "mean image"
    else:
        background = np.asarray(A.sum(axis=1)).reshape(dims, order="F")
        name = "sum of footprints"
    background = background.reshape(dims) if background.ndim != 2 else background
    finite = background[np.isfinite(background)]
    low, high = np.percentile(finite, [1, 99.5]) if finite.size else (0.0, 1.0)
    ax.imshow(background, cmap="gray", vmin=low, vmax=max(high, low + 1e-12), interpolation="nearest")  # fmt: skip
    label = _label_image(A, dims)
    edge = np.zeros(dims, bool)
    edge[1:, :] |= label[1:, :] != label[:-1, :]
    edge[:-1, :] |= label[:-1, :] != label[1:, :]
    edge[:, 1:] |= label[:, 1:] != label[:, :-1]
    edge[:, :-1] |= label[:, :-1] != label[:, 1:]
    edge &= label > 0
    overlay = np.zeros((*dims, 4))
    from matplotlib.colors import to_rgba

    is_accepted = np.zeros(dims, bool)
    is_accepted[edge] = accepted[label[edge] - 1]
    overlay[edge & is_accepted] = to_rgba(ACCEPTED_COLOUR)
    overlay[edge & ~is_accepted] = to_rgba(REJECTED_COLOUR)
    ax.imshow(overlay, interpolation="nearest")
    if A.shape[1] <= 200:  # component numbers, to find a tile's component on the map
        rows, cols = np.nonzero(label)
        ids = label[rows, cols] - 1
        counts = np.bincount(ids, minlength=A.shape[1])
        for k in np.flatnonzero(counts):
            colour = ACCEPTED_COLOUR if accepted[k] else REJECTED_COLOUR
            ax.text(cols[ids == k].mean(), rows[ids == k].mean(), str(k), color=colour,
                    fontsize=6, ha="center", va="center")  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(
        f"field of view: {name}; outlines green = accepted ({int(accepted.sum())}), "
        f"red = not accepted ({int((~accepted).sum())})",
        fontsize=8,
    )


def _shown_traces(evidence: Evidence | None, shown: np.ndarray) -> dict[int, np.ndarray]:
    """``{component: C}`` of the components shown, when the evidence has traces."""
    if evidence is None or evidence.traces is None or not len(shown):
        return {}
    order = np.sort(np.unique(shown))
    found = {}
    for start, chunk in evidence.traces.take(order).chunks(len(order)):
        for i, trace in enumerate(chunk["C"]):
            found[int(order[start + i])] = np.asarray(trace, float)
    return found


def montage_figure(
    patches: np.ndarray,
    probs: np.ndarray,
    *,
    accepted: np.ndarray | None = None,
    evidence: Evidence | None = None,
    rule: str = "",
    max_per_class: int = 40,
    columns: int = 10,
    title: str = "",
):
    """The montage as a matplotlib ``Figure`` (no pyplot, no display needed).

    Parameters
    ----------
    patches, probs, max_per_class, columns, title
        As :func:`plot_montage`.
    accepted : (N,) bool ndarray, optional
        Which components are accepted: their tiles get a green frame, the others a red one.
    evidence : Evidence, optional
        The result the components come from: adds a field-of-view map (outlines on ``Cn``,
        else the image, else the sum of footprints) and, when it holds traces, each shown
        component's trace ``C`` under its tile.
    rule : str
        The acceptance rule in words (:func:`rule_text`), shown in the legend.

    Returns
    -------
    matplotlib.figure.Figure
        Axes: the legend (title ``"how to read this figure"``), the field-of-view map
        (title starting ``"field of view"``, with ``evidence``), per class a header, and per
        shown component a tile titled ``"#k P=0.93"`` (``P``: the probability of the
        class of its group) and, with traces, a trace axes (``gid`` ``"trace #k"``).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    probs = np.asarray(probs)
    n = len(probs)
    accepted = None if accepted is None else np.asarray(accepted, bool)
    predicted = probs.argmax(axis=1) if n else np.zeros(0, int)
    groups = []
    for k, name in enumerate(CLASSES):
        members = np.flatnonzero(predicted == k)
        members = members[np.argsort(-probs[members, k])] if len(members) else members
        groups.append((name, k, members))
    shown = np.concatenate([m[:max_per_class] for _, _, m in groups]) if n else np.zeros(0, int)
    traces = _shown_traces(evidence, shown)
    fov = evidence is not None and evidence.n == n and accepted is not None
    # rows: legend, the map, then per class a header and its tile rows (each with a trace row)
    heights = [0.9] + ([columns * 0.55] if fov else [])
    layout = []
    for name, k, members in groups:
        heights.append(0.35)
        layout.append(("header", name, k, members))
        limited = members[:max_per_class]
        for r in range(max(1, -(-len(limited) // columns))):
            heights.append(1.0)
            layout.append(("tiles", name, k, limited[r * columns : (r + 1) * columns]))
            if traces:
                heights.append(0.35)
                layout.append(("traces", name, k, None))
    height = sum(heights) * 1.15 + 0.6
    fig = Figure(figsize=(columns * 1.1, height))
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(len(heights), columns, height_ratios=heights, hspace=0.6, wspace=0.1,
                            top=1 - 0.7 / height, bottom=0.2 / height)  # fmt: skip
    legend = fig.add_subplot(grid[0, :])
    legend.axis("off")
    legend.set_title("how to read this figure", fontsize=9, loc="left")
    lines = [
        "Each tile is one component as the model sees it (its footprint, cropped and scaled); "
        "#k is its column of A.",
        "P on a tile = the probability of the class of its group (in the neuron group, "
        "P(neuron)); tiles are grouped by most probable class, most certain first.",
    ]
    if accepted is not None:
        lines.append(f"Frame: green = accepted, red = not accepted{'; ' + rule if rule else ''}.")
    if traces:
        rate = evidence.frame_rate
        frames = len(next(iter(traces.values())))
        span = f"{frames / rate:.1f} s" if rate else f"{frames} frames"
        lines.append(f"Under each tile: its denoised trace C over the whole recording ({span}).")
    legend.text(0, 1, "\n".join(lines), fontsize=7, va="top", transform=legend.transAxes)
    row = 1
    if fov:
        _draw_field_of_view(fig.add_subplot(grid[row, 1 : columns - 1]), evidence, accepted)
        row += 1
    for kind, name, k, members in layout:
        if kind == "header":
            header = fig.add_subplot(grid[row, :])
            header.axis("off")
            count = f"{len(members)} component(s)"
            if accepted is not None:
                count += f", {int(accepted[members].sum())} accepted"
            header.text(0, 0.2, f"{name}: {count}", fontsize=12, weight="bold")
            tiles = []
        elif kind == "tiles":
            tiles = members
            for i, index in enumerate(members):
                ax = fig.add_subplot(grid[row, i])
                ax.imshow(patches[index], cmap="gray", interpolation="nearest")
                ax.set_title(f"#{index} P={probs[index, k]:.2f}", fontsize=7)
                ax.set_xticks([])
                ax.set_yticks([])
                if accepted is not None:
                    colour = ACCEPTED_COLOUR if accepted[index] else REJECTED_COLOUR
                    for spine in ax.spines.values():
                        spine.set_edgecolor(colour)
                        spine.set_linewidth(2.0)
        else:  # the traces of the tile row above
            for i, index in enumerate(tiles):
                ax = fig.add_subplot(grid[row, i])
                ax.set_gid(f"trace #{index}")
                trace = traces.get(int(index))
                if trace is not None:
                    ax.plot(trace, color="#e67e22", linewidth=0.5)
                ax.axis("off")
        row += 1
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.15 / height)
    return fig


def plot_montage(
    patches: np.ndarray,
    probs: np.ndarray,
    path: str | os.PathLike,
    *,
    accepted: np.ndarray | None = None,
    evidence: Evidence | None = None,
    rule: str = "",
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
    accepted : (N,) bool ndarray, optional
        Which components are accepted (green frames; red for the others).
    evidence : Evidence, optional
        Adds the field-of-view map and, when present, each shown component's trace
        (:func:`montage_figure`).
    rule : str
        The acceptance rule in words (:func:`rule_text`).
    max_per_class : int
        Tiles shown per class, most confident first (the count shown is the total).
    columns : int
        Tiles per row.
    title : str
        Figure title (e.g. the file name).

    Returns
    -------
    Path
        ``path``. A legend says what the figure shows; each tile is titled with the
        component index and the probability of its predicted class (``P``).
    """
    fig = montage_figure(patches, probs, accepted=accepted, evidence=evidence, rule=rule,
                         max_per_class=max_per_class, columns=columns, title=title)  # fmt: skip
    path = Path(path)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    return path
