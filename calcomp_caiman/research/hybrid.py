"""Hybrid movies: simulated sources with known footprints and traces injected into a real recording.

Research tooling (NumPy and SciPy only). :func:`make_hybrid` takes a real recording (a crop of
it, extended in time by reflection where it is short) and adds, in its own units:

* the objects of the two-photon simulator (``research.movies``): somata (``soma`` filled,
  ``donut_soma``), ``dendrite`` and ``axon`` pieces, ``out_of_focus``, ``border_cut`` and
  ``dim`` cells, with their spikes, calcium and indicator kinetics;
* junk (``JUNK_KINDS``, class *noise*): ``neuropil_cloud`` (a large diffuse patch whose
  brightness drifts slowly), ``speckle`` (a scatter of single bright dots that flash for one
  frame) and ``motion_edge`` (a thin edge whose brightness follows the tissue's motion).

How the injection is scaled to the recording
--------------------------------------------
A resting soma of brightness 1 gets ``unit`` counts per pixel: the recording's soma contrast
(99th percentile of its mean image less the median) times ``HybridSettings.brightness``, and no
less than ``min_spike_snr`` noise sd per spike. The injected light carries its own shot noise,
with the Poisson-Gaussian gain fitted on the recording (``calibration.fit_noise``), correlated
along the scan line as the recording's noise is. Where the recording moves (rigid shifts by
phase correlation), the injected objects move with it. Somatic objects that would cover the
recording's own active structure (:func:`recording_activity`, 2 px wider) by more than
``max_overlap`` of their footprint are not injected, so that a CaImAn component is not half real cell, half
injected cell.

Outside the injected objects' support the hybrid equals the recording exactly, and the ground
truth (``HybridMovie.A``, ``C``, ``F``) is what was injected. The recording's own cells are
not labelled: :func:`calcomp_caiman.research.gt_labels.label_components` with
``recording_activity`` gives the components on them the label ``UNLABELLED``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.ndimage
import scipy.sparse

from calcomp_caiman.research.calibration import (
    correlation_image,
    fit_noise,
    fit_noise_correlation,
    phase_correlation_shifts,
    robust_noise_sd,
)
from calcomp_caiman.research.movies import (
    INDICATORS,
    KIND_CLASS,
    KINDS,
    SOMA_RADIUS_UM,
    TRAIN_PRESETS,
    UM_PER_PX_AT_ZOOM_1,
    lowpass_noise,
    path_image,
    scan_line_smear,
    simulate_movie,
    smooth_field,
)
from calcomp_caiman.schema import CLASSES

logger = logging.getLogger(__name__)

__all__ = [
    "HYBRID_GENERATOR_VERSION",
    "HYBRID_KIND_CLASS",
    "HYBRID_KINDS",
    "HYBRID_SETTINGS",
    "JUNK_KINDS",
    "MIN_MOTION_PX",
    "HybridMovie",
    "HybridSettings",
    "RecordingAnalysis",
    "analyse_recording",
    "extend_frames",
    "make_hybrid",
    "recording_activity",
]

HYBRID_GENERATOR_VERSION = "1.0"
"""Bumped whenever the same recording, settings and seed would give a different hybrid."""

JUNK_KINDS = ("neuropil_cloud", "speckle", "motion_edge")
"""Kinds of injected junk (class *noise*)."""

HYBRID_KINDS = KINDS + JUNK_KINDS
"""Every kind of injected object."""

_NOISE = CLASSES.index("noise") + 1
HYBRID_KIND_CLASS = {**KIND_CLASS, **{kind: _NOISE for kind in JUNK_KINDS}}
"""Class code (1-4, order of ``CLASSES``) of each kind of injected object."""

MIN_MOTION_PX = 0.5
"""Estimated motion smaller than this (px) is not applied to the injected objects."""

_SOMATIC = ("soma", "donut_soma", "dim", "border_cut", "out_of_focus")
_STANDARD = TRAIN_PRESETS["train_gcamp6f_standard"]
_STANDARD_AREA = _STANDARD.dims[0] * _STANDARD.dims[1]


@dataclass(frozen=True)
class HybridSettings:
    """Ranges from which one hybrid is drawn (pairs ``(low, high)`` sampled uniformly, counts
    as integers; counts are per 128 x 128 px and scale with the field's area).

    Attributes
    ----------
    density : (float, float)
        Injected simulator objects relative to the standard training preset (``train_gcamp6f_
        standard``), per area, at the drawn zoom.
    soma_scale : (float, float)
        Injected soma radius relative to the recording's (``soma_radius_px``).
    brightness : (float, float)
        A resting soma's brightness relative to the recording's soma contrast.
    min_spike_snr : float
        Floor of one spike's peak (at a brightness-1 soma's brightest pixel) over the noise sd.
    indicators : tuple of str
        Indicators drawn from (``movies.INDICATORS``).
    n_neuropil_clouds, n_speckle, n_motion_edges : (int, int)
        Junk counts.
    max_overlap : float
        Somatic objects with more than this fraction of their footprint's mass on the
        recording's active pixels (dilated by 2 more px) are not injected.
    """

    density: tuple[float, float] = (0.3, 1.0)
    soma_scale: tuple[float, float] = (0.8, 1.25)
    brightness: tuple[float, float] = (0.4, 1.5)
    min_spike_snr: float = 0.4
    indicators: tuple[str, ...] = tuple(sorted(INDICATORS))
    n_neuropil_clouds: tuple[int, int] = (1, 3)
    n_speckle: tuple[int, int] = (1, 3)
    n_motion_edges: tuple[int, int] = (1, 3)
    max_overlap: float = 0.1

    def to_json(self) -> str:
        """The settings as a JSON string (for provenance)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


