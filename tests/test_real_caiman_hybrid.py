"""Real CaImAn 1.12.1 on a tiny hybrid movie (marked ``caiman``): rigid motion correction, CNMF,
then labels by the matching rule with the recording's own cells unlabelled.

The stand-in "recording" is synthetic (no network): Poisson photons on a textured background
with two active cells of its own, moving by 3 px for its last third. Skipped where CaImAn is absent.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage

pytestmark = pytest.mark.caiman

DIMS = (64, 64)
T = 300
CELLS = ((16, 16), (48, 20))
LATE = 2 * T // 3  # the tissue moves from this frame on


def recording() -> np.ndarray:
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[: DIMS[0], : DIMS[1]]
    tissue = 20 + 40 * scipy.ndimage.gaussian_filter(rng.random(DIMS), 2.0)
    frames = []
    traces = [np.convolve(rng.random(T) < 0.03, np.exp(-np.arange(40) / 8.0))[:T] for _ in CELLS]
    for t in range(T):
        image = tissue.copy()
        for (r, c), trace in zip(CELLS, traces):
            disc = (rows - r) ** 2 + (cols - c) ** 2 <= 16
            image = image + 40 * (1 + 2 * trace[t]) * disc
        shift = (0.0, 0.0) if t < LATE else (3.0, 0.0)
        frames.append(rng.poisson(scipy.ndimage.shift(image, shift, order=1, mode="nearest")))
    return np.stack(frames).astype(np.uint16)


@pytest.fixture(scope="module")
def built(caiman, tmp_path_factory):
    from calcomp_caiman.research import caiman_runs
    from calcomp_caiman.research.hybrid import analyse_recording, make_hybrid

    real = recording()
    analysis = analyse_recording(real, soma_radius_px=4.0)
    hybrid = make_hybrid(real, fr=30.0, soma_radius_px=4.0, seed=4, analysis=analysis)
    folder = tmp_path_factory.mktemp("hybrid")
    tif = caiman_runs.write_movie(hybrid.movie, folder / "hybrid.tif")
    corrected, mc_shifts, _ = caiman_runs.motion_correct(tif, folder / "hybrid_mc.tif")
    out = folder / "hybrid_cnmf.hdf5"
    cnm, _ = caiman_runs.run_cnmf(
        corrected, out, fr=30.0, decay_time=hybrid.decay_time, gSig=hybrid.gSig, K=6, rf=16,
        stride=8, work_dir=folder,
    )  # fmt: skip
    return hybrid, analysis, mc_shifts, cnm


def test_motion_is_estimated_and_corrected(built):
    hybrid, analysis, mc_shifts, _ = built
    late, early = slice(LATE + 10, None), slice(None, LATE - 10)
    step = np.median(analysis.shifts[late, 0]) - np.median(analysis.shifts[early, 0])
    assert step == pytest.approx(3.0, abs=0.4)
    assert mc_shifts.shape == (T, 2)
    caiman_step = np.median(mc_shifts[late, 0]) - np.median(mc_shifts[early, 0])
    assert caiman_step == pytest.approx(-3.0, abs=0.5)  # CaImAn reports the correcting shift


def test_components_are_labelled_with_the_recording_cells_unlabelled(built):
    from calcomp_caiman.research.gt_labels import UNLABELLED, label_components

    hybrid, _, _, cnm = built
    est = cnm.estimates
    out = label_components(est.A, est.C, DIMS, hybrid, recording_activity=hybrid.activity)
    labels = out["labels"]
    assert len(labels) == est.A.shape[1] > 0
    assert (labels == 1).any(), out["reason"]  # an injected soma is found and called a neuron
    footprints = est.A.toarray().T.reshape(-1, *DIMS, order="F")
    for r, c in CELLS:  # the component on each of the recording's own cells: no label
        on_cell = [i for i, image in enumerate(footprints) if image[r, c] > 0.5 * image.max()]
        assert on_cell and all(labels[i] == UNLABELLED for i in on_cell), out["reason"]
