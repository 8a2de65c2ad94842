"""The shape of a component's calcium transients, on a time axis in seconds.

For each component the largest events of its denoised trace ``C`` are found, and the raw
trace (``C + YrA``) and ``C`` around them are averaged on a fixed grid of seconds
(:data:`WINDOW`, :data:`SAMPLES` points), in units of the trace's own noise, then
log-compressed. The result does not depend on the frame rate (given it), the trace
length or the trace's arbitrary scale, so one learned temporal branch serves every lab:
a neuron shows a fast rise and a slow decay well above the noise in both traces; noise
and neuropil show a symmetric bump in ``C`` that the raw trace does not follow.
"""

from __future__ import annotations

import numpy as np

from calcomp_caiman.evidence.order_stats import mad_noise, sorted_median

__all__ = ["DEFAULT_FRAME_RATE", "PEAKS", "SAMPLES", "WINDOW", "transient_profiles"]

WINDOW = (-1.0, 4.0)
"""Seconds before and after each event's peak that a profile covers."""
SAMPLES = 32
"""Points of each profile (evenly spaced over :data:`WINDOW`)."""
PEAKS = 5
"""Events averaged per component (the largest, at least the window's length apart)."""
DEFAULT_FRAME_RATE = 30.0
"""Frame rate assumed when none is known (CaImAn's default ``fr``)."""


_ORDER_FRAMES = 1000  # frames the medians are taken over (evenly spaced)


def _every(frames: int) -> int:
    return max(1, frames // _ORDER_FRAMES)


def _robust_sd(x: np.ndarray) -> np.ndarray:
    """Noise of each row: MAD of first differences / (0.6745 sqrt 2), never 0."""
    step = _every(x.shape[1])
    sd = mad_noise(x[:, 1::step] - x[:, :-1:step])  # every step-th difference, no more
    spread = np.std(x[:, ::step], axis=1)
    return np.maximum(sd, np.maximum(1e-3 * spread, 1e-12))


def _event_frames(
    C: np.ndarray, baseline: np.ndarray, separation: int, peaks: int
) -> tuple[np.ndarray, np.ndarray]:
    """Frames of the largest events of each row: the maxima of the ``peaks`` highest
    blocks of ``separation`` frames (so events are about a window apart).

    Returns ``(frames, valid)``, both (N, peaks); ``valid`` is False where a row has no
    such event above its baseline.
    """
    n, frames = C.shape
    separation = min(separation, frames)  # a recording shorter than the window: one block
    blocks = max(1, frames // separation)
    peaks = min(peaks, blocks)
    tiled = C[:, : blocks * separation].reshape(n, blocks, separation)
    where = tiled.argmax(axis=2)  # (N, blocks)
    height = np.take_along_axis(tiled, where[:, :, None], axis=2)[:, :, 0]
    top = np.argpartition(-height, peaks - 1, axis=1)[:, :peaks]
    found = top * separation + np.take_along_axis(where, top, axis=1)
    valid = np.take_along_axis(height, top, axis=1) > baseline[:, None]
    return found, valid


def transient_profiles(
    C: np.ndarray,
    YrA: np.ndarray | None = None,
    *,
    frame_rate: float | None = None,
    window: tuple[float, float] = WINDOW,
    samples: int = SAMPLES,
    peaks: int = PEAKS,
) -> np.ndarray:
    """Average event profiles of the raw and the denoised trace of each component.

    Parameters
    ----------
    C : (N, T) ndarray
        Denoised traces (``estimates.C``).
    YrA : (N, T) ndarray, optional
        Residuals (``estimates.YrA``): the raw trace is ``C + YrA``. Without it the raw
        profile is that of ``C``.
    frame_rate : float, optional
        Frames per second (``params.data['fr']``); default :data:`DEFAULT_FRAME_RATE`.
    window : (float, float)
        Seconds before (negative) and after each peak.
    samples : int
        Points per profile.
    peaks : int
        Events averaged per component.

    Returns
    -------
    (N, 2, samples) float32 ndarray
        Row 0 the raw trace, row 1 ``C``, each minus its median and divided by the raw
        trace's noise level, then ``sign(x) log1p(|x|)``. Parts of the window outside the
        recording, and events that do not exist (a flat trace), count as 0. ``N == 0``
        gives shape ``(0, 2, samples)``.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.arange(600) / 30.0
    >>> event = np.where(t >= 5, np.exp(-(t - 5) / 0.5), 0.0)
    >>> noise = np.random.default_rng(0).normal(0, 0.05, 600)
    >>> profiles = transient_profiles(event[None], (noise)[None], frame_rate=30.0)
    >>> profiles.shape
    (1, 2, 32)
    >>> bool(profiles[0, 1].argmax() in (6, 7))  # the peak sits 1 s into the window
    True
    """
    C = np.asarray(C, dtype=np.float32)
    if C.ndim != 2:
        raise ValueError(f"C must be (N, T), got shape {C.shape}.")
    n, frames = C.shape
    out = np.zeros((n, 2, int(samples)), np.float32)
    if n == 0 or frames < 3:
        return out
    raw = C if YrA is None else C + np.asarray(YrA, dtype=np.float32)
    rate = float(frame_rate) if frame_rate and np.isfinite(frame_rate) else DEFAULT_FRAME_RATE
    noise = _robust_sd(raw)[:, None]
    step = _every(frames)
    raw_base, c_base = (sorted_median(np.sort(x[:, ::step], axis=1)) for x in (raw, C))
    before, after = float(window[0]), float(window[1])
    separation = max(1, int(round((after - before) * rate)))
    events, valid = _event_frames(C, c_base, separation, int(peaks))
    offsets = np.linspace(before, after, int(samples)) * rate  # frames from the peak
    position = events[:, :, None] + offsets[None, None, :]  # (N, peaks, samples)
    low = np.floor(position).astype(np.int64)
    frac = (position - low).astype(np.float32)
    inside = (low >= 0) & (low + 1 < frames) & valid[:, :, None]
    low = np.clip(low, 0, frames - 2)
    rows = np.arange(n)[:, None, None]
    counts = np.maximum(valid.sum(axis=1), 1)[:, None]
    for channel, (trace, base) in enumerate(((raw, raw_base), (C, c_base))):
        values = trace[rows, low] * (1 - frac) + trace[rows, low + 1] * frac
        values = np.where(inside, (values - base[:, None, None]) / noise[:, :, None], 0.0)
        out[:, channel] = values.sum(axis=1) / counts
    return np.sign(out) * np.log1p(np.abs(out))
