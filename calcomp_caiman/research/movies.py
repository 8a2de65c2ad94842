"""Seeded simulation of whole two-photon calcium-imaging movies with ground truth.

A movie is built from labelled objects, each a spatial footprint (peak about 1) times a fluorescence
trace, on top of neuropil, static background structure, rigid motion and photon/read noise:

* ``soma`` (filled) and ``donut_soma`` (nucleus excluded), class *neuron*;
* ``dendrite`` (thin curved segment, some grown out of a soma and sharing its spikes) and
  ``axon`` (thinner, tortuous, beaded; fragments of one axon share spikes), class *process*;
* ``out_of_focus`` (large, blurred, dim), ``border_cut`` (centre near or beyond the edge of
  the field) and ``dim`` (a soma a few times dimmer than the rest), class *doubtful*.

Activity: Poisson spikes whose rates follow a shared slow population state, convolved with a
double-exponential indicator kernel (GCaMP6f, GCaMP6s, jGCaMP8f; see ``INDICATORS``).
Neuropil: a few spatially smooth components with their own slow activity, plus a diffuse signal
that follows the population's calcium. Static structure: uneven illumination, dark vessels,
autofluorescence. Motion: rigid sub-pixel jitter and drift (at most ``max_motion_px``).
Noise: Poisson photon noise (``photons_per_unit`` sets the brightness and hence the SNR) and
Gaussian read noise.

Every draw comes from ``numpy.random.default_rng(seed)``: the same settings and seed give the
same movie, bit for bit, on the same NumPy/SciPy. No global state, no printing.

Presets: ``TRAIN_PRESETS`` are for training and tuning; ``HELD_OUT_PRESETS`` differ in
indicator, zoom, density, neuropil and SNR and must **never** be used for training, model
selection or threshold tuning, only for the final test.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass

import numpy as np
import scipy.ndimage
import scipy.sparse

from calcomp_caiman.schema import CLASSES

logger = logging.getLogger(__name__)

__all__ = [
    "GENERATOR_VERSION",
    "HELD_OUT_PRESETS",
    "INDICATORS",
    "KIND_CLASS",
    "KINDS",
    "PRESETS",
    "TRAIN_PRESETS",
    "MovieSettings",
    "SimulatedMovie",
    "calcium_kernel",
    "lowpass_noise",
    "path_image",
    "place_centres",
    "power_law_field",
    "scan_line_smear",
    "simulate_movie",
    "smooth_field",
    "soma_image",
]

GENERATOR_VERSION = "1.0"
"""Bumped whenever the same settings and seed would give a different movie."""

KINDS = ("soma", "donut_soma", "dendrite", "axon", "out_of_focus", "border_cut", "dim")
"""Kinds of ground-truth objects."""

_CODE = {name: i + 1 for i, name in enumerate(CLASSES)}
KIND_CLASS = {
    "soma": _CODE["neuron"],
    "donut_soma": _CODE["neuron"],
    "dendrite": _CODE["process"],
    "axon": _CODE["process"],
    "out_of_focus": _CODE["doubtful"],
    "border_cut": _CODE["doubtful"],
    "dim": _CODE["doubtful"],
}
"""Class code (1-4, order of ``CLASSES``) of each kind of ground-truth object."""

INDICATORS = {
    # name: (rise time s, decay time s, peak dF/F per spike range)
    "GCaMP6f": (0.05, 0.4, (0.15, 0.5)),
    "GCaMP6s": (0.15, 1.2, (0.2, 0.7)),
    "jGCaMP8f": (0.01, 0.12, (0.2, 0.6)),
}
"""Double-exponential kernel of each indicator: rise and decay time constants (s) and the
range of the peak dF/F of one spike."""

UM_PER_PX_AT_ZOOM_1 = 1.2
SOMA_RADIUS_UM = (5.0, 6.5)


@dataclass(frozen=True)
class MovieSettings:
    """Ranges from which one movie is drawn. Pairs ``(low, high)`` are sampled uniformly.

    Counts are per field of view. ``zoom`` scales the pixel size (``1.2 / zoom`` um per px);
    somata are 5-6.5 um in radius. ``photons_per_unit`` converts a resting soma's
    fluorescence (1 unit) into photons per pixel per frame: it sets the SNR.

    The last five fields are scalars, fitted to real recordings and randomised around by
    ``research.calibration`` (their defaults leave the movie as before, bit for bit):
    ``pmt_excess`` is the variance excess of the PMT's gain per photon (0: pure Poisson; 0.5:
    variance 1.5 times the mean); ``noise_correlation`` the correlation of neighbouring pixels'
    noise along the scan line (the detector's bandwidth smears each line: a two-tap filter on
    the recorded movie); ``texture_level`` the sd of a static tissue texture with power spectrum
    ``k^-texture_beta`` multiplying the static structure; ``neuropil_time_s`` the correlation
    time of the slow neuropil components.
    """

    name: str
    held_out: bool = False
    dims: tuple[int, int] = (128, 128)
    frames: int = 1000
    fr: float = 30.0
    indicator: str = "GCaMP6f"
    zoom: float = 1.0
    n_somata: tuple[int, int] = (30, 40)
    donut_fraction: float = 0.35
    n_dendrites: tuple[int, int] = (6, 10)
    dendrite_shared_fraction: float = 0.5
    n_axons: tuple[int, int] = (4, 8)
    axon_fragments: tuple[int, int] = (1, 3)
    n_out_of_focus: tuple[int, int] = (2, 5)
    n_border_cut: tuple[int, int] = (3, 6)
    n_dim: tuple[int, int] = (2, 5)
    spike_rate_hz: tuple[float, float] = (0.2, 2.0)
    population_coupling: tuple[float, float] = (0.0, 1.0)
    photons_per_unit: tuple[float, float] = (15.0, 40.0)
    read_noise: tuple[float, float] = (1.0, 3.0)
    neuropil_level: tuple[float, float] = (0.3, 0.6)
    neuropil_rank: int = 3
    neuropil_population_gain: tuple[float, float] = (0.5, 1.5)
    autofluorescence: tuple[float, float] = (0.05, 0.15)
    n_vessels: tuple[int, int] = (0, 2)
    vignette: tuple[float, float] = (0.1, 0.3)
    max_motion_px: float = 1.0
    pmt_excess: float = 0.0
    noise_correlation: float = 0.0
    texture_level: float = 0.0
    texture_beta: float = 2.5
    neuropil_time_s: float = 5.0

    def to_json(self) -> str:
        """The settings as a JSON string (for provenance)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def soma_radius_px(self) -> tuple[float, float]:
        """Range of soma radii in pixels at this zoom."""
        um_per_px = UM_PER_PX_AT_ZOOM_1 / self.zoom
        return (SOMA_RADIUS_UM[0] / um_per_px, SOMA_RADIUS_UM[1] / um_per_px)

    def user_gsig(self) -> int:
        """The ``gSig`` a CaImAn user would set: about the typical soma radius, in px."""
        low, high = self.soma_radius_px()
        return max(2, int(round(0.8 * (low + high) / 2)))

    def decay_time(self) -> float:
        """Decay time (s) of the indicator, as a CaImAn user would pass it."""
        return INDICATORS[self.indicator][1]