HYBRID_SETTINGS = HybridSettings()
"""The settings the hybrid data are built with."""


@dataclass(frozen=True, eq=False)
class HybridMovie:
    """A hybrid movie and the ground truth of what was injected (``K`` objects, ``T`` frames).

    Attributes
    ----------
    movie : (T, rows, cols) float32 ndarray
        The recording (its frames ``frame_index``) plus the injected light and its shot noise.
    A : (rows * cols, K) scipy.sparse.csc_matrix
        Injected footprints, Fortran pixel order as CaImAn's ``A``, peak 1, at the
        recording's median position (they move with its ``shifts``).
    gt_kind : tuple of str
        Kind of each object (``HYBRID_KINDS``).
    gt_class : (K,) int8 ndarray
        Class code 1-4 of each object (``HYBRID_KIND_CLASS``).
    C : (K, T) float32 ndarray
        Calcium (simulator objects: one spike peaks at 1) or activity (junk) of each object.
    S : (K, T) int16 ndarray
        Spikes per frame (0 for junk).
    F : (K, T) float32 ndarray
        What multiplies each footprint, in the recording's counts.
    parent : (K,) int ndarray
        Index of the object whose spikes a dendrite or axon fragment shares, or -1.
    activity : (rows, cols) bool ndarray
        The recording's own active structure (:func:`recording_activity`).
    shifts : (T, 2) float32 ndarray
        Rigid shift applied to the injected objects in each frame (the recording's motion).
    frame_index : (T,) int ndarray
        Frame of the recording (crop) behind each hybrid frame.
    unit : float
        Counts per pixel of a brightness-1 resting soma.
    spike_snr : float
        One spike's peak at a brightness-1 soma's brightest pixel over the median noise sd.
    gain : float
        Counts per photon used for the injected shot noise.
    fr, decay_time : float
        Frame rate (Hz) and the indicator's decay time (s).
    gSig : tuple of int
        The ``gSig`` a user of the recording would give CaImAn.
    zoom : float
        Zoom of the injected objects (``movies.MovieSettings.zoom``).
    indicator : str
    seed : int
    settings_json : str
        Everything drawn: the simulator's settings, the hybrid settings, the scaling.
    """

    movie: np.ndarray
    A: scipy.sparse.csc_matrix
    gt_kind: tuple
    gt_class: np.ndarray
    C: np.ndarray
    S: np.ndarray
    F: np.ndarray
    parent: np.ndarray
    activity: np.ndarray
    shifts: np.ndarray
    frame_index: np.ndarray
    unit: float
    spike_snr: float
    gain: float
    fr: float
    decay_time: float
    gSig: tuple
    zoom: float
    indicator: str
    seed: int
    settings_json: str

    @property
    def dims(self) -> tuple[int, int]:
        """(rows, cols) of the field of view."""
        return tuple(self.movie.shape[1:])


