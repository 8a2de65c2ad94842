"""Statistics of real recordings, and simulator settings randomised around them.

Research tooling (NumPy and SciPy only). :func:`fit_recording` measures, on one movie:

* **noise** (:func:`fit_noise`): the temporal noise variance of each pixel (from frame-to-frame
  differences, robust to calcium transients) against its mean, fitted by the Poisson-Gaussian
  line ``var = gain * (mean - zero_level)``; ``gain`` is the number of counts per detected
  photon (PMT excess noise included), so ``(mean - zero_level) / gain`` is photons per pixel
  per frame;
* **spatial noise correlation** (:func:`fit_noise_correlation`): correlation of neighbouring
  pixels' noise along the scan line (columns), across lines (rows) and diagonally;
* **background texture** (:func:`fit_texture`): the radially averaged power spectrum of the
  mean image, ``P(k) ~ k^-beta``, and its contrast at the scale of a soma;
* **neuropil** (:func:`fit_background`): the movie blurred far beyond a soma, its level
  relative to bright somata, its modulation depth over time and the slope ``alpha`` of its
  temporal spectrum ``P(f) ~ f^-alpha``, and its correlation time;
* **motion** (:func:`fit_motion`): rigid shifts by whitened cross-correlation against the
  mean image (:func:`phase_correlation_shifts`);
* **indicator kinetics** (:func:`fit_kinetics`): the AR(1) coefficient of the most active
  pixels' traces from their autocovariance at lags 1 and 2 (lag 0 holds the noise), as a decay
  time in frames and in seconds at the given frame rate (only when the movie is long enough).

:func:`randomisation_ranges` turns the statistics of the *training* recordings (never the
held-out ones) into wide ranges, and :func:`randomised_settings` draws a
:class:`~calcomp_caiman.research.movies.MovieSettings` from them (zoom, SNR, density, frame rate,
indicator, PMT noise, noise correlation, texture, motion, neuropil strength), so that no single
setting is the world.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence

import numpy as np
import scipy.ndimage
import scipy.signal
import scipy.stats

from calcomp_caiman.research.movies import (
    INDICATORS,
    SOMA_RADIUS_UM,
    TRAIN_PRESETS,
    UM_PER_PX_AT_ZOOM_1,
    MovieSettings,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CALIBRATION_VERSION",
    "correlation_image",
    "fit_background",
    "fit_kinetics",
    "fit_motion",
    "fit_noise",
    "fit_noise_correlation",
    "fit_recording",
    "fit_texture",
    "phase_correlation_shifts",
    "randomisation_ranges",
    "randomised_settings",
    "robust_noise_sd",
    "statistics_table",
]

CALIBRATION_VERSION = "1.0"
"""Bumped whenever the same movie would give different statistics."""

_MIN_FRAMES_KINETICS = 300


def _as_float(movie) -> np.ndarray:
    movie = np.asarray(movie, dtype=np.float64)
    if movie.ndim != 3 or min(movie.shape) < 2:
        raise ValueError(
            f"movie must be (T, rows, cols) with T, rows, cols >= 2, got {movie.shape}"
        )
    return movie


def _trimmed_square_mean(d: np.ndarray, keep: float = 0.99) -> np.ndarray:
    """Per-pixel mean of the smallest ``keep`` fraction of ``d**2`` over axis 0, divided by what
    that trimmed mean is for a unit Gaussian (so it estimates the variance of ``d``)."""
    n = d.shape[0]
    n_keep = max(1, int(math.floor(keep * n)))
    flat = d.reshape(n, -1)
    out = np.empty(flat.shape[1])
    for start in range(0, flat.shape[1], 8192):
        block = flat[:, start : start + 8192].astype(np.float64) ** 2
        if n_keep < n:
            block = np.partition(block, n_keep - 1, axis=0)[:n_keep]
        out[start : start + 8192] = block.mean(axis=0)
    p = n_keep / n
    if p < 1:
        z = scipy.stats.norm.ppf((1 + p) / 2)
        out /= 1 - 2 * z * scipy.stats.norm.pdf(z) / p
    return out.reshape(d.shape[1:])


def robust_noise_sd(movie) -> np.ndarray:
    """Per-pixel sd of temporally white noise, from frame-to-frame differences.

    The mean of ``diff^2`` without each pixel's largest 1 % (calcium rises, motion), corrected
    for that trimming, over 2: the differences remove everything slower than a frame. Unlike a
    median, it stays right for photon-starved pixels (most differences 0).

    Parameters
    ----------
    movie : (T, rows, cols) array

    Returns
    -------
    (rows, cols) float64 ndarray

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> sd = robust_noise_sd(rng.normal(0, 2.0, (400, 8, 8)))
    >>> bool(abs(sd.mean() - 2.0) < 0.05)
    True
    """
    movie = _as_float(movie)
    return np.sqrt(_trimmed_square_mean(np.diff(movie, axis=0)) / 2)


def fit_noise(movie, *, n_bins: int = 30) -> dict:
    """Poisson-Gaussian fit of noise variance against mean brightness.

    Pixels are binned by their temporal mean (quantile bins, the brightest 2 % and bins with
    saturated or zero pixels left out); the median of each bin's robust variances
    (:func:`robust_noise_sd`) is fitted by a line ``var = gain * mean + intercept``.

    Returns
    -------
    dict
        ``gain`` (counts per photon), ``intercept`` (variance at mean 0), ``zero_level`` (mean
        where the line reaches variance 0: the dark level less read noise), ``r2`` of the fit
        over bins, ``noise_sd_median`` (counts), ``mean_median`` (counts),
        ``photons_median`` (photons per pixel per frame at the median pixel),
        ``read_noise_photons`` (rms distance below ``zero_level`` of the values that fall below
        it, over ``gain``: the read noise in photons; NaN when under 1 % of values are below),
        ``fraction_zero``
        and ``fraction_saturated`` of the movie's values, ``temporal_whiteness`` (variance from
        lag-2 differences over that from lag-1: 1 for temporally white noise), and the binned
        ``bins_mean`` / ``bins_var`` the line was fitted to.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> rate = np.linspace(5, 80, 32 * 32).reshape(32, 32)
    >>> movie = 3.0 * rng.poisson(rate, (300, 32, 32)) + 100 + rng.normal(0, 2, (300, 32, 32))
    >>> fit = fit_noise(movie)
    >>> bool(abs(fit["gain"] - 3.0) < 0.2)
    True
    """
    movie = _as_float(movie)
    mean = movie.mean(axis=0)
    sd = robust_noise_sd(movie)
    var = sd * sd
    top = movie.max()
    saturated = (movie >= top).mean(axis=0) > 0.001 if top > 0 else np.zeros(mean.shape, bool)
    zero = (movie <= 0).mean(axis=0) > 0.01
    usable = ~saturated & ~zero & np.isfinite(var)
    if usable.sum() < 2 * n_bins:
        usable = np.isfinite(var)
    m, v = mean[usable], var[usable]
    edges = np.quantile(m, np.linspace(0, 0.98, n_bins + 1))
    which = np.clip(np.searchsorted(edges, m, side="right") - 1, 0, n_bins - 1)
    keep = m <= edges[-1]
    bins_mean, bins_var = [], []
    for b in range(n_bins):
        inside = keep & (which == b)
        if inside.sum() >= 5:
            bins_mean.append(float(np.median(m[inside])))
            bins_var.append(float(np.median(v[inside])))
    bins_mean, bins_var = np.asarray(bins_mean), np.asarray(bins_var)
    if len(bins_mean) >= 3 and np.ptp(bins_mean) > 0:
        slope, intercept = np.polyfit(bins_mean, bins_var, 1)
        predicted = slope * bins_mean + intercept
        ss = float(np.sum((bins_var - bins_var.mean()) ** 2))
        r2 = 1 - float(np.sum((bins_var - predicted) ** 2)) / ss if ss > 0 else 0.0
    else:
        slope, intercept, r2 = float("nan"), float("nan"), 0.0
    gain = float(slope)
    zero_level = float(-intercept / slope) if slope > 0 else float("nan")
    lag2 = _trimmed_square_mean(movie[2:] - movie[:-2]) / 2
    whiteness = float(np.median(lag2[usable]) / max(np.median(var[usable]), 1e-12))
    mean_median = float(np.median(mean))
    photons = (mean_median - zero_level) / gain if gain > 0 else float("nan")
    below = movie[movie < zero_level] - zero_level if gain > 0 else np.zeros(0)
    read = (
        float(np.sqrt(np.mean(below * below)) / gain) if below.size >= 0.01 * movie.size else np.nan
    )
    return {
        "gain": gain,
        "intercept": float(intercept),
        "zero_level": zero_level,
        "r2": float(r2),
        "noise_sd_median": float(np.median(sd)),
        "mean_median": mean_median,
        "photons_median": float(photons),
        "read_noise_photons": read,
        "fraction_zero": float((movie <= 0).mean()),
        "fraction_saturated": float((movie >= top).mean()) if top > 0 else 0.0,
        "temporal_whiteness": whiteness,
        "bins_mean": bins_mean.round(3).tolist(),
        "bins_var": bins_var.round(3).tolist(),
    }


def fit_noise_correlation(movie) -> dict:
    """Correlation of neighbouring pixels' noise (frame-to-frame differences, standardised per
    pixel by their trimmed sd and clipped at 3 sd so that calcium events and motion do not
    count).

    Returns
    -------
    dict
        ``along_line`` (columns, lag 1), ``along_line_lag2``, ``across_lines`` (rows, lag 1),
        ``diagonal``.

    Examples
    --------
    >>> rng = np.random.default_rng(2)
    >>> white = rng.normal(size=(200, 16, 17))
    >>> smeared = white[:, :, 1:] + 0.5 * white[:, :, :-1]  # correlation 0.5 / 1.25 = 0.4
    >>> round(fit_noise_correlation(smeared)["along_line"], 1)
    0.4
    """
    movie = _as_float(movie)
    d = np.diff(movie, axis=0)
    d = d - d.mean(axis=0)
    scale = np.sqrt(_trimmed_square_mean(d))
    z = np.clip(d / np.maximum(scale, 1e-12), -3, 3)

    def corr(a, b):
        a = a - a.mean()
        b = b - b.mean()
        return float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))

    return {
        "along_line": corr(z[:, :, 1:], z[:, :, :-1]),
        "along_line_lag2": corr(z[:, :, 2:], z[:, :, :-2]),
        "across_lines": corr(z[:, 1:, :], z[:, :-1, :]),
        "diagonal": corr(z[:, 1:, 1:], z[:, :-1, :-1]),
    }


def _radial_spectrum(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum (Hann-windowed) of a zero-mean image: (k, P(k)),
    k in cycles per pixel."""
    image = image - image.mean()
    window = np.outer(np.hanning(image.shape[0]), np.hanning(image.shape[1]))
    power = np.abs(np.fft.fft2(image * window)) ** 2
    ky = np.fft.fftfreq(image.shape[0])[:, None]
    kx = np.fft.fftfreq(image.shape[1])[None, :]
    k = np.hypot(ky, kx)
    step = 1.0 / min(image.shape)
    index = np.round(k / step).astype(int)
    counts = np.bincount(index.ravel())
    sums = np.bincount(index.ravel(), weights=power.ravel())
    radii = np.arange(len(counts)) * step
    good = (counts > 0) & (radii > 0) & (radii <= 0.5)
    return radii[good], sums[good] / counts[good]


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    good = (x > 0) & (y > 0) & np.isfinite(y)
    if good.sum() < 3:
        return float("nan")
    return float(-np.polyfit(np.log(x[good]), np.log(y[good]), 1)[0])