@dataclass(frozen=True)
class SimulatedMovie:
    """One simulated movie and its ground truth (``K`` objects, ``T`` frames).

    Attributes
    ----------
    movie : (T, rows, cols) float32 ndarray
        The recorded movie (photons plus read noise).
    A : (rows * cols, K) scipy.sparse.csc_matrix
        Ground-truth footprints, pixels in Fortran order as CaImAn's ``A``; peak 1 (somata:
        about 1, their texture modulates it by up to 10 %), values below 0.02 set to 0.
    gt_kind : tuple of str, length K
        Kind of each object (``KINDS``).
    gt_class : (K,) int8 ndarray
        Class code 1-4 of each object (``KIND_CLASS``).
    C : (K, T) float32 ndarray
        Calcium of each object (one spike peaks at 1), before dF/F scaling.
    S : (K, T) int16 ndarray
        Spike counts per frame.
    F : (K, T) float32 ndarray
        Fluorescence of each object, units of a resting soma (what multiplies its footprint).
    parent : (K,) int ndarray
        For a dendrite or axon fragment that shares spikes with another object, that object's
        index; -1 otherwise.
    b : (rows * cols, nb) float32 ndarray
        Neuropil spatial components (Fortran pixel order); the last column is the diffuse
        population neuropil.
    f : (nb, T) float32 ndarray
        Their activity (units of a resting soma).
    static_background : (rows, cols) float32 ndarray
        Multiplicative static structure (illumination times vessels).
    shifts : (T, 2) float32 ndarray
        Rigid (row, col) shift of each frame, px.
    fr, decay_time : float
        Frame rate (Hz) and indicator decay time (s).
    gSig : tuple of int
        The ``gSig`` a user would give CaImAn.
    zoom : float
    settings : MovieSettings
    seed : int
    """

    movie: np.ndarray
    A: scipy.sparse.csc_matrix
    gt_kind: tuple
    gt_class: np.ndarray
    C: np.ndarray
    S: np.ndarray
    F: np.ndarray
    parent: np.ndarray
    b: np.ndarray
    f: np.ndarray
    static_background: np.ndarray
    shifts: np.ndarray
    fr: float
    decay_time: float
    gSig: tuple
    zoom: float
    settings: MovieSettings
    seed: int

    @property
    def dims(self) -> tuple[int, int]:
        """(rows, cols) of the field of view."""
        return tuple(self.movie.shape[1:])