def extend_frames(n_frames: int, frames: int) -> np.ndarray:
    """Frame indices that play a recording of ``n_frames`` forth and back to ``frames`` long.

    A reflection at each end keeps the movie continuous (no jump from the last frame to the
    first); the recording's own activity repeats, reversed every other pass.

    Examples
    --------
    >>> extend_frames(4, 10).tolist()
    [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    >>> extend_frames(5, 3).tolist()
    [0, 1, 2]
    """
    if n_frames < 1 or frames < 1:
        raise ValueError(f"need at least one frame, got n_frames={n_frames}, frames={frames}")
    if n_frames == 1:
        return np.zeros(frames, int)
    period = 2 * (n_frames - 1)
    phase = np.arange(frames) % period
    return np.where(phase < n_frames, phase, period - phase)


def recording_activity(movie, *, soma_radius_px: float) -> np.ndarray:
    """Pixels where a real recording has structure of its own (its cells), as a bool image.

    Three tests, each against the field's own robust spread, on the movie less its
    neuropil (the movie blurred over 3 soma radii): the correlation image (``median + 5`` robust
    sd), the brightest transient (the movie averaged over 0.1 x T^0.5 frames, its peak over
    its median in noise sd, above ``median + 5`` robust sd and above ``sqrt(2 ln T) + 2.5``:
    photon-starved noise is far from Gaussian), and the mean image (``median + 3.5`` robust
    sd). Their union, without specks smaller than a tenth of a soma (or 4 px), dilated by 2 px.

    Parameters
    ----------
    movie : (T, rows, cols) array
    soma_radius_px : float

    Returns
    -------
    (rows, cols) bool ndarray
    """
    movie = np.asarray(movie, dtype=np.float32)
    T = movie.shape[0]
    sigma = 3.0 * soma_radius_px
    local = movie - scipy.ndimage.gaussian_filter(movie, (0, sigma, sigma), mode="reflect")

    def outliers(image, k):
        centre = np.median(image)
        spread = 1.4826 * np.median(np.abs(image - centre))
        return image > centre + k * max(spread, 1e-12)

    masks = [outliers(correlation_image(local), 5.0), outliers(local.mean(axis=0), 3.5)]
    if T >= 10:
        width = max(1, int(round(0.1 * math.sqrt(T))))
        smooth = scipy.ndimage.uniform_filter1d(local, width, axis=0, mode="nearest")
        noise = robust_noise_sd(local) / math.sqrt(width)
        peak = (smooth.max(axis=0) - np.median(smooth, axis=0)) / np.maximum(noise, 1e-12)
        masks.append(outliers(peak, 5.0) & (peak > math.sqrt(2 * math.log(T)) + 2.5))
    mask = np.logical_or.reduce(masks)
    labels, n = scipy.ndimage.label(mask)
    if n:
        sizes = np.bincount(labels.ravel())
        small = sizes < max(4.0, 0.1 * math.pi * soma_radius_px**2)
        small[0] = False
        mask[small[labels]] = False
    return scipy.ndimage.binary_dilation(mask, iterations=2)


