"""Simulated CNMF-like spatial footprints of the four classes, for training and tests.

Each footprint is drawn from a per-class shape generator (somata, dendrite pieces,
diffuse or speckled noise, doubtful cells) and then passed through what CNMF does to a
spatial component: leakage from a neighbour, background haze, spatial smoothing, noise
restricted to a dilated support, non-negativity, thresholding at a fraction of the max
and, sometimes, binarisation (masks from other pipelines). The result is laid out like
CaImAn's ``estimates.A``: a sparse (pixels x components) matrix with pixels in Fortran order.

Everything is seeded through ``numpy.random.default_rng(seed)``; no global state is used.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.ndimage
import scipy.signal
import scipy.sparse

from calcomp_caiman.checks import check_dims
from calcomp_caiman.schema import CLASSES

logger = logging.getLogger(__name__)

__all__ = [
    "SHIFTED_SETTINGS",
    "TRAIN_SETTINGS",
    "Session",
    "SimulationSettings",
    "simulate_footprints",
    "simulate_session",
]

_CHUNK = 512  # components rendered at once (bounds the dense working memory)
_TILE_HALF_PER_GSIG = 3.5  # default tile half-width, in units of gSig
_WINDOW_PER_GSIG = 3.2  # footprint support never extends further than this from its centre
_RANGE_FIELDS = (
    "soma_radius",
    "zoom",
    "snr",
    "noise_snr",
    "smooth_sigma",
    "threshold",
    "binary_threshold",
    "leak_strength",
    "haze",
    "elongation",
)
_POSITIVE_FIELDS = ("soma_radius", "zoom", "snr", "noise_snr", "elongation")
_PROBABILITY_FIELDS = ("p_binary", "p_leak", "p_stub", "p_donut", "p_border")


@dataclass(frozen=True)
class SimulationSettings:
    """Ranges of the simulated footprints' parameters (all ranges are ``(low, high)`` tuples).

    Sizes are in pixels at zoom 1 and are multiplied by the zoom drawn for the field of
    view. Change a field with ``dataclasses.replace(TRAIN_SETTINGS, p_binary=0.0)``.

    Parameters
    ----------
    soma_radius : (float, float)
        Soma radius in px at zoom 1 (drawn uniformly per neuron). The field's ``gSig`` is
        ``zoom * mean(soma_radius)``.
    zoom : (float, float)
        Optical zoom factor, drawn log-uniformly once per field of view.
    snr : (float, float)
        Peak-to-noise ratio of neurons and processes (log-uniform); doubtful cells use
        0.3-0.8 times this.
    noise_snr : (float, float)
        Peak-to-noise ratio of noise components (log-uniform).
    smooth_sigma : (float, float)
        Gaussian smoothing sigma in px at zoom 1 applied to every footprint.
    threshold : (float, float)
        Fraction of each footprint's max below which pixels are set to 0 (CNMF sparsity).
    p_binary : float
        Probability that a footprint is replaced by a binary mask ``footprint >= thr``.
    binary_threshold : (float, float)
        Fraction of the max used to binarise.
    p_leak : float
        Probability that a weak copy of a neighbouring soma leaks into a footprint.
    leak_strength : (float, float)
        Peak of the leaked copy relative to the footprint's peak.
    haze : (float, float)
        Peak of a broad, dim background pedestal relative to the footprint's peak.
    p_stub : float
        Probability that a neuron has 1-3 dim process stubs attached.
    p_donut : float
        Probability that a neuron is ring-shaped (dark nucleus).
    elongation : (float, float)
        Ratio of the major to the minor axis of somata.
    p_border : float
        Probability that a component on an edge tile of the field of view is moved onto
        the border and cut off there.

    Raises
    ------
    ValueError
        A range is not ``low <= high`` with valid bounds, or a probability is outside [0, 1].

    Examples
    --------
    >>> import dataclasses
    >>> masks_only = dataclasses.replace(TRAIN_SETTINGS, p_binary=1.0)
    >>> masks_only.p_binary, TRAIN_SETTINGS.p_binary
    (1.0, 0.25)
    """

    soma_radius: tuple[float, float] = (3.5, 6.5)
    zoom: tuple[float, float] = (0.7, 1.5)
    snr: tuple[float, float] = (5.0, 40.0)
    noise_snr: tuple[float, float] = (1.0, 4.0)
    smooth_sigma: tuple[float, float] = (0.3, 1.0)
    threshold: tuple[float, float] = (0.0, 0.15)
    p_binary: float = 0.25
    binary_threshold: tuple[float, float] = (0.15, 0.5)
    p_leak: float = 0.3
    leak_strength: tuple[float, float] = (0.05, 0.35)
    haze: tuple[float, float] = (0.0, 0.06)
    p_stub: float = 0.3
    p_donut: float = 0.25
    elongation: tuple[float, float] = (1.0, 1.6)
    p_border: float = 0.5

    def __post_init__(self):
        for name in _RANGE_FIELDS:
            value = getattr(self, name)
            try:
                low, high = (float(v) for v in value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"SimulationSettings.{name} must be a (low, high) pair of numbers, "
                    f"got {value!r}."
                ) from None
            positive = name in _POSITIVE_FIELDS
            if not (np.isfinite(low) and np.isfinite(high)) or low > high or low < 0:
                raise ValueError(
                    f"SimulationSettings.{name} must satisfy 0 <= low <= high, got {value!r}."
                )
            if positive and low <= 0:
                raise ValueError(f"SimulationSettings.{name} must be positive, got {value!r}.")
            if name in ("threshold", "binary_threshold") and high >= 1:
                raise ValueError(
                    f"SimulationSettings.{name} is a fraction of the max and must be < 1, "
                    f"got {value!r}."
                )
            if name == "elongation" and low < 1:
                raise ValueError(
                    f"SimulationSettings.elongation is a major/minor axis ratio (>= 1), "
                    f"got {value!r}."
                )
            object.__setattr__(self, name, (low, high))
        for name in _PROBABILITY_FIELDS:
            value = getattr(self, name)
            if not (isinstance(value, (int, float, np.floating)) and 0 <= value <= 1):
                raise ValueError(
                    f"SimulationSettings.{name} is a probability in [0, 1], got {value!r}."
                )
            object.__setattr__(self, name, float(value))


TRAIN_SETTINGS = SimulationSettings()
"""Settings for training data: somata 7-13 px across at zoom 1, zoom 0.7-1.5, moderate-high SNR."""

SHIFTED_SETTINGS = SimulationSettings(
    soma_radius=(4.5, 9.0),
    zoom=(0.45, 0.7),
    snr=(2.5, 12.0),
    noise_snr=(0.7, 2.5),
    smooth_sigma=(0.6, 1.6),
    threshold=(0.05, 0.3),
    p_binary=0.5,
    binary_threshold=(0.3, 0.6),
    p_leak=0.5,
    leak_strength=(0.15, 0.5),
    haze=(0.03, 0.12),
    p_stub=0.5,
    p_donut=0.1,
    elongation=(1.2, 2.2),
    p_border=0.8,
)
"""Out-of-distribution settings: smaller (low-zoom), more elongated cells, lower SNR, more blur,
stronger leakage and thresholds, more binary masks."""


@dataclass(frozen=True, eq=False)
class Session:
    """A simulated CNMF result for one field of view (what ``cnm.estimates`` holds).

    Attributes
    ----------
    A : (dims[0] * dims[1], N) scipy.sparse.csc_matrix, float32
        Spatial footprints, pixels in Fortran order, each column max 1.
    C : (N, T) float32 ndarray
        Non-negative calcium traces.
    b : (dims[0] * dims[1], 1) float32 ndarray
        Spatial background, Fortran pixel order.
    f : (1, T) float32 ndarray
        Temporal background.
    dims : tuple of 2 ints
        Field of view shape (rows, cols).
    labels : (N,) int64 ndarray
        Class codes 1-4 (order of ``CLASSES``).
    gSig : float
        Half-size of a typical neuron, px.
    frame_rate : float
        Frames per second.

    Examples
    --------
    >>> session = simulate_session(n_components=(3, 1, 1, 1), n_frames=50, seed=0)
    >>> session.A.shape[1], session.C.shape
    (6, (6, 50))
    """

    A: scipy.sparse.csc_matrix
    C: np.ndarray
    b: np.ndarray
    f: np.ndarray
    dims: tuple[int, int]
    labels: np.ndarray
    gSig: float
    frame_rate: float


class _Draft(NamedTuple):
    """Clean shapes of one class plus the per-component knobs of the CNMF-like pipeline."""

    image: np.ndarray  # (n, T, T) float32, peak about 1
    snr: np.ndarray  # (n,) peak-to-noise ratio
    smooth_scale: np.ndarray  # (n,) multiplier of the base smoothing sigma
    extra_blur: np.ndarray  # (n,) px, added in quadrature to the smoothing sigma


class _Canvas(NamedTuple):
    """Pixel coordinates of a square canvas, ready for broadcasting against (n, 1, 1) arrays."""

    rows: np.ndarray  # (1, T, 1) float32
    cols: np.ndarray  # (1, 1, T) float32
    half: float  # (size - 1) / 2: the canvas centre, px
    zoom: float
    gsig: float


# ----------------------------------------------------------------------------- helpers


def _col(values) -> np.ndarray:
    """(n,) values as an (n, 1, 1) float32 array."""
    return np.asarray(values, dtype=np.float32)[:, None, None]


def _loguniform(rng: np.random.Generator, bounds, size) -> np.ndarray:
    low, high = bounds
    return np.exp(rng.uniform(np.log(low), np.log(high), size))


def _make_canvas(size: int, zoom: float, gsig: float) -> _Canvas:
    axis = np.arange(size, dtype=np.float32)
    return _Canvas(axis[None, :, None], axis[None, None, :], (size - 1) / 2, zoom, gsig)


def _jitter(canvas: _Canvas) -> float:
    """Largest random shift (px) of a component's centre from its tile's centre."""
    return min(canvas.zoom, 0.1 * canvas.half)


def _smooth(stack: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Gaussian-smooth each image of ``stack`` with its own sigma (rounded to 0.1 px)."""
    out = np.empty_like(stack)
    steps = np.round(np.asarray(sigma, dtype=float) * 10).astype(int)
    for step in np.unique(steps):
        idx = np.flatnonzero(steps == step)
        if step < 2:
            out[idx] = stack[idx]
        else:
            s = step / 10
            out[idx] = scipy.ndimage.gaussian_filter(
                stack[idx], sigma=(0, s, s), mode="constant", truncate=3.0
            )
    return out


