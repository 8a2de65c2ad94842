"""Tests of calcomp_caiman.evidence.transients: event profiles on a time axis in seconds."""

from __future__ import annotations

import numpy as np

from calcomp_caiman.evidence.transients import SAMPLES, transient_profiles


def _events(frame_rate: float, seconds: float = 60.0, seed: int = 0):
    """Calcium-like events (rise 50 ms, decay 0.6 s) every ~6 s, and white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * frame_rate)) / frame_rate
    trace = np.zeros_like(t)
    for onset in np.arange(3.0, seconds - 5, 6.0):
        after = np.clip(t - onset, 0, None)
        trace += np.where(t >= onset, (1 - np.exp(-after / 0.05)) * np.exp(-after / 0.6), 0)
    return trace[None], rng.normal(0, 0.05, (1, len(t)))


def test_profiles_do_not_depend_on_the_frame_rate():
    slow = transient_profiles(*_events(10.0), frame_rate=10.0)
    fast = transient_profiles(*_events(60.0), frame_rate=60.0)
    assert slow.shape == fast.shape == (1, 2, SAMPLES)
    # the denoised-trace profile: same shape on the same time axis
    corr = np.corrcoef(slow[0, 1], fast[0, 1])[0, 1]
    assert corr > 0.97
    # told the wrong rate, the profile is squeezed in time
    wrong = transient_profiles(*_events(60.0), frame_rate=10.0)
    assert np.corrcoef(wrong[0, 1], fast[0, 1])[0, 1] < corr - 0.05


def test_transients_rise_fast_and_decay_slowly_noise_does_not():
    C, noise = _events(30.0)
    profiles = transient_profiles(np.vstack([C, noise]), np.vstack([noise, noise]), frame_rate=30.0)
    event, flat = profiles[0, 1], profiles[1, 1]
    peak = int(event.argmax())
    assert 5 <= peak <= 8  # 1 s into the window of -1..4 s
    assert event[peak + 3] > event[max(peak - 3, 0)]  # slow decay, fast rise
    assert event.max() > 3 * abs(flat).max()


def test_short_recordings_and_empty_input():
    C, noise = _events(30.0, seconds=3.0)  # shorter than the 5 s window
    assert np.isfinite(transient_profiles(C, noise, frame_rate=30.0)).all()
    assert transient_profiles(np.zeros((0, 50))).shape == (0, 2, SAMPLES)
    flat = transient_profiles(np.ones((2, 200)), None, frame_rate=None)
    assert not flat.any()  # no event: zeros