class RecordingAnalysis(NamedTuple):
    """What :func:`make_hybrid` needs to know about a recording (:func:`analyse_recording`).

    Attributes
    ----------
    noise : dict
        :func:`calibration.fit_noise` (``gain`` scales the injected light's shot noise).
    noise_correlation : float
        Correlation of neighbouring pixels' noise along the scan line (0 to 0.45).
    shifts : (T0, 2) float ndarray
        The recording's rigid shifts, centred on the median position (zeros: no motion).
    activity : (rows, cols) bool ndarray
        :func:`recording_activity`.
    """

    noise: dict
    noise_correlation: float
    shifts: np.ndarray
    activity: np.ndarray


def analyse_recording(recording, *, soma_radius_px: float, motion: bool = True):
    """Noise, noise correlation, motion and own activity of a recording (or a crop of it).

    Parameters
    ----------
    recording : (T0, rows, cols) array
    soma_radius_px : float
    motion : bool
        Estimate the rigid shifts (``calibration.phase_correlation_shifts``; False: the objects
        stay still). The estimate is smoothed over 1.5 frames (its error is nearly white, about
        0.2 px on weakly structured fields) and dropped when it stays under ``MIN_MOTION_PX``:
        objects must not jitter where the recording does not move.

    Returns
    -------
    RecordingAnalysis
    """
    real = np.asarray(recording, dtype=np.float32)
    if real.ndim != 3 or min(real.shape) < 2:
        raise ValueError(f"recording must be (T, rows, cols), got shape {real.shape}")
    shifts = np.zeros((real.shape[0], 2))
    if motion:
        shifts = phase_correlation_shifts(real)
        shifts = scipy.ndimage.gaussian_filter1d(shifts, 1.5, axis=0, mode="nearest")
        shifts -= np.median(shifts, axis=0)
        if np.abs(shifts).max() < MIN_MOTION_PX:
            shifts = np.zeros_like(shifts)
    correlation = float(np.clip(fit_noise_correlation(real)["along_line"], 0.0, 0.45))
    return RecordingAnalysis(
        noise=fit_noise(real),
        noise_correlation=correlation,
        shifts=shifts,
        activity=recording_activity(real, soma_radius_px=soma_radius_px),
    )


def _count(rng: np.random.Generator, bounds, scale: float) -> int:
    low, high = bounds
    return int(rng.integers(int(round(low * scale)), int(round(high * scale)) + 1))


def _sim_settings(rng, settings: HybridSettings, dims, frames, fr, soma_radius_px, seed):
    radius = soma_radius_px * float(rng.uniform(*settings.soma_scale))
    zoom = radius * UM_PER_PX_AT_ZOOM_1 / float(np.mean(SOMA_RADIUS_UM))
    density = float(rng.uniform(*settings.density))
    factor = density * dims[0] * dims[1] / _STANDARD_AREA / (zoom / _STANDARD.zoom) ** 2

    def counts(bounds, minimum=0):
        low, high = (max(minimum, int(round(b * factor))) for b in bounds)
        return (low, max(low, high))

    indicator = str(rng.choice(list(settings.indicators)))
    return dataclasses.replace(
        _STANDARD,
        name=f"hybrid_sources_{seed}",
        dims=tuple(int(d) for d in dims),
        frames=int(frames),
        fr=float(fr),
        indicator=indicator,
        zoom=zoom,
        n_somata=counts(_STANDARD.n_somata, 1),
        n_dendrites=counts(_STANDARD.n_dendrites),
        n_axons=counts(_STANDARD.n_axons),
        n_out_of_focus=counts(_STANDARD.n_out_of_focus),
        n_border_cut=counts(_STANDARD.n_border_cut),
        n_dim=counts(_STANDARD.n_dim),
        n_vessels=(0, 0),
        max_motion_px=0.0,
    )