# --------------------------------------------------------------------------- presets

TRAIN_PRESETS = {
    s.name: s
    for s in (
        MovieSettings(name="train_gcamp6f_standard"),
        MovieSettings(
            name="train_gcamp6s_dense",
            fr=15.0,
            frames=1000,
            indicator="GCaMP6s",
            n_somata=(50, 65),
            n_dendrites=(6, 10),
            n_axons=(3, 6),
            neuropil_level=(0.4, 0.8),
        ),
        MovieSettings(
            name="train_dendrite_rich",
            zoom=1.5,
            n_somata=(10, 16),
            n_dendrites=(18, 26),
            dendrite_shared_fraction=0.4,
            n_axons=(14, 20),
            n_out_of_focus=(1, 3),
            n_border_cut=(2, 4),
            n_dim=(1, 3),
        ),
        MovieSettings(
            name="train_gcamp6s_neuropil_zoom15",
            fr=15.0,
            indicator="GCaMP6s",
            zoom=1.5,
            n_somata=(14, 22),
            n_dendrites=(8, 14),
            n_axons=(6, 10),
            neuropil_level=(0.7, 1.2),
            n_vessels=(1, 3),
            photons_per_unit=(10.0, 25.0),
        ),
        MovieSettings(
            name="train_gcamp6f_lowsnr_axons",
            n_somata=(25, 35),
            n_dendrites=(4, 8),
            n_axons=(12, 18),
            spike_rate_hz=(0.1, 1.0),
            photons_per_unit=(5.0, 12.0),
            read_noise=(2.0, 5.0),
            neuropil_level=(0.5, 0.9),
            max_motion_px=1.5,
        ),
    )
}
"""Presets for training and tuning."""