def _ellipse_rho(
    canvas: _Canvas,
    centres: np.ndarray,
    radius: np.ndarray,
    elongation: np.ndarray,
    theta: np.ndarray,
    harmonics: np.ndarray | None = None,
    phases: np.ndarray | None = None,
) -> np.ndarray:
    """Normalised elliptical distance (1 on the outline), optionally with a wavy outline.

    ``harmonics`` (n, K) are relative amplitudes of angular modes 2..K+1.
    """
    d_rows = canvas.rows - _col(centres[:, 0])
    d_cols = canvas.cols - _col(centres[:, 1])
    cos_t, sin_t = _col(np.cos(theta)), _col(np.sin(theta))
    root = np.sqrt(elongation)
    u = (d_rows * cos_t + d_cols * sin_t) / _col(radius * root)
    v = (-d_rows * sin_t + d_cols * cos_t) / _col(radius / root)
    rho = np.sqrt(u * u + v * v)
    if harmonics is not None and np.any(harmonics > 0):
        angle = np.arctan2(v, u)
        modulation = np.ones_like(rho)
        for k in range(harmonics.shape[1]):
            modulation += _col(harmonics[:, k]) * np.cos((k + 2) * angle + _col(phases[:, k]))
        rho /= np.maximum(modulation, 0.3)
    return rho