def fit_texture(movie, *, soma_radius_px: float) -> dict:
    """Spatial spectrum of the mean image: power-law exponent ``beta`` between the field's
    size and a soma's diameter, and contrast (sd / mean) at the soma scale and beyond.

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> k = np.hypot(np.fft.fftfreq(128)[:, None], np.fft.fftfreq(128)[None, :])
    >>> amplitude = np.maximum(k, 1 / 128) ** -1.25  # power spectrum k^-2.5
    >>> field = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(128, 128))) * amplitude))
    >>> movie = 100 + 5 * field[None] + rng.normal(0, 0.01, (4, 128, 128))
    >>> round(fit_texture(movie, soma_radius_px=2)["beta"], 1)
    2.6
    """
    movie = _as_float(movie)
    mean = movie.mean(axis=0)
    k, power = _radial_spectrum(mean)
    band = (k >= 2.0 / min(mean.shape)) & (k <= 1.0 / (2 * soma_radius_px))
    smooth = scipy.ndimage.gaussian_filter(mean, soma_radius_px / 2, mode="reflect")
    large = scipy.ndimage.gaussian_filter(mean, 4 * soma_radius_px, mode="reflect")
    level = max(float(np.mean(mean)), 1e-12)
    return {
        "beta": _slope(k[band], power[band]),
        "contrast_soma_scale": float(np.std(smooth) / level),
        "contrast_large_scale": float(np.std(large) / level),
    }


