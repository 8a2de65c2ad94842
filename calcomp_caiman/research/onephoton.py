"""Seeded simulation of one-photon (miniscope, microendoscope) calcium movies with ground truth.

The two-photon generator's sibling (``research.movies``; its drawing helpers, indicator kernels
and class codes are reused from there). What changes in one-photon wide-field imaging through
a GRIN lens, and how it is drawn here:

* **Somata blurred by wide-field optics**: a soma (disc, 5-7.5 um radius) is convolved with a
  Gaussian point-spread function (tissue scattering plus defocus, 4-6 um sigma), so its
  footprint is several times the cell body's area and neighbours' footprints overlap.
  ``soma`` (in focus, class *neuron*), ``out_of_focus`` (1.6-2.5 times more blur, dimmer,
  *doubtful*), ``border_cut`` (centre near or beyond the edge, *doubtful*).
* **A background that dominates the signal**: a static baseline several times a soma's
  resting brightness with a tissue texture (``background``, constant activity), a few broad
  fields that fluctuate slowly (``background``, 2-30 s correlation time), many ``deep_cell``
  sources (cells far from the focal plane, blurred over 16-40 um: fast, spiking background,
  class *noise*), photobleaching, and the lens's vignetting (fixed to the optics, it does not
  move with the tissue).
* **Blood vessels**: dark (absorbing) tubes that move with the tissue; their diameter pulses
  with the heart beat (8-11 Hz, aliased at 10-30 Hz frame rates) and slow vasomotion, and
  the flow flickers in the lumen. A ``vessel`` object's footprint is the vessel's edges
  (where a change of diameter changes the movie), its activity the constriction.
* **Non-rigid microendoscope motion**: slow drift, jitter and movement bouts (rigid, up to
  ``max_shift_px``) plus a smooth deformation (of the order of ``nonrigid_px``) and a 0.4 %
  scaling, which rigid motion correction leaves behind. The ``motion`` object's
  footprint is where the tissue has strong edges, its activity the displacement.
* **Lower SNR**: shot noise on a bright background plus camera read noise.
* Frame rates 10-30 Hz, GCaMP6f / GCaMP6s / jGCaMP8f kinetics (``movies.INDICATORS``);
  activity is sparse bursts (events of one to several spikes) whose rates follow a shared
  slow population state.

The junk CNMF-E produces on such movies (background residue, vessel edges, motion edges,
split and merged cells) is not painted in: it comes out of CaImAn, from these causes; the
``deep_cell``, ``background``, ``vessel`` and ``motion`` objects let the matching rule name it
(``research.gt_labels``).

Calibration (what each number rests on)
---------------------------------------
From CaImAn 1.12.1's own CNMF-E demo (``demos/general/params_demo_pipeline_cnmfE.json`` and
``demos/notebooks/demo_pipeline_cnmfE.ipynb``, read in the source tarball): frame rate 10 Hz,
``decay_time`` 0.4 s, ``gSig`` 3 px with ``gSiz`` 13 (4 gSig + 1; the notebook uses 2 gSig +
1), ``min_corr`` 0.8, ``min_pnr`` 10 (the notebook reads 0.8-0.9 and 10-20 off its data),
``ring_size_factor`` 1.4, ``ssub_B`` 2, ``merge_thr`` 0.7, patches ``rf`` 40 / ``stride``
20, ``max_shifts`` 5 px (rigid; so shifts of a few px are ordinary); the notebook says the
1p background "is much larger in magnitude than the neural signals" and fluctuates locally,
and that its demo movie shows blood flow in vessels. Inscopix CNMF-E's defaults and guide
(inscopix/inscopix-cnmfe ``docs/parameter_tuning.md``): cell diameter 7 px, Gaussian kernel
``floor((diameter - 1) / 4)``, the same ``min_corr``/``min_pnr``/ring/merge values, spatial
downsampling by 2-4 recommended before CNMF-E (hence 1-2.5 um per px here), and
"oversegmented cells" and "blobs that don't appear to be cells" as the common failures.
CNMF_E (MATLAB) demos use ``gSig`` 3-4.5 and ``gSiz`` 15 at 20 Hz. Zhou et al. 2018 (eLife
7:e28728, abstract): "very large background fluctuations and high spatial overlaps"; Lu et
al. 2017 (sc-CNMF, arXiv 1704.00793, abstract): "high background and low signal-to-noise
ratio". Tran et al. 2020 (Front. Neural Circuits 14:42) give the curation target (F1 > 0.92)
but no numbers used here.

Our assumptions (not calibrated against data): soma radius 5-7.5 um and PSF sigma 4-6 um
(chosen so that a user's ``gSig`` = the blurred soma's sigma lands at 3-6 px, the demo's
range), background 4-10 times a resting soma's peak brightness, slow background fields at
5-15 % of it, 40-90 deep cells per 128 x 128 px, vessel diameter changes of 4-12 %, heart
rate 8-11 Hz, event rates 0.03-0.3 Hz of bursts of 1.5-5 spikes, 40-120 photons per
resting-soma unit (set so that the median in-focus soma's peak reads about 0.8 on CaImAn's
correlation image and 10-15 on its PNR image, where the CaImAn notebook reads its neurons:
0.8-0.9 and 10-20).

Every draw comes from ``numpy.random.default_rng(seed)``: the same settings and seed give the
same movie, bit for bit, on the same NumPy/SciPy. No global state, no printing.

Presets: ``TRAIN_PRESETS`` for training and tuning; ``HELD_OUT_PRESETS`` (indicator, pixel
size, density, background, motion and frame rate apart) only for the final test.
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

from calcomp_caiman.research.movies import (
    INDICATORS,
    calcium_kernel,
    lowpass_noise,
    path_image,
    place_centres,
    smooth_field,
    soma_image,
)
from calcomp_caiman.schema import CLASSES

logger = logging.getLogger(__name__)

__all__ = [
    "GENERATOR_VERSION",
    "HELD_OUT_PRESETS",
    "KIND_CLASS",
    "KINDS",
    "PRESETS",
    "TRAIN_PRESETS",
    "OnePhotonMovie",
    "OnePhotonSettings",
    "simulate_onephoton",
]

GENERATOR_VERSION = "1p-1.0"
"""Bumped whenever the same settings and seed would give a different movie."""

KINDS = ("soma", "out_of_focus", "border_cut", "deep_cell", "background", "vessel", "motion")
"""Kinds of ground-truth objects (sources of light, and the vessel and motion modulators)."""

_CODE = {name: i + 1 for i, name in enumerate(CLASSES)}
KIND_CLASS = {
    "soma": _CODE["neuron"],
    "out_of_focus": _CODE["doubtful"],
    "border_cut": _CODE["doubtful"],
    "deep_cell": _CODE["noise"],
    "background": _CODE["noise"],
    "vessel": _CODE["noise"],
    "motion": _CODE["noise"],
}
"""Class code (1-4, order of ``CLASSES``) of each kind: a component that matches a deep cell,
the background, a vessel or the motion is background residue, a vessel edge or a motion edge."""

EMITTERS = ("soma", "out_of_focus", "border_cut", "deep_cell", "background")
"""Kinds that emit light (``F`` multiplies their footprint); vessels and motion only modulate."""


@dataclass(frozen=True)
class OnePhotonSettings:
    """Ranges from which one movie is drawn. Pairs ``(low, high)`` are sampled uniformly.

    Brightness is in units of a resting in-focus soma's peak fluorescence. ``um_per_px`` is
    the pixel size after the usual spatial downsampling; sizes in um are converted with it.
    """

    name: str
    held_out: bool = False
    dims: tuple[int, int] = (128, 128)
    frames: int = 1500
    fr: float = 10.0
    indicator: str = "GCaMP6f"
    um_per_px: float = 2.0
    soma_radius_um: tuple[float, float] = (5.0, 7.5)
    psf_sigma_um: tuple[float, float] = (4.0, 6.0)
    n_somata: tuple[int, int] = (40, 55)
    min_distance: float = 1.0
    """Least distance between in-focus soma centres, in soma radii (cells at different depths
    overlap in the image)."""
    soma_brightness: tuple[float, float] = (0.6, 1.4)
    n_out_of_focus: tuple[int, int] = (6, 12)
    out_of_focus_blur: tuple[float, float] = (1.6, 2.5)
    n_border_cut: tuple[int, int] = (4, 8)
    n_deep: tuple[int, int] = (40, 70)
    deep_sigma_um: tuple[float, float] = (16.0, 40.0)
    deep_brightness: tuple[float, float] = (0.05, 0.15)
    event_rate_hz: tuple[float, float] = (0.03, 0.3)
    burst_spikes: tuple[float, float] = (1.5, 5.0)
    population_coupling: tuple[float, float] = (0.0, 1.0)
    background_level: tuple[float, float] = (4.0, 10.0)
    background_texture: tuple[float, float] = (0.1, 0.3)
    n_background: tuple[int, int] = (3, 5)
    background_fluctuation: tuple[float, float] = (0.05, 0.15)
    bleaching: tuple[float, float] = (0.0, 0.15)
    vignette: tuple[float, float] = (0.3, 0.6)
    n_vessels: tuple[int, int] = (1, 3)
    vessel_width_um: tuple[float, float] = (8.0, 25.0)
    vessel_depth: tuple[float, float] = (0.3, 0.6)
    vessel_pulse: tuple[float, float] = (0.04, 0.12)
    heart_rate_hz: tuple[float, float] = (8.0, 11.0)
    max_shift_px: float = 3.0
    nonrigid_px: float = 0.8
    bout_rate_hz: tuple[float, float] = (0.01, 0.05)
    photons_per_unit: tuple[float, float] = (40.0, 120.0)
    read_noise: tuple[float, float] = (1.0, 3.0)

    def to_json(self) -> str:
        """The settings as a JSON string (for provenance)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def soma_radius_px(self) -> tuple[float, float]:
        """Range of soma radii in pixels."""
        return (self.soma_radius_um[0] / self.um_per_px, self.soma_radius_um[1] / self.um_per_px)

    def footprint_sigma_px(self) -> float:
        """Typical sigma (px) of an in-focus soma's blurred footprint: a disc of radius ``R``
        has a per-axis variance ``R**2 / 4``, the PSF adds its own."""
        radius = np.mean(self.soma_radius_um) / self.um_per_px
        psf = np.mean(self.psf_sigma_um) / self.um_per_px
        return float(math.sqrt(radius**2 / 4 + psf**2))

    def user_gsig(self) -> int:
        """The ``gSig`` a CNMF-E user would set: the blurred soma's sigma (the Gaussian that
        "approximates the average neuron shape", CNMF_E's demos), in px."""
        return max(2, int(round(self.footprint_sigma_px())))

    def decay_time(self) -> float:
        """Decay time (s) of the indicator, as a CaImAn user would pass it."""
        return INDICATORS[self.indicator][1]