def _segments(
    canvas: _Canvas,
    start: np.ndarray,
    end: np.ndarray,
    width: np.ndarray,
    intensity: np.ndarray,
    *,
    taper: np.ndarray | None = None,
    bead_amplitude: np.ndarray | None = None,
    bead_period: np.ndarray | None = None,
    bead_phase: np.ndarray | None = None,
) -> np.ndarray:
    """Max over K line segments with Gaussian cross-section (a point when start == end).

    ``start``, ``end``: (n, K, 2) px; ``width`` (Gaussian sigma), ``intensity``: (n, K);
    segments with intensity 0 are skipped. Optional per-component (n,) ``taper`` (fractional
    drop along a segment) and beading (periodic varicosities).
    """
    n, n_segments = intensity.shape
    out = np.zeros((n, canvas.rows.shape[1], canvas.cols.shape[2]), np.float32)
    for k in range(n_segments):
        idx = np.flatnonzero(intensity[:, k] > 0)
        if idx.size == 0:
            continue
        r0, c0 = _col(start[idx, k, 0]), _col(start[idx, k, 1])
        dr = _col(end[idx, k, 0] - start[idx, k, 0])
        dc = _col(end[idx, k, 1] - start[idx, k, 1])
        length2 = dr * dr + dc * dc
        rel_r, rel_c = canvas.rows - r0, canvas.cols - c0
        t = np.clip((rel_r * dr + rel_c * dc) / np.maximum(length2, 1e-6), 0, 1)
        dist2 = (rel_r - t * dr) ** 2 + (rel_c - t * dc) ** 2
        value = _col(intensity[idx, k]) * np.exp(-dist2 / (2 * _col(width[idx, k]) ** 2))
        if taper is not None:
            value *= 1 - _col(taper[idx]) * t
        if bead_amplitude is not None:
            along = t * np.sqrt(length2)
            value *= 1 + _col(bead_amplitude[idx]) * np.sin(
                2 * np.pi * along / _col(bead_period[idx]) + _col(bead_phase[idx])
            )
        out[idx] = np.maximum(out[idx], value)
    return out


def _unit(angle: np.ndarray) -> np.ndarray:
    """(..., 2) unit vectors (rows, cols) for angles in radians."""
    return np.stack([np.sin(angle), np.cos(angle)], axis=-1)


def _soma_images(
    rng: np.random.Generator,
    canvas: _Canvas,
    centres: np.ndarray,
    radius: np.ndarray,
    settings: SimulationSettings,
    *,
    harmonic_range=(0.0, 0.12),
    p_donut: float | None = None,
    p_core: float = 0.4,
) -> np.ndarray:
    """Filled (Gaussian to flat-top, sometimes with a bright core) or ring-shaped somata."""
    n = len(radius)
    elongation = rng.uniform(*settings.elongation, n)
    theta = rng.uniform(0, np.pi, n)
    harmonics = rng.uniform(*harmonic_range, (n, 3)) * rng.random((n, 3))
    phases = rng.uniform(0, 2 * np.pi, (n, 3))
    rho = _ellipse_rho(canvas, centres, radius, elongation, theta, harmonics, phases)
    power = rng.uniform(2.0, 6.0, n)
    edge_value = rng.uniform(0.15, 0.45, n)  # profile value on the outline
    scale = (-2 * np.log(edge_value)) ** (-1 / power)
    image = np.exp(-0.5 * (rho / _col(scale)) ** _col(power))
    p_donut = settings.p_donut if p_donut is None else p_donut
    donut = rng.random(n) < p_donut
    core_weight = np.where((rng.random(n) < p_core) & ~donut, rng.uniform(0.2, 0.6, n), 0.0)
    if np.any(core_weight > 0):
        core = np.exp(-0.5 * (rho / _col(rng.uniform(0.15, 0.35, n))) ** 2)
        image = _col(1 - core_weight) * image + _col(core_weight) * core
    if donut.any():
        depth = np.where(donut, rng.uniform(0.5, 0.95, n), 0.0)
        nucleus = _col(rng.uniform(0.35, 0.6, n))
        image *= 1 - _col(depth) * np.exp(-0.5 * (rho / nucleus) ** 4)
    return image.astype(np.float32, copy=False)


def _add_stubs(
    rng: np.random.Generator,
    canvas: _Canvas,
    image: np.ndarray,
    centres: np.ndarray,
    radius: np.ndarray,
    p_stub: float,
) -> np.ndarray:
    """Attach 1-3 dim, tapering process stubs to a fraction ``p_stub`` of the somata."""
    idx = np.flatnonzero(rng.random(len(radius)) < p_stub)
    if idx.size == 0:
        return image
    n = idx.size
    count = rng.integers(1, 4, n)
    angle = rng.uniform(0, 2 * np.pi, (n, 3))
    direction = _unit(angle)
    r = radius[idx, None, None]
    length = np.minimum(rng.uniform(0.8, 2.5, (n, 3, 1)) * r, 0.85 * canvas.half)
    start = centres[idx, None, :] + 0.7 * r * direction
    end = start + length * direction
    width = np.maximum(rng.uniform(0.5, 1.0, (n, 3)) * canvas.zoom, 0.45)
    intensity = rng.uniform(0.15, 0.5, (n, 3)) * (np.arange(3) < count[:, None])
    stubs = _segments(canvas, start, end, width, intensity, taper=rng.uniform(0.3, 0.9, n))
    image[idx] = np.maximum(image[idx], stubs)
    return image


# ------------------------------------------------------------------- per-class generators


def _neuron_draft(rng, canvas: _Canvas, centres, settings: SimulationSettings) -> _Draft:
    """Somata: round or elliptical, filled or donut, sometimes with process stubs."""
    n = len(centres)
    radius = rng.uniform(*settings.soma_radius, n) * canvas.zoom
    image = _soma_images(rng, canvas, centres, radius, settings)
    image = _add_stubs(rng, canvas, image, centres, radius, settings.p_stub)
    snr = _loguniform(rng, settings.snr, n)
    return _Draft(image, snr, np.ones(n), np.zeros(n))


