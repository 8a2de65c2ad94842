"""Model v2's training and report code on a tiny folder laid out as the data recipe writes it.

The results here are written by ``write_caiman_file`` from simulated sessions (not by
CaImAn: ``tests/test_real_caiman_sim.py`` runs the real pipeline); the layout, split,
missing-evidence rows, acceptance cut and report are what is tested.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from calcomp_caiman import CalcompModel
from calcomp_caiman.evidence.features import group_columns
from calcomp_caiman.research import evaluate_v2, train_v2
from calcomp_caiman.research.caiman_files import write_caiman_file
from calcomp_caiman.research.simulate import simulate_session


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("simdata")
    presets = {"train_a": [1, 2, 3], "heldout_b": [9]}
    for preset, seeds in presets.items():
        (root / preset).mkdir()
        for seed in seeds:
            session = simulate_session(n_components=(12, 4, 6, 3), n_frames=200, seed=seed)
            rng = np.random.default_rng(seed)
            residual = rng.normal(0, 0.05, session.C.shape)
            write_caiman_file(
                root / preset / f"s{seed:05d}_cnmf.hdf5", A=session.A, C=session.C,
                YrA=residual, dims=session.dims, gSig=(4, 4),
                extra_estimates={"SNR_comp": rng.random(len(session.labels)) * 5,
                                 "r_values": rng.random(len(session.labels)),
                                 "idx_components": np.arange(0, len(session.labels), 2)},
            )  # fmt: skip
            np.savez(
                root / preset / f"s{seed:05d}_labels.npz",
                cnmf_labels=session.labels,
                cnmf_caiman_accepted=np.arange(len(session.labels)) % 2 == 0,
            )
    manifest = {"held_out_presets": ["heldout_b"]}
    (root / "MANIFEST.json").write_text(json.dumps(manifest))
    return root


def test_load_and_split_by_whole_movie(folder):
    items = train_v2.load_simulated(folder)
    assert len(items) == 4 and all(i.evidence.traces is not None for i in items)
    train, val, test = train_v2.split(items, set(), set())
    assert [i.group for i in test] == ["heldout_b/s00009"]
    assert [i.group for i in val] == ["train_a/s00003"]  # the highest seed of a preset
    assert sorted(i.group for i in train) == ["train_a/s00001", "train_a/s00002"]
    assert test[0].held_out and not any(i.held_out for i in train + val)


def test_training_rows_drop_evidence_and_balance(folder):
    items = train_v2.load_simulated(folder)
    shell = CalcompModel.load("calcomp_resnet_v1")
    inputs = [train_v2.result_inputs(shell, i) for i in items]
    rows, allowed, weights = train_v2.training_rows(
        [z for z, _ in inputs], [f for _, f in inputs], items, copies=3, p_drop=0.5, seed=0
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
    cut, f1 = train_v2.fit_min_prob(probs, labels)
    assert 0.4 < cut <= 0.45 and f1 == pytest.approx(1.0)


def test_report_has_every_row(folder):
    items = train_v2.load_simulated(folder)
    train, val, test = train_v2.split(items, set(), set())
    shell = CalcompModel.load("calcomp_resnet_v1")
    inputs = [train_v2.result_inputs(shell, i) for i in train]
    rows, allowed, weights = train_v2.training_rows(
        [z for z, _ in inputs], [f for _, f in inputs], train
    )
    head = train_v2.fit_v2_head(rows, allowed, weights, hidden=8, max_iter=50)
    model = CalcompModel(shell.weights, {**shell.config, "scale_rule": "footprints"}, {})
    model = model.with_head(head, name="tiny_v2")
    report = evaluate_v2.run_report(model, shell, train, val, test, cnn_baseline=False)
    methods = report["sets"]["simulated_heldout_cnmf"]["methods"]
    assert set(methods) >= {"v2", "v2-no-traces", "v2-shape-only", "v1", "shape-features",
                            "caiman-rule"}  # fmt: skip
    rule = methods["caiman-rule"]["selection"]
    assert rule["accepted"] == len(range(0, test[0].evidence.n, 2))
    assert "| v2 |" in evaluate_v2.summary_table(report)
