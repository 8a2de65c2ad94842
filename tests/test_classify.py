import numpy as np
import pytest
import scipy.sparse
from conftest import disk_footprints

from calcomp_caiman import CLASSES, accept_components, classify_footprints
from calcomp_caiman.classify import classification_fields
from calcomp_caiman.evidence import Evidence
from calcomp_caiman.evidence.footprints import footprint_flags
from calcomp_caiman.evidence.patches import footprints_for
from calcomp_caiman.model.inputs import model_inputs
from calcomp_caiman.schema import FLAG_EMPTY, FLAG_NEGATIVE


def test_probabilities_shape_and_rows_sum_to_one(tiny_model):
    A = disk_footprints(centres=[(30, 40), (10, 10), (50, 70)])
    probs = classify_footprints(scipy.sparse.csc_matrix(A), (64, 80), model=tiny_model, gSig=4)
    assert probs.shape == (3, 4) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_chunked_equals_whole(tiny_model, monkeypatch):
    A = disk_footprints(centres=[(r, c) for r in (10, 30, 50) for c in (10, 40, 70)])
    whole = classify_footprints(A, (64, 80), model=tiny_model, gSig=4)
    monkeypatch.setattr("calcomp_caiman.model.inputs.COMPONENTS_PER_CHUNK", 2)
    evidence = Evidence.build(A, (64, 80), gSig=4)
    found = footprints_for(evidence, tiny_model.scale_rule)
    chunks = list(model_inputs(evidence, tiny_model, found, features=True))
    assert [(c.rows.start, c.rows.stop) for c in chunks] == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 9)]
    assert [len(c.patches) for c in chunks] == [len(c.features) for c in chunks] == [2, 2, 2, 2, 1]
    np.testing.assert_allclose(classify_footprints(A, (64, 80), model=tiny_model, gSig=4), whole)


def test_empty_component_is_noise_and_flagged(tiny_model):
    A = disk_footprints(centres=[(30, 40), (10, 10)])
    A[:, 1] = 0
    A[:4, 0] = -1
    probs = classify_footprints(A, (64, 80), model=tiny_model)
    assert probs[1].tolist() == [0, 0, 1, 0]
    flags = footprint_flags(A, (64, 80))
    assert flags[1] & FLAG_EMPTY and flags[0] & FLAG_NEGATIVE and not flags[0] & FLAG_EMPTY


def test_zero_components(tiny_model):
    assert classify_footprints(np.zeros((64 * 80, 0)), (64, 80), model=tiny_model).shape == (0, 4)
    fields = classification_fields(np.zeros((0, 4), np.float32))
    assert all(len(v) == 0 for v in fields.values())


def test_acceptance_rules():
    probs = np.array([[0.6, 0.1, 0.2, 0.1], [0.2, 0.5, 0.2, 0.1], [0.4, 0.0, 0.1, 0.5]], np.float32)
    assert accept_components(probs).tolist() == [True, False, False]
    assert accept_components(probs, accept=("neuron", "doubtful")).tolist() == [True, False, True]
    assert accept_components(probs, min_prob=0.35).tolist() == [True, False, True]
    with pytest.raises(ValueError, match="accept"):
        accept_components(probs, accept=("cell",))
    with pytest.raises(ValueError, match="min_prob"):
        accept_components(probs, min_prob=2)


def test_classification_fields_are_consistent():
    probs = np.random.default_rng(0).dirichlet(np.ones(4), size=50).astype(np.float32)
    keep = np.arange(50) % 3 != 0
    fields = classification_fields(probs, keep=keep)
    assert set(fields) == {"class_probs", "class_labels", "class_flags", "cnn_preds",
                           "idx_components", "idx_components_bad"}  # fmt: skip
    both = np.concatenate([fields["idx_components"], fields["idx_components_bad"]])
    assert sorted(both.tolist()) == list(range(50))
    np.testing.assert_array_equal(fields["cnn_preds"], probs[:, CLASSES.index("neuron")])
    np.testing.assert_array_equal(fields["class_labels"], probs.argmax(1) + 1)
    assert not np.isin(np.flatnonzero(~keep), fields["idx_components"]).any()
