"""Fitting the reliability map (calcomp_caiman.research.reliability_fit) on tiny tables."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import disk_footprints

from calcomp_caiman.evidence import Evidence
from calcomp_caiman.model.reliability import SIGNALS, ReliabilityMap
from calcomp_caiman.research.reliability_fit import (
    CORRUPTIONS,
    FileObservation,
    corrupt,
    fit_reliability,
    held_out_report,
    measured_error,
    observe_file,
    plot_reliability,
    signal_table,
)
from calcomp_caiman.research.v3_inputs import UNLABELLED


def _table(n, seed, *, variant_share=0.5):
    """Files whose error grows with ``shift_image`` and the entropy; ``ood`` is noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        corrupted = rng.random() < variant_share
        shift = rng.uniform(0.2, 0.5) if corrupted else rng.uniform(0.0, 0.1)
        entropy = rng.uniform(0.3, 0.6)
        error = np.clip(0.1 + 1.2 * shift + 0.3 * (entropy - 0.45) + rng.normal(0, 0.02), 0, 1)
        rows.append({"file": f"f{i}", "group": f"g{i % 6}", "variant": "cn_scaled" if corrupted else "none",
                     "fit": True, "error": float(error), "shift_image": shift, "entropy": entropy,
                     "ood": rng.normal(1.0, 0.1), "dropped_evidence": 0.0})  # fmt: skip
    return rows


def test_fit_ranks_held_out_files_and_flags_the_shifted_ones():
    reliability = fit_reliability(
        _table(80, 0), quantiles={"log_area": [0.0, 1.0]}, model_sha256="x"
    )
    weights = dict(zip(reliability.signals, reliability.coefficients))
    assert weights["shift_image"] > weights["entropy"] > 0
    assert weights["ood"] < 0.01 and weights["dropped_evidence"] == 0  # noise, constant
    assert all(c >= 0 for c in reliability.coefficients)  # monotone
    assert 0.1 < reliability.in_distribution_error < 0.25
    assert reliability.quantiles == {"log_area": [0.0, 1.0]} and reliability.model_sha256 == "x"
    held = [dict(r, fit=False) for r in _table(40, 1)]
    report = held_out_report(held, reliability)
    assert report["spearman"] > 0.8
    assert report["clean_flagged"] == 0
    assert report["high_error_flagged"] >= 0.8 * report["high_error_files"] > 0
    assert report["by_variant"]["cn_scaled"]["flagged"] == len(report["flagged"])


def test_fit_needs_files_with_errors():
    with pytest.raises(ValueError, match="at least 3 files"):
        fit_reliability([{"error": float("nan"), "entropy": 0.3}] * 5)


def test_measured_error_leaves_unlabelled_out():
    probs = np.eye(4)[[0, 1, 2, 3]]
    assert measured_error(probs, np.array([1, 0, 0, 1])) == 0.25  # non_neuron: process or noise
    assert measured_error(probs, np.array([1, UNLABELLED, UNLABELLED, 4])) == 0.0
    assert np.isnan(measured_error(probs, np.full(4, UNLABELLED)))


def _evidence():
    rng = np.random.default_rng(0)
    centres = tuple((r, c) for r in (15, 35) for c in (15, 35, 55))
    A = np.concatenate([disk_footprints((50, 70), [centre], radius=3.0 + k * 0.5)
                        for k, centre in enumerate(centres)], axis=1)  # fmt: skip
    C = np.maximum(rng.normal(0, 1, (len(centres), 200)), 0)
    Cn = np.clip(A.sum(axis=1).reshape(50, 70, order="F") * 0.5, -1, 1)
    return Evidence.build(A, (50, 70), C=C, YrA=rng.normal(0, 0.1, C.shape), Cn=Cn, gSig=4,
                          frame_rate=10.0, source="f.hdf5")  # fmt: skip


def test_corruptions_change_what_they_name():
    evidence = _evidence()
    for name in CORRUPTIONS:
        wrong = corrupt(evidence, name)
        assert wrong.n == evidence.n and wrong.source == "f.hdf5"
    assert "Cn" in corrupt(evidence, "cn_times_10").dropped
    assert corrupt(evidence, "cn_scaled").Cn.max() == pytest.approx(0.3 * evidence.Cn.max())
    blurred = corrupt(evidence, "footprints_blurred").A
    assert (np.diff(blurred.indptr) > np.diff(evidence.A.indptr)).all()
    assert corrupt(Evidence.build(evidence.A, evidence.dims), "traces_noise") is None
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(evidence, "nonsense")


def test_observed_files_make_a_table_with_shifts(random_v3, tmp_path):
    evidence = _evidence()
    labels = np.array([1, 1, 3, 0, UNLABELLED, 4])
    clean = observe_file(random_v3, evidence, labels)
    wrong = observe_file(random_v3, corrupt(evidence, "footprints_blurred"), labels)
    assert isinstance(clean, FileObservation) and clean.labelled == 5
    assert 0 <= clean.error <= 1 and clean.features.shape[0] == 6
    rows = [{"file": "a", "variant": "none", "fit": True}, {"file": "a", "variant": "blur", "fit": False}]  # fmt: skip
    table, quantiles = signal_table(rows, [clean, wrong], reference=[True, False])
    assert set(SIGNALS) <= set(table[0]) and "log_area" in quantiles
    assert table[1]["shift_shape"] > table[0]["shift_shape"]  # blurred: larger areas
    reliability = ReliabilityMap(("shift_shape",), (0.0,), (1.0,), (1.0,), 0.1, 0.1)
    plot_reliability(table, reliability, tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
