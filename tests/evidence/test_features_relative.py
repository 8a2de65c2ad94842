"""Tests of the relative feature group, the transient profiles made beside the features,
and the selection of feature columns by name (models v2 keep reading what they read)."""

from __future__ import annotations

import numpy as np
import pytest

import calcomp_caiman.evidence.features as features_module
from calcomp_caiman import CalcompModel
from calcomp_caiman.evidence import Evidence
from calcomp_caiman.evidence.features import (
    FEATURE_GROUPS,
    evidence_features,
    evidence_inputs,
    feature_names,
    group_columns,
)
from calcomp_caiman.evidence.patches import crop_checked, footprints_for, project_footprints
from calcomp_caiman.evidence.transients import transient_profiles
from calcomp_caiman.research.simulate import simulate_session


@pytest.fixture(scope="module")
def session():
    return simulate_session(n_components=(12, 4, 6, 3), n_frames=400, seed=7)


def _evidence(session, *, scale=1.0, **extra):
    rng = np.random.default_rng(0)
    residual = rng.normal(0, 0.05, session.C.shape)
    return Evidence.build(
        session.A * scale, session.dims, C=session.C * scale, YrA=residual * scale, **extra
    )


def _relative(ev):
    flat, dims = project_footprints(ev.A, ev.dims)
    x = evidence_features(ev, flat, dims, 5.0)
    return x[:, [feature_names().index(n) for n in FEATURE_GROUPS["relative"]]], x


def test_relative_ranks_are_within_file_and_unit_free(session):
    ranks, x = _relative(_evidence(session))
    assert ranks.min() >= 0 and ranks.max() <= 1
    names = feature_names()
    assert (x[:, names.index("has_relative")] == 1).all()
    area = x[:, names.index("log_area")]
    rank_area = ranks[:, FEATURE_GROUPS["relative"].index("rank_log_area")]
    assert np.array_equal(np.argsort(area, kind="stable"), np.argsort(rank_area, kind="stable"))
    # no Cn and no CaImAn metrics: their ranks are 0
    for name in ("rank_cn_inside", "rank_caiman_log_snr"):
        assert not ranks[:, FEATURE_GROUPS["relative"].index(name)].any()
    # a lab whose footprints and traces are 40 times brighter gets the same ranks
    np.testing.assert_allclose(_relative(_evidence(session, scale=40.0))[0], ranks, atol=1e-6)


def test_relative_group_needs_two_components_and_is_nan_safe(session):
    one = Evidence.build(session.A[:, :1], session.dims)
    flat, dims = project_footprints(one.A, one.dims)
    x = evidence_features(one, flat, dims, 5.0)
    assert not x[:, group_columns()["relative"]].any()
    snr = np.linspace(1, 10, session.A.shape[1])
    snr[3] = np.nan
    ranks, _ = _relative(_evidence(session, SNR_comp=snr, r_values=np.zeros(len(snr))))
    assert np.isfinite(ranks).all()


def test_profiles_come_from_the_same_pass_over_the_traces(session, monkeypatch):
    ev = _evidence(session, frame_rate=15.0)
    flat, dims = project_footprints(ev.A, ev.dims)
    found = evidence_inputs(ev, flat, dims, 5.0, profiles=True)
    chunk = next(ev.traces.chunks(ev.n))[1]
    expected = transient_profiles(chunk["C"], chunk["YrA"], frame_rate=15.0)
    np.testing.assert_array_equal(found.profiles, expected)
    np.testing.assert_array_equal(found.features, evidence_features(ev, flat, dims, 5.0))
    monkeypatch.setattr(features_module, "_TRACE_ELEMENTS", 6 * ev.traces.frames)
    chunked = evidence_inputs(ev, flat, dims, 5.0, profiles=True)
    np.testing.assert_allclose(chunked.profiles, found.profiles, atol=1e-6)
    assert evidence_inputs(ev.without("traces"), flat, dims, 5.0, profiles=True).profiles is None
    assert evidence_inputs(ev, flat, dims, 5.0, profiles=True, use=()).profiles is None


def test_v2_reads_its_own_columns_by_name(session):
    v2 = CalcompModel.load("calcomp_v2")
    assert len(v2.feature_names) == 24 and "rank_log_area" not in v2.feature_names
    ev = _evidence(session)
    found = footprints_for(ev, v2.scale_rule)
    x = evidence_features(ev, *found)
    patches = crop_checked(*found, v2.patch_size)
    selected = x[:, [feature_names().index(n) for n in v2.feature_names]]
    np.testing.assert_array_equal(v2.predict(patches, x), v2.predict(patches, selected))
    with pytest.raises(ValueError, match="features must have shape"):
        v2.predict(patches, x[:, :10])


def test_threads_give_the_same_numbers(session, monkeypatch):
    ev = _evidence(session, frame_rate=30.0)
    flat, dims = project_footprints(ev.A, ev.dims)
    monkeypatch.setattr(features_module, "_TRACE_ELEMENTS", 12 * ev.traces.frames)
    one = evidence_inputs(ev, flat, dims, 5.0, profiles=True)
    three = evidence_inputs(ev, flat, dims, 5.0, profiles=True, threads=3)  # chunks of 4 rows
    np.testing.assert_array_equal(three.features, one.features)
    np.testing.assert_array_equal(three.profiles, one.profiles)