HELD_OUT_PRESETS = {
    s.name: s
    for s in (
        MovieSettings(
            name="heldout_jgcamp8f_zoom075_dense",
            held_out=True,
            dims=(160, 160),
            indicator="jGCaMP8f",
            zoom=0.75,
            n_somata=(90, 115),
            n_dendrites=(8, 14),
            n_axons=(6, 10),
            n_out_of_focus=(4, 8),
            n_border_cut=(6, 10),
            n_dim=(5, 9),
        ),
        MovieSettings(
            name="heldout_heavy_neuropil_lowsnr_zoom125",
            held_out=True,
            dims=(144, 144),
            fr=20.0,
            indicator="GCaMP6s",
            zoom=1.25,
            n_somata=(20, 30),
            n_dendrites=(10, 16),
            n_axons=(8, 12),
            neuropil_level=(1.8, 2.8),
            neuropil_population_gain=(1.5, 3.0),
            photons_per_unit=(4.0, 8.0),
            read_noise=(3.0, 6.0),
            n_vessels=(2, 4),
            vignette=(0.3, 0.5),
            max_motion_px=2.0,
        ),
    )
}
"""Held-out presets (indicator, zoom, density, neuropil never seen in training): for the final
test only, never for training, model selection or tuning."""

PRESETS = {**TRAIN_PRESETS, **HELD_OUT_PRESETS}
"""All presets by name."""


# --------------------------------------------------------------------------- drawing helpers


def _uniform(rng: np.random.Generator, bounds) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _count(rng: np.random.Generator, bounds) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


def _sigmoid_disc(rows, cols, centre, radius, aspect, angle, edge):
    dr, dc = rows - centre[0], cols - centre[1]
    u = dr * math.cos(angle) + dc * math.sin(angle)
    v = -dr * math.sin(angle) + dc * math.cos(angle)
    rho = np.sqrt((u / aspect) ** 2 + (v * aspect) ** 2)
    return 1.0 / (1.0 + np.exp(np.clip((rho - radius) / edge, -30, 30)))


def smooth_field(rng, dims, sigma) -> np.ndarray:
    """A random field smoothed with a Gaussian of ``sigma`` px (periodic), scaled to [0, 1]."""
    field = scipy.ndimage.gaussian_filter(rng.standard_normal(dims), sigma, mode="wrap")
    field -= field.min()
    return field / max(field.max(), 1e-12)


def power_law_field(rng: np.random.Generator, dims, beta: float) -> np.ndarray:
    """Zero-mean, unit-sd random image whose power spectrum falls as ``k^-beta``.

    Examples
    --------
    >>> field = power_law_field(np.random.default_rng(0), (32, 48), 2.5)
    >>> field.shape, round(float(field.std()), 6)
    ((32, 48), 1.0)
    """
    k = np.hypot(np.fft.fftfreq(dims[0])[:, None], np.fft.fftfreq(dims[1])[None, :])
    k[0, 0] = 1.0
    amplitude = np.maximum(k, 1.0 / max(dims)) ** (-beta / 2)
    amplitude[0, 0] = 0.0
    field = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal(dims)) * amplitude))
    return (field - field.mean()) / max(field.std(), 1e-12)


def scan_line_smear(movie: np.ndarray, correlation: float) -> np.ndarray:
    """Filter each scan line (along columns) with ``(x[c] + a x[c-1]) / (1 + a)``: the mean is
    kept and white noise becomes correlated between neighbours by ``a / (1 + a^2)``.

    Examples
    --------
    >>> noise = np.random.default_rng(1).normal(size=(50, 40, 40))
    >>> out = scan_line_smear(noise, 0.3)
    >>> z = out[:, :, 1:].ravel(), out[:, :, :-1].ravel()
    >>> round(float(np.corrcoef(*z)[0, 1]), 1)
    0.3
    """
    if not 0 <= correlation < 0.5:
        raise ValueError(f"noise correlation must be in [0, 0.5), got {correlation!r}")
    if correlation == 0:
        return movie
    a = (1 - math.sqrt(1 - 4 * correlation**2)) / (2 * correlation)
    out = movie.copy()
    out[..., 1:] += a * movie[..., :-1]
    out[..., 1:] /= 1 + a
    return out


def lowpass_noise(rng, frames, fr, seconds) -> np.ndarray:
    """Zero-mean, unit-sd slow noise with a correlation time of about ``seconds``."""
    x = scipy.ndimage.gaussian_filter1d(rng.standard_normal(frames), seconds * fr, mode="reflect")
    return (x - x.mean()) / max(x.std(), 1e-12)


