"""Tests of calcomp_caiman.evidence.order_stats: row order statistics from one sort, equal to the
bit to NumPy's ``median`` and ``percentile``."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from calcomp_caiman.evidence.evidence import Evidence
from calcomp_caiman.evidence.features import evidence_features, feature_names
from calcomp_caiman.evidence.order_stats import mad_noise, sorted_median, sorted_percentile


def _rows(kind: str, seed: int, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows, frames = int(rng.integers(1, 30)), int(rng.integers(1, 50))
    x = rng.standard_normal((rows, frames))
    if kind == "ties":
        x = np.round(x * 2)
    elif kind == "zeros":  # a flat trace, and traces mostly at rest
        x[0] = 0.0
        x[rng.random(x.shape) < 0.5] = 0.0
    elif kind == "nan":
        x[rng.random(x.shape) < 0.05] = np.nan
    return x.astype(dtype)


KINDS = ("normal", "ties", "zeros", "nan")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_sorted_statistics_equal_numpys_to_the_bit(kind, dtype):
    for seed in range(25):
        x = _rows(kind, seed, dtype)
        ordered = np.sort(x, axis=1)
        median = sorted_median(ordered)
        assert median.dtype == np.median(x, axis=1).dtype
        np.testing.assert_array_equal(median, np.median(x, axis=1))
        for q in ([50, 99], [0, 100], [12.5, 33.3, 66.7]):
            expected = np.percentile(x, q, axis=1)
            found = sorted_percentile(ordered, q)
            assert found.dtype == expected.dtype and found.shape == expected.shape
            np.testing.assert_array_equal(found, expected)


@pytest.mark.parametrize("kind", KINDS)
def test_mad_noise_equals_the_median_formula(kind):
    for seed in range(25):
        x = _rows(kind, seed)
        if x.shape[1] < 2:
            continue
        diff = np.diff(x, axis=1)
        centred = diff - np.median(diff, axis=1, keepdims=True)
        expected = np.median(np.abs(centred), axis=1) / (0.6745 * np.sqrt(2.0))
        np.testing.assert_array_equal(mad_noise(diff.copy()), expected)


def test_cn_peak_reads_the_last_of_tied_largest_entries():
    dims = (6, 6)
    A = np.zeros((36, 3))
    A[[2, 7, 20], 0] = [0.5, 1.0, 1.0]  # a tie: the later stored entry (pixel 20) counts
    A[[4, 5], 1] = [2.0, 1.0]
    cn = np.arange(36, dtype=np.float64).reshape(dims, order="F") / 36  # Cn at pixel p: p / 36
    ev = Evidence.build(scipy.sparse.csc_matrix(A), dims, Cn=cn)
    features = evidence_features(ev, ev.A, dims, 1.0)
    peak = features[:, feature_names().index("cn_peak")]
    np.testing.assert_allclose(peak, [20 / 36, 4 / 36, 0.0], atol=1e-7)
