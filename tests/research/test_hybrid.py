"""Hybrid movies (research.hybrid) and their labels (research.gt_labels), on a synthetic stand-in
for a real recording: no network, no CaImAn."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal

from calcomp_caiman.research.gt_labels import UNLABELLED, label_components
from calcomp_caiman.research.hybrid import (
    HYBRID_KIND_CLASS,
    JUNK_KINDS,
    RecordingAnalysis,
    analyse_recording,
    extend_frames,
    make_hybrid,
    recording_activity,
)

NEURON, PROCESS, NOISE, DOUBTFUL = 1, 2, 3, 4
DIMS = (64, 72)
T = 240
CELL = (20, 24)  # centre of the stand-in recording's own cell
RADIUS = 4.0


def stand_in_recording(seed: int = 0) -> np.ndarray:
    """Poisson photons on an uneven background, one active cell of its own, uint16 counts."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: DIMS[0], : DIMS[1]]
    background = 20 + 10 * np.exp(-((rows - 40) ** 2 + (cols - 50) ** 2) / 800)
    cell = ((rows - CELL[0]) ** 2 + (cols - CELL[1]) ** 2 <= RADIUS**2).astype(float)
    spikes = rng.random(T) < 0.04
    calcium = np.convolve(spikes, np.exp(-np.arange(30) / 6.0))[:T]
    light = background[None] + 60 * (1 + 2 * calcium)[:, None, None] * cell[None]
    return (5 * rng.poisson(light) + 100).astype(np.uint16)


@pytest.fixture(scope="module")
def recording():
    return stand_in_recording()


@pytest.fixture(scope="module")
def still(recording):
    return analyse_recording(recording, soma_radius_px=RADIUS, motion=False)


@pytest.fixture(scope="module")
def hybrid(recording, still):
    return make_hybrid(recording, fr=30.0, soma_radius_px=RADIUS, seed=5, analysis=still)


def footprint_images(hybrid) -> np.ndarray:
    return hybrid.A.toarray().T.reshape(-1, *hybrid.dims, order="F")


def test_extend_frames_plays_forth_and_back():
    assert extend_frames(3, 9).tolist() == [0, 1, 2, 1, 0, 1, 2, 1, 0]
    assert extend_frames(100, 40).tolist() == list(range(40))
    with pytest.raises(ValueError):
        extend_frames(0, 5)


def test_activity_marks_the_recording_cell_and_little_else(recording, still):
    activity = recording_activity(recording, soma_radius_px=RADIUS)
    assert np.array_equal(activity, still.activity)
    assert activity[CELL]
    assert activity.mean() < 0.1
    assert not activity[50:, :20].any()  # plain background


def test_injection_preserves_the_recording_outside_the_sources(recording, hybrid):
    support = footprint_images(hybrid).sum(axis=0) > 0
    assert 0.05 < support.mean() < 0.95
    base = recording[hybrid.frame_index].astype(np.float32)
    assert np.array_equal(hybrid.movie[:, ~support], base[:, ~support])
    assert not np.array_equal(hybrid.movie[:, support], base[:, support])


def test_ground_truth_is_what_was_injected(recording, still):
    silent = still._replace(noise={**still.noise, "gain": 1e-12})  # no shot noise on the light
    hybrid = make_hybrid(recording, fr=30.0, soma_radius_px=RADIUS, seed=5, analysis=silent)
    added = hybrid.movie - recording[hybrid.frame_index].astype(np.float32)
    expected = np.tensordot(hybrid.F.T, footprint_images(hybrid), axes=1)
    assert np.allclose(added, expected, rtol=1e-4, atol=1e-3 * float(expected.max()))
    assert hybrid.A.shape[1] == len(hybrid.gt_kind) == hybrid.C.shape[0] == hybrid.F.shape[0]
    # the simulator's objects: brightness follows calcium (F = unit * base * (1 + dff * C))
    soma = hybrid.gt_kind.index("soma")
    assert np.corrcoef(hybrid.F[soma], hybrid.C[soma])[0, 1] > 0.999


