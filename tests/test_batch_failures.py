"""A file that kills its worker process, or raises something unexpected, is reported
``failed`` in the summary; the other files go on."""

import csv
import os
import shutil

import pytest
from conftest import CAIMAN_RESULTS, require

from calcomp_caiman import batch
from calcomp_caiman.cli import main

FILES = ["synthetic_cnmf.hdf5", "synthetic_seeded_cnmf.hdf5", "real_mouse2p_cnmf.hdf5"]


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in FILES:
        shutil.copyfile(require(CAIMAN_RESULTS / name), folder / name)
    return folder


@pytest.fixture(scope="module")
def model_dir(tiny_model, tmp_path_factory):
    return str(tiny_model.save(tmp_path_factory.mktemp("model") / "tiny"))


def summary(path):
    return {row["file"].split("/")[-1]: row for row in csv.DictReader(open(path))}


def sabotage(monkeypatch, victim: str, how):
    """Make classifying ``victim`` fail with ``how`` (inherited by forked workers)."""
    real = batch.classify_file

    def classify_file(path, **kwargs):
        if os.path.basename(path) == victim:
            how()
        return real(path, **kwargs)

    monkeypatch.setattr(batch, "classify_file", classify_file)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_unexpected_exception_is_reported_and_batch_goes_on(
    folder, tmp_path, model_dir, monkeypatch, jobs
):
    def boom():
        raise KeyError("surprise")

    sabotage(monkeypatch, "synthetic_seeded_cnmf.hdf5", boom)
    out = tmp_path / "out"
    argv = [
        "reprocess",
        str(folder),
        "--out-dir",
        str(out),
        "--model",
        model_dir,
        "-q",
        "--jobs",
        jobs,
    ]
    assert main(argv) == 1
    rows = summary(out / "calcomp_summary.csv")
    assert rows["synthetic_seeded_cnmf.hdf5"]["status"] == "failed"
    assert rows["synthetic_seeded_cnmf.hdf5"]["error"] == "KeyError: 'surprise'"
    assert rows["synthetic_cnmf.hdf5"]["status"] == "classified"
    assert rows["real_mouse2p_cnmf.hdf5"]["status"] == "classified"


def test_worker_death_is_reported_and_others_finish(folder, tmp_path, model_dir, monkeypatch):
    sabotage(monkeypatch, "synthetic_cnmf.hdf5", lambda: os._exit(1))
    out = tmp_path / "out"
    argv = [
        "reprocess",
        str(folder),
        "--out-dir",
        str(out),
        "--model",
        model_dir,
        "-q",
        "--jobs",
        "2",
    ]
    assert main(argv) == 1
    rows = summary(out / "calcomp_summary.csv")
    assert set(rows) == set(FILES)
    assert rows["synthetic_cnmf.hdf5"]["status"] == "failed"
    assert "worker process died" in rows["synthetic_cnmf.hdf5"]["error"]
    for name in ("synthetic_seeded_cnmf.hdf5", "real_mouse2p_cnmf.hdf5"):
        assert rows[name]["status"] == "classified", rows[name]
        assert (out / name).exists()
    assert not (out / "synthetic_cnmf.hdf5").exists()


def test_keyboard_interrupt_still_stops(folder, tmp_path, model_dir, monkeypatch):
    def interrupt():
        raise KeyboardInterrupt

    sabotage(monkeypatch, "real_mouse2p_cnmf.hdf5", interrupt)
    argv = ["reprocess", str(folder), "--out-dir", str(tmp_path / "o"), "--model", model_dir, "-q"]
    assert main(argv) == 130