def _process_draft(rng, canvas: _Canvas, centres, settings: SimulationSettings) -> _Draft:
    """Dendrite pieces: dots, straight segments, V and Y branches, curved segments."""
    n = len(centres)
    zoom, gsig = canvas.zoom, canvas.gsig
    kind = rng.choice(4, n, p=(0.22, 0.3, 0.26, 0.22))  # dot, line, branch, curve
    n_seg = 4
    start = np.repeat(centres[:, None, :], n_seg, axis=1).astype(float)
    end = start.copy()
    intensity = np.zeros((n, n_seg))
    width = np.repeat(np.maximum(rng.uniform(0.45, 1.1, (n, 1)) * zoom, 0.4), n_seg, axis=1)
    max_arm = 0.85 * canvas.half
    length = np.clip(rng.uniform(1.0, 3.2, n) * 2 * gsig, 3.0, 2 * max_arm)
    theta = rng.uniform(0, 2 * np.pi, n)
    direction = _unit(theta)
    segment_intensity = rng.uniform(0.6, 1.0, (n, n_seg))

    dot = kind == 0  # one bouton, sometimes a pair
    width[dot] = np.maximum(rng.uniform(0.7, 1.5, (dot.sum(), 1)) * zoom, 0.5)
    intensity[dot, 0] = 1.0
    pair = dot & (rng.random(n) < 0.3)
    offset = rng.uniform(2.0, 4.0, (pair.sum(), 1)) * max(zoom, 0.7) * direction[pair]
    start[pair, 1] = end[pair, 1] = centres[pair] + offset
    intensity[pair, 1] = rng.uniform(0.4, 1.0, pair.sum())

    line = kind == 1
    half_vec = 0.5 * length[line, None] * direction[line]
    start[line, 0] = centres[line] - half_vec
    end[line, 0] = centres[line] + half_vec
    intensity[line, 0] = segment_intensity[line, 0]

    branch = kind == 2  # V (2 arms) or Y (trunk + 2 branches) from a junction
    n_branch = branch.sum()
    spread = rng.uniform(0.4, 2.2, n_branch)
    is_y = rng.random(n_branch) < 0.5
    arm_angles = np.stack(
        [
            theta[branch] - np.where(is_y, spread / 2, 0),
            theta[branch] + np.where(is_y, spread / 2, spread),
            theta[branch] + np.pi,
        ],
        axis=1,
    )
    arm_length = np.minimum(rng.uniform(0.35, 0.8, (n_branch, 3)) * length[branch, None], max_arm)
    tips = centres[branch, None, :] + arm_length[..., None] * _unit(arm_angles)
    end[branch, :3] = tips
    intensity[branch, :3] = segment_intensity[branch, :3] * np.stack(
        [np.ones(n_branch), np.ones(n_branch), is_y], axis=1
    )

    curve = kind == 3  # quadratic Bezier through 5 points
    n_curve = curve.sum()
    half_vec = 0.5 * length[curve, None] * direction[curve]
    p0, p2 = centres[curve] - half_vec, centres[curve] + half_vec
    normal = _unit(theta[curve] + np.pi / 2)
    bend = rng.uniform(-0.5, 0.5, (n_curve, 1)) * length[curve, None]
    p1 = centres[curve] + bend * normal
    s = np.linspace(0, 1, n_seg + 1)[None, :, None]
    points = (1 - s) ** 2 * p0[:, None] + 2 * s * (1 - s) * p1[:, None] + s**2 * p2[:, None]
    start[curve], end[curve] = points[:, :-1], points[:, 1:]
    intensity[curve] = segment_intensity[curve] * rng.uniform(0.8, 1.0, (n_curve, 1))

    limit = 2 * canvas.half
    start, end = np.clip(start, 0, limit), np.clip(end, 0, limit)
    beads = np.where(rng.random(n) < 0.6, rng.uniform(0.1, 0.5, n), 0.0)
    image = _segments(
        canvas,
        start,
        end,
        width,
        intensity,
        taper=np.where(dot, 0.0, rng.uniform(0.0, 0.6, n)),
        bead_amplitude=beads,
        bead_period=rng.uniform(2.5, 6.0, n) * max(zoom, 0.6),
        bead_phase=rng.uniform(0, 2 * np.pi, n),
    )
    snr = _loguniform(rng, settings.snr, n)
    return _Draft(image, snr, np.full(n, 0.6), np.zeros(n))


def _window(canvas: _Canvas, centres, half_size, square) -> np.ndarray:
    """Disk or square (per component) of half-size ``half_size`` px around ``centres``."""
    d_rows = np.abs(canvas.rows - _col(centres[:, 0]))
    d_cols = np.abs(canvas.cols - _col(centres[:, 1]))
    disk = d_rows**2 + d_cols**2 <= _col(half_size) ** 2
    box = np.maximum(d_rows, d_cols) <= _col(half_size)
    return np.where(_col(square) > 0, box, disk)


def _noise_draft(rng, canvas: _Canvas, centres, settings: SimulationSettings) -> _Draft:
    """Noise: diffuse clouds, speckle, neuropil-like patches, fragments, low-SNR blobs."""
    n = len(centres)
    zoom, gsig = canvas.zoom, canvas.gsig
    kind = rng.choice(5, n, p=(0.25, 0.2, 0.2, 0.2, 0.15))
    size = canvas.rows.shape[1]
    image = np.zeros((n, size, size), np.float32)
    snr = _loguniform(rng, settings.noise_snr, n)
    smooth_scale = np.ones(n)
    max_radius = 0.9 * canvas.half

    idx = np.flatnonzero(kind == 0)  # dim diffuse cloud, lumpy
    if idx.size:
        m = idx.size
        radius = np.minimum(rng.uniform(1.0, 1.9, m) * gsig, max_radius / 1.5)
        rho = _ellipse_rho(
            canvas,
            centres[idx],
            radius,
            rng.uniform(1.0, 2.0, m),
            rng.uniform(0, np.pi, m),
        )
        field = _smooth(
            rng.standard_normal(image[idx].shape).astype(np.float32),
            rng.uniform(0.8, 2.0, m) * zoom,
        )
        field /= field.std(axis=(1, 2), keepdims=True) + 1e-6
        lumps = np.clip(1 + _col(rng.uniform(0.2, 0.8, m)) * field, 0, None)
        image[idx] = np.exp(-0.5 * (rho / 0.6) ** 2) * lumps

    idx = np.flatnonzero(kind == 1)  # speckle: scattered pixels
    if idx.size:
        m = idx.size
        radius = np.minimum(rng.uniform(1.0, 2.6, m) * gsig, max_radius)
        region = _window(canvas, centres[idx], radius, rng.random(m) < 0.3)
        hits = rng.random(image[idx].shape) < _col(rng.uniform(0.04, 0.25, m))
        amplitude = rng.uniform(0.3, 1.0, image[idx].shape)
        image[idx] = region * hits * amplitude
        snr[idx] *= 3
        smooth_scale[idx] = 0.3

    idx = np.flatnonzero(kind == 2)  # neuropil-like patch (disk or OnACID-like square block)
    if idx.size:
        m = idx.size
        field = _smooth(
            rng.standard_normal(image[idx].shape).astype(np.float32),
            rng.uniform(0.6, 2.0, m) * zoom,
        )
        field /= field.std(axis=(1, 2), keepdims=True) + 1e-6
        half_size = np.minimum(rng.uniform(1.2, 2.6, m) * gsig, max_radius / np.sqrt(2))
        region = _window(canvas, centres[idx], half_size, rng.random(m) < 0.5)
        image[idx] = region * np.clip(field - _col(rng.uniform(-0.5, 1.0, m)), 0, None)
        snr[idx] *= 2

    idx = np.flatnonzero(kind == 3)  # irregular fragments: a few small blobs
    if idx.size:
        m, n_blobs = idx.size, 6
        count = rng.integers(2, n_blobs + 1, m)
        angle = rng.uniform(0, 2 * np.pi, (m, n_blobs))
        distance = np.sqrt(rng.random((m, n_blobs))) * rng.uniform(1.2, 2.4, (m, 1)) * gsig
        points = centres[idx, None, :] + np.minimum(distance, max_radius)[..., None] * _unit(angle)
        width = np.maximum(rng.uniform(0.5, 1.3, (m, n_blobs)) * zoom, 0.4)
        intensity = rng.uniform(0.3, 1.0, (m, n_blobs)) * (np.arange(n_blobs) < count[:, None])
        image[idx] = _segments(canvas, points, points, width, intensity)
        snr[idx] *= 2

    idx = np.flatnonzero(kind == 4)  # soma-sized blob drowned in noise
    if idx.size:
        radius = rng.uniform(*settings.soma_radius, idx.size) * zoom
        image[idx] = _soma_images(rng, canvas, centres[idx], radius, settings, p_donut=0.0)

    return _Draft(image, snr, smooth_scale, np.zeros(n))


