"""`calcomp curate` with a model v3 (issues 20/21): the automatic refit after five labels
runs on what the head reads, is applied and reported as for a model v2, and Apply saves a
folder that loads and classifies (random weights: plumbing, not accuracy)."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("flask")

from calcomp_caiman import CalcompModel  # noqa: E402
from calcomp_caiman.apps.curate import CurationSession  # noqa: E402
from calcomp_caiman.classify import classify_evidence  # noqa: E402
from calcomp_caiman.refit import labelled_inputs  # noqa: E402


def _wait(session: CurationSession, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while (status := session.refit_status())["state"] in ("scheduled", "starting", "running"):
        assert time.monotonic() < deadline, f"the refit never finished: {status}"
        time.sleep(0.05)
    return status


def test_a_model_v3_refits_itself_after_five_labels(random_v3, caiman_copy, tmp_path):
    real = caiman_copy("real_mouse2p_cnmf.hdf5")
    folder = random_v3.with_thresholds(accept=["neuron"], min_prob=0.5).save(tmp_path / "v3")
    session = CurationSession([real], labels=tmp_path / "labels.csv", model=folder,
                              model_out=tmp_path / "curated", debounce=0.1)  # fmt: skip
    try:
        state = session.state()
        assert state["can_refit"] and state["auto_refit"] == 5 and state["model"] == "random_v3"
        f = session.files[0]
        assert f.inputs.profiles is not None and f.inputs.presence.shape == (f.evidence.n, 3)
        before = f.probs.copy()
        np.testing.assert_allclose(f.inputs.probs(session.model), before, atol=1e-6)
        rare = int(before.mean(axis=0).argmin())  # labels of the class the model misses
        for k in np.argsort(before[:, rare])[:5]:
            session.set_label(0, int(k), ("neuron", "process", "noise", "doubtful")[rare])
        status = _wait(session)
        report = status["report"]
        assert status["state"] == "done" and report["labels"] == 5, status
        assert report["applied"] and report["summary"] == "calibration: class biases + temperature + cut"  # fmt: skip
        assert session.version == 1 and session.state()["refitted"]
        assert session.model.name == "random_v3-refit" and session.model.version == 3
        assert session.model.config["labels_file"]["count"] == 5
        after = f.probs
        assert not np.allclose(after, before, atol=1e-3)
        assert report["changed"]["components"] == f.evidence.n
        assert report["changed"]["class"] == int((after.argmax(1) != before.argmax(1)).sum())
        np.testing.assert_allclose(after, classify_evidence(f.evidence, session.model), atol=1e-6)
        applied = session.apply()
        saved = CalcompModel.load(applied["model_folder"])
        assert saved.version == 3 and saved.config["refit_level"] == "calibration"
        x = labelled_inputs(saved, f.evidence, np.arange(f.evidence.n))
        np.testing.assert_allclose(classify_evidence(f.evidence, saved), x.probs(saved), atol=1e-6)
    finally:
        session.close()
