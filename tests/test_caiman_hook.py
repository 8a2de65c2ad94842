from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse
from conftest import disk_footprints

from calcomp_caiman import evaluate_components_4class

CENTRES = [(r, c) for r in (10, 32, 54) for c in (12, 40, 68)]


def make_estimates(n_frames=20):
    A = scipy.sparse.csc_matrix(disk_footprints(centres=CENTRES))
    n = A.shape[1]
    C = np.arange(n * n_frames, dtype=float).reshape(n, n_frames)
    est = SimpleNamespace(A=A, C=C, dims=(64, 80), cnn_preds=None)
    est.SNR_comp = np.linspace(0, 10, n)
    est.r_values = np.linspace(-0.5, 1, n)
    return est


def test_fields_written_and_consistent(tiny_model):
    est = evaluate_components_4class(make_estimates(), model=tiny_model)
    n = len(CENTRES)
    assert est.class_probs.shape == (n, 4) and est.class_labels.shape == (n,)
    assert est.cnn_preds.ndim == 1 and len(est.cnn_preds) == n
    assert sorted(np.concatenate([est.idx_components, est.idx_components_bad])) == list(range(n))
    np.testing.assert_array_equal(est.class_fingerprint[:, 0], np.diff(est.A.indptr))


def test_use_metrics_ands_caiman_rule(tiny_model):
    est = make_estimates()
    params = {"quality": {"min_SNR": 5.0, "rval_thr": 0.9, "SNR_lowest": 0.0, "rval_lowest": -1}}
    evaluate_components_4class(est, params, model=tiny_model, min_prob=0.0, use_metrics=True)
    expected = np.flatnonzero((est.SNR_comp >= 5.0) | (est.r_values >= 0.9))
    np.testing.assert_array_equal(est.idx_components, expected)
    with pytest.raises(ValueError, match="evaluate_components"):
        evaluate_components_4class(SimpleNamespace(A=est.A, dims=est.dims), use_metrics=True,
                                   model=tiny_model)  # fmt: skip


def test_duck_typed_object_and_dims_from_params(tiny_model):
    A = disk_footprints(centres=CENTRES)
    est = evaluate_components_4class(
        SimpleNamespace(A=A, dims=None), {"data": {"dims": (64, 80)}, "init": {"gSig": (4, 4)}},
        model=tiny_model,
    )  # fmt: skip
    assert est.class_probs.shape == (len(CENTRES), 4)


def test_caiman_params_object_is_read_with_get(tiny_model):
    class Params:  # CaImAn's CNMFParams.get(group, key)
        def get(self, group, key):
            return {"init": {"gSig": [4, 4]}, "data": {"dims": (64, 80)}}[group][key]

    est = evaluate_components_4class(make_estimates(), Params(), model=tiny_model)
    assert est.class_probs.shape == (len(CENTRES), 4)


def test_bad_input_leaves_estimates_unchanged(tiny_model):
    est = make_estimates()
    est.A = est.A.tolil()
    est.A[0, 0] = np.nan
    est.A = est.A.tocsc()
    before = dict(vars(est))
    with pytest.raises(ValueError, match="NaN"):
        evaluate_components_4class(est, model=tiny_model)
    assert vars(est).keys() == before.keys() and est.cnn_preds is None
    with pytest.raises(TypeError, match="A"):
        evaluate_components_4class(SimpleNamespace(dims=(4, 4)), model=tiny_model)