def _doubtful_draft(rng, canvas: _Canvas, centres, settings: SimulationSettings) -> _Draft:
    """Between neuron and noise: blurred, cut, irregular, wrong-sized or dim noisy somata."""
    n = len(centres)
    zoom = canvas.zoom
    kind = rng.choice(5, n, p=(0.25, 0.2, 0.25, 0.15, 0.15))
    radius = rng.uniform(*settings.soma_radius, n) * zoom
    snr = _loguniform(rng, settings.snr, n) * rng.uniform(0.3, 0.8, n)
    extra_blur = np.zeros(n)

    blurred = kind == 0  # out of focus: wide, blurred and dim
    radius[blurred] *= rng.uniform(1.0, 1.25, blurred.sum())
    extra_blur[blurred] = rng.uniform(0.25, 0.6, blurred.sum()) * radius[blurred]
    snr[blurred] *= 0.6

    small = kind == 3  # too small to be a clear soma, bigger than a bouton
    radius[small] *= rng.uniform(0.4, 0.6, small.sum())

    dim = kind == 4  # soma at the edge of detectability
    snr[dim] = _loguniform(rng, (settings.noise_snr[1], 1.5 * settings.snr[0]), dim.sum())

    irregular = kind == 2
    harmonic_range = (0.0, 0.12)
    image = np.zeros((n, canvas.rows.shape[1], canvas.cols.shape[2]), np.float32)
    regular = ~irregular
    if regular.any():
        image[regular] = _soma_images(
            rng, canvas, centres[regular], radius[regular], settings, harmonic_range=harmonic_range
        )
    idx = np.flatnonzero(irregular)  # ragged outline, often merged with a second lobe
    if idx.size:
        m = idx.size
        image[idx] = _soma_images(
            rng, canvas, centres[idx], radius[idx], settings, harmonic_range=(0.18, 0.4)
        )
        lobe = rng.random(m) < 0.5
        offset = (
            rng.uniform(0.8, 1.4, m)[:, None]
            * radius[idx, None]
            * _unit(rng.uniform(0, 2 * np.pi, m))
        )
        second = _soma_images(
            rng,
            canvas,
            centres[idx] + offset,
            radius[idx] * rng.uniform(0.5, 0.9, m),
            settings,
            p_donut=0.0,
        )
        image[idx] = np.maximum(image[idx], _col(lobe * rng.uniform(0.5, 1.0, m)) * second)

    idx = np.flatnonzero(kind == 1)  # partial cell: cut by a straight line near its centre
    if idx.size:
        m = idx.size
        normal = _unit(rng.uniform(0, 2 * np.pi, m))
        offset = rng.uniform(-0.3, 0.4, m) * radius[idx]
        side = (canvas.rows - _col(centres[idx, 0])) * _col(normal[:, 0]) + (
            canvas.cols - _col(centres[idx, 1])
        ) * _col(normal[:, 1])
        image[idx] *= side < _col(offset)
    return _Draft(image, snr, np.ones(n), extra_blur)


_GENERATORS = (_neuron_draft, _process_draft, _noise_draft, _doubtful_draft)


# --------------------------------------------------------------------- CNMF-like pipeline


def _render(
    rng: np.random.Generator,
    codes: np.ndarray,
    centres: np.ndarray,
    canvas: _Canvas,
    settings: SimulationSettings,
) -> np.ndarray:
    """(n, T, T) float32 footprints, each max 1, for class codes ``codes`` at ``centres``."""
    n = len(codes)
    size = canvas.rows.shape[1]
    image = np.zeros((n, size, size), np.float32)
    snr, smooth_scale, extra_blur = np.ones(n), np.ones(n), np.zeros(n)
    for code, generator in enumerate(_GENERATORS, start=1):
        idx = np.flatnonzero(codes == code)
        if idx.size:
            draft = generator(rng, canvas, centres[idx], settings)
            image[idx] = draft.image
            snr[idx], smooth_scale[idx], extra_blur[idx] = draft[1:]
    image /= np.maximum(image.max(axis=(1, 2), keepdims=True), 1e-12)
    zoom, gsig = canvas.zoom, canvas.gsig

    # leakage: a weak copy of a neighbouring soma just beside the component
    leak = np.flatnonzero(rng.random(n) < settings.p_leak)
    if leak.size:
        m = leak.size
        radius = rng.uniform(*settings.soma_radius, m) * zoom
        distance = (gsig + radius) * rng.uniform(0.9, 1.4, m)
        neighbour_centres = centres[leak] + distance[:, None] * _unit(rng.uniform(0, 2 * np.pi, m))
        neighbour = _soma_images(rng, canvas, neighbour_centres, radius, settings, p_core=0.0)
        image[leak] += _col(rng.uniform(*settings.leak_strength, m)) * neighbour

    # background haze: broad dim pedestal
    haze = rng.uniform(*settings.haze, n)
    d2 = (canvas.rows - _col(centres[:, 0])) ** 2 + (canvas.cols - _col(centres[:, 1])) ** 2
    image += _col(haze) * np.exp(-d2 / _col(2 * (rng.uniform(1.5, 3.0, n) * gsig) ** 2))

    # spatial smoothing
    sigma = np.hypot(rng.uniform(*settings.smooth_sigma, n) * zoom * smooth_scale, extra_blur)
    image = _smooth(image, sigma)
    image /= np.maximum(image.max(axis=(1, 2), keepdims=True), 1e-12)

    # noise inside the dilated support (CNMF updates a component only near its footprint)
    level = _col(rng.uniform(0.03, 0.15, n))
    support = _smooth((image > level).astype(np.float32), np.full(n, 0.5 * gsig)) > 0.03
    window = d2 <= min(_WINDOW_PER_GSIG * gsig, canvas.half - 1 - _jitter(canvas)) ** 2
    support &= window
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    correlated = np.flatnonzero(rng.random(n) < 0.4)  # spatially correlated noise
    if correlated.size:
        smooth_noise = _smooth(noise[correlated], rng.uniform(0.5, 1.0, correlated.size) * zoom)
        noise[correlated] = smooth_noise / (smooth_noise.std(axis=(1, 2), keepdims=True) + 1e-6)
    image += noise / _col(snr)
    image *= support
    np.maximum(image, 0, out=image)

    # sparsity: threshold at a fraction of the max; some become binary masks
    peak = image.max(axis=(1, 2), keepdims=True)
    empty = peak[:, 0, 0] <= 0
    if empty.any():  # never an empty column: keep the centre pixel
        at = np.clip(np.round(centres[empty]).astype(int), 0, size - 1)
        image[np.flatnonzero(empty), at[:, 0], at[:, 1]] = 1.0
        peak[empty] = 1.0
    image /= peak
    min_pixels = _min_pixels(gsig, size)
    threshold = np.minimum(
        _col(rng.uniform(*settings.threshold, n)), _kth_largest(image, min_pixels)
    )
    image[image < threshold] = 0
    binary = np.flatnonzero(rng.random(n) < settings.p_binary)
    if binary.size:
        peak_at = np.argmax(image[binary].reshape(binary.size, -1), axis=1)
        masks = _binarise(rng, image[binary], settings, zoom, min_pixels) * window[binary]
        masks.reshape(binary.size, -1)[np.arange(binary.size), peak_at] = 1.0  # never empty
        image[binary] = masks
    return image