def _junk(rng, dims, frames, fr, radius, counts, motion) -> tuple[list, list, list]:
    """Footprints (peak 1), activity ``C`` and brightness ``F`` (resting-soma units) of junk."""
    rows, cols = np.mgrid[: dims[0], : dims[1]].astype(float)
    images, kinds, traces = [], [], []
    for _ in range(counts["neuropil_cloud"]):
        centre = rng.uniform(0, 1, 2) * (np.asarray(dims) - 1)
        width = rng.uniform(2.5, 5.0) * radius * np.array([1.0, rng.uniform(0.6, 1.6)])
        blob = np.exp(-0.5 * (((rows - centre[0]) / width[0]) ** 2
                              + ((cols - centre[1]) / width[1]) ** 2))  # fmt: skip
        blob *= 0.6 + 0.4 * smooth_field(rng, dims, radius)
        level = rng.uniform(0.15, 0.4)
        drift = 1.0 + 0.4 * lowpass_noise(rng, frames, fr, rng.uniform(1.0, 5.0))
        images.append(blob)
        kinds.append("neuropil_cloud")
        traces.append(level * np.clip(drift, 0, None))
    for _ in range(counts["speckle"]):
        centre = rng.uniform(0, 1, 2) * (np.asarray(dims) - 1)
        n_dots = int(rng.integers(8, 26))
        spread = rng.uniform(2.0, 4.0) * radius
        angle = rng.uniform(0, 2 * math.pi, n_dots)
        distance = spread * np.sqrt(rng.uniform(0, 1, n_dots))
        dots = np.zeros(dims)
        r = np.clip(np.round(centre[0] + distance * np.sin(angle)), 0, dims[0] - 1).astype(int)
        c = np.clip(np.round(centre[1] + distance * np.cos(angle)), 0, dims[1] - 1).astype(int)
        np.add.at(dots, (r, c), rng.uniform(0.5, 1.0, n_dots))
        images.append(scipy.ndimage.gaussian_filter(dots, 0.6))
        kinds.append("speckle")
        flashes = rng.poisson(rng.uniform(0.5, 3.0) / fr, frames) * rng.lognormal(0, 0.4, frames)
        traces.append(rng.uniform(0.5, 1.5) * flashes)
    for _ in range(counts["motion_edge"]):
        start = rng.uniform(0, 1, 2) * (np.asarray(dims) - 1)
        angle = rng.uniform(0, 2 * math.pi)
        length = rng.uniform(3.0, 8.0) * radius
        edge = path_image(rng, dims, start, angle, length, 0.03, rng.uniform(0.6, 1.0), False)
        if edge.max() <= 0:
            continue
        normal = np.array([math.cos(angle), -math.sin(angle)])
        if motion is not None and np.ptp(motion, axis=0).max() > 0.5:
            along = motion @ normal
        else:
            along = 0.6 * lowpass_noise(rng, frames, fr, 1.0) + 0.3 * rng.normal(size=frames)
        along = np.clip(along - np.median(along), 0, None)
        images.append(edge)
        kinds.append("motion_edge")
        traces.append(rng.uniform(0.4, 1.0) * along / max(float(along.max()), 1e-12))
    images = [img / img.max() for img in images]
    for img in images:
        img[img < 0.02] = 0.0
    return images, kinds, traces


