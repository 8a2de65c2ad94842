"""Tests of calcomp_caiman.research.metrics: AUC, precision at recall, F1, calibration, input checks."""

import json

import numpy as np
import pytest

from calcomp_caiman import CLASSES
from calcomp_caiman.research.metrics import evaluation_metrics, roc_auc, selection_scores


def one_hot_probs(predicted, confidence=0.97):
    """Rows with ``confidence`` on the predicted column (0-based) and the rest spread evenly."""
    predicted = np.asarray(predicted)
    probs = np.full((len(predicted), 4), (1 - confidence) / 3)
    probs[np.arange(len(predicted)), predicted] = confidence
    return probs


def test_auc_by_hand_with_ties():
    # pairs (pos, neg): (.9,.5) 1, (.9,.1) 1, (.5,.5) 1/2 twice, (.5,.1) 1 twice -> 5/6
    assert roc_auc([0.9, 0.5, 0.5, 0.5, 0.1], [1, 1, 1, 0, 0]) == pytest.approx(5 / 6)
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 60).astype(float)
    positive = rng.random(60) < 0.4
    pos, neg = scores[positive], scores[~positive]
    brute = np.mean((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None]))
    assert roc_auc(scores, positive) == pytest.approx(brute)
    assert roc_auc([0.1, 0.2], [True, True]) is None


def test_perfect_and_constant_predictors():
    labels = np.array([1, 1, 1, 0, 0, 2, 3, 4])
    perfect = one_hot_probs(np.where(labels == 0, 1, np.maximum(labels - 1, 0)))
    metrics = evaluation_metrics(perfect, labels)
    assert metrics["auc_neuron_vs_non_neuron"] == 1.0
    assert metrics["precision_at_recall_90"] == 1.0
    assert metrics["set_accuracy"] == 1.0
    constant = np.full((len(labels), 4), 0.25)
    metrics = evaluation_metrics(constant, labels)
    assert metrics["auc_neuron_vs_non_neuron"] == 0.5
    assert metrics["auc_neuron_vs_rest"] == 0.5
    # one threshold: everything predicted neuron; 3 of the 7 non-doubtful are neurons
    assert metrics["precision_at_recall_90"] == pytest.approx(3 / 7)


def test_auc_leaves_doubtful_out_but_rest_counts_it():
    labels = np.array([1, 1, 0, 0, 4, 4])
    probs = one_hot_probs([0, 0, 1, 1, 0, 0], confidence=0.5)
    probs[:, 0] = [0.9, 0.8, 0.1, 0.2, 0.95, 0.85]
    metrics = evaluation_metrics(probs, labels)
    assert metrics["auc_neuron_vs_non_neuron"] == 1.0
    # neurons (0.9, 0.8) vs doubtful (0.95, 0.85) and non_neuron (0.1, 0.2): 3 + 2 of 8 pairs
    assert metrics["auc_neuron_vs_rest"] == pytest.approx(5 / 8)


def test_precision_at_recall_by_hand():
    # scores descending: pos, neg, pos x8, neg, pos -> recall 0.9 first reached at the 10th
    positive = np.array([1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1], bool)
    probs = np.full((12, 4), 0.0)
    probs[:, 0] = np.linspace(0.99, 0.5, 12)
    probs[:, 2] = 1 - probs[:, 0]
    labels = np.where(positive, 1, 3)
    metrics = evaluation_metrics(probs, labels)
    assert metrics["precision_at_recall_90"] == pytest.approx(9 / 10)
    assert metrics["neuron_vs_non_neuron"]["threshold_at_recall"] == pytest.approx(probs[9, 0])


def test_macro_f1_on_known_confusion_matrix():
    matrix = np.array([[5, 1, 0, 0], [2, 3, 0, 1], [0, 0, 4, 0], [1, 0, 0, 2]])
    true, pred = [], []
    for (i, j), count in np.ndenumerate(matrix):
        true += [i + 1] * count
        pred += [j] * count
    metrics = evaluation_metrics(one_hot_probs(pred), np.array(true))
    summary = metrics["four_class"]
    assert summary["confusion"] == matrix.tolist()
    expected_f1 = [10 / 14, 6 / 10, 1.0, 4 / 6]  # 2 tp / (support + predicted)
    assert [summary["f1"][c] for c in CLASSES] == pytest.approx(expected_f1)
    assert summary["macro_f1"] == pytest.approx(np.mean(expected_f1))
    assert summary["precision"]["neuron"] == pytest.approx(5 / 8)
    assert summary["recall"]["process"] == pytest.approx(3 / 6)
    assert summary["accuracy"] == pytest.approx(14 / 19)


