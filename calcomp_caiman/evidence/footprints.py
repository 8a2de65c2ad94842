"""Facts of the footprints themselves: their fingerprint (to match rows after a CaImAn
selection) and bit flags of odd but valid footprints."""

from __future__ import annotations

import numpy as np
import scipy.sparse

from calcomp_caiman.checks import check_footprints
from calcomp_caiman.schema import FLAG_EMPTY, FLAG_NEGATIVE

__all__ = ["footprint_fingerprint", "footprint_flags", "flags_of_checked", "match_fingerprints"]


def footprint_fingerprint(A) -> np.ndarray:
    """Per-column summary of ``A`` that identifies a component after any selection.

    Parameters
    ----------
    A : (pixels, N) scipy sparse matrix or ndarray
        Footprints as CaImAn holds them (before any projection or clipping).

    Returns
    -------
    (N, 3) float64 ndarray
        Number of non-zeros, sum of values, and sum of value x (pixel index + 1) of each
        column. CaImAn's selection, saving and loading keep a column's values, so a
        column keeps its fingerprint; two different footprints practically never share one.

    Examples
    --------
    >>> import numpy as np
    >>> footprint_fingerprint(np.array([[1.0, 0.0], [2.0, 3.0]])).tolist()
    [[2.0, 3.0, 5.0], [1.0, 3.0, 6.0]]
    """
    A = scipy.sparse.csc_matrix(A)
    counts = np.diff(A.indptr)
    values = A.data.astype(np.float64)
    columns = np.repeat(np.arange(A.shape[1]), counts)
    sums = np.bincount(columns, weights=values, minlength=A.shape[1])
    moments = np.bincount(columns, weights=values * (A.indices + 1.0), minlength=A.shape[1])
    return np.column_stack([counts.astype(np.float64), sums, moments])


def match_fingerprints(stored, current) -> np.ndarray | None:
    """Which stored row belongs to each current column, by :func:`footprint_fingerprint`.

    Parameters
    ----------
    stored : (M, 3) array
        Fingerprints of the classified components (``class_fingerprint``), in any order,
        possibly more of them than there are columns now.
    current : (N, 3) array
        Fingerprints of ``A`` as it is now (after a selection, a restore, ``load_CNMF``).

    Returns
    -------
    (N,) int64 ndarray or None
        Row of ``stored`` for each column; a row is used at most once (identical
        footprints take their rows in order). None when a column matches no row: ``A``
        changed since it was classified.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.array([[1.0, 0.0, 2.0], [2.0, 3.0, 0.0]])
    >>> match_fingerprints(footprint_fingerprint(A), footprint_fingerprint(A[:, [2, 0]]))
    array([2, 0])
    >>> match_fingerprints(footprint_fingerprint(A), footprint_fingerprint(2 * A)) is None
    True
    """
    stored = np.asarray(stored, dtype=np.float64).reshape(-1, 3)
    current = np.asarray(current, dtype=np.float64).reshape(-1, 3)
    if len(current) and not len(stored):
        return None
    # relative rounding: float32 and float64 copies of one column agree to ~1e-7
    scale = np.maximum(np.abs(stored).max(axis=0, initial=0.0), 1.0)
    free: dict[tuple, list[int]] = {}
    for row, key in enumerate(map(tuple, np.round(stored / scale, 9))):
        free.setdefault(key, []).append(row)
    rows = []
    for key in map(tuple, np.round(current / scale, 9)):
        candidates = free.get(key)
        if not candidates:
            return None
        rows.append(candidates.pop(0))
    return np.asarray(rows, dtype=np.int64)


def footprint_flags(A, dims) -> np.ndarray:
    """Per-component bit flags of odd but valid footprints.

    Returns
    -------
    (N,) uint8 ndarray
        ``FLAG_EMPTY`` for an all-zero (or all non-positive) footprint, ``FLAG_NEGATIVE``
        where negative values were present.
    """
    A, _ = check_footprints(A, dims)
    return flags_of_checked(A)


def flags_of_checked(A: scipy.sparse.csc_matrix) -> np.ndarray:
    """:func:`footprint_flags` of footprints checked already (``Evidence.A``)."""
    column = np.repeat(np.arange(A.shape[1]), np.diff(A.indptr))
    positive = np.bincount(column, weights=A.data > 0, minlength=A.shape[1])
    negative = np.bincount(column, weights=A.data < 0, minlength=A.shape[1])
    flags = np.zeros(A.shape[1], dtype=np.uint8)
    flags[positive == 0] |= FLAG_EMPTY
    flags[negative > 0] |= FLAG_NEGATIVE
    return flags
