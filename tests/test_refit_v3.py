"""Refit of a model v3 (issues 20/21): the refit reads what classifying reads (image and
temporal branches' outputs, channels' presence, features), its calibration and head levels
work as for a model v2, and the refitted folder loads, classifies and records its labels.
Random weights (tests/conftest.py ``random_v3``): plumbing, not accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from calcomp_caiman import CalcompModel
from calcomp_caiman.classify import classify_evidence
from calcomp_caiman.evidence import Evidence
from calcomp_caiman.evidence.transients import SAMPLES
from calcomp_caiman.refit import HEAD_L2, concatenate_inputs, labelled_inputs, refit, refit_inputs
from calcomp_caiman.research.simulate import simulate_session


def _evidence(session, *, images: bool = True, traces: bool = True) -> Evidence:
    """As tests/model/test_model_v3.py builds it: ``Cn``, a mean image, traces."""
    rng = np.random.default_rng(0)
    total = np.asarray(session.A.sum(axis=1)).reshape(session.dims, order="F")
    extra = {"Cn": np.clip(total / total.max(), 0, 1), "image": 10 + total} if images else {}
    if traces:
        extra.update(C=session.C, YrA=rng.normal(0, 0.05, session.C.shape), frame_rate=20.0)
    return Evidence.build(session.A, session.dims, **extra)


@pytest.fixture(scope="module")
def sessions():
    return [simulate_session(n_components=(10, 3, 5, 3), n_frames=300, seed=s) for s in (11, 12)]


@pytest.fixture(scope="module")
def evidences(sessions):
    return [_evidence(s) for s in sessions]


def _not_head(model: CalcompModel) -> dict:
    return {k: v for k, v in model.weights.items() if not k.startswith("head/")}


def _same_branches(a: CalcompModel, b: CalcompModel) -> bool:
    """The image network and the temporal branch are the same arrays."""
    x, y = _not_head(a), _not_head(b)
    return x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)


@pytest.mark.parametrize("kinds", [{}, {"images": False}, {"traces": False}])
def test_the_refit_reads_what_classify_reads(random_v3, sessions, kinds):
    evidence = _evidence(sessions[0], **kinds)
    x = labelled_inputs(random_v3, evidence, np.arange(evidence.n))
    assert x.profiles.shape == (evidence.n, 2, SAMPLES) and x.presence.shape == (evidence.n, 3)
    assert x.presence[:, 0].all()  # the neighbours' channel: there in every case
    assert x.presence[:, 1:].all() == ("images" not in kinds)  # Cn, the mean image
    expected = classify_evidence(evidence, random_v3)
    np.testing.assert_allclose(x.probs(random_v3), expected, atol=1e-6)
    # the head as a refit would start from it: the same probabilities
    unchanged = random_v3.with_head(random_v3.head)
    np.testing.assert_allclose(x.probs(unchanged), expected, atol=1e-6)
    some = labelled_inputs(random_v3, evidence, np.array([4, 0, 2]))
    for part, whole in zip(some, x.take([4, 0, 2])):
        np.testing.assert_array_equal(part, whole)


def test_a_model_v3_refit_needs_its_profiles_and_presence(random_v3, evidences):
    x = labelled_inputs(random_v3, evidences[0], np.arange(8))
    with pytest.raises(ValueError, match="model v3: pass the profiles and presence"):
        refit_inputs(random_v3, x.logits, x.features, np.full(8, 3))
    with pytest.raises(ValueError, match="8 labels but"):
        refit_inputs(random_v3, x.logits, x.features, np.full(8, 3), profiles=x.profiles[:7],
                     presence=x.presence)  # fmt: skip


def _least_likely(model, evidence, k: int) -> tuple[np.ndarray, str]:
    """The ``k`` components least likely of the class the model gives least probability:
    labels of that class carry what the model lacks."""
    probs = classify_evidence(evidence, model)
    rare = int(probs.mean(axis=0).argmin())
    return np.argsort(probs[:, rare])[:k], ("neuron", "process", "noise", "doubtful")[rare]


def test_few_labels_calibrate_a_model_v3(random_v3, evidences, tmp_path):
    base = random_v3.with_thresholds(accept=["neuron"], min_prob=0.5)
    evidence = evidences[0]
    components, name = _least_likely(base, evidence, 12)
    csv = tmp_path / "labels.csv"
    csv.write_text("file,component,label\n" + "".join(f"x.hdf5,{k},{name}\n" for k in components))
    new, report = refit(base, [evidence], [[name] * 12], [components], labels_file=csv)
    assert report["level"] == "calibration" and report["applied"], report["summary"]
    assert report["validation"] == "cross-validated (5 folds)"
    factor = report["calibration"]["temperature_factor"]
    biases = [report["calibration"]["biases"][c] for c in ("neuron", "process", "noise", "doubtful")]  # fmt: skip
    np.testing.assert_allclose(new.head.b2 - base.head.b2, biases, atol=1e-4)
    assert new.thresholds["temperature"] == pytest.approx(1.3 * factor, abs=1e-3)
    assert new.thresholds["temperature_without_traces"] == pytest.approx(0.8 * factor, abs=1e-3)
    assert new.thresholds["min_prob_fit"]["labels"] == 12  # the cut, fitted on the labels
    assert report["min_prob"] == {"before": 0.5, "after": new.thresholds["min_prob"]}
    assert _same_branches(new, base) and report["changed"]["components"] == evidence.n
    saved = CalcompModel.load(new.save(tmp_path / "calibrated"))
    assert saved.version == 3 and saved.config["refit_level"] == "calibration"
    assert saved.config["refit_labels"] == 12 and saved.config["labels_file"]["count"] == 12
    assert saved.config["refit_from"].startswith("random_v3 (")
    x = labelled_inputs(saved, evidence, np.arange(evidence.n))
    np.testing.assert_allclose(classify_evidence(evidence, saved), x.probs(new), atol=1e-6)
    assert not np.allclose(x.probs(new), x.probs(base), atol=1e-3)


def test_many_labels_refit_the_head_of_a_model_v3(
    random_v3, sessions, evidences, tmp_path, monkeypatch
):
    import calcomp_caiman.refit as refit_module

    penalties = []

    def spy(*args, **kwargs):
        penalties.append(kwargs["l2"])
        return fit_head(*args, **kwargs)

    fit_head = refit_module.fit_head
    monkeypatch.setattr(refit_module, "fit_head", spy)
    labels = [s.labels for s in sessions]
    components = [np.arange(e.n) for e in evidences]
    new, report = refit(random_v3, evidences, labels, components, level="head")
    assert report["level"] == "head" and report["applied"], report["summary"]
    assert report["held_out"] == evidences[1].n and report["after"] > report["before"]
    assert penalties and set(penalties) == {HEAD_L2}  # random_v3 records no fusion_head
    assert new.head.w1.shape == random_v3.head.w1.shape  # same inputs, same hidden size
    assert not np.allclose(new.head.w1, random_v3.head.w1) and _same_branches(new, random_v3)
    saved = CalcompModel.load(new.save(tmp_path / "head"))
    assert saved.config["refit_level"] == "head" and saved.config["refit_labels"] == 42
    for evidence in evidences:
        x = labelled_inputs(saved, evidence, np.arange(evidence.n))
        np.testing.assert_allclose(classify_evidence(evidence, saved), x.probs(new), atol=1e-6)
    # a model that records its head's training: the refit uses that l2
    penalties.clear()
    recorded = random_v3.with_head(random_v3.head, fusion_head={"hidden": 5, "l2": 0.05})
    x = concatenate_inputs([labelled_inputs(recorded, e, np.arange(e.n)) for e in evidences])
    refit_inputs(recorded, x.logits, x.features, np.concatenate(labels), profiles=x.profiles,
                 presence=x.presence, level="head", anchor=0.01)  # fmt: skip
    assert penalties and set(penalties) == {0.05}
