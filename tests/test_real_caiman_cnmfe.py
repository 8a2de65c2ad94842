"""Real CaImAn 1.12.1 CNMF-E, end to end through example_pipelines/caiman_cnmfe_pipeline.py
(marked ``caiman``).

A small one-photon movie from ``research.onephoton`` (80 x 80 px, 300 frames) goes through the
example pipeline: motion correction, CNMF-E, CaImAn's metrics, our classification, CaImAn's
selection, ``align_classes``, ``cnm.save``. The saved file must load with ``load_CNMF`` and
hold our class fields aligned to ``A``, classified by the bundled one-photon model (its
accuracy is the model card's, not claimed here). Skipped where CaImAn is absent.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.caiman
ROOT = Path(__file__).resolve().parents[1]


def load_pipeline_module():
    spec = importlib.util.spec_from_file_location(
        "caiman_cnmfe_pipeline", ROOT / "example_pipelines" / "caiman_cnmfe_pipeline.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pipeline_run(caiman, tmp_path_factory):
    from calcomp_caiman.research.caiman_runs import write_movie
    from calcomp_caiman.research.onephoton import TRAIN_PRESETS, simulate_onephoton

    settings = dataclasses.replace(
        TRAIN_PRESETS["train1p_gcamp6f_10hz"],
        name="tiny1p",
        dims=(80, 80),
        frames=300,
        n_somata=(10, 10),
        n_out_of_focus=(2, 2),
        n_border_cut=(2, 2),
        n_deep=(15, 15),
        n_vessels=(1, 1),
        event_rate_hz=(0.3, 0.6),
        photons_per_unit=(100.0, 100.0),
    )
    sim = simulate_onephoton(settings, seed=4)
    folder = tmp_path_factory.mktemp("cnmfe")
    movie = write_movie(sim.movie, folder / "movie.tif")
    out = folder / "result.hdf5"
    cnm, _ = load_pipeline_module().run_pipeline(
        movie, out, gsig=sim.gSig[0], fr=sim.fr, decay_time=sim.decay_time,
        min_corr=0.8, min_pnr=8.0, rf=20, stride=10, processes=1,
        min_prob=0.6,  # stricter than the default, so that the selection sets some aside
    )  # fmt: skip
    return sim, cnm, out


def test_cnmfe_pipeline_saves_a_file_load_cnmf_reads_with_our_fields(pipeline_run):
    from caiman.source_extraction.cnmf.cnmf import load_CNMF

    from calcomp_caiman import CLASSES
    from calcomp_caiman.evidence.footprints import footprint_fingerprint

    sim, cnm, out = pipeline_run
    est = cnm.estimates
    n = est.A.shape[1]
    assert n >= 1  # CNMF-E found and kept components on the simulated movie
    assert cnm.params.init["method_init"] == "corr_pnr" and cnm.params.init["nb"] == 0
    assert cnm.params.init["center_psf"] and cnm.params.quality["use_cnn"] is False
    loaded = load_CNMF(str(out)).estimates
    assert loaded.A.shape == (sim.dims[0] * sim.dims[1], n)
    assert loaded.C.shape == (n, sim.movie.shape[0])
    assert loaded.Cn.shape == sim.dims and np.isfinite(loaded.Cn).all()
    for name in ("class_probs", "class_labels", "class_flags"):
        assert len(getattr(loaded, name)) == n
        np.testing.assert_array_equal(getattr(loaded, name), getattr(est, name))
    assert loaded.class_probs.shape == (n, len(CLASSES))
    np.testing.assert_allclose(loaded.class_probs.sum(axis=1), 1.0, atol=1e-4)
    assert set(np.unique(loaded.class_labels)) <= set(range(1, len(CLASSES) + 1))
    # each row is the row of its own column of A, as CaImAn saved and loaded it
    np.testing.assert_array_equal(loaded.class_fingerprint, footprint_fingerprint(loaded.A))
    assert len(loaded.SNR_comp) == len(loaded.r_values) == n


def test_selection_kept_only_accepted_components_and_realigns(pipeline_run):
    from caiman.source_extraction.cnmf.cnmf import load_CNMF

    from calcomp_caiman import align_classes
    from calcomp_caiman.evidence.footprints import footprint_fingerprint

    _, cnm, out = pipeline_run
    loaded = load_CNMF(str(out)).estimates
    kept = loaded.A.shape[1]
    rejected = loaded.discarded_components.A.shape[1]
    assert rejected >= 1  # the selection set some aside (CaImAn's metrics or our classes)
    # CaImAn puts the rejected components back; align_classes follows its order
    loaded.restore_discarded_components()
    align_classes(loaded)
    assert loaded.A.shape[1] == kept + rejected
    np.testing.assert_array_equal(loaded.class_fingerprint, footprint_fingerprint(loaded.A))
    assert len(loaded.class_labels) == loaded.A.shape[1]


def test_cnmfe_result_is_classified_as_one_photon(pipeline_run, tmp_path, caplog):
    from calcomp_caiman.apps.one_file import classify_file, load_models
    from calcomp_caiman.evidence.evidence import Evidence
    from calcomp_caiman.io.caiman_h5 import read_estimates, read_evidence

    _, cnm, out = pipeline_run
    # CaImAn's own CNMFParams object, and the file cnm.save wrote from it
    assert Evidence.from_estimates(cnm.estimates, cnm.params).modality == "1p"
    assert read_evidence(out).modality == "1p"
    model, one_photon_model = load_models("default", "auto")
    with caplog.at_level(logging.WARNING, logger="calcomp_caiman"):
        result, _ = classify_file(out, model=model, one_photon_model=one_photon_model,
                                  out_path=tmp_path / "classified.hdf5")  # fmt: skip
    assert result.modality == "1p"
    stored = read_estimates(tmp_path / "classified.hdf5").classification
    assert stored["modality"] == "1p" and stored["model"] == result.model
    assert one_photon_model.modality == "1p" and result.model == one_photon_model.name
    assert not [r for r in caplog.records if "trained on two-photon data" in r.getMessage()]