def test_every_kind_is_injected_with_its_class(hybrid):
    kinds = set(hybrid.gt_kind)
    assert {"soma", "dendrite", "axon", *JUNK_KINDS} <= kinds
    assert [HYBRID_KIND_CLASS[k] for k in hybrid.gt_kind] == hybrid.gt_class.tolist()
    for k, kind in enumerate(hybrid.gt_kind):
        if kind in JUNK_KINDS:
            assert hybrid.gt_class[k] == NOISE and not hybrid.S[k].any()


def test_somata_keep_off_the_recording_cells(hybrid):
    images = footprint_images(hybrid)
    for k, kind in enumerate(hybrid.gt_kind):
        if kind in ("soma", "donut_soma", "dim", "border_cut", "out_of_focus"):
            overlap = (images[k] * hybrid.activity).sum() / images[k].sum()
            assert overlap <= 0.1


def test_scaled_to_the_recording_and_reproducible(recording, still, hybrid):
    contrast = np.percentile(recording.mean(axis=0), 99) - np.median(recording.mean(axis=0))
    assert 0.3 * contrast <= hybrid.unit <= 1.6 * contrast or hybrid.spike_snr == pytest.approx(0.4)
    again = make_hybrid(recording, fr=30.0, soma_radius_px=RADIUS, seed=5, analysis=still)
    other = make_hybrid(recording, fr=30.0, soma_radius_px=RADIUS, seed=6, analysis=still)
    assert np.array_equal(again.movie, hybrid.movie)
    assert not np.array_equal(other.movie, hybrid.movie)