@dataclass(frozen=True)
class OnePhotonMovie:
    """One simulated one-photon movie and its ground truth (``K`` objects, ``T`` frames).

    Attributes
    ----------
    movie : (T, rows, cols) float32 ndarray
        The recorded movie (photons plus read noise).
    A : (rows * cols, K) scipy.sparse.csc_matrix
        Ground-truth footprints, pixels in Fortran order as CaImAn's ``A``, peak 1, values
        below 0.02 set to 0. Emitters: the blurred cell or background field. ``vessel``:
        the vessel's edges; ``motion``: where the tissue has strong edges.
    gt_kind : tuple of str, length K
        Kind of each object (``KINDS``).
    gt_class : (K,) int8 ndarray
        Class code 1-4 of each object (``KIND_CLASS``).
    C : (K, T) float32 ndarray
        Activity of each object, what a component's trace is matched to: cells' calcium (one
        spike peaks at 1); background fields' fluctuation; a vessel's constriction; the
        motion's displacement (px).
    S : (K, T) int16 ndarray
        Spike counts per frame (0 for objects that do not spike).
    F : (K, T) float32 ndarray
        Light emitted by each object (multiplies its footprint), resting-soma units; 0 for
        vessels and motion.
    parent : (K,) int ndarray
        -1 for every object (no shared spikes in one-photon movies; kept for the 2p layout).
    transmission : (T, rows, cols) float16 ndarray
        What the vessels let through in each frame (tissue frame, before motion), 1 off
        the vessels.
    vignette : (rows, cols) float32 ndarray
        The lens's illumination falloff (fixed to the optics: applied after motion).
    shifts : (T, 2) float32 ndarray
        Rigid (row, col) shift of each frame, px.
    displacement : (T,) float32 ndarray
        Mean displacement of the field (rigid plus non-rigid), px.
    gain : float
        Photons per resting-soma unit.
    fr, decay_time : float
        Frame rate (Hz) and indicator decay time (s).
    gSig : tuple of int
        The ``gSig`` a user would give CNMF-E.
    settings : OnePhotonSettings
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
    transmission: np.ndarray
    vignette: np.ndarray
    shifts: np.ndarray
    displacement: np.ndarray
    gain: float
    fr: float
    decay_time: float
    gSig: tuple
    settings: OnePhotonSettings
    seed: int

    @property
    def dims(self) -> tuple[int, int]:
        """(rows, cols) of the field of view."""
        return tuple(self.movie.shape[1:])

    def clean(self) -> np.ndarray:
        """The noise-free movie before motion, ``vignette * transmission * (A F)``, in
        resting-soma units (T, rows, cols): what the ground truth says the movie is."""
        emit = np.asarray(self.A @ self.F.astype(np.float64))  # (pixels, T)
        frames = emit.T.reshape((-1, *self.dims[::-1])).transpose(0, 2, 1)
        return (frames * self.transmission * self.vignette).astype(np.float32)


# --------------------------------------------------------------------------- presets

TRAIN_PRESETS = {
    s.name: s
    for s in (
        OnePhotonSettings(name="train1p_gcamp6f_10hz"),
        OnePhotonSettings(
            name="train1p_gcamp6s_15hz_dense",
            fr=15.0,
            frames=1800,
            indicator="GCaMP6s",
            um_per_px=1.6,
            n_somata=(45, 60),
            min_distance=0.8,
            n_deep=(50, 80),
            background_level=(5.0, 9.0),
        ),
        OnePhotonSettings(
            name="train1p_gcamp6f_20hz_vessels_motion",
            fr=20.0,
            frames=2000,
            um_per_px=1.4,
            n_somata=(25, 35),
            n_vessels=(2, 4),
            vessel_pulse=(0.08, 0.15),
            max_shift_px=5.0,
            nonrigid_px=1.5,
            bout_rate_hz=(0.03, 0.08),
        ),
        OnePhotonSettings(
            name="train1p_gcamp6f_lowsnr_bright_background",
            fr=10.0,
            um_per_px=2.2,
            n_somata=(45, 60),
            background_level=(8.0, 14.0),
            background_fluctuation=(0.1, 0.2),
            photons_per_unit=(15.0, 35.0),
            read_noise=(2.0, 4.0),
        ),
    )
}
"""Presets for training and tuning."""

HELD_OUT_PRESETS = {
    s.name: s
    for s in (
        OnePhotonSettings(
            name="heldout1p_jgcamp8f_30hz_zoomed",
            held_out=True,
            dims=(144, 144),
            fr=30.0,
            frames=2400,
            indicator="jGCaMP8f",
            um_per_px=1.1,
            n_somata=(25, 35),
            n_deep=(40, 60),
            event_rate_hz=(0.05, 0.5),
            max_shift_px=4.0,
            nonrigid_px=1.2,
        ),
        OnePhotonSettings(
            name="heldout1p_gcamp6s_12hz_dense_heavy_background",
            held_out=True,
            dims=(128, 128),
            fr=12.0,
            frames=1500,
            indicator="GCaMP6s",
            um_per_px=1.8,
            n_somata=(55, 70),
            min_distance=0.7,
            n_deep=(70, 90),
            background_level=(10.0, 16.0),
            background_fluctuation=(0.1, 0.2),
            n_vessels=(2, 3),
            photons_per_unit=(20.0, 45.0),
        ),
    )
}
"""Held-out presets (indicator, frame rate, pixel size, density and background never seen in
training): for the final test only, never for training, model selection or tuning."""

PRESETS = {**TRAIN_PRESETS, **HELD_OUT_PRESETS}
"""All presets by name."""


# --------------------------------------------------------------------------- drawing


def _draw(rng: np.random.Generator, bounds) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _draw_count(rng: np.random.Generator, bounds) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


def _normalised(image: np.ndarray) -> np.ndarray:
    image = np.clip(image, 0, None)
    return image / max(float(image.max()), 1e-12)


def _blurred_cell(rng, rows, cols, centre, radius, sigma) -> np.ndarray:
    """A soma (``movies.soma_image``) seen through a Gaussian PSF of ``sigma`` px, peak 1."""
    cell = soma_image(rng, rows, cols, centre, radius, False)
    return _normalised(scipy.ndimage.gaussian_filter(cell, sigma, mode="constant"))


def _edge_centre(rng, dims, radius) -> np.ndarray:
    """A centre near an edge: up to ``radius`` outside it, up to ``radius`` inside."""
    side = int(rng.integers(4))
    offset = _draw(rng, (-1.0, 1.0)) * radius
    along = _draw(rng, (0, dims[1] if side in (0, 2) else dims[0]))
    return np.array(
        [(offset, along), (along, offset), (dims[0] - 1 - offset, along),
         (along, dims[1] - 1 - offset)][side]
    )  # fmt: skip


def _events(rng, frames, fr, rate, burst, coupling, state) -> np.ndarray:
    """Spike counts: bursts of 1 + Poisson(``burst`` - 1) spikes at ``rate`` Hz, modulated by
    the population ``state``."""
    lam = rate / fr * np.exp(coupling * state - coupling**2 / 2)
    starts = rng.poisson(np.clip(lam, 0, 2))
    extra = rng.poisson(max(burst - 1.0, 0.0), frames) * (starts > 0)
    spikes = starts + extra
    spread = rng.random(frames) < 0.5  # half the bursts spill into the next frame
    moved = np.where(spread, extra // 2, 0)
    spikes = spikes - moved
    spikes[1:] += moved[:-1]
    return spikes.astype(np.int16)


def _vessel(rng, dims, um_per_px, settings, frames, fr):
    """Distance map to a vessel's centreline, its resting half-width (px), its width over time
    (relative change) and its depth of absorption."""
    edge = int(rng.integers(2))
    start = (
        np.array([-2.0, rng.uniform(0.1, 0.9) * dims[1]])
        if edge == 0
        else np.array([rng.uniform(0.1, 0.9) * dims[0], -2.0])
    )
    angle = (0.0 if edge == 0 else math.pi / 2) + rng.normal(0, 0.35)
    line = path_image(rng, dims, start, angle, 2.5 * max(dims), 0.03, 0.5, False)
    centreline = line > 0.25 * max(float(line.max()), 1e-12)
    distance = scipy.ndimage.distance_transform_edt(~centreline)
    half_width = 0.5 * _draw(rng, settings.vessel_width_um) / um_per_px
    pulse = _draw(rng, settings.vessel_pulse)
    heart = _draw(rng, settings.heart_rate_hz) * (1 + 0.03 * lowpass_noise(rng, frames, fr, 10.0))
    phase = 2 * math.pi * np.cumsum(heart) / fr
    vasomotion = lowpass_noise(rng, frames, fr, _draw(rng, (3.0, 10.0)))
    change = pulse * (0.5 * np.sin(phase) + 0.5 * vasomotion)
    flicker = 0.05 * lowpass_noise(rng, frames, fr, 0.1)
    depth = _draw(rng, settings.vessel_depth)
    return distance, half_width, change, flicker, depth


def _vessel_profile(distance, half_width, edge=0.8):
    return 1.0 / (1.0 + np.exp(np.clip((distance - half_width) / edge, -30, 30)))


def _rigid_shifts(rng, frames, fr, settings) -> np.ndarray:
    """Drift, jitter and movement bouts (sudden displacements lasting 0.5-3 s), clipped."""
    drift = np.stack([lowpass_noise(rng, frames, fr, 20.0) for _ in range(2)], axis=1) * 0.3
    jitter = rng.normal(0.0, 0.08, (frames, 2))
    bouts = np.zeros((frames, 2))
    n_bouts = rng.poisson(_draw(rng, settings.bout_rate_hz) * frames / fr)
    for _ in range(n_bouts):
        start = int(rng.integers(frames))
        length = int(_draw(rng, (0.5, 3.0)) * fr) + 1
        ramp = np.minimum(1.0, np.arange(length) / max(0.15 * fr, 1.0))
        ramp = np.minimum(ramp, ramp[::-1])
        stop = min(frames, start + length)
        bouts[start:stop] += np.outer(ramp[: stop - start], rng.normal(0, 0.6, 2))
    shifts = (drift + jitter + bouts) * settings.max_shift_px
    return np.clip(shifts, -settings.max_shift_px, settings.max_shift_px)


def _check(settings) -> None:
    if not isinstance(settings, OnePhotonSettings):
        raise TypeError(f"settings must be a OnePhotonSettings, got {type(settings).__name__}")
    if settings.indicator not in INDICATORS:
        raise ValueError(
            f"settings.indicator={settings.indicator!r} is unknown; use one of {sorted(INDICATORS)}"
        )
    if not (math.isfinite(settings.fr) and settings.fr > 0):
        raise ValueError(f"settings.fr={settings.fr!r} must be a positive frame rate in Hz")
    if int(settings.frames) < 2 or min(settings.dims) < 16:
        raise ValueError(
            f"settings.frames={settings.frames} and dims={settings.dims}: need at least 2 "
            "frames and 16 x 16 px"
        )
    if settings.um_per_px <= 0:
        raise ValueError(f"settings.um_per_px={settings.um_per_px!r} must be positive")


# --------------------------------------------------------------------------- the simulation


def simulate_onephoton(settings: OnePhotonSettings, seed: int) -> OnePhotonMovie:
    """Simulate one one-photon movie and its ground truth.

    Parameters
    ----------
    settings : OnePhotonSettings
        Ranges to draw from (e.g. ``TRAIN_PRESETS["train1p_gcamp6f_10hz"]``).
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed gives the same movie.

    Returns
    -------
    OnePhotonMovie

    Raises
    ------
    TypeError
        ``settings`` is not a ``OnePhotonSettings``.
    ValueError
        Unknown indicator, non-positive frame rate or pixel size, too few frames or pixels.

    Examples
    --------
    >>> small = dataclasses.replace(TRAIN_PRESETS["train1p_gcamp6f_10hz"], dims=(48, 48),
    ...     frames=40, n_somata=(3, 3), n_deep=(4, 4))
    >>> sim = simulate_onephoton(small, seed=0)
    >>> sim.movie.shape, sim.A.shape[0], sim.gSig
    ((40, 48, 48), 2304, (3, 3))
    """
    _check(settings)
    rng = np.random.default_rng(seed)
    dims = tuple(int(d) for d in settings.dims)
    frames, fr = int(settings.frames), float(settings.fr)
    t = np.arange(frames) / fr
    rows, cols = np.mgrid[: dims[0], : dims[1]].astype(float)
    um = float(settings.um_per_px)
    r_low, r_high = settings.soma_radius_px()
    rise, decay, dff_range = INDICATORS[settings.indicator]

    images, kinds, brightness = [], [], []

    def psf() -> float:
        return _draw(rng, settings.psf_sigma_um) / um

    # in-focus somata (overlapping footprints), out-of-focus and border-cut cells
    n_somata = _draw_count(rng, settings.n_somata)
    n_oof = _draw_count(rng, settings.n_out_of_focus)
    centres = place_centres(
        rng, dims, n_somata + n_oof, settings.min_distance * r_high, 0.5 * r_high, taken=[]
    )
    for i, c in enumerate(centres):
        radius = _draw(rng, (r_low, r_high))
        if i < n_somata:
            images.append(_blurred_cell(rng, rows, cols, c, radius, psf()))
            kinds.append("soma")
            brightness.append(_draw(rng, settings.soma_brightness))
        else:
            blur = _draw(rng, settings.out_of_focus_blur)
            images.append(_blurred_cell(rng, rows, cols, c, radius, blur * psf()))
            kinds.append("out_of_focus")
            brightness.append(_draw(rng, settings.soma_brightness) / blur**2)
    for _ in range(_draw_count(rng, settings.n_border_cut)):
        radius = _draw(rng, (r_low, r_high))
        sigma = psf()
        c = _edge_centre(rng, dims, radius + sigma)
        image = _blurred_cell(rng, rows, cols, c, radius, sigma)
        if image.max() <= 0:
            continue
        images.append(image)
        kinds.append("border_cut")
        brightness.append(_draw(rng, settings.soma_brightness))

    # deep cells: far from the focal plane, a spiking part of the background
    for _ in range(_draw_count(rng, settings.n_deep)):
        c = np.array([rng.uniform(-5, dims[0] + 5), rng.uniform(-5, dims[1] + 5)])
        sigma = _draw(rng, settings.deep_sigma_um) / um
        image = _blurred_cell(rng, rows, cols, c, r_high, sigma)
        if image.max() <= 0:
            continue
        images.append(image)
        kinds.append("deep_cell")
        brightness.append(_draw(rng, settings.deep_brightness))
    n_cells = len(images)

    # activity: population state -> bursts -> calcium
    state = lowpass_noise(rng, frames, fr, 5.0)
    kernel = calcium_kernel(fr, rise, decay)
    spikes = np.zeros((n_cells, frames), np.int16)
    for k in range(n_cells):
        rate = math.exp(_draw(rng, np.log(settings.event_rate_hz)))
        burst = _draw(rng, settings.burst_spikes)
        coupling = _draw(rng, settings.population_coupling)
        spikes[k] = _events(rng, frames, fr, rate, burst, coupling, state)
    calcium = np.stack([np.convolve(s.astype(float), kernel)[:frames] for s in spikes])
    dff = np.array([_draw(rng, dff_range) for _ in range(n_cells)])
    base = np.asarray(brightness)
    bleach = np.exp(-t / max(t[-1], 1e-9) * -math.log(1 - _draw(rng, settings.bleaching)))
    fluorescence = base[:, None] * (1.0 + dff[:, None] * calcium) * bleach
    activity = [c for c in calcium]

    # background: textured baseline (constant activity) and slowly fluctuating broad fields
    level = _draw(rng, settings.background_level)
    texture = _draw(rng, settings.background_texture)
    baseline = 1.0 + texture * (2 * smooth_field(rng, dims, _draw(rng, (6.0, 15.0))) - 1)
    images.append(_normalised(baseline))
    kinds.append("background")
    fluorescence = np.vstack([fluorescence, level * baseline.max() * bleach])
    activity.append(np.zeros(frames))
    for _ in range(_draw_count(rng, settings.n_background)):
        field = smooth_field(rng, dims, _draw(rng, (12.0, 35.0)))
        fluctuation = lowpass_noise(rng, frames, fr, _draw(rng, (2.0, 30.0)))
        amplitude = level * _draw(rng, settings.background_fluctuation)
        images.append(_normalised(field))
        kinds.append("background")
        fluorescence = np.vstack(
            [fluorescence, amplitude * np.clip(1.5 + fluctuation, 0, None) * bleach]
        )
        activity.append(fluctuation)

    # vessels: absorbing tubes whose width pulses; their footprint is their edges
    transmission = np.ones((frames, *dims), np.float32)
    for _ in range(_draw_count(rng, settings.n_vessels)):
        distance, half_width, change, flicker, depth = _vessel(rng, dims, um, settings, frames, fr)
        for i in range(frames):
            profile = _vessel_profile(distance, half_width * (1 + change[i]))
            transmission[i] *= 1.0 - (depth * (1 + flicker[i])) * profile
        edges = _vessel_profile(distance, half_width * 1.05) - _vessel_profile(
            distance, half_width * 0.95
        )
        images.append(_normalised(edges))
        kinds.append("vessel")
        fluorescence = np.vstack([fluorescence, np.zeros(frames)])
        activity.append(-change)

    # motion: rigid shifts plus a smooth deformation and a small scaling
    shifts = _rigid_shifts(rng, frames, fr, settings)
    warp_fields = [
        2 * smooth_field(rng, dims, max(dims) / 4) - 1 for _ in range(4)
    ]  # (row, col) pairs
    warp_time = np.stack([lowpass_noise(rng, frames, fr, 4.0) for _ in range(2)], axis=1)
    scale_time = 0.004 * lowpass_noise(rng, frames, fr, 8.0)
    scale = 0.0 if settings.nonrigid_px <= 0 else 1.0
    centre = np.array([(dims[0] - 1) / 2, (dims[1] - 1) / 2])

    # the clean movie in the tissue frame, then motion, then the optics' vignetting
    n_objects = len(images)
    stack = np.stack(images)
    stack[stack < 0.02] = 0.0
    fluorescence = np.asarray(fluorescence, dtype=np.float64)
    clean = np.tensordot(fluorescence.T.astype(np.float32), stack.astype(np.float32), axes=1)
    clean *= transmission
    mean_image = clean.mean(axis=0)
    moved = np.empty_like(clean)
    displacement = np.zeros(frames)
    nonrigid = settings.nonrigid_px
    for i in range(frames):
        d_rows = shifts[i, 0] + nonrigid * (
            warp_fields[0] * warp_time[i, 0] + warp_fields[1] * warp_time[i, 1]
        )
        d_cols = shifts[i, 1] + nonrigid * (
            warp_fields[2] * warp_time[i, 0] + warp_fields[3] * warp_time[i, 1]
        )
        d_rows = d_rows + scale * scale_time[i] * (rows - centre[0])
        d_cols = d_cols + scale * scale_time[i] * (cols - centre[1])
        displacement[i] = float(np.mean(np.hypot(d_rows, d_cols)))
        moved[i] = scipy.ndimage.map_coordinates(
            clean[i], [rows - d_rows, cols - d_cols], order=1, mode="nearest"
        )
    strength = _draw(rng, settings.vignette)
    r2 = ((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (0.5 * max(dims)) ** 2
    vignette = (1.0 - strength * np.clip(r2, 0, 2) / 2).astype(np.float32)
    moved *= vignette

    # the motion object: where the tissue has edges, and how far it moved
    gradient = np.hypot(*np.gradient(scipy.ndimage.gaussian_filter(mean_image, 1.0)))
    motion_image = _normalised(gradient)
    motion_image[motion_image < 0.02] = 0.0
    stack = np.concatenate([stack, motion_image[None]])
    kinds.append("motion")
    fluorescence = np.vstack([fluorescence, np.zeros(frames)])
    activity.append(displacement - np.median(displacement))
    n_objects += 1

    # photons and read noise
    gain = _draw(rng, settings.photons_per_unit)
    read = _draw(rng, settings.read_noise)
    movie = rng.poisson(np.clip(moved, 0, None) * gain).astype(np.float32)
    movie += rng.normal(0.0, read, movie.shape).astype(np.float32)

    kinds_t = tuple(kinds)
    S = np.zeros((n_objects, frames), np.int16)
    S[:n_cells] = spikes
    A = scipy.sparse.csc_matrix(stack.reshape(n_objects, -1, order="F").T.astype(np.float32))
    logger.info(
        "simulated %s seed %d: %d objects (%d somata), %d frames at %g Hz, %.0f photons/unit",
        settings.name, seed, n_objects, kinds.count("soma"), frames, fr, gain,
    )  # fmt: skip
    return OnePhotonMovie(
        movie=movie,
        A=A,
        gt_kind=kinds_t,
        gt_class=np.array([KIND_CLASS[k] for k in kinds_t], np.int8),
        C=np.stack(activity).astype(np.float32),
        S=S,
        F=fluorescence.astype(np.float32),
        parent=np.full(n_objects, -1, int),
        transmission=transmission.astype(np.float16),
        vignette=vignette,
        shifts=shifts.astype(np.float32),
        displacement=displacement.astype(np.float32),
        gain=float(gain),
        fr=fr,
        decay_time=decay,
        gSig=(settings.user_gsig(), settings.user_gsig()),
        settings=settings,
        seed=int(seed),
    )