def test_non_neuron_counts_process_or_noise_as_correct():
    labels = np.array([0, 0, 0, 1])
    probs = one_hot_probs([1, 2, 0, 0])  # process, noise, neuron, neuron
    metrics = evaluation_metrics(probs, labels)
    assert metrics["set_accuracy"] == 0.75
    assert metrics["three_way"]["confusion"] == [[1, 0, 0], [0, 0, 0], [1, 0, 2]]
    assert metrics["four_class"]["n"] == 1  # only the neuron has a 4-class label
    assert metrics["counts"]["non_neuron"] == 3 and metrics["counts"]["total"] == 4
    # macro-F1 only over classes present among the labels
    assert metrics["four_class"]["macro_f1"] == 1.0
    assert metrics["four_class"]["recall"]["process"] is None
    # all four predictions at confidence 0.97, three correct -> ECE |0.75 - 0.97|
    assert metrics["calibration"]["ece"] == pytest.approx(0.22)
    # P(process) + P(noise) wins the 3-way view even when neither wins alone
    split = np.array([[0.4, 0.35, 0.25, 0.0]])
    assert evaluation_metrics(split, [0])["three_way"]["confusion"][2][2] == 1


def test_ece_calibrated_vs_overconfident():
    rng = np.random.default_rng(0)
    n = 20000
    confidence = rng.uniform(0.3, 1.0, n)
    predicted = rng.integers(0, 4, n)
    probs = np.tile(((1 - confidence) / 3)[:, None], (1, 4))
    probs[np.arange(n), predicted] = confidence
    correct = rng.random(n) < confidence
    labels = np.where(correct, predicted + 1, (predicted + 1) % 4 + 1)
    calibrated = evaluation_metrics(probs, labels)["calibration"]
    assert calibrated["ece"] < 0.02
    assert calibrated["n"] == n and sum(calibrated["bins"]["count"]) == n
    coin = np.where(rng.random(n) < 0.5, predicted + 1, (predicted + 1) % 4 + 1)
    overconfident = evaluation_metrics(one_hot_probs(predicted, 0.99), coin)["calibration"]
    assert overconfident["ece"] > 0.4


def test_metrics_are_json_ready_and_empty_input_is_fine():
    metrics = evaluation_metrics(np.zeros((0, 4)), np.zeros(0, np.int64))
    assert metrics["counts"]["total"] == 0
    assert metrics["auc_neuron_vs_non_neuron"] is None and metrics["calibration"]["ece"] is None
    json.dumps(metrics, allow_nan=False)
    probs = np.random.default_rng(1).dirichlet(np.ones(4), 50)
    labels = np.random.default_rng(2).integers(0, 5, 50)
    json.dumps(evaluation_metrics(probs, labels), allow_nan=False)
    names = ["neuron", "non_neuron", "doubtful"]
    assert evaluation_metrics(probs[:3], names)["counts"]["doubtful"] == 1


def test_metrics_reject_bad_inputs():
    with pytest.raises(ValueError, match="probs"):
        evaluation_metrics(np.zeros((3, 3)), [1, 2, 3])
    with pytest.raises(ValueError, match="codes 0-4"):
        evaluation_metrics(np.zeros((2, 4)), [1, 7])
    with pytest.raises(ValueError, match="labels"):
        evaluation_metrics(np.zeros((2, 4)), [1])


def test_metrics_agree_with_scikit_learn():
    """Our NumPy metrics against sklearn.metrics on random 4-class predictions."""
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(7)
    probs = rng.dirichlet(np.ones(4), 500)
    labels = rng.integers(1, 5, 500)
    ours = evaluation_metrics(probs, labels)
    predicted = probs.argmax(axis=1) + 1
    assert ours["four_class"]["macro_f1"] == pytest.approx(
        sklearn_metrics.f1_score(labels, predicted, average="macro")
    )
    assert ours["four_class"]["accuracy"] == pytest.approx(
        sklearn_metrics.accuracy_score(labels, predicted)
    )
    for i, name in enumerate(CLASSES):
        assert ours["four_class"]["precision"][name] == pytest.approx(
            sklearn_metrics.precision_score(labels, predicted, labels=[i + 1], average="macro")
        )
    assert ours["auc_neuron_vs_rest"] == pytest.approx(
        sklearn_metrics.roc_auc_score(labels == 1, probs[:, 0])
    )
    assert roc_auc(probs[:, 0], labels == 1) == pytest.approx(
        sklearn_metrics.roc_auc_score(labels == 1, probs[:, 0])
    )


def test_selection_scores_of_an_accepted_set():
    labels = np.array([1, 1, 1, 3, 3, 2, 0, 4])
    accepted = np.array([True, True, False, True, False, False, False, True])
    scores = selection_scores(accepted, labels)
    assert scores["accepted"] == 4 and scores["noise_rejected"] == 0.5
    assert scores["non_neuron_rejected"] == pytest.approx(3 / 4)  # labels 3, 3, 2, 0
    assert scores["accepted_precision"] == 0.5 and scores["accepted_recall"] == pytest.approx(2 / 3)
    assert scores["accepted_f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    none = selection_scores(np.zeros(2, bool), np.array([1, 4]))
    assert none["noise_rejected"] is None and none["accepted_f1"] == 0.0
