"""Real CaImAn 1.12.1 on a tiny simulated movie, then ground-truth labels (marked ``caiman``).

Runs ``calcomp_caiman.research.caiman_runs`` (batch CNMF and OnACID, ordinary settings) on a
64 x 64 px, 300-frame movie from ``research.movies`` and labels every component with
``research.gt_labels``. Skipped where CaImAn is absent.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytestmark = pytest.mark.caiman


@pytest.fixture(scope="module")
def tiny(caiman, tmp_path_factory):
    from calcomp_caiman.research import caiman_runs
    from calcomp_caiman.research.movies import TRAIN_PRESETS, simulate_movie

    settings = dataclasses.replace(
        TRAIN_PRESETS["train_gcamp6f_standard"],
        name="tiny",
        dims=(64, 64),
        frames=300,
        n_somata=(8, 8),
        n_dendrites=(2, 2),
        n_axons=(2, 2),
        n_out_of_focus=(1, 1),
        n_border_cut=(2, 2),
        n_dim=(1, 1),
        photons_per_unit=(30.0, 30.0),
    )
    sim = simulate_movie(settings, seed=11)
    folder = tmp_path_factory.mktemp("sim")
    tif = caiman_runs.write_movie(sim.movie, folder / "movie.tif")
    return sim, tif, folder


def test_cnmf_on_a_simulated_movie_then_labels(tiny):
    from caiman.source_extraction.cnmf.cnmf import load_CNMF

    from calcomp_caiman.research import caiman_runs
    from calcomp_caiman.research.gt_labels import label_components

    sim, tif, folder = tiny
    out = folder / "cnmf.hdf5"
    cnm, timings = caiman_runs.run_cnmf(
        tif, out, fr=sim.fr, decay_time=sim.decay_time, gSig=sim.gSig, K=4, rf=16, stride=8
    )
    assert out.exists() and timings["total"] > 0
    assert not list(folder.glob("*.mmap")) and not list(folder.glob(".cnmf.*"))
    loaded = load_CNMF(str(out))
    est = loaded.estimates
    n = est.A.shape[1]
    assert n >= 3 and est.C.shape == (n, sim.movie.shape[0])
    assert est.Cn.shape == sim.dims and np.isfinite(est.Cn).all()
    assert len(est.idx_components) + len(est.idx_components_bad) == n  # nothing selected away
    labels = label_components(est.A, est.C, est.dims, sim)
    assert labels["labels"].shape == (n,)
    assert set(labels["labels"].tolist()) <= {1, 2, 3, 4}
    assert (labels["labels"] == 1).sum() >= 3  # bright, well separated somata are found
    good = labels["labels"] == 1
    assert np.all(labels["spatial"][good] >= 0.6) and np.all(labels["temporal"][good] >= 0.5)


def test_onacid_on_a_simulated_movie_then_labels(tiny):
    from caiman.source_extraction.cnmf.online_cnmf import load_OnlineCNMF

    from calcomp_caiman.research import caiman_runs
    from calcomp_caiman.research.gt_labels import label_components

    sim, tif, folder = tiny
    out = folder / "onacid.hdf5"
    onacid, _ = caiman_runs.run_onacid(
        tif, out, fr=sim.fr, decay_time=sim.decay_time, gSig=sim.gSig, init_batch=100
    )
    est = load_OnlineCNMF(str(out)).estimates
    n = est.A.shape[1]
    assert n >= 1 and est.Cn.shape == sim.dims
    labels = label_components(est.A, est.C[:, : sim.movie.shape[0]], est.dims, sim)
    assert labels["labels"].shape == (n,)
    assert (labels["labels"] == 1).sum() >= 1
