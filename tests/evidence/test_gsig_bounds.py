"""An absurd gSig is a one-line error before anything large is allocated.

``params/init/gSig = [1e9, 1e9]`` once made ``calcomp classify`` ask for tens of GB and die
with ``MemoryError``. ``check_gsig`` (the one check every path uses) now bounds it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import scipy.sparse
import test_reliability
from conftest import disk_footprints
from test_reliability import one_error_line, read_summary, sha256, shared_copy

from calcomp_caiman import classify_footprints, evaluate_components_4class, extract_patches
from calcomp_caiman.apps.cli import main
from calcomp_caiman.checks import MAX_GSIG

model_dir = test_reliability.model_dir  # the tiny model saved once per module

RANGE = r"gSig .*must be in \(0, 250\] px"


def with_gsig(folder: Path, value, name: str = "big_gsig.hdf5") -> Path:
    """A real CaImAn file whose ``params/init/gSig`` is ``value``."""
    path = shared_copy("synthetic_cnmf.hdf5", folder, name)
    with h5py.File(path, "r+") as handle:
        del handle["params/init/gSig"]
        handle["params/init/gSig"] = np.asarray(value, dtype=float)
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``calcomp`` in a child process, so that a regression cannot exhaust this one's memory."""
    return subprocess.run([sys.executable, "-m", "calcomp_caiman", *args],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_huge_gsig_in_file_is_one_line_error_and_file_untouched(tmp_path, model_dir):
    path = with_gsig(tmp_path, [1e9, 1e9])
    before = sha256(path)
    done = run_cli("classify", str(path), "--in-place", "--model", model_dir)
    assert done.returncode == 1, done.stderr
    one_error_line(done.stderr, path, r"params/init/gSig: " + RANGE + r".*got 1e\+09, 1e\+09")
    assert done.stdout == ""
    assert sha256(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left


def test_huge_gsig_option_is_one_line_error(tmp_path, model_dir, capsys):
    path = shared_copy("synthetic_cnmf.hdf5", tmp_path)
    before = sha256(path)
    out = tmp_path / "out.hdf5"
    code = main(["classify", str(path), "--out", str(out), "--gsig", "1e9", "--model", model_dir])
    assert code == 1
    one_error_line(capsys.readouterr().err, path, r"--gsig: " + RANGE)
    assert sha256(path) == before and not out.exists()


def test_reprocess_reports_the_file_and_goes_on(tmp_path, model_dir, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    bad = with_gsig(folder, [1e9, 1e9])
    good = shared_copy("synthetic_seeded_cnmf.hdf5", folder)
    before = sha256(bad)
    out = tmp_path / "out"
    assert main(["reprocess", str(folder), "--out-dir", str(out), "--model", model_dir, "-q"]) == 1
    rows = read_summary(out / "calcomp_summary.csv")
    assert rows[good.name]["status"] == "classified"
    assert rows[bad.name]["status"] == "failed"
    assert rows[bad.name]["error"].startswith(f"{bad}: params/init/gSig: gSig")
    assert sha256(bad) == before and not (out / bad.name).exists()


@pytest.mark.parametrize("gsig", [1e9, [1e9, 1e9], (3.0, 1e9), MAX_GSIG + 1])
def test_huge_gsig_refused_by_the_api(gsig, tiny_model):
    A = scipy.sparse.csc_matrix(disk_footprints())
    start = time.perf_counter()
    estimates = SimpleNamespace(A=A, dims=(64, 80))
    with pytest.raises(ValueError, match=RANGE):
        evaluate_components_4class(estimates, {"init": {"gSig": gsig}}, model=tiny_model)
    assert not hasattr(estimates, "class_probs")  # left unchanged
    with pytest.raises(ValueError, match=RANGE):
        classify_footprints(A, (64, 80), model=tiny_model, gSig=gsig)
    with pytest.raises(ValueError, match=RANGE):
        extract_patches(A, (64, 80), gSig=gsig)
    assert time.perf_counter() - start < 10  # refused up front, nothing huge attempted


@pytest.mark.parametrize("gsig", [0, -2, [4, 0], float("nan"), float("inf")])
def test_non_positive_gsig_message_gives_the_range(gsig, tiny_model):
    A = scipy.sparse.csc_matrix(disk_footprints())
    with pytest.raises(ValueError, match=RANGE):
        classify_footprints(A, (64, 80), model=tiny_model, gSig=gsig)


def test_largest_allowed_gsig_still_works(tiny_model):
    A = scipy.sparse.csc_matrix(disk_footprints())
    probs = classify_footprints(A, (64, 80), model=tiny_model, gSig=MAX_GSIG)
    assert probs.shape == (1, 4) and np.isfinite(probs).all()
