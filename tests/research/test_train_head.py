"""Tests of calcomp_caiman.research.train_head: missing-evidence rows, the head, its cut.

On a tiny folder laid out as the data recipe writes it (``labelled_data.write_results_folder``).
"""

from __future__ import annotations

import numpy as np
import pytest
from labelled_data import write_results_folder

from calcomp_caiman import CalcompModel
from calcomp_caiman.evidence.features import group_columns
from calcomp_caiman.research.labelled_results import load_simulated, result_inputs, split
from calcomp_caiman.research.train_head import (
    fit_min_prob,
    head_shell,
    train_head,
    training_rows,
)


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    return load_simulated(write_results_folder(tmp_path_factory.mktemp("simdata")))


def test_training_rows_drop_evidence_and_balance(items):
    shell = head_shell(CalcompModel.load("calcomp_resnet_v1"))
    inputs = [result_inputs(shell, i) for i in items]
    rows, allowed, weights = training_rows(
        [x.logits for x in inputs],
        [x.features for x in inputs],
        items,
        copies=3,
        p_drop=0.5,
        seed=0,
    )
    n = sum(i.evidence.n for i in items)
    assert len(rows) == 4 * n  # each result once with all evidence, three times with drops
    traces = 4 + group_columns()["traces"]  # head inputs: 4 log-probabilities first
    dropped = rows[:, traces[-1]] == 0
    assert 0.2 < dropped.mean() < 0.6  # about half of the copies lost their traces
    codes = np.concatenate([i.labels for i in items for _ in range(4)])
    per_class = [weights[codes == c].sum() for c in (1, 2, 3, 4)]
    np.testing.assert_allclose(per_class, per_class[0], rtol=1e-6)  # classes balanced


def test_min_prob_maximises_accepted_f1():
    probs = np.zeros((6, 4))
    probs[:, 0] = [0.9, 0.8, 0.45, 0.4, 0.1, 0.05]
    labels = np.array([1, 1, 1, 3, 3, 4])
    cut, f1 = fit_min_prob(probs, labels)
    assert 0.4 < cut <= 0.45 and f1 == pytest.approx(1.0)


def test_train_head_picks_the_lowest_validation_nll(items):
    network = CalcompModel.load("calcomp_resnet_v1")
    train, val, _ = split(items, set(), set())
    shell = head_shell(network)
    assert shell.scale_rule == "footprints" and shell.weights is network.weights
    inputs = {id(i): result_inputs(shell, i) for i in train + val}
    model, history = train_head(network, train, val, inputs=inputs, grid=((4, 1e-2), (8, 1e-3)),
                                record={"name": "tiny_v2"})  # fmt: skip
    scores = [c["validation_nll"] for c in history["candidates"]]
    best = history["candidates"][int(np.argmin(scores))]
    assert (history["hidden"], history["l2"]) == (best["hidden"], best["l2"])
    assert model.name == "tiny_v2" and model.thresholds["accept"] == ["neuron"]
    assert model.thresholds["temperature"] == history["temperatures"]["temperature"]
    # the same inputs computed here give the same model
    again, _ = train_head(network, train, val, grid=((4, 1e-2), (8, 1e-3)),
                          record={"name": "tiny_v2"})  # fmt: skip
    assert again.weights.keys() == model.weights.keys() and again.thresholds == model.thresholds
    for key, value in model.weights.items():
        np.testing.assert_array_equal(again.weights[key], value)