def soma_image(rng, rows, cols, centre, radius, donut):
    """A textured, slightly elliptical soma (``donut``: nucleus excluded) on the grid."""
    aspect = _uniform(rng, (1.0, 1.3))
    angle = _uniform(rng, (0, math.pi))
    img = _sigmoid_disc(rows, cols, centre, radius, aspect, angle, 0.6)
    if donut:
        depth = _uniform(rng, (0.6, 0.9))
        nucleus = _sigmoid_disc(
            rows, cols, centre, radius * _uniform(rng, (0.45, 0.6)), aspect, angle, 0.5
        )
        img = img - depth * nucleus
    texture = 1.0 + 0.15 * (smooth_field(rng, rows.shape, 1.0) - 0.5)
    return np.clip(img * texture, 0, None)


def path_image(rng, dims, start, angle, length, curvature, width, beads):
    """A thin curved line: points along a random-curvature path splatted and blurred."""
    n = max(int(length / 0.5), 2)
    turns = np.cumsum(rng.normal(0.0, curvature, n))
    angles = angle + turns
    steps = 0.5 * np.stack([np.sin(angles), np.cos(angles)], axis=1)
    points = start + np.cumsum(steps, axis=0)
    weights = np.ones(n)
    if beads:
        spacing = _uniform(rng, (3.0, 6.0))
        arc = np.arange(n) * 0.5
        phase = _uniform(rng, (0, spacing))
        weights = 0.4 + 2.0 * np.exp(-(((arc + phase) % spacing - spacing / 2) ** 2) / 0.8)
    img = np.zeros(dims)
    r0 = np.floor(points[:, 0]).astype(int)
    c0 = np.floor(points[:, 1]).astype(int)
    fr_, fc = points[:, 0] - r0, points[:, 1] - c0
    for dr, dc, w in (
        (0, 0, (1 - fr_) * (1 - fc)),
        (1, 0, fr_ * (1 - fc)),
        (0, 1, (1 - fr_) * fc),
        (1, 1, fr_ * fc),
    ):
        rr, cc = r0 + dr, c0 + dc
        ok = (rr >= 0) & (rr < dims[0]) & (cc >= 0) & (cc < dims[1])
        np.add.at(img, (rr[ok], cc[ok]), (w * weights)[ok])
    img = scipy.ndimage.gaussian_filter(img, width)
    return img


def calcium_kernel(fr, rise, decay) -> np.ndarray:
    """Double-exponential indicator kernel at ``fr`` Hz (rise, decay in s), peak 1."""
    t = np.arange(int(math.ceil(6 * decay * fr)) + 2) / fr
    h = np.exp(-t / decay) - np.exp(-t / rise)
    return h / h.max()


def place_centres(rng, dims, n, min_distance, margin, taken):
    """Up to ``n`` centres at least ``min_distance`` from each other and from ``taken``."""
    centres = list(taken)
    new = []
    for _ in range(n * 60):
        if len(new) == n:
            break
        c = np.array([rng.uniform(margin, dims[0] - margin), rng.uniform(margin, dims[1] - margin)])
        if all(np.hypot(*(c - o)) >= min_distance for o in centres):
            centres.append(c)
            new.append(c)
    return new


def _border_centre(rng, dims, radius):
    side = int(rng.integers(4))
    offset = _uniform(rng, (-0.4, 0.5)) * radius  # centre this far inside the edge
    span = dims[1] if side in (0, 2) else dims[0]  # top/bottom edges run along columns
    along = _uniform(rng, (radius, span - radius))
    if side == 0:
        return np.array([offset, along])
    if side == 1:
        return np.array([along, offset])
    if side == 2:
        return np.array([dims[0] - 1 - offset, along])
    return np.array([along, dims[1] - 1 - offset])


