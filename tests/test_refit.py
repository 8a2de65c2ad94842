"""Few-label adaptation (issue 21): what few labels can carry (class biases, temperature,
acceptance cut) below 30 labels, the head from there on, and never a refit that was not
applied."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from calcomp_caiman import CalcompModel
from calcomp_caiman.classify import accept_components, acceptance_rule, classify_evidence
from calcomp_caiman.io.caiman_h5 import read_evidence
from calcomp_caiman.model.head import Calibration, calibrated_log_probs, fit_calibration
from calcomp_caiman.refit import (
    HEAD_LABELS,
    LEVELS,
    LabelledInputs,
    labelled_inputs,
    refit,
    refit_inputs,
)
from calcomp_caiman.refit_calibration import calibrated_model, fit_cut
from calcomp_caiman.schema import CLASSES, label_masks

DEMO = Path(str(resources.files("calcomp_caiman.data") / "demo_caiman_sim.hdf5"))


@pytest.fixture(scope="module")
def demo():
    """The default model (a v3), the demo result (traces) and what its head reads."""
    model = CalcompModel.load()
    evidence = read_evidence(DEMO)
    return model, evidence, labelled_inputs(model, evidence, np.arange(evidence.n))


@pytest.fixture(scope="module")
def masks(demo):
    """The demo's footprints without traces (masks): the neuron shift applies to them."""
    model, evidence, _ = demo
    evidence = evidence.without("traces")
    return evidence, labelled_inputs(model, evidence, np.arange(evidence.n))


def _refit_rows(model, x: LabelledInputs, labels, **options):
    return refit_inputs(model, x.logits, x.features, labels, profiles=x.profiles,
                        presence=x.presence, **options)  # fmt: skip


def test_calibration_is_what_the_saved_model_computes(demo, masks, tmp_path):
    model, evidence, x = demo
    calibration = Calibration(np.array([1.0, -0.5, 0.2, -0.7]), 1.7)
    new = calibrated_model(model, calibration, min_prob=0.3, name="cal")
    saved = CalcompModel.load(new.save(tmp_path / "cal"))
    for ev, inputs, key in ((evidence, x, "temperature"), (*masks, "temperature_without_traces")):
        log_p = np.log(inputs.probs(model).astype(np.float64))
        temperature = np.full(ev.n, model.thresholds[key])
        expected = np.exp(calibrated_log_probs(log_p, temperature, calibration))
        np.testing.assert_allclose(inputs.probs(saved), expected, atol=2e-5)
        np.testing.assert_allclose(classify_evidence(ev, saved), expected, atol=2e-5)
    assert saved.thresholds["min_prob"] == 0.3
    assert saved.thresholds["temperature"] == pytest.approx(1.7 * model.thresholds["temperature"])
    assert saved.thresholds["temperature_without_traces"] == pytest.approx(
        1.7 * model.thresholds["temperature_without_traces"]
    )
    assert saved.thresholds["neuron_shift_without_traces"] == pytest.approx(
        model.thresholds["neuron_shift_without_traces"] / 1.7
    )


