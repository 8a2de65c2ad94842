import logging
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse
from conftest import disk_footprints

from calcomp_caiman import align_classes, attach_classes, evaluate_components_4class
from calcomp_caiman.evidence.footprints import footprint_fingerprint
from calcomp_caiman.schema import SELECTION_FIELDS as FOUR_CLASS_FIELDS

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


# ------------------------------------------------------------ realigning after a selection


def classified(tiny_model):
    est = evaluate_components_4class(make_estimates(), model=tiny_model)
    return est, {name: getattr(est, name).copy() for name in FOUR_CLASS_FIELDS}


def test_align_follows_a_selection_made_elsewhere(tiny_model):
    est, before = classified(tiny_model)
    assert type(est) is SimpleNamespace  # the object keeps its class
    keep, dropped = [5, 0, 3], [1, 2, 4, 6, 7, 8]
    est.discarded_components = SimpleNamespace(A=est.A[:, dropped])
    est.A = est.A[:, keep]
    align_classes(est)
    for name, values in before.items():
        np.testing.assert_array_equal(getattr(est, name), values[keep])
        np.testing.assert_array_equal(getattr(est.discarded_components, name), values[dropped])
    # a restore (kept first, then discarded), aligned again: every row back with its column
    est.A = scipy.sparse.hstack([est.A, est.discarded_components.A]).tocsc()
    est.discarded_components.A = None
    align_classes(align_classes(est))
    for name, values in before.items():
        np.testing.assert_array_equal(getattr(est, name), values[keep + dropped])
        assert getattr(est.discarded_components, name) is None


def test_align_with_discarded_components_as_a_dict(tiny_model):
    est, before = classified(tiny_model)
    est.discarded_components = {"A": est.A[:, [0]]}  # as load_OnlineCNMF leaves it
    est.A = est.A[:, [1, 2]]
    align_classes(est)
    np.testing.assert_array_equal(est.class_probs, before["class_probs"][[1, 2]])
    np.testing.assert_array_equal(
        est.discarded_components["class_probs"], before["class_probs"][[0]]
    )


def test_align_refuses_changed_footprints_and_changes_nothing(tiny_model):
    est, before = classified(tiny_model)
    est.A = est.A[:, [0, 1]] * 2.0  # e.g. after refit
    with pytest.raises(ValueError, match="evaluate_components_4class"):
        align_classes(est)
    np.testing.assert_array_equal(est.class_probs, before["class_probs"])
    with pytest.raises(ValueError, match="no four-class classification"):
        align_classes(make_estimates())


def test_align_keeps_rows_without_fingerprint_when_the_count_fits(tiny_model, caplog):
    est, before = classified(tiny_model)
    del est.class_fingerprint  # written by calcomp 0.1.0
    with caplog.at_level(logging.WARNING, logger="calcomp_caiman"):
        align_classes(est)
    assert "cannot be checked" in caplog.text
    np.testing.assert_array_equal(est.class_probs, before["class_probs"])


def test_attach_classes_is_the_deprecated_name(tiny_model):
    est, _ = classified(tiny_model)
    est.A = est.A[:, [3]]
    with pytest.warns(DeprecationWarning, match="align_classes"):
        attach_classes(est)
    assert len(est.class_probs) == 1


def test_classify_after_a_selection_classifies_the_discarded_too(tiny_model):
    est = make_estimates()
    est.discarded_components = SimpleNamespace(A=est.A[:, [7, 8]])
    est.A, est.C = est.A[:, :7], est.C[:7]
    est.SNR_comp, est.r_values = est.SNR_comp[:7], est.r_values[:7]
    evaluate_components_4class(est, model=tiny_model)
    assert est.class_probs.shape == (7, 4)
    assert est.discarded_components.class_probs.shape == (2, 4)
    np.testing.assert_array_equal(
        est.discarded_components.class_fingerprint,
        footprint_fingerprint(est.discarded_components.A),
    )
    # a later restore brings back one classified row per restored column
    est.A = scipy.sparse.hstack([est.A, est.discarded_components.A]).tocsc()
    est.discarded_components.A = None
    assert align_classes(est).class_probs.shape == (9, 4)