def _min_pixels(gsig: float, size: int) -> int:
    """Fewest pixels a footprint keeps (a few px for a tiny dot; no single-pixel footprints)."""
    return int(min(max(4, round(0.3 * gsig**2)), size * size))


def _kth_largest(stack: np.ndarray, k: int) -> np.ndarray:
    """(n, 1, 1) k-th largest value of each image of ``stack``."""
    flat = stack.reshape(len(stack), -1)
    return np.partition(flat, flat.shape[1] - k, axis=1)[:, -k, None, None]


def _binarise(
    rng: np.random.Generator,
    image: np.ndarray,
    settings: SimulationSettings,
    zoom: float,
    min_pixels: int,
) -> np.ndarray:
    """Masks as other pipelines make them.

    Threshold a lightly smoothed footprint at a fraction of its max and, mostly, keep only
    the connected piece that holds the max.
    """
    n = len(image)
    smooth = _smooth(image, rng.uniform(0.3, 0.8, n) * zoom)
    smooth /= np.maximum(smooth.max(axis=(1, 2), keepdims=True), 1e-12)
    threshold = _col(rng.uniform(*settings.binary_threshold, n))
    mask = smooth >= threshold
    structure = np.zeros((3, 3, 3), bool)  # 4-connected within each image, never across images
    structure[1] = scipy.ndimage.generate_binary_structure(2, 1)
    pieces, _ = scipy.ndimage.label(mask, structure=structure)
    peak = np.argmax(smooth.reshape(n, -1), axis=1)
    keep = pieces.reshape(n, -1)[np.arange(n), peak]
    single = (rng.random(n) < 0.8)[:, None, None]
    mask &= ~single | (pieces == keep[:, None, None])
    small = mask.sum(axis=(1, 2)) < min_pixels  # too few: lower the threshold, keep all pieces
    if small.any():
        lowered = np.minimum(threshold[small], _kth_largest(smooth[small], min_pixels))
        mask[small] = smooth[small] >= np.maximum(lowered, 1e-6)
    return mask.astype(np.float32)


def _draw_zoom(rng: np.random.Generator, settings: SimulationSettings) -> tuple[float, float]:
    zoom = float(_loguniform(rng, settings.zoom, None))
    return zoom, zoom * float(np.mean(settings.soma_radius))


def _check_settings(settings) -> SimulationSettings:
    if not isinstance(settings, SimulationSettings):
        raise TypeError(
            f"settings must be a SimulationSettings (e.g. TRAIN_SETTINGS), "
            f"got {type(settings).__name__}."
        )
    return settings


def _check_counts(counts, name: str) -> np.ndarray:
    values = np.ravel(np.asarray(counts)) if not np.isscalar(counts) else np.repeat(counts, 4)
    if values.size != len(CLASSES) or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in values
    ):
        raise ValueError(
            f"{name} must be an int or {len(CLASSES)} ints (counts of {', '.join(CLASSES)}), "
            f"got {counts!r}."
        )
    values = values.astype(np.int64)
    if np.any(values < 0):
        raise ValueError(f"{name} must not be negative, got {counts!r}.")
    return values


# ---------------------------------------------------------------------------- public API