def test_a_refit_keeps_the_neuron_shift_of_masks(demo, masks, tmp_path):
    """Labels of components without traces: the calibration is fitted on the
    probabilities the model gives them (their temperature, the neuron shift), and the
    refitted folder, saved and loaded, still shifts them."""
    model, _, _ = demo
    evidence, x = masks
    shift = model.thresholds["neuron_shift_without_traces"]
    assert shift > 0
    probs = x.probs(model)
    neurons = np.flatnonzero(probs.argmax(axis=1) == 0)[:12]
    assert len(neurons) == 12
    labels = np.full(12, CLASSES.index("noise") + 1)
    new, report = refit(model, [evidence], [labels], [neurons], level="calibration")
    assert report["level"] == "calibration" and report["applied"], report["summary"]
    saved = CalcompModel.load(new.save(tmp_path / "refit"))
    factor = saved.thresholds["temperature"] / model.thresholds["temperature"]
    assert saved.thresholds["neuron_shift_without_traces"] == pytest.approx(shift / factor)
    log_p = np.log(probs[neurons].astype(np.float64))
    temperature = np.full(12, model.thresholds["temperature_without_traces"])
    expected = fit_calibration(log_p, temperature, label_masks(labels).astype(bool))
    assert factor == pytest.approx(expected.factor, rel=1e-6)
    np.testing.assert_allclose(saved.head.b2 - model.head.b2, expected.biases, atol=1e-5)
    np.testing.assert_allclose(classify_evidence(evidence, saved), x.probs(new), atol=1e-6)
    # the head level keeps it as it is; without the shift the saved model would differ
    doubtful = np.where(probs.argmax(axis=1) == 0, 4, probs.argmax(axis=1) + 1)
    head, report = _refit_rows(model, x, doubtful, level="head", anchor=1.0)
    assert report["level"] == "head" and report["applied"], report["summary"]
    reloaded = CalcompModel.load(head.save(tmp_path / "head"))
    assert reloaded.thresholds["neuron_shift_without_traces"] == shift
    unshifted = reloaded.with_thresholds(neuron_shift_without_traces=0.0)
    assert not np.allclose(x.probs(reloaded), x.probs(unshifted), atol=1e-3)


def test_the_prior_pulls_towards_no_change():
    log_p = np.log(np.tile([[0.6, 0.2, 0.1, 0.1]], (40, 1)))
    allowed = np.eye(4, dtype=bool)[np.full(40, 2)]  # every label: noise
    few = fit_calibration(log_p[:3], np.ones(3), allowed[:3])
    many = fit_calibration(log_p, np.ones(40), allowed)
    assert 0 < few.biases[2] < many.biases[2]  # more labels, further from no change
    none = fit_calibration(log_p[:0], np.ones(0), allowed[:0])
    assert none.is_identity
    assert abs(float(few.biases.sum())) < 1e-9  # one constant on every bias changes nothing


def test_the_cut_moves_as_far_as_the_decisions_agree():
    p = np.linspace(0.05, 0.95, 19)
    stricter = p >= 0.7
    assert 0.45 < fit_cut(p[::6], stricter[::6], 0.45) < fit_cut(p, stricter, 0.45) <= 0.7
    assert fit_cut(p, p >= 0.45, 0.45) == pytest.approx(0.45, abs=0.06)


def test_few_labels_calibrate_and_say_so(demo, tmp_path):
    model, evidence, x = demo
    before = x.probs(model)
    neurons = np.flatnonzero(before.argmax(axis=1) == 0)[:12]
    assert len(neurons) == 12
    csv = tmp_path / "labels.csv"
    csv.write_text("file,component,label\n" + "".join(f"d.hdf5,{k},noise\n" for k in neurons))
    new, report = refit(model, [evidence], [["noise"] * 12], [neurons], labels_file=csv)
    assert report["level"] == "calibration" and report["applied"]
    assert report["summary"] == LEVELS["calibration"] == "calibration: class biases + temperature + cut"  # fmt: skip
    assert report["validation"] == "cross-validated (5 folds)" and report["held_out"] == 0
    assert report["calibration"]["biases"]["noise"] > 0.5  # the lab's noise is likelier
    assert report["calibration"]["temperature_factor"] > 1  # and the model less sure
    assert report["agreement"]["before"] == 0.0 and report["after"] >= report["before"]
    after = x.probs(new)
    rule = acceptance_rule(new)
    assert not accept_components(after[neurons], accept=rule.accept, min_prob=rule.min_prob).any()
    assert accept_components(before[neurons], min_prob=model.thresholds["min_prob"]).all()
    changed = report["changed"]
    assert changed["components"] == evidence.n
    assert changed["class"] == int((after.argmax(axis=1) != before.argmax(axis=1)).sum()) > 0
    assert changed["acceptance"] > 0
    assert new.name == f"{model.name}-refit" and new.config["refit_level"] == "calibration"
    assert new.config["labels_file"]["count"] == 12
    assert new.thresholds["min_prob_fit"]["method"] == "penalised likelihood"
    assert report["min_prob"]["before"] == model.thresholds["min_prob"]
    assert report["min_prob"]["after"] == new.thresholds["min_prob"]


