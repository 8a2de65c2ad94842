"""What a curation card shows, as data the page draws: PNG images, outlines and traces.

A card is one component: its footprint and the local image (``Cn`` when stored, else the
user's image, else the sum of all footprints) cropped around it, as PNG data URLs; the
outline of the component and of its neighbours in that window (polylines, in pixels of the
crop); its raw (``C + YrA``) and denoised (``C``) traces, reduced to at most
:data:`TRACE_POINTS` points by keeping each bin's minimum and maximum (spikes stay visible),
with the frame rate when known (the page's time axis); and CaImAn's own accept
(``idx_components``) and ``SNR_comp`` when the file holds them.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
import scipy.sparse

from calcomp_caiman.evidence import Evidence
from calcomp_caiman.evidence.patches import estimate_gsig, project_footprints

__all__ = ["TRACE_POINTS", "FileGeometry", "file_geometry", "render_card"]

TRACE_POINTS = 600
"""At most this many points per trace on a card."""

OUTLINE_LEVEL = 0.3
"""Outlines are drawn where a footprint reaches this fraction of its maximum."""

MAX_NEIGHBOURS = 30


@dataclass(frozen=True, eq=False)
class FileGeometry:
    """Per-file data shared by all cards: 2-D footprints, their boxes, the background image."""

    A: scipy.sparse.csc_matrix
    dims: tuple[int, int]
    boxes: np.ndarray  # (N, 4) int: row min, row max, col min, col max (-1 for empty)
    centres: np.ndarray  # (N, 2) float: centre of mass row, col
    background: np.ndarray
    background_name: str
    background_range: tuple[float, float]
    half_width: int


def file_geometry(evidence: Evidence) -> FileGeometry:
    """Prepare the cards of one result (2-D projection, boxes, centres, background)."""
    A, dims = project_footprints(evidence.A, evidence.dims)
    A = scipy.sparse.csc_matrix(A)
    n = A.shape[1]
    rows, cols = A.indices % dims[0], A.indices // dims[0]
    counts = np.diff(A.indptr)
    boxes = np.full((n, 4), -1, np.int64)
    centres = np.zeros((n, 2))
    column = np.repeat(np.arange(n), counts)
    filled = counts > 0
    if A.nnz:
        starts = A.indptr[:-1][filled]
        boxes[filled, 0] = np.minimum.reduceat(rows, starts)
        boxes[filled, 1] = np.maximum.reduceat(rows, starts)
        boxes[filled, 2] = np.minimum.reduceat(cols, starts)
        boxes[filled, 3] = np.maximum.reduceat(cols, starts)
        weight = np.bincount(column, weights=A.data, minlength=n)
        weight = np.where(weight > 0, weight, 1.0)
        centres[:, 0] = np.bincount(column, weights=A.data * rows, minlength=n) / weight
        centres[:, 1] = np.bincount(column, weights=A.data * cols, minlength=n) / weight
    if evidence.Cn is not None:
        background, name = evidence.Cn, "Cn (local correlation)"
    elif evidence.image is not None:
        background, name = evidence.image, "image"
    else:
        summed = np.asarray(A.sum(axis=1)).ravel()
        background, name = summed.reshape(dims, order="F"), "sum of footprints"
    finite = background[np.isfinite(background)]
    low, high = np.percentile(finite, [1, 99.5]) if finite.size else (0.0, 1.0)
    gsig = evidence.gSig if evidence.gSig is not None else (estimate_gsig(A, dims) if A.nnz else 4.0)  # fmt: skip
    half_width = int(np.clip(np.ceil(3.0 * gsig), 8, 40))
    return FileGeometry(A, dims, boxes, centres, np.asarray(background, float), name,
                        (float(low), float(max(high, low + 1e-12))), half_width)  # fmt: skip


def _png(image: np.ndarray, low: float, high: float, cmap: str) -> str:
    from matplotlib import image as mpimg

    buffer = io.BytesIO()
    mpimg.imsave(buffer, image, vmin=low, vmax=high, cmap=cmap, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _crop(image: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    out = np.zeros((size, size))
    rows = slice(max(top, 0), min(top + size, image.shape[0]))
    cols = slice(max(left, 0), min(left + size, image.shape[1]))
    out[rows.start - top : rows.stop - top, cols.start - left : cols.stop - left] = image[
        rows, cols
    ]
    return out


def _dense_crop(geometry: FileGeometry, k: int, top: int, left: int, size: int) -> np.ndarray:
    A = geometry.A
    part = slice(A.indptr[k], A.indptr[k + 1])
    rows = A.indices[part] % geometry.dims[0] - top
    cols = A.indices[part] // geometry.dims[0] - left
    inside = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
    out = np.zeros((size, size))
    out[rows[inside], cols[inside]] = np.maximum(A.data[part][inside], 0)
    return out


def _outline(crop: np.ndarray) -> list[list[list[float]]]:
    """Polylines ``[[col, row], ...]`` where ``crop`` crosses OUTLINE_LEVEL of its maximum."""
    import contourpy

    peak = float(crop.max())
    if peak <= 0:
        return []
    padded = np.pad(crop, 1)  # closed outlines at the window border too
    lines = contourpy.contour_generator(z=padded, line_type="Separate").lines(OUTLINE_LEVEL * peak)
    return [np.round(line - 1.0, 2).tolist() for line in lines if len(line) > 2]


def _reduce(trace: np.ndarray, points: int = TRACE_POINTS) -> list[float]:
    if len(trace) <= points:
        return np.round(trace, 4).tolist()
    bins = np.array_split(trace, points // 2)
    pairs = np.array([(b.min(), b.max()) if b.argmin() < b.argmax() else (b.max(), b.min()) for b in bins])  # fmt: skip
    return np.round(pairs.ravel(), 4).tolist()


def render_card(geometry: FileGeometry, evidence: Evidence, k: int) -> dict:
    """The drawing data of component ``k``.

    Returns
    -------
    dict
        ``size`` (crop side, px), ``origin`` ([row, col] of the crop's top-left pixel in the
        FOV), ``footprint_png`` and ``image_png`` (data URLs), ``image_name``, ``outline``
        and ``neighbours`` (lists of polylines, ``[col, row]`` in crop pixels), and
        ``traces``: ``{"raw": [...], "C": [...], "frames": T, "frame_rate": Hz or None}``
        (each list spans the whole recording, frames 0 to T - 1) or None without traces;
        ``caiman``: CaImAn's own view of the component where the file holds it,
        ``{"accepted": bool or None, "snr": float or None}`` (``accepted``: kept by
        CaImAn's selection, ``idx_components``; ``snr``: ``SNR_comp`` to 0.1).
    """
    size = 2 * geometry.half_width + 1
    centre = np.round(geometry.centres[k]).astype(int)
    top, left = int(centre[0]) - geometry.half_width, int(centre[1]) - geometry.half_width
    footprint = _dense_crop(geometry, k, top, left, size)
    image = _crop(geometry.background, top, left, size)
    box = geometry.boxes
    near = np.flatnonzero(
        (box[:, 0] >= 0) & (box[:, 1] >= top) & (box[:, 0] < top + size)
        & (box[:, 3] >= left) & (box[:, 2] < left + size)
    )  # fmt: skip
    near = near[near != k]
    distance = np.hypot(*(geometry.centres[near] - geometry.centres[k]).T) if near.size else near
    near = near[np.argsort(distance)[:MAX_NEIGHBOURS]]
    traces = None
    if evidence.traces is not None:
        part = evidence.traces.take([k])
        chunk = next(part.chunks(1))[1]
        C = chunk["C"][0]
        raw = C + chunk["YrA"][0] if "YrA" in chunk else C
        traces = {"raw": _reduce(raw), "C": _reduce(C), "frames": int(len(C)),
                  "frame_rate": evidence.frame_rate}  # fmt: skip
    peak = float(footprint.max())
    kept, snr = evidence.caiman_accepted, evidence.SNR_comp
    caiman = {
        "accepted": None if kept is None else bool(kept[k]),
        "snr": None if snr is None or not np.isfinite(snr[k]) else round(float(snr[k]), 1),
    }
    return {
        "size": size,
        "origin": [top, left],
        "footprint_png": _png(footprint, 0.0, peak if peak > 0 else 1.0, "gray"),
        "image_png": _png(image, *geometry.background_range, "gray"),
        "image_name": geometry.background_name,
        "outline": _outline(footprint),
        "neighbours": [
            line for j in near for line in _outline(_dense_crop(geometry, int(j), top, left, size))
        ],
        "traces": traces,
        "caiman": caiman,
    }
