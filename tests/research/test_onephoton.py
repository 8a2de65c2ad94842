"""The seeded one-photon movie generator of calcomp_caiman.research.onephoton."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from calcomp_caiman import CLASSES
from calcomp_caiman.research.movies import INDICATORS, calcium_kernel, simulate_movie
from calcomp_caiman.research.movies import TRAIN_PRESETS as TRAIN_2P
from calcomp_caiman.research.onephoton import (
    HELD_OUT_PRESETS,
    KIND_CLASS,
    KINDS,
    PRESETS,
    TRAIN_PRESETS,
    OnePhotonSettings,
    simulate_onephoton,
)

SMALL = dataclasses.replace(
    TRAIN_PRESETS["train1p_gcamp6f_10hz"],
    name="small",
    dims=(64, 64),
    frames=300,
    n_somata=(8, 8),
    n_out_of_focus=(2, 2),
    n_border_cut=(2, 2),
    n_deep=(10, 10),
    n_vessels=(1, 1),
)
STILL = dataclasses.replace(  # no motion, no vessel pulsing, many photons
    SMALL, name="still", max_shift_px=0.0, nonrigid_px=0.0, vessel_pulse=(0.0, 0.0),
    photons_per_unit=(2000.0, 2000.0), read_noise=(1.0, 1.0),
)  # fmt: skip


@pytest.fixture(scope="module")
def small():
    return simulate_onephoton(SMALL, seed=5)


def test_shapes_kinds_and_classes(small):
    T, (rows, cols) = SMALL.frames, SMALL.dims
    K = len(small.gt_kind)
    assert small.movie.shape == (T, rows, cols) and small.movie.dtype == np.float32
    assert small.A.shape == (rows * cols, K)
    assert small.C.shape == small.S.shape == small.F.shape == (K, T)
    assert small.transmission.shape == (T, rows, cols) and small.vignette.shape == (rows, cols)
    assert small.shifts.shape == (T, 2) and small.displacement.shape == (T,)
    assert np.isfinite(small.movie).all() and np.isfinite(small.C).all()
    peaks = small.A.max(axis=0).toarray().ravel()
    assert small.A.min() >= 0 and np.allclose(peaks, 1.0, atol=1e-6)
    assert set(small.gt_kind) == set(KINDS)
    assert small.gt_kind.count("soma") == 8 and small.gt_kind.count("motion") == 1
    np.testing.assert_array_equal(small.gt_class, [KIND_CLASS[k] for k in small.gt_kind])
    assert {CLASSES[c - 1] for c in small.gt_class} == {"neuron", "noise", "doubtful"}
    modulators = np.isin(small.gt_kind, ("vessel", "motion"))
    assert np.all(small.F[modulators] == 0) and np.all(small.F[~modulators] > 0)
    assert small.gSig == (SMALL.user_gsig(),) * 2 and small.fr == SMALL.fr
    assert small.decay_time == INDICATORS[SMALL.indicator][1]


def test_ground_truth_explains_the_movie():
    """Without motion or pulsing, the movie is Poisson(gain * vignette * transmission * A F)
    plus read noise: residual mean 0, variance the Poisson variance."""
    sim = simulate_onephoton(STILL, seed=2)
    expected = sim.gain * sim.clean().astype(np.float64)
    residual = sim.movie - expected
    assert np.all(sim.shifts == 0)
    assert abs(residual.mean()) < 0.02 * np.sqrt(expected.mean())
    ratio = residual.var(axis=0) / (expected.mean(axis=0) + 1.0)
    assert 0.9 < np.median(ratio) < 1.1
    vessel = np.asarray(sim.A[:, sim.gt_kind.index("vessel")].todense()).ravel() > 0.5
    assert sim.transmission.min() < 0.8 and vessel.any()  # a dark vessel, edges marked


def test_background_dominates_the_neurons(small):
    A, F = small.A.toarray(), small.F.astype(np.float64)
    kinds = np.array(small.gt_kind)

    def part(mask):
        return A[:, mask] @ F[mask]

    somata, background = kinds == "soma", np.isin(kinds, ("background", "deep_cell"))
    assert part(background).mean() > 3 * part(somata).mean()
    assert part(background).var(axis=1).mean() > 5 * part(somata).var(axis=1).mean()


def test_footprints_are_wider_than_two_photon_at_the_same_gsig():
    onephoton = dataclasses.replace(
        TRAIN_PRESETS["train1p_gcamp6s_15hz_dense"], dims=(64, 64), frames=20,
        n_somata=(10, 10), n_deep=(2, 2),
    )  # fmt: skip
    twophoton = dataclasses.replace(
        TRAIN_2P["train_gcamp6f_standard"], dims=(64, 64), frames=20, n_somata=(10, 10)
    )
    assert onephoton.user_gsig() == twophoton.user_gsig() == 4
    one = simulate_onephoton(onephoton, seed=1)
    two = simulate_movie(twophoton, seed=1)

    def area(sim, kinds):
        columns = [k for k, kind in enumerate(sim.gt_kind) if kind in kinds]
        return float(np.median(np.asarray((sim.A[:, columns] > 0.1).sum(axis=0)).ravel()))

    assert area(one, {"soma"}) > 1.6 * area(two, {"soma", "donut_soma"})
    cell_body = math.pi * np.mean(onephoton.soma_radius_px()) ** 2
    assert area(one, {"soma"}) > 3 * cell_body  # the blur, not the cell, sets the footprint


def test_same_seed_same_movie_other_seed_other_movie(small):
    again = simulate_onephoton(SMALL, seed=5)
    np.testing.assert_array_equal(again.movie, small.movie)
    np.testing.assert_array_equal(again.C, small.C)
    assert (again.A != small.A).nnz == 0 and again.gt_kind == small.gt_kind
    assert not np.array_equal(simulate_onephoton(SMALL, seed=6).movie, small.movie)


@pytest.mark.parametrize("fr", [10.0, 30.0])
def test_frame_rate_sets_the_kinetics_and_rates(fr):
    settings = dataclasses.replace(
        SMALL, dims=(48, 48), fr=fr, frames=int(40 * fr), n_deep=(3, 3), n_vessels=(0, 0)
    )
    sim = simulate_onephoton(settings, seed=3)
    rise, decay, _ = INDICATORS[settings.indicator]
    kernel = calcium_kernel(fr, rise, decay)
    cells = [k for k, kind in enumerate(sim.gt_kind) if kind == "soma"]
    for k in cells:  # calcium = spikes * the indicator kernel sampled at this frame rate
        expected = np.convolve(sim.S[k].astype(float), kernel)[: settings.frames]
        np.testing.assert_allclose(sim.C[k], expected, rtol=1e-5, atol=1e-5)
    peak = int(np.argmax(kernel))
    half = np.argmax(kernel[peak:] < 0.5) / fr  # from the peak to half of it, in seconds
    assert abs(half - decay * math.log(2)) < 0.25 * decay + 1.0 / fr
    events_per_s = (sim.S[cells] > 0).sum() / len(cells) / 40.0
    low, high = settings.event_rate_hz
    assert 0.5 * low < events_per_s < 2.0 * high  # rates are per second, not per frame


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="fr"):
        simulate_onephoton(dataclasses.replace(SMALL, fr=0.0), seed=0)
    with pytest.raises(ValueError, match="indicator"):
        simulate_onephoton(dataclasses.replace(SMALL, indicator="GCaMP3"), seed=0)
    with pytest.raises(TypeError, match="OnePhotonSettings"):
        simulate_onephoton(TRAIN_2P["train_gcamp6f_standard"], seed=0)


def test_presets_cover_the_demo_gsig_range_and_hold_out_whole_settings():
    assert set(PRESETS) == set(TRAIN_PRESETS) | set(HELD_OUT_PRESETS)
    assert all(not s.held_out for s in TRAIN_PRESETS.values())
    assert all(s.held_out for s in HELD_OUT_PRESETS.values())
    assert all(3 <= s.user_gsig() <= 6 for s in PRESETS.values())
    assert all(10 <= s.fr <= 30 for s in PRESETS.values())
    train_indicators = {s.indicator for s in TRAIN_PRESETS.values()}
    assert {s.indicator for s in HELD_OUT_PRESETS.values()} - train_indicators  # one unseen
    assert isinstance(SMALL, OnePhotonSettings) and SMALL.to_json().startswith("{")


def test_matching_rule_names_one_photon_junk_and_keeps_cells(small):
    """research.gt_labels on one-photon ground truth: a soma's own footprint and calcium is a
    neuron, two overlapping somata merged are doubtful, and components that follow the
    background, a vessel or the motion are noise named after what they follow."""
    from calcomp_caiman.research.gt_labels import label_components

    kinds = np.array(small.gt_kind)
    G = small.A.toarray()
    first, second = np.flatnonzero(kinds == "soma")[:2]
    field = np.flatnonzero(kinds == "background")[1]  # a fluctuating field, not the baseline
    vessel, motion = kinds.tolist().index("vessel"), kinds.tolist().index("motion")
    blob = np.zeros(SMALL.dims)
    blob[40:46, 8:14] = 1.0  # a residue blob somewhere; its trace is the field's
    columns = [
        (G[:, first], small.C[first]),
        (G[:, first] + G[:, second], small.C[first] + small.C[second]),
        (blob.ravel(order="F"), small.C[field]),
        (G[:, vessel], small.C[vessel]),
        (G[:, motion], small.C[motion]),
    ]
    A = np.stack([c[0] for c in columns], axis=1)
    C = np.stack([c[1] for c in columns])
    for gt in (small, {"A": small.A, "C": small.C, "gt_kind": small.gt_kind}):
        out = label_components(A, C, SMALL.dims, gt)
        names = [CLASSES[code - 1] for code in out["labels"]]
        assert names == ["neuron", "doubtful", "noise", "noise", "noise"], out["reason"]
        assert out["reason"][1].startswith("doubtful: merge")
        assert "background residue" in out["reason"][2]
        assert "vessel edge" in out["reason"][3] and "motion edge" in out["reason"][4]
