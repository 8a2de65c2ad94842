"""research.calibration recovers known noise, motion and kinetics from synthetic movies, and
draws valid simulator settings around fitted statistics."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal

from calcomp_caiman.research.calibration import (
    fit_kinetics,
    fit_noise,
    fit_noise_correlation,
    fit_recording,
    phase_correlation_shifts,
    randomisation_ranges,
    randomised_settings,
    robust_noise_sd,
    statistics_table,
)
from calcomp_caiman.research.movies import (
    INDICATORS,
    TRAIN_PRESETS,
    MovieSettings,
    scan_line_smear,
    simulate_movie,
)


def poisson_gaussian(rng, rate, frames, gain, offset, read):
    """Counts = gain * photons + offset + read noise: var = gain * (mean - offset) + read^2."""
    shape = (frames, *rate.shape)
    return gain * rng.poisson(rate, shape) + offset + rng.normal(0.0, read, shape)


@pytest.mark.parametrize("photons", [(2.0, 60.0), (0.05, 1.0)])
def test_fit_noise_recovers_gain_and_zero_level(photons):
    rng = np.random.default_rng(0)
    rate = np.exp(np.linspace(np.log(photons[0]), np.log(photons[1]), 40 * 40)).reshape(40, 40)
    gain, offset, read = 12.0, 200.0, 6.0
    fit = fit_noise(poisson_gaussian(rng, rate, 400, gain, offset, read))
    assert fit["gain"] == pytest.approx(gain, rel=0.05)
    assert fit["zero_level"] == pytest.approx(offset - read**2 / gain, abs=0.05 * gain)
    assert fit["r2"] > 0.95
    assert fit["temporal_whiteness"] == pytest.approx(1.0, abs=0.05)
    # calcium events in a tenth of the pixels do not move the fit
    movie = poisson_gaussian(rng, rate, 400, gain, offset, read)
    events = scipy.signal.lfilter([1], [1, -0.9], (rng.random(400) < 0.01) * 30.0 * gain)
    movie[:, ::10, :4] += events[:, None, None]
    assert fit_noise(movie)["gain"] == pytest.approx(gain, rel=0.05)


def test_robust_noise_sd_ignores_slow_signals_and_rare_events():
    rng = np.random.default_rng(1)
    slow = 30 * np.sin(np.linspace(0, 6, 1000))[:, None, None]
    movie = slow + rng.normal(0, 2.0, (1000, 6, 6))
    movie[::200] += 40  # rare single-frame transients (0.5 % of frames)
    assert np.allclose(robust_noise_sd(movie), 2.0, rtol=0.1)


def test_noise_correlation_along_the_scan_line():
    rng = np.random.default_rng(2)
    movie = scan_line_smear(rng.normal(100, 5, (300, 32, 40)), 0.3)
    fit = fit_noise_correlation(movie)
    assert fit["along_line"] == pytest.approx(0.3, abs=0.03)
    assert abs(fit["across_lines"]) < 0.03


def test_phase_correlation_recovers_subpixel_motion():
    rng = np.random.default_rng(3)
    image = scipy.ndimage.gaussian_filter(rng.normal(size=(80, 80)), 2.0) * 50 + 100
    truth = np.stack([1.5 * np.sin(np.linspace(0, 3, 60)), np.linspace(-1, 1, 60)], axis=1)
    frames = np.stack([scipy.ndimage.shift(image, s, order=3, mode="wrap") for s in truth])
    frames += rng.normal(0, 0.5, frames.shape)
    found = phase_correlation_shifts(frames, smooth_frames=1)
    error = (found - found.mean(axis=0)) - (truth - truth.mean(axis=0))
    assert np.abs(error).max() < 0.25


def test_kinetics_recover_the_decay():
    rng = np.random.default_rng(4)
    fr, decay_s = 20.0, 0.8
    g = np.exp(-1 / (decay_s * fr))
    spikes = rng.poisson(0.05, (6000, 1, 1)) * np.ones((1, 10, 10))
    movie = scipy.signal.lfilter([1], [1, -g], spikes, axis=0) + rng.normal(0, 0.1, spikes.shape)
    fit = fit_kinetics(movie, fr=fr)
    assert fit["reliable"] and fit["decay_s"] == pytest.approx(decay_s, rel=0.15)
    assert not fit_kinetics(movie[:100], fr=fr)["reliable"]


def small_settings(**changes) -> MovieSettings:
    return dataclasses.replace(
        TRAIN_PRESETS["train_gcamp6f_standard"],
        dims=(48, 48), frames=300, n_somata=(3, 3), n_dendrites=(1, 1), n_axons=(0, 0),
        n_out_of_focus=(0, 0), n_border_cut=(0, 0), n_dim=(0, 0), max_motion_px=0.0,
        photons_per_unit=(30.0, 30.0), read_noise=(0.5, 0.5), **changes,
    )  # fmt: skip


def test_calibration_recovers_the_simulators_noise_parameters():
    """The simulator's photon gain is 1 count per photon; PMT excess noise e multiplies the
    variance by 1 + e; noise correlation along the line is what was asked for."""
    plain = fit_noise(simulate_movie(small_settings(), seed=0).movie)
    assert plain["gain"] == pytest.approx(1.0, rel=0.1)
    pmt = fit_noise(simulate_movie(small_settings(pmt_excess=0.6), seed=0).movie)
    assert pmt["gain"] == pytest.approx(1.6, rel=0.1)
    smeared = simulate_movie(small_settings(noise_correlation=0.25), seed=0).movie
    assert fit_noise_correlation(smeared)["along_line"] == pytest.approx(0.25, abs=0.04)


def test_new_simulator_fields_default_to_the_old_movie():
    settings = small_settings()
    again = dataclasses.replace(
        settings, pmt_excess=0.0, noise_correlation=0.0, texture_level=0.0, neuropil_time_s=5.0
    )
    assert np.array_equal(simulate_movie(settings, 1).movie, simulate_movie(again, 1).movie)
    textured = simulate_movie(dataclasses.replace(settings, texture_level=0.3), 1)
    assert not np.array_equal(
        textured.static_background, simulate_movie(settings, 1).static_background
    )


@pytest.fixture(scope="module")
def statistics():
    rng = np.random.default_rng(5)
    rate = np.full((40, 40), 4.0)
    movie = poisson_gaussian(rng, rate, 120, 10.0, 100.0, 3.0)
    return {"fake": fit_recording(movie, fr=30.0, soma_radius_px=4.0)}


def test_fit_recording_is_json_and_tabulated(statistics):
    stats = statistics["fake"]
    assert set(stats) >= {"noise", "noise_correlation", "texture", "background", "motion",
                          "kinetics", "shape", "fr", "soma_radius_px"}  # fmt: skip
    json.dumps(stats)
    assert stats["motion"]["max_px"] < 0.5
    lines = statistics_table(statistics, held_out=["fake"]).splitlines()
    assert len(lines) == 3 and "fake (held out)" in lines[2]


def test_randomised_settings_stay_in_the_fitted_ranges(statistics):
    ranges = randomisation_ranges(statistics)
    assert ranges["max_motion_px"][1] >= 3.0 and ranges["indicators"] == sorted(INDICATORS)
    drawn = [randomised_settings(ranges, seed, dims=(64, 64), frames=50) for seed in range(20)]
    for s in drawn:
        assert ranges["zoom"][0] <= s.zoom <= ranges["zoom"][1]
        assert ranges["fr"][0] <= s.fr <= ranges["fr"][1]
        assert 0 <= s.noise_correlation < 0.5 and s.pmt_excess >= 0
        assert s.n_somata[0] >= 1 and s.indicator in INDICATORS
    assert len({s.indicator for s in drawn}) > 1 and len({s.zoom for s in drawn}) == 20
    movie = simulate_movie(drawn[0], seed=0)
    assert movie.movie.shape == (50, 64, 64) and np.isfinite(movie.movie).all()
    with pytest.raises(ValueError):
        randomisation_ranges({})