def simulate_footprints(
    n_per_class: int | Sequence[int],
    *,
    settings: SimulationSettings = TRAIN_SETTINGS,
    seed: int | None = 0,
    fov_tile: int | None = None,
) -> tuple[scipy.sparse.csc_matrix, tuple[int, int], np.ndarray, float]:
    """Simulate CNMF-like spatial footprints of the four classes in one field of view.

    Parameters
    ----------
    n_per_class : int or sequence of 4 ints
        Number of components of each class, in ``CLASSES`` order (neuron, process, noise,
        doubtful); one int gives that many of each.
    settings : SimulationSettings, optional
        Parameter ranges (``TRAIN_SETTINGS`` or ``SHIFTED_SETTINGS``, or your own).
    seed : int or None, optional
        Seed of ``numpy.random.default_rng``; the same seed gives the same output.
    fov_tile : int, optional
        Side in px of the square tile each component gets. Default
        ``2 * ceil(3.5 * gSig) + 1``. Must be at least ``4 * gSig`` for the largest zoom
        of ``settings``.

    Returns
    -------
    A : (dims[0] * dims[1], N) scipy.sparse.csc_matrix, float32
        Footprints, pixel ``(r, c)`` at row ``r + c * dims[0]`` (Fortran order, as
        ``estimates.A``); values in [0, 1], each column's max exactly 1 (binary masks are
        all 1.0); no column is empty. Sorted row indices.
    dims : tuple of 2 ints
        Field of view shape (rows, cols).
    labels : (N,) int64 ndarray
        Class codes 1-4 in ``CLASSES`` order, in shuffled order.
    gSig : float
        Half-size (px) of a typical neuron at this field's zoom (CaImAn's ``gSig``): one
        zoom is drawn per call, so call with several seeds to cover all zooms.

    Raises
    ------
    ValueError
        ``n_per_class`` is not one or four non-negative ints, or ``fov_tile`` is too small.
    TypeError
        ``settings`` is not a :class:`SimulationSettings`.

    Notes
    -----
    Component ``k`` lies in tile ``k`` of a row-major grid of ``ceil(sqrt(N))`` tile
    columns, so footprints never overlap. On edge tiles, a fraction ``settings.p_border`` of
    the components is moved onto the field's border and cut off there, as CaImAn
    components of cells partly outside the field of view. With zero components, ``A`` is
    an empty (pixels, 0) matrix and ``labels`` is empty.

    Examples
    --------
    >>> A, dims, labels, gSig = simulate_footprints(2, seed=0)
    >>> A.shape[1], A.shape[0] == dims[0] * dims[1], A.dtype
    (8, True, dtype('float32'))
    >>> np.bincount(labels, minlength=5)[1:].tolist()
    [2, 2, 2, 2]
    >>> bool(np.allclose(A.max(axis=0).toarray(), 1.0))
    True
    >>> image = A[:, 0].toarray().reshape(dims, order="F")  # component 0 as an image
    """
    counts = _check_counts(n_per_class, "n_per_class")
    settings = _check_settings(settings)
    rng = np.random.default_rng(seed)
    zoom, gsig = _draw_zoom(rng, settings)
    if fov_tile is None:
        tile = 2 * int(math.ceil(_TILE_HALF_PER_GSIG * gsig)) + 1
    else:
        largest = settings.zoom[1] * float(np.mean(settings.soma_radius))
        if (
            not isinstance(fov_tile, (int, np.integer))
            or isinstance(fov_tile, bool)
            or fov_tile < 4 * largest
        ):
            raise ValueError(
                f"fov_tile must be an int of at least 4 * gSig = {4 * largest:.1f} px for "
                f"these settings (largest zoom), got {fov_tile!r}; leave it None for the default."
            )
        tile = int(fov_tile)
    canvas = _make_canvas(tile, zoom, gsig)
    half = canvas.half

    codes = rng.permutation(np.repeat(np.arange(1, len(CLASSES) + 1, dtype=np.int64), counts))
    n = codes.size
    n_cols = max(1, math.ceil(math.sqrt(n)))
    n_rows = max(1, math.ceil(n / n_cols))
    dims = (n_rows * tile, n_cols * tile)
    if n == 0:
        A = scipy.sparse.csc_matrix((dims[0] * dims[1], 0), dtype=np.float32)
        return A, dims, codes, gsig

    tile_row, tile_col = np.divmod(np.arange(n), n_cols)
    jitter = _jitter(canvas)
    centres = half + rng.uniform(-jitter, jitter, (n, 2))
    # edge tiles: move some components onto the field's border, where they are cut off
    edges = np.stack(
        [tile_row == 0, tile_row == n_rows - 1, tile_col == 0, tile_col == n_cols - 1], axis=1
    )
    moved = edges.any(axis=1) & (rng.random(n) < settings.p_border)
    scores = np.where(edges, rng.random(edges.shape), -1.0)
    side = np.argmax(scores, axis=1)
    depth = rng.uniform(-0.2, 0.9, n) * gsig
    axis = side // 2  # 0: rows (top/bottom), 1: cols (left/right)
    position = np.where(side % 2 == 0, depth, tile - 1 - depth)
    centres[moved, axis[moved]] = position[moved]

    pixel_rows, pixel_cols, columns, values = [], [], [], []
    for begin in range(0, n, _CHUNK):
        chunk = slice(begin, min(begin + _CHUNK, n))
        images = _render(rng, codes[chunk], centres[chunk], canvas, settings)
        k, i, j = np.nonzero(images)
        values.append(images[k, i, j])
        k += begin
        columns.append(k)
        pixel_rows.append(tile_row[k] * tile + i)
        pixel_cols.append(tile_col[k] * tile + j)
    rows, cols = np.concatenate(pixel_rows), np.concatenate(pixel_cols)
    A = scipy.sparse.csc_matrix(
        (np.concatenate(values), (rows + cols * dims[0], np.concatenate(columns))),
        shape=(dims[0] * dims[1], n),
        dtype=np.float32,
    )
    A.sort_indices()
    logger.debug("simulated %d footprints (zoom %.2f, gSig %.2f, dims %s)", n, zoom, gsig, dims)
    return A, dims, codes, gsig


def _traces(
    rng: np.random.Generator, codes: np.ndarray, n_frames: int, frame_rate: float
) -> np.ndarray:
    """(N, T) float32 non-negative traces: AR(1)-filtered spikes, or low noise for noise."""
    n = codes.size
    rate_range = {1: (0.2, 1.5), 2: (0.3, 2.0), 3: (0.0, 0.0), 4: (0.05, 0.6)}
    rate = np.array([rng.uniform(*rate_range[int(c)]) for c in codes]) if n else np.zeros(0)
    decay = rng.uniform(0.4, 1.0, n)
    gamma = np.exp(-1.0 / (decay * frame_rate))
    spikes = rng.poisson(rate[:, None] / frame_rate, (n, n_frames)) * rng.lognormal(
        0.0, 0.5, (n, n_frames)
    )
    scale = np.where(codes == 4, 0.5, 1.0)
    noise = codes == 3
    drive = np.where(
        noise[:, None],
        rng.uniform(0.02, 0.1, (n, 1)) * (1 + rng.standard_normal((n, n_frames))),
        spikes * scale[:, None],
    )
    C = np.empty((n, n_frames), np.float32)
    for i in range(n):
        C[i] = scipy.signal.lfilter([1 - gamma[i] if noise[i] else 1.0], [1, -gamma[i]], drive[i])
    return np.maximum(C, 0, out=C)


def _place(
    rng: np.random.Generator, n: int, dims: tuple[int, int], min_distance: float
) -> np.ndarray:
    """(n, 2) random centres, kept ``min_distance`` apart where possible."""
    centres = np.empty((n, 2))
    for i in range(n):
        for _ in range(50):
            candidate = rng.uniform(0, 1, 2) * (np.asarray(dims) - 1)
            if i == 0 or np.min(np.hypot(*(centres[:i] - candidate).T)) >= min_distance:
                break
        centres[i] = candidate
    return centres