def test_injected_objects_move_with_the_recording(recording, still):
    shifts = np.zeros((T, 2))
    shifts[T // 2 :, 0] = 2.0  # the tissue moves 2 px down half-way
    moving = still._replace(shifts=shifts)
    silent = moving._replace(noise={**still.noise, "gain": 1e-12})
    hybrid = make_hybrid(recording, fr=30.0, soma_radius_px=RADIUS, seed=5, analysis=silent)
    added = hybrid.movie - recording[hybrid.frame_index].astype(np.float32)
    light = np.tensordot(hybrid.F.T, footprint_images(hybrid), axes=1)
    late = T // 2 + 10
    assert np.allclose(added[late], scipy.ndimage.shift(light[late], (2, 0), order=1), atol=1e-2)
    assert np.allclose(added[10], light[10], rtol=1e-4, atol=1e-2)


def test_longer_hybrid_reflects_the_recording(recording, still):
    hybrid = make_hybrid(recording, fr=30.0, soma_radius_px=RADIUS, seed=2, frames=2 * T,
                         analysis=still)  # fmt: skip
    assert hybrid.movie.shape == (2 * T, *DIMS) and hybrid.C.shape[1] == 2 * T
    assert hybrid.frame_index.tolist() == extend_frames(T, 2 * T).tolist()


def test_analysis_of_another_recording_is_refused(recording, still):
    wrong = RecordingAnalysis(still.noise, 0.0, np.zeros((T + 1, 2)), still.activity)
    with pytest.raises(ValueError, match="another recording"):
        make_hybrid(recording, fr=30.0, soma_radius_px=RADIUS, seed=1, analysis=wrong)


def test_labels_of_a_tiny_hybrid(recording, hybrid):
    """Components as CaImAn would give them: on an injected soma, on the recording's own cell,
    on a neuropil cloud, and on plain background."""
    images = footprint_images(hybrid)
    rng = np.random.default_rng(0)
    soma = hybrid.gt_kind.index("soma")
    cloud = hybrid.gt_kind.index("neuropil_cloud")
    rows, cols = np.mgrid[: DIMS[0], : DIMS[1]]
    own = ((rows - CELL[0]) ** 2 + (cols - CELL[1]) ** 2 <= RADIUS**2).astype(float)
    own_trace = recording[:, CELL[0], CELL[1]].astype(float)
    blank = np.zeros(DIMS)
    free = ~(images.sum(axis=0) > 0) & ~hybrid.activity
    r, c = np.argwhere(scipy.ndimage.binary_erosion(free, iterations=3))[0]
    blank[r - 1 : r + 2, c - 1 : c + 2] = 1.0
    columns = [images[soma], own, images[cloud], blank]
    traces = [
        hybrid.C[soma] + 0.1 * rng.standard_normal(T),
        own_trace,
        hybrid.C[cloud] + 0.01 * rng.standard_normal(T),
        rng.standard_normal(T),
    ]
    A = np.stack([image.ravel(order="F") for image in columns], axis=1)
    out = label_components(A, np.stack(traces), DIMS, hybrid, recording_activity=hybrid.activity)
    assert out["labels"].tolist() == [NEURON, UNLABELLED, NOISE, NOISE]
    assert out["reason"][1].startswith("unlabelled") and out["recording_share"][1] > 0.9
    assert "neuropil_cloud" in out["reason"][2]
    assert out["matched"][0] == soma and out["matched"][2] == cloud
    # without the recording's activity, the component on its cell is plain noise (as in v2)
    plain = label_components(A, np.stack(traces), DIMS, hybrid)
    assert plain["labels"][1] == NOISE and plain["recording_share"][1] == 0


def test_a_real_cell_under_a_broad_injected_cloud_stays_unlabelled():
    """Junk does not claim the recording's pixels: a compact component on the recording's cell
    under a neuropil cloud is that cell (unlabelled); the cloud itself is noise."""
    rows, cols = np.mgrid[: DIMS[0], : DIMS[1]]
    cell = ((rows - CELL[0]) ** 2 + (cols - CELL[1]) ** 2 <= RADIUS**2).astype(float)
    cloud = np.exp(-((rows - CELL[0]) ** 2 + (cols - CELL[1]) ** 2) / (2 * 15.0**2))
    soma = ((rows - 50) ** 2 + (cols - 60) ** 2 <= RADIUS**2).astype(float)
    rng = np.random.default_rng(1)
    drift = scipy.ndimage.gaussian_filter1d(rng.standard_normal(T), 20)
    spikes = scipy.signal.lfilter([1], [1, -0.9], rng.random(T) < 0.03)
    gt = {
        "A": np.stack([soma.ravel(order="F"), cloud.ravel(order="F")], axis=1),
        "C": np.stack([spikes, drift]),
        "gt_kind": ("soma", "neuropil_cloud"),
        "gt_class": np.array([NEURON, NOISE]),
    }
    activity = scipy.ndimage.binary_dilation(cell > 0, iterations=2)
    A = np.stack([cell.ravel(order="F"), cloud.ravel(order="F")], axis=1)
    C = np.stack([drift + rng.standard_normal(T), drift])
    out = label_components(A, C, DIMS, gt, recording_activity=activity)
    assert out["labels"].tolist() == [UNLABELLED, NOISE]
    assert out["recording_share"][0] == pytest.approx(1.0)


def test_motion_is_applied_only_where_the_recording_moves():
    rng = np.random.default_rng(3)
    tissue = 100 + 400 * scipy.ndimage.gaussian_filter(rng.random(DIMS), 2.0)
    still_frames = rng.poisson(np.broadcast_to(tissue, (120, *DIMS))).astype(np.float32)
    assert not analyse_recording(still_frames, soma_radius_px=RADIUS).shifts.any()
    step = np.where(np.arange(120) < 60, 0.0, 3.0)
    moving_frames = np.stack(
        [rng.poisson(scipy.ndimage.shift(tissue, (s, 0), mode="nearest")) for s in step]
    ).astype(np.float32)
    shifts = analyse_recording(moving_frames, soma_radius_px=RADIUS).shifts
    assert np.median(shifts[70:, 0]) - np.median(shifts[:50, 0]) == pytest.approx(3.0, abs=0.3)
    assert np.abs(shifts[:, 1]).max() < 0.3