def _vessel_mask(rng, dims) -> np.ndarray:
    width = _uniform(rng, (1.5, 3.5))
    edge = int(rng.integers(2))
    start = (
        np.array([0.0, rng.uniform(0, dims[1])])
        if edge == 0
        else np.array([rng.uniform(0, dims[0]), 0.0])
    )
    angle = (0.0 if edge == 0 else math.pi / 2) + rng.normal(0, 0.4)
    img = path_image(rng, dims, start, angle, 2.0 * max(dims), 0.01, width, False)
    return img / max(img.max(), 1e-12)


# --------------------------------------------------------------------------- the simulation


def simulate_movie(settings: MovieSettings, seed: int) -> SimulatedMovie:
    """Simulate one movie and its ground truth.

    Parameters
    ----------
    settings : MovieSettings
        Ranges to draw from (e.g. ``TRAIN_PRESETS["train_gcamp6f_standard"]``).
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed gives the same movie.

    Returns
    -------
    SimulatedMovie

    Examples
    --------
    >>> small = dataclasses.replace(TRAIN_PRESETS["train_gcamp6f_standard"], dims=(48, 48),
    ...     frames=50, n_somata=(3, 3), n_dendrites=(1, 1), n_axons=(1, 1))
    >>> sim = simulate_movie(small, seed=0)
    >>> sim.movie.shape, sim.A.shape[0]
    ((50, 48, 48), 2304)
    """
    if not isinstance(settings, MovieSettings):
        raise TypeError(f"settings must be a MovieSettings, got {type(settings).__name__}")
    if settings.indicator not in INDICATORS:
        raise ValueError(
            f"settings.indicator={settings.indicator!r} is unknown; use one of {sorted(INDICATORS)}"
        )
    rng = np.random.default_rng(seed)
    dims = tuple(int(d) for d in settings.dims)
    frames, fr = int(settings.frames), float(settings.fr)
    rows, cols = np.mgrid[: dims[0], : dims[1]].astype(float)
    r_low, r_high = settings.soma_radius_px()
    rise, decay, dff_range = INDICATORS[settings.indicator]

    images, kinds, parents, brightness = [], [], [], []

    # somata (filled, donut), dim somata
    n_somata, n_dim = _count(rng, settings.n_somata), _count(rng, settings.n_dim)
    centres = place_centres(rng, dims, n_somata + n_dim, 1.5 * r_high, r_high * 1.1, taken=[])
    soma_centres = []
    for i, c in enumerate(centres):
        radius = _uniform(rng, (r_low, r_high))
        donut = rng.random() < settings.donut_fraction
        images.append(soma_image(rng, rows, cols, c, radius, donut))
        if i < n_somata:
            kinds.append("donut_soma" if donut else "soma")
            brightness.append(_uniform(rng, (0.7, 1.3)))
            soma_centres.append((len(images) - 1, c, radius))
        else:
            kinds.append("dim")
            brightness.append(_uniform(rng, (0.15, 0.3)))
        parents.append(-1)

    # border-cut somata
    for _ in range(_count(rng, settings.n_border_cut)):
        radius = _uniform(rng, (r_low, r_high))
        c = _border_centre(rng, dims, radius)
        images.append(soma_image(rng, rows, cols, c, radius, rng.random() < 0.3))
        kinds.append("border_cut")
        brightness.append(_uniform(rng, (0.7, 1.3)))
        parents.append(-1)

    # out-of-focus cells: large, blurred, dim
    for _ in range(_count(rng, settings.n_out_of_focus)):
        radius = _uniform(rng, (1.5, 2.2)) * _uniform(rng, (r_low, r_high))
        c = np.array([rng.uniform(0, dims[0]), rng.uniform(0, dims[1])])
        img = _sigmoid_disc(rows, cols, c, radius, _uniform(rng, (1.0, 1.3)), 0.0, 1.0)
        img = scipy.ndimage.gaussian_filter(img, 0.4 * radius)
        images.append(img / max(img.max(), 1e-12))
        kinds.append("out_of_focus")
        brightness.append(_uniform(rng, (0.25, 0.45)))
        parents.append(-1)

    # dendrites: some grown out of a soma (sharing its spikes), some free with their own
    for _ in range(_count(rng, settings.n_dendrites)):
        width = _uniform(rng, (0.7, 1.1)) * settings.zoom
        length = _uniform(rng, (5.0, 12.0)) * r_high
        angle = _uniform(rng, (0, 2 * math.pi))
        parent = -1
        if soma_centres and rng.random() < settings.dendrite_shared_fraction:
            index, c, radius = soma_centres[int(rng.integers(len(soma_centres)))]
            start = c + (radius + 0.5) * np.array([math.sin(angle), math.cos(angle)])
            parent = index
        else:
            start = np.array([rng.uniform(0, dims[0]), rng.uniform(0, dims[1])])
        img = path_image(rng, dims, start, angle, length, 0.05, width, False)
        if img.max() <= 0:
            continue
        images.append(img / img.max())
        kinds.append("dendrite")
        brightness.append(_uniform(rng, (0.5, 1.0)))
        parents.append(parent)

    # axons: thin, tortuous, beaded; an axon may show up as several fragments sharing spikes
    for _ in range(_count(rng, settings.n_axons)):
        first = -1
        for _fragment in range(_count(rng, settings.axon_fragments)):
            width = _uniform(rng, (0.5, 0.8)) * settings.zoom
            length = _uniform(rng, (4.0, 10.0)) * r_high
            start = np.array([rng.uniform(0, dims[0]), rng.uniform(0, dims[1])])
            img = path_image(
                rng, dims, start, _uniform(rng, (0, 2 * math.pi)), length, 0.12, width, True
            )
            if img.max() <= 0:
                continue
            images.append(img / img.max())
            kinds.append("axon")
            brightness.append(_uniform(rng, (0.6, 1.2)))
            parents.append(first)
            if first < 0:
                first = len(images) - 1

    n_objects = len(images)
    stack = np.stack(images) if images else np.zeros((0, *dims))
    stack[stack < 0.02] = 0.0
    kinds_t = tuple(kinds)
    parent = np.asarray(parents, dtype=int)

    # activity: population state -> spike rates -> spikes -> calcium
    state = lowpass_noise(rng, frames, fr, 2.0)
    spikes = np.zeros((n_objects, frames), np.int16)
    for k in range(n_objects):
        rate = math.exp(_uniform(rng, np.log(settings.spike_rate_hz)))
        coupling = _uniform(rng, settings.population_coupling)
        burst = np.exp(0.8 * lowpass_noise(rng, frames, fr, 0.5)) if rng.random() < 0.3 else 1.0
        lam = rate / fr * np.exp(coupling * state - coupling**2 / 2) * burst
        spikes[k] = rng.poisson(np.clip(lam, 0, 5))
    for k in range(n_objects):
        if parent[k] >= 0:  # shares the parent's spikes, plus a few of its own (local events)
            own = rng.poisson(0.05 / fr, frames)
            spikes[k] = spikes[parent[k]] + own
    kernel = calcium_kernel(fr, rise, decay)
    calcium = (
        np.stack([np.convolve(s.astype(float), kernel)[:frames] for s in spikes])
        if n_objects
        else np.zeros((0, frames))
    )
    dff = np.array([_uniform(rng, dff_range) for _ in range(n_objects)])
    base = np.asarray(brightness)
    fluorescence = base[:, None] * (1.0 + dff[:, None] * calcium)

    # neuropil: smooth low-rank components with slow activity + diffuse population signal
    level = _uniform(rng, settings.neuropil_level)
    b_cols, f_rows = [], []
    for _ in range(settings.neuropil_rank):
        field = 0.3 + 0.7 * smooth_field(rng, dims, _uniform(rng, (8.0, 20.0)))
        b_cols.append(field)
        f_rows.append(
            level
            / settings.neuropil_rank
            * (1.0 + 0.15 * lowpass_noise(rng, frames, fr, settings.neuropil_time_s))
        )
    population = calcium[: max(n_somata, 1)].mean(axis=0) if n_objects else np.zeros(frames)
    population = scipy.ndimage.gaussian_filter1d(population, 0.3 * fr)
    population = population / max(population.std(), 1e-12) * 0.1
    field = 0.5 + 0.5 * smooth_field(rng, dims, 6.0)
    b_cols.append(field)
    f_rows.append(level * _uniform(rng, settings.neuropil_population_gain) * population)
    b = np.stack(b_cols)
    f = np.stack(f_rows)

    # static structure: illumination, vessels, autofluorescence
    centre = np.array([rng.uniform(0.3, 0.7) * dims[0], rng.uniform(0.3, 0.7) * dims[1]])
    r2 = ((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (0.5 * max(dims)) ** 2
    static = 1.0 - _uniform(rng, settings.vignette) * np.clip(r2, 0, 2) / 2
    for _ in range(_count(rng, settings.n_vessels)):
        static *= 1.0 - _uniform(rng, (0.5, 0.85)) * _vessel_mask(rng, dims)
    auto = _uniform(rng, settings.autofluorescence) * (0.5 + smooth_field(rng, dims, 3.0))
    if settings.texture_level > 0:
        texture = power_law_field(rng, dims, settings.texture_beta)
        static *= np.clip(1.0 + settings.texture_level * texture, 0.2, None)

    # the clean movie, in resting-soma units, then motion
    clean = np.tensordot(fluorescence.T.astype(np.float32), stack.astype(np.float32), axes=1)
    clean += np.tensordot(f.T.astype(np.float32), b.astype(np.float32), axes=1)
    clean += auto.astype(np.float32)
    clean *= static.astype(np.float32)
    drift = np.stack([lowpass_noise(rng, frames, fr, 3.0) for _ in range(2)], axis=1) * 0.4
    jitter = rng.normal(0.0, 0.25, (frames, 2))
    shifts = np.clip((drift + jitter) * settings.max_motion_px, -settings.max_motion_px,
                     settings.max_motion_px)  # fmt: skip
    for t in range(frames):
        clean[t] = scipy.ndimage.shift(clean[t], shifts[t], order=1, mode="nearest")

    # photons and read noise
    gain = _uniform(rng, settings.photons_per_unit)
    read = _uniform(rng, settings.read_noise)
    movie = rng.poisson(np.clip(clean, 0, None) * gain).astype(np.float32)
    if settings.pmt_excess > 0:  # each photon's charge varies: a sum of n Gamma gains
        counted = movie > 0
        e = settings.pmt_excess
        movie[counted] = rng.gamma(movie[counted] / e, e).astype(np.float32)
    movie += rng.normal(0.0, read, movie.shape).astype(np.float32)
    if settings.noise_correlation > 0:
        movie = scan_line_smear(movie, settings.noise_correlation)

    A = scipy.sparse.csc_matrix(
        stack.reshape(n_objects, -1, order="F").T.astype(np.float32)
        if n_objects
        else np.zeros((dims[0] * dims[1], 0), np.float32)
    )
    logger.info(
        "simulated %s seed %d: %d objects, %d frames, %.0f photons/unit",
        settings.name, seed, n_objects, frames, gain,
    )  # fmt: skip
    return SimulatedMovie(
        movie=movie,
        A=A,
        gt_kind=kinds_t,
        gt_class=np.array([KIND_CLASS[k] for k in kinds_t], np.int8),
        C=calcium.astype(np.float32),
        S=spikes,
        F=fluorescence.astype(np.float32),
        parent=parent,
        b=b.reshape(len(b), -1, order="F").T.astype(np.float32),
        f=f.astype(np.float32),
        static_background=static.astype(np.float32),
        shifts=shifts.astype(np.float32),
        fr=fr,
        decay_time=decay,
        gSig=(settings.user_gsig(), settings.user_gsig()),
        zoom=float(settings.zoom),
        settings=settings,
        seed=int(seed),
    )