def test_a_refit_that_does_not_help_is_not_applied(demo):
    """Labels that carry nothing the model lacks (drawn from its own probabilities):
    the model comes back unchanged, and the report says why."""
    model, evidence, x = demo
    probs = x.probs(model).astype(np.float64)
    rng = np.random.default_rng(7)
    kept = 0
    for _ in range(4):
        rows = rng.choice(evidence.n, size=10, replace=False)
        labels = np.array([rng.choice(4, p=p / p.sum()) + 1 for p in probs[rows]])
        new, report = _refit_rows(model, x.take(rows), labels)
        if report["applied"]:
            assert new is not model and report["summary"] == LEVELS[report["level"]]
            continue
        kept += 1
        assert new is model and report["level"] == "none" and report["calibration"] is None
        assert report["summary"].startswith("none (kept: calibration did not improve")
        assert report["after"] == report["before"]
        assert report["agreement"]["after"] == report["agreement"]["before"]
        assert report["min_prob"]["after"] == report["min_prob"]["before"]
    assert kept >= 1


def test_many_labels_try_the_head_on_held_out_files(demo):
    model, evidence, x = demo
    other = read_evidence(DEMO)
    n = evidence.n
    labels = x.probs(model).argmax(axis=1) + 1
    labels[labels == 1] = 4  # this lab calls the model's neurons doubtful
    new, report = refit(model, [evidence, other], [labels, labels], [np.arange(n), np.arange(n)])
    assert report["labels"] == 2 * n >= HEAD_LABELS
    assert report["validation"] == f"held out: {n} labels" and report["held_out"] == n
    assert report["level"] in ("calibration", "head") and report["applied"]
    assert report["after"] > report["before"]
    assert (x.probs(new).argmax(axis=1) == 3).sum() > (labels == 4).sum() // 2
    forced, forced_report = _refit_rows(model, x.take(np.arange(10)), labels[:10], level="head")
    assert forced_report["validation"].startswith("held out")


def test_more_labels_keep_what_fewer_carried(demo):
    """From 30 labels on, a calibration that cross-validation over every label supports
    stays applied unless the head is clearly better on held-out files: here one file of
    three (held out by the split) agrees with the model and two do not; judged on that
    file alone, every refit would lose and the lab would get nothing."""
    model, evidence, x = demo
    neurons = np.flatnonzero(x.probs(model).argmax(axis=1) == 0)[:12]
    labels = [["noise"] * 12, ["noise"] * 12, ["neuron"] * 12]
    new, report = refit(model, [evidence] * 3, labels, [neurons] * 3, seed=0)
    assert report["level"] == "calibration" and report["applied"] and new is not model
    assert report["validation"] == (
        "cross-validated (5 folds); the head was not clearly better on 12 held-out labels"
    )
    assert report["held_out"] == 12 and report["after"] > report["before"]


def test_refit_checks_its_arguments(demo):
    model, evidence, x = demo
    with pytest.raises(ValueError, match="at least 5"):
        _refit_rows(model, x.take(np.arange(4)), np.ones(4, int))
    with pytest.raises(ValueError, match="level must be"):
        _refit_rows(model, x.take(np.arange(8)), np.ones(8, int), level="all")
    with pytest.raises(ValueError, match="8 labels but 7 logits"):
        y = x.take(np.arange(8))
        refit_inputs(model, y.logits[:7], y.features, np.ones(8, int), profiles=y.profiles,
                     presence=y.presence)  # fmt: skip
    with pytest.raises(ValueError, match="component indices"):
        refit(model, [evidence], [np.ones(6, int)], [np.arange(6) + evidence.n])


def test_non_neuron_labels_allow_process_or_noise(demo):
    model, evidence, x = demo
    rows = np.arange(12)
    new, report = _refit_rows(model, x.take(rows), np.zeros(12, int))
    top = x.take(rows).probs(new).argmax(axis=1)
    either = np.isin(top, [CLASSES.index("process"), CLASSES.index("noise")])
    assert report["agreement"]["after"] == float(either.mean())
    assert label_masks([0]).tolist() == [[0.0, 1.0, 1.0, 0.0]]