def simulate_session(
    *,
    dims: tuple[int, int] = (128, 128),
    n_components: int | Sequence[int] = (30, 6, 6, 4),
    n_frames: int = 500,
    gSig: float = 4.0,
    seed: int | None = 0,
    frame_rate: float = 30.0,
    settings: SimulationSettings = TRAIN_SETTINGS,
) -> Session:
    """Simulate a CNMF result for one field of view: footprints, traces and background.

    Parameters
    ----------
    dims : tuple of 2 ints, optional
        Field of view shape (rows, cols).
    n_components : int or sequence of 4 ints, optional
        Number of components per class, in ``CLASSES`` order.
    n_frames : int, optional
        Number of frames T.
    gSig : float, optional
        Half-size of a typical neuron, px; sets the zoom (``gSig / mean(soma_radius)``).
    seed : int or None, optional
        Seed of ``numpy.random.default_rng``.
    frame_rate : float, optional
        Frames per second; sets the AR(1) decay (0.4-1 s) of the traces.
    settings : SimulationSettings, optional
        Shape settings; its ``p_binary`` and ``p_border`` are ignored (CNMF output is
        real-valued; components near the border are cut naturally).

    Returns
    -------
    Session
        ``A`` (pixels x N csc float32, Fortran order, each column max 1), ``C`` (N x T
        float32, non-negative), ``b`` (pixels x 1), ``f`` (1 x T), ``dims``, ``labels``
        (int64 codes 1-4, shuffled), ``gSig``, ``frame_rate``.

    Raises
    ------
    ValueError
        Bad ``dims``, ``n_components``, ``n_frames``, ``gSig`` or ``frame_rate``.
    TypeError
        ``settings`` is not a :class:`SimulationSettings`.

    Notes
    -----
    Components are placed at random positions (somata kept about 1.5 ``gSig`` apart where
    possible), so they may overlap a little, as in a real field of view. Neurons and
    processes have spike trains (0.2-2 Hz) convolved with an AR(1) kernel; doubtful
    components fire less; noise components have low, noisy traces.

    Examples
    --------
    >>> session = simulate_session(seed=0)
    >>> session.A.shape == (128 * 128, 46), session.C.shape
    (True, (46, 500))
    >>> session.b.shape, session.f.shape
    ((16384, 1), (1, 500))
    """
    dims = check_dims(dims)
    if len(dims) != 2:
        raise ValueError(f"dims must be 2 ints (rows, cols), got {dims!r}.")
    counts = _check_counts(n_components, "n_components")
    settings = _check_settings(settings)
    if not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise ValueError(f"n_frames must be a positive int, got {n_frames!r}.")
    if not (np.isfinite(gSig) and gSig > 0):
        raise ValueError(f"gSig must be a positive number of px, got {gSig!r}.")
    if not (np.isfinite(frame_rate) and frame_rate > 0):
        raise ValueError(f"frame_rate must be a positive number (Hz), got {frame_rate!r}.")
    rng = np.random.default_rng(seed)
    gsig = float(gSig)
    zoom = gsig / float(np.mean(settings.soma_radius))
    half = int(math.ceil(_TILE_HALF_PER_GSIG * gsig))
    canvas = _make_canvas(2 * half + 1, zoom, gsig)
    settings = dataclasses.replace(settings, p_binary=0.0)

    codes = rng.permutation(np.repeat(np.arange(1, len(CLASSES) + 1, dtype=np.int64), counts))
    n = codes.size
    positions = _place(rng, n, dims, 1.5 * gsig)
    origin = np.round(positions).astype(int) - half
    centres = half + (positions - np.round(positions))
    n_pixels = dims[0] * dims[1]
    pixels, columns, values = [], [], []
    for begin in range(0, n, _CHUNK):
        chunk = slice(begin, min(begin + _CHUNK, n))
        images = _render(rng, codes[chunk], centres[chunk], canvas, settings)
        k, i, j = np.nonzero(images)
        v = images[k, i, j]
        k += begin
        rows, cols = origin[k, 0] + i, origin[k, 1] + j
        inside = (rows >= 0) & (rows < dims[0]) & (cols >= 0) & (cols < dims[1])
        pixels.append((rows + cols * dims[0])[inside])
        columns.append(k[inside])
        values.append(v[inside])
    pixels = np.concatenate(pixels) if n else np.zeros(0, int)
    columns = np.concatenate(columns) if n else np.zeros(0, int)
    values = np.concatenate(values) if n else np.zeros(0, np.float32)
    # a component cut by the border keeps its centre pixel; renormalise each column to max 1
    present = np.zeros(n, bool)
    present[columns] = True
    if not present.all():
        missing = np.flatnonzero(~present)
        at = np.clip(np.round(positions[missing]).astype(int), 0, np.asarray(dims) - 1)
        pixels = np.concatenate([pixels, at[:, 0] + at[:, 1] * dims[0]])
        columns = np.concatenate([columns, missing])
        values = np.concatenate([values, np.ones(missing.size, np.float32)])
    A = scipy.sparse.csc_matrix((values, (pixels, columns)), shape=(n_pixels, n), dtype=np.float32)
    A.sort_indices()
    if n:
        peak = A.max(axis=0).toarray().ravel()
        A = scipy.sparse.csc_matrix(A @ scipy.sparse.diags(1.0 / peak).astype(np.float32))
        A.sort_indices()

    C = _traces(rng, codes, int(n_frames), float(frame_rate))
    field = scipy.ndimage.gaussian_filter(
        rng.standard_normal(dims), sigma=max(min(dims) / 6, 1), mode="reflect"
    )
    field /= field.std() + 1e-12
    b = np.clip(1 + 0.3 * field, 0.1, None).reshape(-1, 1, order="F").astype(np.float32)
    drift = scipy.ndimage.gaussian_filter1d(
        np.cumsum(rng.standard_normal(int(n_frames))), sigma=frame_rate
    )
    drift = (drift - drift.mean()) / (drift.std() + 1e-12)
    f = np.clip(1 + 0.05 * drift, 0.5, None)[None, :].astype(np.float32)
    logger.debug("simulated session: %d components, dims %s, %d frames", n, dims, n_frames)
    return Session(A, C, b, f, tuple(dims), codes, gsig, float(frame_rate))
