"""Tests of calcomp_caiman.research.train_branches: model v3 trained on labelled results.

A tiny model v3 (widths (4, 8), 2 epochs) is trained here through the one ``train`` entry
on simulated results laid out as the data recipe writes them and on real-mask archives
(``labelled_data``), then saved, loaded and used by ``classify``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from labelled_data import write_archive, write_results_folder

from calcomp_caiman import CalcompModel
from calcomp_caiman.classify import classify, classify_evidence
from calcomp_caiman.evidence import Evidence
from calcomp_caiman.evidence.channels import CHANNELS
from calcomp_caiman.research.caiman_files import write_caiman_file
from calcomp_caiman.research.labelled_results import load_real_masks, load_simulated, split
from calcomp_caiman.research.simulate import simulate_session
from calcomp_caiman.research.train import train
from calcomp_caiman.research.train_branches import augment_channels, load_hybrid_results
from calcomp_caiman.research.train_v3_head import choose_min_prob
from calcomp_caiman.research.v3_inputs import UNLABELLED, V3Settings, source_weights

TINY = V3Settings(widths=(4, 8), blocks=(1, 1), epochs=2, temporal_hidden=4,
                  head_grid=((4, 1e-2), (8, 1e-3)), copies=1)  # fmt: skip


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    root = tmp_path_factory.mktemp("v3data")
    simulated = load_simulated(write_results_folder(root / "sim"))
    (root / "real").mkdir()
    for k in range(3):
        write_archive(root / "real" / f"v{k}.npz", per_class=3, seed=k, video=f"v{k}")
    return simulated + load_real_masks(root / "real", {"lab/v2"})


@pytest.fixture(scope="module")
def trained(items):
    train_set, val, test = split(items, {"lab/v1"}, {"lab/v2"})
    assert {i.source for i in val} == {"simulated", "real"}
    model, history = train(train_set, val, v3_settings=TINY, name="tiny_v3", seed=3)
    return model, history, test


@pytest.mark.slow
def test_tiny_v3_trains_saves_loads_and_classifies(trained, tmp_path):
    model, history, test = trained
    assert model.version == 3 and model.name == "tiny_v3" and model.config["seed"] == 3
    assert model.channel_names == CHANNELS and model.config["training"]["seed"] == 3
    assert len(history["image_branch"]["loss"]) == 2
    assert {c["hidden"] for c in history["head"]["candidates"]} == {4, 8}
    assert 0 < model.thresholds["min_prob"] < 1 and model.thresholds["accept"] == ["neuron"]
    assert {"temperature", "temperature_without_traces"} <= set(model.thresholds)
    report = history["min_prob_report"]  # the cut: on the results with traces only
    assert set(report) == {"simulated", "feasible"}
    if report["feasible"]:  # the cut keeps >= 95 % of the neurons of every source
        assert report["simulated"]["recall"] >= 0.95
    # masks (no traces) reach the same cut through a shift of their neuron logit
    shift = model.thresholds["neuron_shift_without_traces"]
    assert history["neuron_shift_without_traces"] == shift and -3 <= shift <= 3
    if history["neuron_shift_report"]["feasible"]:
        assert min(history["neuron_shift_report"]["recall"]) >= 0.95
    loaded = CalcompModel.load(model.save(tmp_path / "tiny_v3"))
    assert json.loads((tmp_path / "tiny_v3" / "config.json").read_text())["version"] == 3
    for item in test:
        probs = classify_evidence(item.evidence, loaded)
        assert probs.shape == (item.evidence.n, 4)
        np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-6)
        np.testing.assert_array_equal(probs, classify_evidence(item.evidence, model))
    # any subset of the evidence works, a mean image included
    sim = next(i for i in test if i.source == "simulated").evidence
    image = np.asarray(sim.A.sum(axis=1)).reshape(sim.dims, order="F") + 5.0
    with_image = Evidence.build(sim.A, sim.dims, traces=sim.traces, image=image)
    for evidence in (with_image, sim.without("traces"), sim.without("neighbours")):
        record = classify(evidence, loaded)
        np.testing.assert_allclose(record.fields["class_probs"].sum(axis=1), 1, atol=1e-6)


def test_source_weights_balance_sources_and_classes():
    labels = np.array([1, 1, 1, 3, 0, 1, UNLABELLED])
    sources = np.array(["sim"] * 4 + ["real"] * 3)
    w = source_weights(labels, sources)
    assert w[-1] == 0
    assert w[sources == "sim"].sum() == pytest.approx(w[sources == "real"].sum())
    assert w[:3].sum() == pytest.approx(w[3])


def test_min_prob_keeps_the_neurons_of_every_source():
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(40, int), np.full(40, 3), np.ones(20, int), np.full(20, 0)]
    sources = np.r_[np.full(80, "sim"), np.full(40, "real")]
    p = np.where(labels == 1, rng.uniform(0.6, 1.0, 120), rng.uniform(0.0, 0.5, 120))
    p[80:100] = rng.uniform(0.2, 0.7, 20)  # the real neurons sit lower: the scale moved
    probs = np.zeros((120, 4))
    probs[:, 0] = p
    cut, report = choose_min_prob(probs, labels, sources, recall_target=0.95)
    assert report["feasible"] and report["real"]["recall"] >= 0.95
    assert report["sim"]["recall"] >= 0.95 and cut <= np.sort(p[80:100])[1]
    # a cut chosen on the simulated source alone would drop real neurons
    alone, _ = choose_min_prob(probs[:80], labels[:80], sources[:80])
    assert alone > cut


def test_augmentation_turns_all_channels_together_and_drops_optional_ones():
    rng = np.random.default_rng(0)
    base = rng.random((64, 8, 8, 1)).astype(np.float32)
    stack = np.repeat(base, 4, axis=3)  # four identical channels
    out = augment_channels(stack, rng, channel_dropout=0.5)
    assert (out[..., 0] > 0).all()  # the footprint is never dropped
    kept = out[..., 1:].any(axis=(1, 2))
    assert 0.3 < kept.mean() < 0.7
    for c in range(1, 4):  # a kept channel is turned exactly as the footprint
        rows = kept[:, c - 1]
        np.testing.assert_array_equal(out[rows, :, :, c], out[rows, :, :, 0])


def test_hybrid_results_leave_the_recordings_own_cells_unlabelled(tmp_path):
    folder = tmp_path / "hybrid" / "rec_a"
    folder.mkdir(parents=True)
    session = simulate_session(n_components=(5, 2, 3, 1), n_frames=120, seed=2)
    write_caiman_file(folder / "f0_s00001_cnmf.hdf5", A=session.A, C=session.C,
                      dims=session.dims, gSig=(4, 4))  # fmt: skip
    labels = session.labels.copy()
    labels[:2] = 0  # hybrid labels: 0 = on the recording's own cells
    np.savez(folder / "f0_s00001_labels.npz", cnmf_labels=labels, held_out=np.array(True))
    (item,) = load_hybrid_results(tmp_path / "hybrid")
    assert item.source == "hybrid" and item.held_out and item.group == "rec_a/f0_s00001"
    assert (item.labels[:2] == UNLABELLED).all()
    np.testing.assert_array_equal(item.labels[2:], session.labels[2:])
