"""Order statistics of each row (medians, percentiles, the MAD), from one sort per array.

``np.median`` and ``np.percentile`` partition their input again on every call, twice the
work where two middle values are asked for (an even length); a chunk of traces asks for
several order statistics of the same rows. NumPy's vectorised sort of a row costs about
one partition and gives them all: :func:`sorted_median` and :func:`sorted_percentile`
read them from the sorted rows, equal to the bit to ``np.median(x, axis=1)`` and
``np.percentile(x, q, axis=1)`` (a row with a NaN gives NaN, as there).
"""

from __future__ import annotations

import numpy as np

__all__ = ["mad_noise", "sorted_median", "sorted_percentile"]

MAD_TO_SD = 0.6745 * np.sqrt(2.0)
"""MAD of the first differences of Gaussian noise of SD 1."""


def _nan_rows(ordered: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` (..., N), NaN where a row holds a NaN (NumPy sorts NaN last)."""
    last = ordered[:, -1]
    return np.where(np.isnan(last), last, values)


def sorted_median(ordered: np.ndarray) -> np.ndarray:
    """``np.median(x, axis=1)`` of the rows ``x`` whose sort along axis 1 is ``ordered``.

    Parameters
    ----------
    ordered : (N, T) float ndarray
        ``np.sort(x, axis=1)``, ``T >= 1``.

    Returns
    -------
    (N,) ndarray
        Of ``ordered``'s dtype (the mean of the two middle values for an even ``T``).

    Examples
    --------
    >>> x = np.array([[3.0, 1.0, 2.0, 10.0], [np.nan, 1.0, 2.0, 3.0]], np.float32)
    >>> sorted_median(np.sort(x, axis=1))
    array([2.5, nan], dtype=float32)
    """
    half = ordered.shape[1] // 2
    first = half if ordered.shape[1] % 2 else half - 1
    return _nan_rows(ordered, ordered[:, first : half + 1].mean(axis=1))


def sorted_percentile(ordered: np.ndarray, q) -> np.ndarray:
    """``np.percentile(x, q, axis=1)`` (linear interpolation) from ``ordered``.

    Parameters
    ----------
    ordered : (N, T) float ndarray
        ``np.sort(x, axis=1)``, ``T >= 1``.
    q : sequence of float
        Percentiles, 0 to 100.

    Returns
    -------
    (len(q), N) float64 ndarray

    Examples
    --------
    >>> x = np.arange(11, dtype=np.float32)[::-1][None]
    >>> sorted_percentile(np.sort(x, axis=1), [50, 99])
    array([[5. ],
           [9.9]])
    """
    count = ordered.shape[1]
    virtual = (count - 1) * np.true_divide(np.asarray(q, dtype=np.float64), 100)
    low = np.minimum(np.floor(virtual), count - 1)
    gamma = (virtual - low)[:, None]
    low = low.astype(np.intp)
    below, above = ordered[:, low].T, ordered[:, np.minimum(low + 1, count - 1)].T
    step = above - below
    # NumPy's _lerp: from the nearer end, in float64
    values = np.where(gamma >= 0.5, above - step * (1 - gamma), below + step * gamma)
    return _nan_rows(ordered, values)


def mad_noise(diff: np.ndarray) -> np.ndarray:
    """Noise SD of each row from its first differences: their MAD / (0.6745 sqrt 2).

    Equal to ``median(|d - median(d)|) / (0.6745 * sqrt(2))`` with ``np.median`` along
    axis 1; ``diff`` is sorted and overwritten (in place).

    Parameters
    ----------
    diff : (N, T) float ndarray
        First differences of each row (a scratch array: its values are lost).

    Returns
    -------
    (N,) ndarray

    Examples
    --------
    >>> diff = np.array([[1.0, -1.0, 0.0, 2.0, -2.0]])
    >>> float(mad_noise(diff)[0] * MAD_TO_SD)
    1.0
    """
    diff.sort(axis=1)
    diff -= sorted_median(diff)[:, None]
    np.abs(diff, out=diff)
    diff.sort(axis=1)  # |d - m| of sorted d: falling then rising, sorts fast
    return sorted_median(diff) / MAD_TO_SD
