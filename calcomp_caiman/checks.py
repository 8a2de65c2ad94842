"""Errors and input checks shared by the public functions.

Checks run once, at the public boundary; inner functions trust their inputs.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from calcomp_caiman.errors import GsigError


def check_dims(dims) -> tuple[int, ...]:
    """Return ``dims`` as a tuple of 2 or 3 positive ints, or raise ``ValueError``."""
    try:
        values = np.ravel(np.asarray(dims))
        out = tuple(int(d) for d in values)
        integral = all(float(v) == d for v, d in zip(values, out))
    except (TypeError, ValueError, OverflowError):  # OverflowError: inf
        raise ValueError(f"dims must be 2 or 3 positive integers, got {dims!r}.") from None
    if len(out) not in (2, 3) or min(out) < 1 or not integral:
        raise ValueError(
            f"dims must be 2 or 3 positive integers (the FOV shape, estimates.dims), got {dims!r}."
        )
    return out


_SAFE_MAGNITUDE = (2.0**-32, 2.0**32)
"""Columns whose largest absolute value lies outside this range are rescaled (see below)."""


def check_footprints(A, dims) -> tuple[scipy.sparse.csc_matrix, tuple[int, ...]]:
    """Validate footprints ``A`` (pixels x components) against ``dims``; return CSC float32 and dims.

    A column whose largest absolute value lies outside ``[2**-32, 2**32]`` is multiplied by a
    power of two that brings it to about 1 (exact, so its shape and signs are kept): float32
    arithmetic on it then neither overflows nor underflows, and finite float64 values beyond
    float32's range stay finite. Everything downstream (patches, centres, flags) is invariant
    to the scale of a column.

    Raises
    ------
    TypeError
        ``A`` is neither an array nor a scipy sparse matrix, or does not hold real numbers.
    ValueError
        Wrong number of pixel rows for ``dims``, wrong ndim, or non-finite values.
    """
    dims = check_dims(dims)
    if scipy.sparse.issparse(A):
        A = scipy.sparse.csc_matrix(A)
    elif isinstance(A, np.ndarray) or hasattr(A, "__array__"):
        A = np.asarray(A)
        if A.ndim == 1:
            A = A[:, None]
        if A.ndim != 2:
            raise ValueError(f"A must be 2-D (pixels x components), got shape {A.shape}.")
    else:
        raise TypeError(
            f"A must be a scipy sparse matrix or a numpy array (pixels x components), "
            f"got {type(A).__name__}."
        )
    if A.dtype.kind not in "biuf":
        raise TypeError(f"A must hold real numbers, got dtype {A.dtype}.")
    n_pixels = int(np.prod(dims))
    if A.shape[0] != n_pixels:
        raise ValueError(
            f"A has {A.shape[0]} pixel rows but dims={dims} gives {n_pixels}; pass the FOV shape "
            f"CNMF used (estimates.dims), with pixels in Fortran order."
        )
    # float64 stays float64 until checked and scaled; everything else fits float32
    work = np.float64 if A.dtype == np.float64 else np.float32
    if scipy.sparse.issparse(A):
        A = A.astype(work, copy=False)
    else:
        A = scipy.sparse.csc_matrix(A.astype(work, copy=False))
    if A.nnz and not np.all(np.isfinite(A.data)):
        bad = np.unique(np.repeat(np.arange(A.shape[1]), np.diff(A.indptr))[~np.isfinite(A.data)])
        raise ValueError(
            f"A has NaN or Inf values in {bad.size} component(s) (first: {bad[:5].tolist()}); "
            f"fix or drop those components before classifying."
        )
    return _scale_extreme_columns(A).astype(np.float32, copy=False), dims


def _scale_extreme_columns(A: scipy.sparse.csc_matrix) -> scipy.sparse.csc_matrix:
    # plain array operations: scipy's own (abs, max) sort the shared index arrays in place
    counts = np.diff(A.indptr)
    nonempty = counts > 0
    if not nonempty.any():
        return A
    peak = np.zeros(A.shape[1])
    magnitude = np.abs(A.data[: A.indptr[-1]]).astype(np.float64)
    peak[nonempty] = np.maximum.reduceat(magnitude, A.indptr[:-1][nonempty])
    low, high = _SAFE_MAGNITUDE
    extreme = (peak > high) | ((peak > 0) & (peak < low))
    if not extreme.any():
        return A
    exponent = np.zeros(A.shape[1], dtype=np.int64)
    exponent[extreme] = -np.round(np.log2(peak[extreme])).astype(np.int64)
    data = A.data[: A.indptr[-1]] * np.repeat(np.ldexp(1.0, exponent), counts)  # a new array
    return scipy.sparse.csc_matrix((data, A.indices[: A.indptr[-1]].copy(), A.indptr.copy()),
                                   shape=A.shape)  # fmt: skip


MAX_GSIG = 250.0
"""Largest accepted ``gSig`` (px): a crop window of half-width ``4 * gSig + 1 = 1001`` px.

Real values are 2-20 px (a few tens at very high zoom); anything near this bound is a
mistake (a diameter in um, a unit error, a placeholder such as ``1e9``). A fixed bound,
not one relative to the FOV, so that small crops of a large recording (and synthetic test
FOVs) still take the recording's ``gSig``. It also bounds memory whatever the value: one
crop window is then at most 2006 x 2006 float32 (16 MB) and the resampling table
64 x 50 x 2006 (26 MB), where ``gSig = 1e9`` asked for tens of GB."""


def check_gsig(gSig, n_dims: int = 2) -> float | None:
    """Return ``gSig`` (scalar or per-axis sequence) as one float in ``(0, MAX_GSIG]``.

    The one check of ``gSig`` that every path uses (:func:`~calcomp_caiman.evidence.patches.resolve_gsig`,
    :func:`~calcomp_caiman.extract_patches`, :func:`~calcomp_caiman.classify_footprints`,
    :func:`~calcomp_caiman.evaluate_components_4class`, ``calcomp classify`` and
    ``reprocess``); it runs before anything is allocated.

    Returns
    -------
    float or None
        The mean of the first two values; ``None`` for ``None`` (estimate it instead).

    Raises
    ------
    GsigError
        (a ``ValueError``) A value is not a number, not finite, not positive or above ``MAX_GSIG``.
    """
    if gSig is None:
        return None
    allowed = (
        f"gSig (the half-size of a typical neuron, px) must be in (0, {MAX_GSIG:g}] px, "
        f"i.e. a crop half-width 4*gSig+1 of at most {4 * MAX_GSIG + 1:g} px"
    )
    try:
        values = np.ravel(np.asarray(gSig, dtype=float))
    except (TypeError, ValueError):
        raise GsigError(f"{allowed}; got {gSig!r}, which is not numbers.") from None
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        shown = ", ".join(f"{v:g}" for v in values) or "nothing"
        raise GsigError(f"{allowed}; got {shown}.")
    if np.any(values > MAX_GSIG):
        shown = ", ".join(f"{v:g}" for v in values)
        raise GsigError(
            f"{allowed}; got {shown}. Typical values are 2-20 px: give the neuron half-size "
            f"in pixels, not a diameter or a size in um."
        )
    return float(np.mean(values[:2]))
