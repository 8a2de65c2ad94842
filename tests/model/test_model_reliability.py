"""Reliability map (calcomp_caiman.model.reliability): signals, expected error, flag, file."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
from conftest import disk_footprints

from calcomp_caiman import CalcompModel
from calcomp_caiman.classify import classify, classify_with_embedding
from calcomp_caiman.errors import InvalidFileError
from calcomp_caiman.evidence import Evidence
from calcomp_caiman.model.ood import find_ood_reference
from calcomp_caiman.model.reliability import (
    RELIABILITY_FILE,
    SIGNALS,
    BranchOutputs,
    ReliabilityMap,
    assess,
    file_signals,
    find_reliability,
    load_reliability,
    save_reliability,
)

CENTRES = tuple((r, c) for r in (12, 30, 48) for c in (12, 30, 48, 66))


def _evidence(seed=0, *, traces=True, source="lab.hdf5"):
    """12 disks with transient traces and a correlation image."""
    rng = np.random.default_rng(seed)
    A = disk_footprints((64, 80), CENTRES, radius=4.0)
    frames = 300
    C = np.zeros((A.shape[1], frames))
    for row in C:
        spikes = rng.random(frames) < 0.02
        row[:] = np.convolve(spikes.astype(float), np.exp(-np.arange(30) / 6.0))[:frames]
    Cn = np.clip(A.sum(axis=1).reshape(64, 80, order="F") * 0.6 + rng.normal(0, 0.05, (64, 80)), -1, 1)  # fmt: skip
    extra = {"C": C, "YrA": rng.normal(0, 0.1, C.shape), "frame_rate": 10.0} if traces else {}
    return Evidence.build(A, (64, 80), Cn=Cn, gSig=4, source=source, **extra)


def _signals(model, evidence, **options):
    outputs = BranchOutputs(model, evidence.n)
    probs, embedding = classify_with_embedding(evidence, model, observe=outputs.add)
    return file_signals(model, evidence, probs, embedding, outputs, **options)


def _entropy_map(model, *, coefficient, baseline=0.1) -> ReliabilityMap:
    """A map that reads the entropy alone (expected error = coefficient * (entropy - 0.5) + baseline)."""  # fmt: skip
    return ReliabilityMap(("entropy",), (0.5,), (1.0,), (coefficient,), baseline, baseline,
                          model_sha256=model.sha256)  # fmt: skip


def test_random_v3_signals_read_both_branches_and_every_group(random_v3):
    evidence = _evidence()
    signals = _signals(random_v3, evidence, quantiles={"log_area": [100.0, 101.0]})
    assert sorted(signals) == sorted(SIGNALS)
    assert np.isnan(signals["ood"])  # no ood.npz for a random network
    assert 0 < signals["branch_disagreement"] <= 1
    assert 0 < signals["temporal_disagreement"] <= 1  # traces: the temporal branch speaks
    assert signals["shift_shape"] == 0.5  # every area below the reference's range
    assert signals["absent_evidence"] == pytest.approx(0.2)  # metrics absent
    assert 0 < signals["entropy"] <= 1
    no_traces = _signals(random_v3, _evidence(traces=False))
    assert no_traces["temporal_disagreement"] == 0.0
    assert no_traces["absent_evidence"] == pytest.approx(0.4)


def test_bundled_v2_signals_include_the_ood_score_and_dropped_evidence():
    model = CalcompModel.load("calcomp_v2")
    evidence = _evidence()
    signals = _signals(model, evidence, ood_reference=find_ood_reference(model))
    assert np.isfinite(signals["ood"]) and signals["ood"] > 0
    assert signals["temporal_disagreement"] == 0.0 and signals["branch_disagreement"] > 0
    assert signals["dropped_evidence"] == 0
    wrong = Evidence.build(evidence.A, evidence.dims, Cn=10 * evidence.Cn, source="x.hdf5")
    assert _signals(model, wrong)["dropped_evidence"] == 1


def test_no_components_give_nan_and_no_flag(random_v3):
    empty = Evidence.build(np.zeros((64 * 80, 0)), (64, 80))
    signals = _signals(random_v3, empty)
    assert all(np.isnan(v) for v in signals.values())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = assess(signals, _entropy_map(random_v3, coefficient=5.0))
    assert not result.flag and np.isnan(result.expected_error)


def test_round_trip_and_malformed_file(tmp_path, random_v3):
    reliability = ReliabilityMap(
        ("ood", "entropy"), (1.0, 0.4), (0.1, 0.2), (0.0, 0.3), 0.2, 0.18,
        {"log_area": [0.0, 1.0, 2.0]}, "abc", 0.15, {"fit_files": 3},
    )  # fmt: skip
    path = save_reliability(reliability, tmp_path)
    assert path.name == RELIABILITY_FILE
    assert load_reliability(tmp_path) == reliability
    assert json.loads(path.read_text())["error"].startswith("1 - 4-class accuracy")
    path.write_text(json.dumps({"signals": ["nonsense"]}))
    with pytest.raises(InvalidFileError, match="not a reliability map"):
        load_reliability(path)
    with pytest.raises(FileNotFoundError):
        load_reliability(tmp_path / "none")


def test_map_of_other_weights_is_not_used(tmp_path, random_v3):
    folder = random_v3.save(tmp_path / "lab")
    model = CalcompModel.load(folder)
    assert model.folder == folder
    save_reliability(_entropy_map(model, coefficient=1.0), folder)
    assert find_reliability(model) is not None
    save_reliability(dataclasses.replace(_entropy_map(model, coefficient=1.0), model_sha256="0" * 64), folder)  # fmt: skip
    assert find_reliability(model) is None
    assert find_reliability(random_v3) is None  # made in memory, no bundled map fits


def test_classify_warns_from_the_map_with_advice(tmp_path, random_v3):
    folder = random_v3.save(tmp_path / "lab")
    model = CalcompModel.load(folder)
    evidence = _evidence(source="lab.hdf5")
    save_reliability(_entropy_map(model, coefficient=0.0), folder)  # in distribution
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = classify(evidence, model)
    assert quiet.provenance["expected_error"] == pytest.approx(0.1)
    save_reliability(_entropy_map(model, coefficient=5.0), folder)  # far above
    pattern = (r"lab\.hdf5: the classes may be unreliable here: expected error 1\.00 "
               r"\(0\.10 on the training data of random_v3\); label ~12 components with "
               r"`calcomp curate lab\.hdf5` and refit")  # fmt: skip
    with pytest.warns(UserWarning, match=pattern):
        record = classify(evidence, model)
    assert record.provenance["expected_error"] == 1.0
    np.testing.assert_array_equal(record.probs, quiet.probs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        classify(evidence, model, ood=False)  # no score asked: no warning