def make_hybrid(
    recording,
    *,
    fr: float,
    soma_radius_px: float,
    seed: int,
    frames: int | None = None,
    settings: HybridSettings = HYBRID_SETTINGS,
    analysis: RecordingAnalysis | None = None,
) -> HybridMovie:
    """Inject simulated sources with known footprints and traces into a real recording.

    Parameters
    ----------
    recording : (T0, rows, cols) array
        The real movie (a crop of a recording), any numeric dtype.
    fr : float
        Its frame rate (Hz), known or assumed.
    soma_radius_px : float
        Typical radius of its somata (px): the injected ones are drawn around it.
    seed : int
        Seed of every draw.
    frames : int, optional
        Length of the hybrid (default ``T0``); a longer one plays the recording forth and back
        (:func:`extend_frames`).
    settings : HybridSettings, optional
    analysis : RecordingAnalysis, optional
        :func:`analyse_recording` of ``recording`` (computed, motion included, when not given;
        give it to reuse it for several hybrids of one recording).

    Returns
    -------
    HybridMovie

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> real = rng.poisson(40, (60, 48, 48)).astype(np.uint16)
    >>> still = analyse_recording(real, soma_radius_px=4.0, motion=False)
    >>> hybrid = make_hybrid(real, fr=30.0, soma_radius_px=4.0, seed=1, frames=80, analysis=still)
    >>> hybrid.movie.shape, hybrid.A.shape[0], len(hybrid.gt_kind) == hybrid.A.shape[1]
    ((80, 48, 48), 2304, True)
    >>> outside = np.asarray(hybrid.A.sum(axis=1)).reshape(48, 48, order="F") == 0
    >>> bool(np.array_equal(hybrid.movie[:, outside], real[hybrid.frame_index][:, outside]))
    True
    """
    recording = np.asarray(recording)
    if recording.ndim != 3 or min(recording.shape) < 2:
        raise ValueError(f"recording must be (T, rows, cols), got shape {recording.shape}")
    if not (np.isfinite(fr) and fr > 0 and soma_radius_px > 0):
        raise ValueError(f"fr and soma_radius_px must be positive, got {fr!r}, {soma_radius_px!r}")
    T0, dims = recording.shape[0], tuple(int(d) for d in recording.shape[1:])
    frames = T0 if frames is None else int(frames)
    real = recording.astype(np.float32)
    if analysis is None:
        analysis = analyse_recording(real, soma_radius_px=soma_radius_px)
    shifts0 = np.asarray(analysis.shifts, dtype=float)
    activity = np.asarray(analysis.activity, dtype=bool)
    if shifts0.shape != (T0, 2) or activity.shape != dims:
        raise ValueError(
            f"analysis is of another recording: shifts {shifts0.shape}, activity "
            f"{activity.shape} for a recording of shape {recording.shape}"
        )
    correlation = float(analysis.noise_correlation)
    sd = float(np.median(robust_noise_sd(real)))
    gain = float(analysis.noise["gain"])
    if not (np.isfinite(gain) and gain > 0):  # no usable fit: shot noise as if from 0 counts
        gain = sd * sd / max(float(np.median(real)), 1e-12)
    index = extend_frames(T0, frames)
    shifts = shifts0[index]

    rng = np.random.default_rng([seed, 1])
    sim_settings = _sim_settings(rng, settings, dims, frames, fr, soma_radius_px, seed)
    sim = simulate_movie(sim_settings, seed)
    A_sim = sim.A.toarray().T.reshape(-1, *dims, order="F") if sim.A.shape[1] else None
    keep = []
    near = scipy.ndimage.binary_dilation(activity, iterations=2)
    for k, kind in enumerate(sim.gt_kind):
        if kind in _SOMATIC:
            image = A_sim[k]
            overlap = float((image * near).sum() / max(image.sum(), 1e-12))
            if overlap > settings.max_overlap:
                continue
        keep.append(k)
    keep = np.asarray(keep, int)
    new_index = np.full(len(sim.gt_kind), -1)
    new_index[keep] = np.arange(keep.size)
    parent = np.where(sim.parent[keep] >= 0, new_index[np.maximum(sim.parent[keep], 0)], -1)

    scale = dims[0] * dims[1] / _STANDARD_AREA
    radius = sim_settings.soma_radius_px()
    junk_counts = {
        "neuropil_cloud": _count(rng, settings.n_neuropil_clouds, scale),
        "speckle": _count(rng, settings.n_speckle, scale),
        "motion_edge": _count(rng, settings.n_motion_edges, scale),
    }
    junk_images, junk_kinds, junk_traces = _junk(
        rng, dims, frames, fr, float(np.mean(radius)), junk_counts, shifts
    )

    images = [A_sim[k] for k in keep] + junk_images
    kinds = tuple(sim.gt_kind[k] for k in keep) + tuple(junk_kinds)
    F_units = np.concatenate(
        [sim.F[keep].astype(np.float64), np.asarray(junk_traces, float).reshape(-1, frames)]
    )
    C = np.concatenate(
        [sim.C[keep].astype(np.float64), np.asarray(junk_traces, float).reshape(-1, frames)]
    )
    S = np.concatenate([sim.S[keep], np.zeros((len(junk_kinds), frames), np.int16)])
    parent = np.concatenate([parent, np.full(len(junk_kinds), -1)])

    mean_image = real.mean(axis=0)
    contrast = float(np.percentile(mean_image, 99) - np.median(mean_image))
    dff_mid = float(np.mean(INDICATORS[sim_settings.indicator][2]))
    unit = max(contrast * float(rng.uniform(*settings.brightness)),
               settings.min_spike_snr * sd / dff_mid)  # fmt: skip
    F = F_units * unit
    K = len(images)
    stack = np.stack(images).astype(np.float32) if K else np.zeros((0, *dims), np.float32)

    movie = real[index].copy()
    moving = np.abs(shifts).max() > 0.05
    noise_rng = np.random.default_rng([seed, 2])
    restore = 1.0
    if correlation > 0:
        a = (1 - math.sqrt(1 - 4 * correlation**2)) / (2 * correlation)
        restore = (1 + a) / math.sqrt(1 + a * a)
    for t in range(frames if K else 0):
        light = np.tensordot(F[:, t].astype(np.float32), stack, axes=1)
        if moving:
            light = scipy.ndimage.shift(light, shifts[t], order=1, mode="constant", cval=0.0)
        light = np.clip(light, 0, None)
        shot = noise_rng.standard_normal(dims).astype(np.float32)
        if correlation > 0:
            shot = scan_line_smear(shot[None], correlation)[0] * restore
        movie[t] += np.where(light > 0, light + np.sqrt(gain * light) * shot, 0.0)

    A = scipy.sparse.csc_matrix(
        stack.reshape(K, -1, order="F").T if K else np.zeros((dims[0] * dims[1], 0), np.float32)
    )
    A.eliminate_zeros()
    A.sort_indices()
    record = {
        "simulator": json.loads(sim_settings.to_json()),
        "hybrid": json.loads(settings.to_json()),
        "junk_counts": junk_counts,
        "unit": unit,
        "contrast": contrast,
        "noise_sd": sd,
        "gain": gain,
        "noise_correlation": correlation,
        "motion_max_px": float(np.abs(shifts0).max()),
        "dropped_on_activity": int(len(sim.gt_kind) - keep.size),
        "activity_fraction": float(activity.mean()),
        "generator_version": HYBRID_GENERATOR_VERSION,
    }
    gsig = max(2, int(round(0.8 * soma_radius_px)))
    logger.info(
        "hybrid seed %d: %d objects (%d dropped on the recording's activity), unit %.3g counts, "
        "spike SNR %.2f", seed, K, record["dropped_on_activity"], unit, unit * dff_mid / sd,
    )  # fmt: skip
    return HybridMovie(
        movie=movie,
        A=A,
        gt_kind=kinds,
        gt_class=np.array([HYBRID_KIND_CLASS[k] for k in kinds], np.int8),
        C=C.astype(np.float32),
        S=S.astype(np.int16),
        F=F.astype(np.float32),
        parent=parent.astype(int),
        activity=activity,
        shifts=shifts.astype(np.float32),
        frame_index=index,
        unit=float(unit),
        spike_snr=float(unit * dff_mid / sd),
        gain=gain,
        fr=float(fr),
        decay_time=float(INDICATORS[sim_settings.indicator][1]),
        gSig=(gsig, gsig),
        zoom=float(sim_settings.zoom),
        indicator=sim_settings.indicator,
        seed=int(seed),
        settings_json=json.dumps(record, sort_keys=True),
    )
