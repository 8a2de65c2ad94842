"""Footprints to patches: crop each spatial component around its centre of mass.

The classifier sees every component as a ``patch_size`` x ``patch_size`` image centred
on the component's centre of mass, with a crop window proportional to the typical cell
size (``gSig``), so the same cell looks the same at any zoom.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import scipy.sparse

from calcomp_caiman.checks import check_footprints, check_gsig
from calcomp_caiman.schema import PATCH_SIZE

if TYPE_CHECKING:
    from calcomp_caiman.evidence.evidence import Evidence

logger = logging.getLogger(__name__)

__all__ = [
    "Footprints",
    "footprints_for",
    "SCALE_MIN_COMPONENTS",
    "GSIG_TO_SCALE",
    "crop_scale",
    "crop_checked",
    "crop_windows",
    "CropWindows",
    "compress_patches",
    "component_centres",
    "extract_patches",
    "estimate_gsig",
    "resolve_gsig",
    "crop_half_width",
    "project_footprints",
    "project_checked",
]

_MAX_CHUNK_ELEMENTS = 1 << 21  # dense crop elements held at once (8 MB of float32)
_SUBPIXEL_STEPS = 64  # centres are placed to 1/64 px


def crop_half_width(gSig: float) -> float:
    """Half-width in pixels of the crop window for a cell half-size ``gSig``.

    Same rule as CaImAn's ``evaluate_components_CNN`` (``4 * gSig + 1``), without its
    cap at 50 px, so that large cells at high zoom are not cut.

    Examples
    --------
    >>> crop_half_width(4)
    17.0
    """
    return 4.0 * float(gSig) + 1.0


def project_footprints(A, dims) -> tuple[scipy.sparse.csc_matrix, tuple[int, int]]:
    """Return 2-D footprints: ``A`` itself for 2-D ``dims``, the max projection over z for 3-D.

    Parameters
    ----------
    A : (prod(dims), N) sparse matrix or ndarray
        Footprints, pixels in Fortran order (as ``estimates.A``).
    dims : tuple of 2 or 3 ints
        Field of view shape.

    Returns
    -------
    A2 : (dims[0] * dims[1], N) csc_matrix, float32
        Non-negative 2-D footprints (negative values are clipped to 0).
    dims2 : tuple of 2 ints
    """
    A, dims = check_footprints(A, dims)
    return project_checked(A, dims)


def project_checked(A: scipy.sparse.csc_matrix, dims: tuple[int, ...]):
    """:func:`project_footprints` of footprints checked already (``Evidence.A``)."""
    A = A.copy()
    np.maximum(A.data, 0, out=A.data)
    A.eliminate_zeros()
    dims2 = (dims[0], dims[1])
    if len(dims) == 2:
        A.sum_duplicates()
        return A, dims2
    n_plane = dims[0] * dims[1]
    coo = A.tocoo()
    pix = coo.row % n_plane
    order = np.lexsort((coo.data, pix, coo.col))
    pix, col, val = pix[order], coo.col[order], coo.data[order]
    last = np.ones(len(pix), dtype=bool)
    last[:-1] = (pix[1:] != pix[:-1]) | (col[1:] != col[:-1])
    proj = scipy.sparse.csc_matrix(
        (val[last], (pix[last], col[last])), shape=(n_plane, A.shape[1]), dtype=np.float32
    )
    return proj, dims2


def _pixel_coordinates(A: scipy.sparse.csc_matrix, n_rows: int):
    """Component, row and column of every stored value of CSC ``A`` (O(nnz), no FOV arrays)."""
    component = np.repeat(np.arange(A.shape[1]), np.diff(A.indptr))
    row, col = np.divmod(A.indices, n_rows)[::-1]
    return component, row, col


def _centres(A: scipy.sparse.csc_matrix, n_rows: int, coords=None):
    """Intensity-weighted centre (row, col) and total of every column; empty columns get 0."""
    component, row, col = _pixel_coordinates(A, n_rows) if coords is None else coords
    n = A.shape[1]
    weights = A.data.astype(np.float64)
    total = np.bincount(component, weights=weights, minlength=n)
    safe = np.where(total > 0, total, 1.0)
    centre_r = np.bincount(component, weights=weights * row, minlength=n) / safe
    centre_c = np.bincount(component, weights=weights * col, minlength=n) / safe
    return centre_r, centre_c, total


def estimate_gsig(A, dims) -> float:
    """Estimate the typical cell half-size ``gSig`` (px) from the footprints themselves.

    Each footprint's spatial spread is its intensity-weighted second moment; a filled disk
    of radius ``R`` has a per-axis standard deviation of ``R / 2``, so ``2 * sd`` estimates
    the radius, which is CaImAn's ``gSig`` convention. The median over components is used,
    so a minority of processes or noise does not move the estimate.

    Parameters
    ----------
    A : (prod(dims), N) sparse matrix or ndarray
        Footprints, pixels in Fortran order.
    dims : tuple of 2 or 3 ints
        Field of view shape.

    Returns
    -------
    float
        Estimated ``gSig``; 4.0 when there are no non-empty components.

    Examples
    --------
    >>> import numpy as np
    >>> rr, cc = np.mgrid[:64, :64]
    >>> disk = ((rr - 30) ** 2 + (cc - 30) ** 2 <= 6**2).astype(float)
    >>> round(estimate_gsig(disk.reshape(-1, 1, order="F"), (64, 64)), 1)
    6.0
    """
    A, dims = check_footprints(A, dims)
    A, dims = project_checked(A, dims)
    return _estimate_gsig_checked(A, dims)


def resolve_gsig(A, dims, gSig=None) -> float:
    """``gSig`` as one float: the value given (checked), or else :func:`estimate_gsig`.

    Parameters
    ----------
    A : (prod(dims), N) sparse matrix or ndarray
        Footprints, used only when ``gSig`` is ``None``.
    dims : tuple of 2 or 3 ints
    gSig : float or sequence of floats, optional
        CaImAn's ``params.init['gSig']`` (per-axis values are averaged).

    Examples
    --------
    >>> resolve_gsig(None, (10, 10), gSig=(4, 5))
    4.5
    """
    gsig = check_gsig(gSig)
    return estimate_gsig(A, dims) if gsig is None else gsig


SCALE_MIN_COMPONENTS = 20
"""With at least this many non-empty footprints, :func:`crop_scale` measures the scale."""

GSIG_TO_SCALE = 1.7
"""Measured ratio of :func:`estimate_gsig` on CaImAn CNMF footprints to the ``gSig`` the
user set (real and simulated CaImAn 1.12 output: CNMF footprints reach about 2 x gSig)."""


def crop_scale(A: scipy.sparse.csc_matrix, dims: tuple[int, int], gSig=None) -> float:
    """The cell size that sets the crop window: measured from the footprints when possible.

    Parameters
    ----------
    A : (H * W, N) csc_matrix
        Checked, projected, non-negative footprints (:func:`project_footprints`).
    dims : (int, int)
    gSig : float, optional
        The user's ``gSig`` (CaImAn convention); used only when fewer than
        :data:`SCALE_MIN_COMPONENTS` footprints are non-empty, times :data:`GSIG_TO_SCALE`.

    Returns
    -------
    float
        :func:`estimate_gsig` of the footprints when there are enough of them, so that a
        component gets the same patch whether or not ``gSig`` is known (and whatever value
        the user set); else ``GSIG_TO_SCALE * gSig``; else the estimate from the few there are.

    Examples
    --------
    >>> import numpy as np, scipy.sparse
    >>> crop_scale(scipy.sparse.csc_matrix((100, 1)), (10, 10), gSig=4)
    6.8
    """
    n_nonempty = int(np.count_nonzero(np.diff(A.indptr)))
    gsig = check_gsig(gSig)
    if n_nonempty >= SCALE_MIN_COMPONENTS or gsig is None:
        return _estimate_gsig_checked(A, dims)
    return GSIG_TO_SCALE * gsig


def component_centres(A: scipy.sparse.csc_matrix, n_rows: int) -> tuple[np.ndarray, ...]:
    """Intensity-weighted centre (row, col) and total of every column (empty columns: 0).

    ``A`` holds checked, projected footprints; ``n_rows`` is the image height.
    """
    return _centres(A, n_rows)


def _estimate_gsig_checked(A: scipy.sparse.csc_matrix, dims: tuple[int, int]) -> float:
    coords = _pixel_coordinates(A, dims[0])
    centre_r, centre_c, total = _centres(A, dims[0], coords)
    keep = total > 0
    if not np.any(keep):
        return 4.0
    component, row, col = coords
    weights = A.data.astype(np.float64)
    spread = (row - centre_r[component]) ** 2 + (col - centre_c[component]) ** 2
    var = np.bincount(component, weights=weights * spread, minlength=A.shape[1])
    var = var[keep] / total[keep]
    # a single pixel has zero spread; count each pixel as a unit square (variance 1/12 per axis)
    sd = np.sqrt(var / 2 + 1.0 / 12)
    return float(max(np.median(2.0 * sd), 1.0))


@functools.lru_cache(maxsize=8)
def _tent_table(patch_size: int, half: float, window: int) -> np.ndarray:
    """Resampling weights (Q, P, window) for the P output pixels at Q sub-pixel shifts.

    Output pixel ``i`` of shift ``q`` samples the window at ``half + 2 + q / Q`` plus
    ``(i - (P - 1) / 2) * step`` with a triangle kernel of half-width ``max(1, step)``
    (linear interpolation when enlarging, area averaging when shrinking). Read-only.
    """
    step = 2.0 * half / patch_size
    offsets = (np.arange(patch_size) - (patch_size - 1) / 2.0) * step + half + 2.0
    width = max(1.0, step)
    size = window
    shifts = np.arange(_SUBPIXEL_STEPS, dtype=np.float32) / _SUBPIXEL_STEPS
    position = shifts[:, None] + offsets.astype(np.float32)[None, :]
    grid = np.arange(size, dtype=np.float32)
    weights = np.maximum(0.0, 1.0 - np.abs(grid - position[..., None]) / width)
    sums = weights.sum(axis=-1, keepdims=True)
    table = (weights / np.where(sums > 0, sums, 1.0)).astype(np.float32)
    table.flags.writeable = False
    return table


def extract_patches(A, dims, *, gSig=None, patch_size: int = PATCH_SIZE) -> np.ndarray:
    """Crop every footprint around its centre of mass into a normalised square patch.

    Parameters
    ----------
    A : (prod(dims), N) scipy sparse matrix (CSC or CSR) or ndarray
        Spatial footprints, one column per component, pixels in Fortran (column-major)
        order exactly as CaImAn's ``estimates.A``. Any float or int dtype; negative values
        are clipped to 0; row indices need not be sorted.
    dims : tuple of 2 or 3 ints
        Field of view shape (``estimates.dims``). 3-D footprints are classified from their
        maximum projection over z.
    gSig : float or sequence of floats, optional
        Half-size of a typical neuron in pixels (``params.init['gSig']``); non-integer
        values are fine. If ``None``, it is estimated from the footprints
        (:func:`estimate_gsig`).
    patch_size : int, optional
        Side of the output patches (the model expects 50).

    Returns
    -------
    patches : (N, patch_size, patch_size) float32 ndarray
        Patch ``k`` shows component ``k`` in a window of half-width ``4 * gSig + 1`` px
        centred on its centre of mass, resampled to ``patch_size`` (linear interpolation,
        area-averaged when shrinking), square-root compressed and scaled to unit L2 norm.
        Rows are image rows. Parts of the
        window outside the FOV are zero, so border components stay centred. An all-zero
        component gives an all-zero patch. ``N == 0`` gives shape ``(0, P, P)``.

    Raises
    ------
    ValueError
        ``A`` does not have ``prod(dims)`` rows, ``dims`` is not 2 or 3 positive ints,
        ``gSig`` is not positive, or ``A`` holds NaN or Inf.
    TypeError
        ``A`` is neither an array nor a sparse matrix.

    Notes
    -----
    Same crop rule as CaImAn's ``evaluate_components_CNN`` (window half-width
    ``4 * gSig + 1`` around ``center_of_mass``, unit L2 norm, resize to 50 x 50), with
    four differences: the window is not capped at 50 px; it is zero-padded instead of
    slid inwards at the FOV border (CaImAn's patch is then no longer centred); values are
    square-root compressed before normalising, so that a CNMF footprint (a bright peak
    with a dim skirt) and a binary mask of the same cell look alike; and the crop is taken
    from the sparse matrix in chunks, never densifying the FOV.

    Examples
    --------
    >>> import numpy as np
    >>> rr, cc = np.mgrid[:60, :80]
    >>> cell = np.exp(-((rr - 20) ** 2 + (cc - 50) ** 2) / 8.0)
    >>> A = cell.reshape(-1, 1, order="F")
    >>> patches = extract_patches(A, (60, 80), gSig=3)
    >>> patches.shape, patches.dtype
    ((1, 50, 50), dtype('float32'))
    >>> round(float(np.linalg.norm(patches[0])), 3)
    1.0
    >>> np.unravel_index(patches[0].argmax(), (50, 50)) in {(24, 24), (24, 25), (25, 24), (25, 25)}
    True
    """
    patch_size = int(patch_size)
    if patch_size < 2:
        raise ValueError(f"patch_size must be at least 2, got {patch_size}.")
    A, dims = check_footprints(A, dims)
    A, dims2 = project_checked(A, dims)
    gsig = check_gsig(gSig)
    if gsig is None:  # A is checked and projected already: skip resolve_gsig's checks
        gsig = _estimate_gsig_checked(A, dims2)
    return crop_checked(A, dims2, gsig, patch_size)


def crop_checked(
    A: scipy.sparse.csc_matrix, dims: tuple[int, int], gsig: float, patch_size: int
) -> np.ndarray:
    """:func:`extract_patches` on checked, projected, non-negative CSC footprints.

    ``gsig`` is the scale (crop half-width ``4 * gsig + 1``); nothing is checked again.
    """
    n = A.shape[1]
    half = crop_half_width(gsig)
    chunk = max(1, _MAX_CHUNK_ELEMENTS // _window(half) ** 2)
    out = np.empty((n, patch_size, patch_size), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        windows = crop_windows(A[:, start:stop], dims, gsig, patch_size)
        out[start:stop] = compress_patches(windows.resample(windows.crops))
    logger.debug("extracted %d patches (gSig=%.2f, window half-width %.1f px)", n, gsig, half)
    return out


def compress_patches(patches: np.ndarray) -> np.ndarray:
    """Square root, then unit L2 norm of each (n, P, P) float32 patch, in place; returned.

    The square root makes CNMF's peaked footprints and binary masks of the same cell look
    alike; an all-zero patch stays zero.
    """
    np.sqrt(np.maximum(patches, 0, out=patches), out=patches)
    norms = np.sqrt(np.einsum("nij,nij->n", patches, patches))
    patches /= np.where(norms > 0, norms, 1.0)[:, None, None]
    return patches


def _window(half: float) -> int:
    """Side of the square window read around a centre: the crop plus 2 px on each side."""
    return int(np.ceil(2.0 * half)) + 4


class CropWindows(NamedTuple):
    """The crop windows of some footprints: where each lies, and its resampling weights.

    Every channel a model sees at a component (the footprint, images of the field of
    view) is read in the same window and resampled with the same weights, so that its
    pixels line up with the footprint patch (:func:`crop_windows`).
    """

    crops: np.ndarray
    """(n, window, window) float32: each footprint densified in its window."""
    origin_r: np.ndarray
    """(n,) int64: image row of each window's first row (may be outside the image)."""
    origin_c: np.ndarray
    """(n,) int64: image column of each window's first column."""
    shift_r: np.ndarray
    """(n,) int64: sub-pixel row shift, an index into ``table``."""
    shift_c: np.ndarray
    """(n,) int64: sub-pixel column shift."""
    table: np.ndarray
    """(Q, P, window) float32: tent weights of the P output pixels at Q sub-pixel shifts."""

    @property
    def window(self) -> int:
        """Side of the windows in px."""
        return int(self.table.shape[2])

    def resample(self, stack: np.ndarray) -> np.ndarray:
        """Windows to patches: ``(n, window, window)`` -> ``(n, P, P)``, or several
        channels at once, ``(n, window, C, window)`` -> ``(n, P, P, C)`` (float32)."""
        rows = self.table[self.shift_r]
        cols = self.table[self.shift_c].transpose(0, 2, 1)
        if stack.ndim == 3:
            return np.matmul(np.matmul(rows, stack), cols)
        n, window, channels, _ = stack.shape
        size = self.table.shape[1]
        part = np.matmul(rows, stack.reshape(n, window, channels * window))
        part = np.matmul(part.reshape(n, size * channels, window), cols)
        return part.reshape(n, size, channels, size).transpose(0, 1, 3, 2)


def crop_windows(
    A: scipy.sparse.csc_matrix, dims: tuple[int, int], scale: float, patch_size: int
) -> CropWindows:
    """The crop window of every footprint: centre of mass, half-width ``4 * scale + 1``.

    Parameters
    ----------
    A : (H * W, n) csc_matrix
        Checked, projected, non-negative footprints (a chunk: the windows are dense).
    dims : (int, int)
    scale : float
        The crop scale (:attr:`Footprints.scale`).
    patch_size : int

    Returns
    -------
    CropWindows
        ``crops`` the footprints in their windows; :meth:`CropWindows.resample` makes the
        patches of :func:`crop_checked` (before :func:`compress_patches`), and of any
        image read at ``origin_r + arange(window)``, ``origin_c + arange(window)``.
    """
    half = crop_half_width(scale)
    window = _window(half)
    component, row, col = coords = _pixel_coordinates(A, dims[0])
    centre_r, centre_c, _ = _centres(A, dims[0], coords)
    # window origin 2 px before the crop start; the sub-pixel rest selects the weights
    start_r = (centre_r - half) * _SUBPIXEL_STEPS
    start_c = (centre_c - half) * _SUBPIXEL_STEPS
    origin_r = np.floor(np.round(start_r) / _SUBPIXEL_STEPS).astype(np.int64) - 2
    origin_c = np.floor(np.round(start_c) / _SUBPIXEL_STEPS).astype(np.int64) - 2
    shift_r = np.round(start_r).astype(np.int64) % _SUBPIXEL_STEPS
    shift_c = np.round(start_c).astype(np.int64) % _SUBPIXEL_STEPS
    local_r = row - origin_r[component]
    local_c = col - origin_c[component]
    inside = (local_r >= 0) & (local_r < window) & (local_c >= 0) & (local_c < window)
    crops = np.zeros((A.shape[1], window, window), dtype=np.float32)
    crops[component[inside], local_r[inside], local_c[inside]] = A.data[inside]
    table = _tent_table(patch_size, half, window)
    return CropWindows(crops, origin_r, origin_c, shift_r, shift_c, table)


class Footprints(NamedTuple):
    """The 2-D footprints a model crops, and the scale it crops them at."""

    A: scipy.sparse.csc_matrix
    """(H * W, N) projected, non-negative footprints (:func:`project_checked`)."""
    dims: tuple[int, int]
    """(H, W) of the projected field of view."""
    scale: float
    """Crop scale in px: crop half-width ``4 * scale + 1``; ``crop_checked(A, dims, scale, P)``
    gives the patches the model sees."""


def footprints_for(
    evidence: Evidence, scale_rule: str = "footprints", *, scale: float | None = None
) -> Footprints:
    """The 2-D footprints and the crop scale a model with ``scale_rule`` classifies.

    Parameters
    ----------
    evidence : Evidence
    scale_rule : {"footprints", "gsig"}
        A model's ``scale_rule`` (:attr:`CalcompModel.scale_rule`): ``"footprints"`` (model
        v2) measures the scale from the footprints (:func:`crop_scale`); older models take
        the user's ``gSig``, else the estimate.
    scale : float, optional
        Use this scale instead (e.g. that of another set of components of the same FOV).

    Returns
    -------
    Footprints
        ``(A, dims, scale)``.

    Examples
    --------
    >>> import numpy as np
    >>> from calcomp_caiman.evidence import Evidence
    >>> rr, cc = np.mgrid[:64, :64]
    >>> cell = ((rr - 30) ** 2 + (cc - 30) ** 2 <= 25).astype(np.float32)
    >>> found = footprints_for(Evidence.build(cell.reshape(-1, 1, order="F"), (64, 64), gSig=5))
    >>> found.dims, round(found.scale, 1)
    ((64, 64), 8.5)
    """
    flat, flat_dims = project_checked(evidence.A, evidence.dims)
    if scale is None:
        if scale_rule == "footprints":
            scale = crop_scale(flat, flat_dims, evidence.gSig)
        elif evidence.gSig is not None:  # models before v2: the user's gSig ...
            scale = evidence.gSig
        else:  # ... else the estimate (crop_scale estimates when given no gSig)
            scale = crop_scale(flat, flat_dims, None)
    return Footprints(flat, flat_dims, float(scale))