def _correlation_time(trace: np.ndarray, fr: float) -> float:
    """Lag (s) where the autocorrelation of a trace first falls below 1/e."""
    x = trace - trace.mean()
    if np.allclose(x, 0):
        return float("nan")
    ac = np.correlate(x, x, mode="full")[len(x) - 1 :]
    ac = ac / ac[0]
    below = np.flatnonzero(ac < 1 / math.e)
    return float(below[0] / fr) if below.size else float(len(x) / fr)


def fit_background(movie, *, fr: float, soma_radius_px: float, zero_level: float = 0.0) -> dict:
    """Neuropil and background: the movie blurred over 3 soma radii (cells averaged away).

    Returns
    -------
    dict
        ``level_vs_soma``: the background's median over the bright somata's level (99th
        percentile of the mean image), both above ``zero_level`` (the neuropil strength in
        resting-soma units of the simulator); ``modulation``: median over pixels of the blurred
        trace's sd over its mean (above ``zero_level``); ``alpha``: slope of its temporal power
        spectrum between 4 cycles per movie and ``fr / 4``; ``correlation_time_s`` of the
        field-averaged trace.
    """
    movie = _as_float(movie)
    sigma = 3.0 * soma_radius_px
    blurred = scipy.ndimage.gaussian_filter(movie, (0, sigma, sigma), mode="reflect")
    mean = movie.mean(axis=0)
    soma = float(np.percentile(mean, 99)) - zero_level
    background = float(np.median(blurred.mean(axis=0))) - zero_level
    lifted = blurred - zero_level
    level = np.maximum(lifted.mean(axis=0), 1e-12)
    modulation = float(np.median(lifted.std(axis=0) / level))
    global_trace = lifted.mean(axis=(1, 2))
    T = movie.shape[0]
    nperseg = int(min(T, 256))
    freqs, psd = scipy.signal.welch(
        lifted.reshape(T, -1)[:, :: max(1, lifted[0].size // 512)].T, fs=fr, nperseg=nperseg
    )
    psd = psd.mean(axis=0)
    band = (freqs >= 4 * fr / T) & (freqs <= fr / 4)
    return {
        "level_vs_soma": background / soma if soma > 0 else float("nan"),
        "modulation": modulation,
        "alpha": _slope(freqs[band], psd[band]),
        "correlation_time_s": _correlation_time(global_trace, fr),
    }


def _register(
    frames: np.ndarray, template_frames: np.ndarray, limit: int, factor: int, exclude: int
):
    """Shift (row, col) of each frame against the mean of the ``template_frames`` more than
    ``exclude - 1`` frames away (a frame's own noise, shared by its neighbours after temporal
    smoothing, must not make the peak), and the peak's reliability.

    Cross-correlation, whitened by the square root of its magnitude (sharper than plain
    correlation, less noisy than phase correlation); the integer peak within ``limit`` px is
    refined to 1 / ``factor`` px by an upsampled DFT around it (Guizar-Sicairos et al. 2008).
    Reliability: the peak over the surface's sd away from it (peak-to-sidelobe ratio)."""
    rows, cols = frames.shape[1:]
    window = np.outer(np.hanning(rows), np.hanning(cols))

    def spectrum(image):
        return np.fft.fft2((image - image.mean()) * window)

    T = len(frames)
    total = sum(spectrum(image) for image in template_frames)
    near = sum(spectrum(template_frames[s]) for s in range(min(exclude, T)))
    offsets = np.arange(-1.0, 1.0 + 0.5 / factor, 1.0 / factor)
    k_rows, k_cols = np.fft.fftfreq(rows), np.fft.fftfreq(cols)
    centre = np.array([rows // 2, cols // 2])
    far = np.ones((rows, cols), bool)
    shifts = np.zeros((len(frames), 2))
    ratio = np.zeros(len(frames))
    for t, frame in enumerate(frames):  # ``near``: the frames within ``exclude`` of t
        if t + exclude - 1 < T and t > 0:
            near = near + spectrum(template_frames[t + exclude - 1])
        if t - exclude >= 0:
            near = near - spectrum(template_frames[t - exclude])
        count = min(T, t + exclude) - max(0, t - exclude + 1)
        reference = np.conj(total - near) / max(T - count, 1)
        cross = spectrum(frame) * reference
        cross /= np.maximum(np.sqrt(np.abs(cross)), 1e-12)
        surface = np.fft.fftshift(np.real(np.fft.ifft2(cross)))
        box = surface[centre[0] - limit : centre[0] + limit + 1,
                      centre[1] - limit : centre[1] + limit + 1]  # fmt: skip
        peak = np.array(np.unravel_index(np.argmax(box), box.shape)) - limit
        away = far.copy()
        away[max(0, centre[0] + peak[0] - 3) : centre[0] + peak[0] + 4,
             max(0, centre[1] + peak[1] - 3) : centre[1] + peak[1] + 4] = False  # fmt: skip
        ratio[t] = (surface[tuple(centre + peak)] - surface[away].mean()) / max(
            surface[away].std(), 1e-12
        )
        at_rows = np.exp(2j * np.pi * np.outer(peak[0] + offsets, k_rows))
        at_cols = np.exp(2j * np.pi * np.outer(k_cols, peak[1] + offsets))
        fine = np.real(at_rows @ cross @ at_cols)
        best = np.unravel_index(np.argmax(fine), fine.shape)
        shifts[t] = peak + offsets[list(best)]
    return shifts, ratio


def phase_correlation_shifts(
    movie, *, smooth_frames: int = 3, max_shift: float = 10.0, min_reliability: float = 12.0
):
    """Rigid (row, col) shift of each frame against the movie's mean image.

    Frames are averaged over ``smooth_frames`` (a running mean, against photon noise) and
    blurred by 1 px; each is registered to the mean of the other frames by whitened
    cross-correlation with an upsampled-DFT refinement to 0.05 px, then once more to the mean
    of the other frames so aligned (a sharper template). A frame whose correlation peak is not
    reliable (peak-to-sidelobe ratio under ``min_reliability``; pure noise gives about 6) gets
    the median shift; a field where most frames are unreliable (no structure to register)
    gets no motion at all. A positive shift means the frame's content sits further down /
    right than in the template. Precision about 0.1 px (the fixed window pulls towards 0).

    Returns
    -------
    (T, 2) float64 ndarray

    Examples
    --------
    >>> rng = np.random.default_rng(4)
    >>> image = scipy.ndimage.gaussian_filter(rng.normal(size=(64, 64)), 2)
    >>> moves = [0] * 8 + [2, 2, 0.5]
    >>> frames = np.stack([scipy.ndimage.shift(image, (s, 0), mode="wrap") for s in moves])
    >>> shifts = phase_correlation_shifts(frames, smooth_frames=1)
    >>> error = (shifts[-4:, 0] - shifts[0, 0]) - [0, 2, 2, 0.5]  # about 0.1 px
    >>> bool(np.abs(error).max() < 0.15), bool(np.ptp(shifts[:, 1]) < 0.1)
    (True, True)
    >>> noise = rng.normal(size=(6, 64, 64))  # nothing to register: no motion reported
    >>> phase_correlation_shifts(noise, smooth_frames=1).tolist() == [[0.0, 0.0]] * 6
    True
    """
    movie = _as_float(movie)
    if smooth_frames > 1:
        movie = scipy.ndimage.uniform_filter1d(movie, smooth_frames, axis=0, mode="nearest")
    movie = scipy.ndimage.gaussian_filter(movie, (0, 1, 1), mode="reflect")
    rows, cols = movie.shape[1:]
    limit = int(min(max_shift, rows // 2 - 4, cols // 2 - 4))
    if limit < 1:
        return np.zeros((movie.shape[0], 2))
    exclude = max(1, smooth_frames)
    shifts, ratio = _register(movie, movie, limit, 20, exclude)
    good = ratio >= min_reliability
    if np.median(ratio) < min_reliability:
        return np.zeros((movie.shape[0], 2))
    if good.sum() >= 2:
        aligned = np.stack([scipy.ndimage.shift(frame, -shift, order=1, mode="nearest")
                            for frame, shift in zip(movie, shifts)])  # fmt: skip
        aligned[~good] = movie.mean(axis=0)  # unreliable frames add only the plain mean
        shifts, ratio = _register(movie, aligned, limit, 20, exclude)
        good = ratio >= min_reliability
    if np.median(ratio) < min_reliability:
        return np.zeros((movie.shape[0], 2))
    shifts[~good] = np.median(shifts[good], axis=0)
    return shifts


def fit_motion(movie, *, fr: float) -> dict:
    """Rigid motion by phase correlation: sizes in px and the shifts themselves.

    Returns
    -------
    dict
        ``rms_px`` (distance from the median position), ``max_px`` (largest absolute shift on
        either axis from the median), ``jitter_px`` (sd of frame-to-frame change), ``drift_px``
        (range of the 1 s running mean), ``shifts`` ((T, 2) list, rounded to 0.01 px).
    """
    shifts = phase_correlation_shifts(movie)
    centred = shifts - np.median(shifts, axis=0)
    window = max(1, int(round(fr)))
    slow = scipy.ndimage.uniform_filter1d(centred, window, axis=0, mode="nearest")
    return {
        "rms_px": float(np.sqrt(np.mean(np.sum(centred**2, axis=1)))),
        "max_px": float(np.max(np.abs(centred))),
        "jitter_px": float(np.std(np.diff(centred, axis=0))) if len(centred) > 2 else 0.0,
        "drift_px": float(np.max(np.ptp(slow, axis=0))),
        "shifts": centred.round(2).tolist(),
    }


def correlation_image(movie) -> np.ndarray:
    """Mean correlation of each pixel's trace with its 4 neighbours (a correlation image)."""
    movie = _as_float(movie)
    z = movie - movie.mean(axis=0)
    z /= np.maximum(z.std(axis=0), 1e-12)
    total = np.zeros(movie.shape[1:])
    count = np.zeros(movie.shape[1:])
    down = np.mean(z[:, 1:, :] * z[:, :-1, :], axis=0)
    right = np.mean(z[:, :, 1:] * z[:, :, :-1], axis=0)
    for value, first, second in (
        (down, np.s_[1:, :], np.s_[:-1, :]),
        (right, np.s_[:, 1:], np.s_[:, :-1]),
    ):
        total[first] += value
        total[second] += value
        count[first] += 1
        count[second] += 1
    return total / count


def fit_kinetics(movie, *, fr: float, top_fraction: float = 0.01) -> dict:
    """Decay time of calcium events from the most correlated pixels' autocovariance.

    The traces of the ``top_fraction`` pixels of the correlation image are high-passed (a
    running mean over 30 s removed); AR(1) coefficient ``g = acov(2) / acov(1)`` (lag 0 holds
    the noise), decay ``-1 / ln g`` frames. Movies shorter than 300 frames give NaN
    (``reliable`` False).

    Examples
    --------
    >>> rng = np.random.default_rng(5)
    >>> spikes = rng.poisson(0.05, (2000, 1, 1)) * np.ones((1, 8, 8))
    >>> calcium = scipy.signal.lfilter([1], [1, -0.9], spikes, axis=0)
    >>> fit = fit_kinetics(calcium + rng.normal(0, 0.05, calcium.shape), fr=10.0)
    >>> round(fit["g"], 2), round(fit["decay_s"], 1)  # true: g 0.9, decay 0.95 s
    (0.9, 1.0)
    """
    movie = _as_float(movie)
    T = movie.shape[0]
    if T < _MIN_FRAMES_KINETICS:
        return {"decay_frames": float("nan"), "decay_s": float("nan"), "g": float("nan"),
                "reliable": False}  # fmt: skip
    cn = correlation_image(movie)
    n = max(4, int(round(top_fraction * cn.size)))
    pick = np.argsort(cn.ravel())[-n:]
    traces = movie.reshape(T, -1)[:, pick]
    window = int(min(T, max(3, round(30 * fr))))
    traces = traces - scipy.ndimage.uniform_filter1d(traces, window, axis=0, mode="nearest")
    traces -= traces.mean(axis=0)
    acov1 = np.mean(traces[1:] * traces[:-1], axis=0)
    acov2 = np.mean(traces[2:] * traces[:-2], axis=0)
    good = acov1 > 0
    g = float(np.median(np.clip(acov2[good] / acov1[good], 1e-6, 0.9999))) if good.any() else np.nan
    decay = -1.0 / math.log(g) if 0 < g < 1 else float("nan")
    return {"decay_frames": decay, "decay_s": decay / fr, "g": g, "reliable": True}


def fit_recording(movie, *, fr: float, soma_radius_px: float) -> dict:
    """Every statistic of one recording (see the module's docstring), JSON-ready.

    Parameters
    ----------
    movie : (T, rows, cols) array
    fr : float
        Frame rate (Hz), known or assumed.
    soma_radius_px : float
        Typical soma radius (px).

    Returns
    -------
    dict
        ``noise``, ``noise_correlation``, ``texture``, ``background``, ``motion``,
        ``kinetics``, plus ``shape``, ``fr``, ``soma_radius_px``, ``calibration_version``.
    """
    movie = _as_float(movie)
    noise = fit_noise(movie)
    zero = noise["zero_level"] if np.isfinite(noise["zero_level"]) else float(np.min(movie))
    return {
        "shape": list(movie.shape),
        "fr": float(fr),
        "soma_radius_px": float(soma_radius_px),
        "calibration_version": CALIBRATION_VERSION,
        "noise": noise,
        "noise_correlation": fit_noise_correlation(movie),
        "texture": fit_texture(movie, soma_radius_px=soma_radius_px),
        "background": fit_background(movie, fr=fr, soma_radius_px=soma_radius_px, zero_level=zero),
        "motion": fit_motion(movie, fr=fr),
        "kinetics": fit_kinetics(movie, fr=fr),
    }


def _photons_at_soma(stats: dict) -> float:
    """Photons per pixel per frame of a bright soma: the median pixel's photons over the
    background's level relative to the somata (at most 1)."""
    noise, background = stats["noise"], stats["background"]
    ratio = background["level_vs_soma"]
    if not (noise["photons_median"] > 0 and ratio > 0):
        return float("nan")
    return float(noise["photons_median"] / min(ratio, 1.0))


def _zoom(soma_radius_px: float) -> float:
    return soma_radius_px * UM_PER_PX_AT_ZOOM_1 / float(np.mean(SOMA_RADIUS_UM))


def _span(values: Sequence[float], low_factor: float, high_factor: float, floor: float,
          ceiling: float) -> tuple[float, float]:  # fmt: skip
    values = [float(v) for v in values if np.isfinite(v)]
    if not values:
        return (floor, ceiling)
    low = float(np.clip(min(values) * low_factor, floor, ceiling))
    high = float(np.clip(max(values) * high_factor, floor, ceiling))
    return (min(low, high), max(low, high))


def randomisation_ranges(statistics: dict) -> dict:
    """Ranges for domain randomisation, from the statistics of the training recordings.

    Parameters
    ----------
    statistics : dict
        ``{name: fit_recording(...)}`` of the recordings to calibrate on. Leave held-out
        recordings out (never tune on them).

    Returns
    -------
    dict of (low, high)
        ``zoom`` (from soma radii, widened 1.35x each way), ``photons_per_unit`` (photons at a
        resting soma, /3 .. x3, at least 0.5), ``read_noise`` (photons, /2 .. x2),
        ``pmt_excess`` (variance excess of the PMT gain, 0 .. 0.8: not separable from the
        photon gain, so only randomised), ``noise_correlation`` (along the scan line, 0 .. 1.5x
        the largest fitted, below 0.45), ``texture_level`` and ``texture_beta``,
        ``max_motion_px`` (0 .. 2x the largest fitted, and at least to 3 px: short test crops
        barely move, awake recordings move a few px; CaImAn's demos allow 6), ``neuropil_level``
        (/2 .. x2), ``neuropil_time_s``, ``fr`` (7.5 .. 60 Hz: most frame rates are not stated
        with the recordings), ``density`` (0.4 .. 2.5 times the standard preset's counts);
        ``indicators`` (all of ``INDICATORS``).
    """
    if not statistics:
        raise ValueError("randomisation_ranges needs the statistics of at least one recording")
    stats = list(statistics.values())
    zooms = [_zoom(s["soma_radius_px"]) for s in stats]
    correlation = [max(s["noise_correlation"]["along_line"], 0.0) for s in stats]
    motion = [s["motion"]["max_px"] for s in stats if s["shape"][0] >= 50]
    return {
        "zoom": _span(zooms, 1 / 1.35, 1.35, 0.4, 2.5),
        "photons_per_unit": _span([_photons_at_soma(s) for s in stats], 1 / 3, 3, 0.5, 400.0),
        "read_noise": _span([s["noise"]["read_noise_photons"] for s in stats], 0.5, 2, 0.05, 5.0),
        "pmt_excess": (0.0, 0.8),
        "noise_correlation": (0.0, float(min(0.45, 1.5 * max(correlation + [0.05])))),
        "texture_level": _span(
            [s["texture"]["contrast_soma_scale"] for s in stats], 0.5, 1.5, 0.0, 0.6
        ),
        "texture_beta": _span([s["texture"]["beta"] for s in stats], 0.85, 1.15, 1.0, 4.0),
        "max_motion_px": (0.0, float(min(6.0, max(3.0, 2 * max(motion + [0.5]))))),
        "neuropil_level": _span(
            [s["background"]["level_vs_soma"] for s in stats], 0.5, 2.0, 0.1, 2.5
        ),
        "neuropil_time_s": _span(
            [s["background"]["correlation_time_s"] for s in stats if s["shape"][0] >= 300],
            0.5,
            2.0,
            0.5,
            20.0,
        ),  # fmt: skip
        "fr": (7.5, 60.0),
        "density": (0.4, 2.5),
        "indicators": sorted(INDICATORS),
    }


def _loguniform(rng: np.random.Generator, bounds) -> float:
    low, high = (float(b) for b in bounds)
    if low <= 0:
        return float(rng.uniform(low, high))
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def randomised_settings(
    ranges: dict,
    seed: int,
    *,
    name: str | None = None,
    dims: tuple[int, int] = (128, 128),
    frames: int = 1000,
    base: MovieSettings | None = None,
) -> MovieSettings:
    """One movie's settings drawn around the fitted statistics (domain randomisation).

    Parameters
    ----------
    ranges : dict
        :func:`randomisation_ranges` of the training recordings.
    seed : int
        Seed of the draw (the movie itself takes its own seed).
    name : str, optional
        Settings name (default ``calibrated_<seed>``).
    dims, frames : optional
        Field of view and length.
    base : MovieSettings, optional
        Object counts to scale by the drawn density (default the standard training preset).

    Returns
    -------
    MovieSettings
        Zoom, photons per unit (SNR), read noise, PMT excess noise, noise correlation, texture,
        motion, neuropil level and time, frame rate, indicator and object counts (scaled by
        density and field area, and by zoom squared) drawn log-uniformly (uniformly for
        quantities that may be 0).

    Examples
    --------
    >>> ranges = {"zoom": (0.8, 1.5), "photons_per_unit": (5, 50), "read_noise": (0.5, 3),
    ...     "pmt_excess": (0, 0.8), "noise_correlation": (0, 0.3), "texture_level": (0, 0.3),
    ...     "texture_beta": (2, 3), "max_motion_px": (0, 2), "neuropil_level": (0.2, 1),
    ...     "neuropil_time_s": (1, 10), "fr": (7.5, 60), "density": (0.4, 2.5),
    ...     "indicators": ["GCaMP6f", "GCaMP6s"]}
    >>> s = randomised_settings(ranges, 0, dims=(64, 64), frames=100)
    >>> s.name, s.dims, s.frames, s.indicator in ("GCaMP6f", "GCaMP6s")
    ('calibrated_00000', (64, 64), 100, True)
    """
    rng = np.random.default_rng(seed)
    base = base if base is not None else TRAIN_PRESETS["train_gcamp6f_standard"]
    zoom = _loguniform(rng, ranges["zoom"])
    density = _loguniform(rng, ranges["density"])
    area = dims[0] * dims[1] / (base.dims[0] * base.dims[1])
    factor = density * area / (zoom / base.zoom) ** 2

    def counts(bounds, minimum=0):
        low, high = (max(minimum, int(round(b * factor))) for b in bounds)
        return (low, max(low, high))

    photons = _loguniform(rng, ranges["photons_per_unit"])
    read = _loguniform(rng, ranges["read_noise"])
    neuropil = _loguniform(rng, ranges["neuropil_level"])
    indicator = str(rng.choice(list(ranges["indicators"])))
    return dataclasses.replace(
        base,
        name=name or f"calibrated_{seed:05d}",
        held_out=False,
        dims=tuple(int(d) for d in dims),
        frames=int(frames),
        fr=round(_loguniform(rng, ranges["fr"]), 2),
        indicator=indicator,
        zoom=round(zoom, 3),
        n_somata=counts(base.n_somata, 1),
        n_dendrites=counts(base.n_dendrites),
        n_axons=counts(base.n_axons),
        n_out_of_focus=counts(base.n_out_of_focus),
        n_border_cut=counts(base.n_border_cut),
        n_dim=counts(base.n_dim),
        photons_per_unit=(round(photons * 0.8, 2), round(photons * 1.25, 2)),
        read_noise=(round(read * 0.8, 2), round(read * 1.25, 2)),
        neuropil_level=(round(neuropil * 0.8, 3), round(neuropil * 1.25, 3)),
        max_motion_px=round(float(rng.uniform(*ranges["max_motion_px"])), 2),
        pmt_excess=round(float(rng.uniform(*ranges["pmt_excess"])), 3),
        noise_correlation=round(float(rng.uniform(*ranges["noise_correlation"])), 3),
        texture_level=round(float(rng.uniform(*ranges["texture_level"])), 3),
        texture_beta=round(float(rng.uniform(*ranges["texture_beta"])), 2),
        neuropil_time_s=round(_loguniform(rng, ranges["neuropil_time_s"]), 2),
    )


def _fmt(value, digits: int = 3) -> str:
    if isinstance(value, bool):
        return str(value)
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}"


def statistics_table(statistics: dict, held_out: Sequence[str] = ()) -> str:
    """A markdown table of the fitted statistics, one row per recording.

    Examples
    --------
    >>> rng = np.random.default_rng(6)
    >>> stats = fit_recording(rng.poisson(50, (60, 32, 32)).astype(float), fr=30.0,
    ...                       soma_radius_px=3.0)
    >>> table = statistics_table({"fake": stats})
    >>> table.splitlines()[2].startswith("| fake |")
    True
    """
    header = (
        "| recording | T x rows x cols | gain (counts/photon) | zero level | photons (median px) "
        "| noise sd | noise corr. along / across lines | texture beta | texture contrast "
        "| neuropil / soma | neuropil modulation | neuropil alpha | neuropil corr. time (s) "
        "| motion rms / max (px) | decay (frames) |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for name, s in statistics.items():
        n, c, t, b, m, k = (s[key] for key in ("noise", "noise_correlation", "texture",
                                                "background", "motion", "kinetics"))  # fmt: skip
        label = f"{name} (held out)" if name in held_out else name
        lines.append(
            f"| {label} | {'x'.join(str(v) for v in s['shape'])} | {_fmt(n['gain'])} | "
            f"{_fmt(n['zero_level'])} | {_fmt(n['photons_median'])} | {_fmt(n['noise_sd_median'])} "
            f"| {_fmt(c['along_line'], 2)} / {_fmt(c['across_lines'], 2)} | {_fmt(t['beta'])} | "
            f"{_fmt(t['contrast_soma_scale'], 2)} | {_fmt(b['level_vs_soma'], 2)} | "
            f"{_fmt(b['modulation'], 2)} | {_fmt(b['alpha'], 2)} | "
            f"{_fmt(b['correlation_time_s'], 2)} | {_fmt(m['rms_px'], 2)} / {_fmt(m['max_px'], 2)} "
            f"| {_fmt(k['decay_frames'], 3)} |"
        )
    return "\n".join(lines)
