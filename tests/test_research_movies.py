"""The seeded movie generator of calcomp_caiman.research.movies."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from calcomp_caiman import CLASSES
from calcomp_caiman.research.movies import (
    HELD_OUT_PRESETS,
    INDICATORS,
    KIND_CLASS,
    KINDS,
    PRESETS,
    TRAIN_PRESETS,
    MovieSettings,
    simulate_movie,
)

SMALL = dataclasses.replace(
    TRAIN_PRESETS["train_gcamp6f_standard"],
    name="small",
    dims=(48, 64),
    frames=80,
    n_somata=(4, 4),
    n_dendrites=(2, 2),
    n_axons=(2, 2),
    n_out_of_focus=(1, 1),
    n_border_cut=(1, 1),
    n_dim=(1, 1),
)


@pytest.fixture(scope="module")
def small():
    return simulate_movie(SMALL, seed=3)


def test_shapes_and_dtypes(small):
    T, (rows, cols) = SMALL.frames, SMALL.dims
    K = len(small.gt_kind)
    assert small.movie.shape == (T, rows, cols) and small.movie.dtype == np.float32
    assert small.dims == (rows, cols)
    assert small.A.shape == (rows * cols, K)
    assert small.C.shape == small.S.shape == small.F.shape == (K, T)
    assert small.gt_class.shape == small.parent.shape == (K,)
    assert small.b.shape[0] == rows * cols and small.f.shape == (small.b.shape[1], T)
    assert small.shifts.shape == (T, 2)
    assert np.abs(small.shifts).max() <= SMALL.max_motion_px + 1e-6
    assert np.isfinite(small.movie).all()
    peaks = small.A.max(axis=0).toarray()
    assert small.A.min() >= 0 and np.all((peaks > 0.8) & (peaks < 1.2))
    assert small.gSig == (SMALL.user_gsig(),) * 2 and small.fr == SMALL.fr
    assert small.decay_time == INDICATORS[SMALL.indicator][1]


def test_kinds_and_classes(small):
    assert set(small.gt_kind) <= set(KINDS)
    assert set(small.gt_kind) >= {"dendrite", "axon", "out_of_focus", "border_cut", "dim"}
    assert {"soma", "donut_soma"} & set(small.gt_kind)
    np.testing.assert_array_equal(small.gt_class, [KIND_CLASS[k] for k in small.gt_kind])
    codes = {CLASSES[c - 1] for c in small.gt_class}
    assert codes == {"neuron", "process", "doubtful"}  # noise is what matches no object
    for k, p in enumerate(small.parent):  # spike sharing points to an earlier object
        if p >= 0:
            assert p < k and small.gt_kind[k] in ("dendrite", "axon")
            assert np.all(small.S[k] >= small.S[p])


def test_same_seed_same_movie_other_seed_other_movie(small):
    again = simulate_movie(SMALL, seed=3)
    np.testing.assert_array_equal(again.movie, small.movie)
    assert (again.A != small.A).nnz == 0 and again.gt_kind == small.gt_kind
    other = simulate_movie(SMALL, seed=4)
    assert not np.array_equal(other.movie, small.movie)


def test_footprints_are_in_fortran_order(small):
    """The temporal mean of the movie follows the footprints laid out as CaImAn's A."""
    rows, cols = SMALL.dims
    weights = small.F.mean(axis=1)
    image = (small.A @ weights).reshape((rows, cols), order="F")
    mean = small.movie.mean(axis=0)
    assert np.corrcoef(image.ravel(), mean.ravel())[0, 1] > 0.5


def test_activity_reaches_the_movie(small):
    """The brightest soma's trace correlates with the movie inside its footprint."""
    somata = [k for k, kind in enumerate(small.gt_kind) if kind in ("soma", "donut_soma")]
    k = max(somata, key=lambda j: small.F[j].std())
    mask = small.A[:, k].toarray().ravel() > 0.5
    pixels = small.movie.reshape(SMALL.frames, -1, order="F")[:, mask].mean(axis=1)
    assert np.corrcoef(pixels, small.C[k])[0, 1] > 0.5


def test_held_out_presets_differ_from_training():
    assert len(HELD_OUT_PRESETS) >= 2 and len(TRAIN_PRESETS) >= 3
    assert all(s.held_out for s in HELD_OUT_PRESETS.values())
    assert not any(s.held_out for s in TRAIN_PRESETS.values())
    assert set(PRESETS) == set(TRAIN_PRESETS) | set(HELD_OUT_PRESETS)
    train_indicators = {s.indicator for s in TRAIN_PRESETS.values()}
    train_zooms = {s.zoom for s in TRAIN_PRESETS.values()}
    max_density = max(np.mean(s.n_somata) / np.prod(s.dims) for s in TRAIN_PRESETS.values())
    max_neuropil = max(s.neuropil_level[1] for s in TRAIN_PRESETS.values())
    for s in HELD_OUT_PRESETS.values():
        assert s.name.startswith("heldout_")
        assert s.zoom not in train_zooms
        assert (
            s.indicator not in train_indicators
            or np.mean(s.n_somata) / np.prod(s.dims) > max_density
            or s.neuropil_level[0] > max_neuropil
        )
    assert any(s.indicator not in train_indicators for s in HELD_OUT_PRESETS.values())
    assert any(s.neuropil_level[0] > max_neuropil for s in HELD_OUT_PRESETS.values())


def test_every_preset_simulates_small():
    for settings in PRESETS.values():
        tiny = dataclasses.replace(settings, dims=(40, 40), frames=30)
        sim = simulate_movie(tiny, seed=0)
        assert sim.movie.shape == (30, 40, 40) and len(sim.gt_kind) > 0


def test_settings_json_round_trip():
    import json

    settings = TRAIN_PRESETS["train_dendrite_rich"]
    data = json.loads(settings.to_json())
    assert data["name"] == "train_dendrite_rich" and data["zoom"] == settings.zoom


def test_bad_settings():
    with pytest.raises(TypeError, match="MovieSettings"):
        simulate_movie({"name": "x"}, seed=0)
    with pytest.raises(ValueError, match="indicator"):
        simulate_movie(MovieSettings(name="x", indicator="GCaMP99"), seed=0)
