"""An absurd gSig is a one-line error before anything large is allocated."""

import hashlib
import shutil
import subprocess
import sys
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import scipy.sparse
from conftest import CAIMAN_RESULTS, disk_footprints, require

from calcomp_caiman import classify_footprints, evaluate_components_4class, extract_patches


@pytest.fixture(scope="module")
def model_dir(tiny_model, tmp_path_factory):
    return str(tiny_model.save(tmp_path_factory.mktemp("model") / "tiny"))


def test_huge_gsig_in_file_is_one_line_error_and_file_untouched(tmp_path, model_dir):
    path = tmp_path / "big_gsig.hdf5"
    shutil.copyfile(require(CAIMAN_RESULTS / "synthetic_cnmf.hdf5"), path)
    with h5py.File(path, "r+") as handle:
        del handle["params/init/gSig"]
        handle["params/init/gSig"] = np.array([1e9, 1e9])
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "calcomp_caiman",
            "classify",
            str(path),
            "--in-place",
            "--model",
            model_dir,
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    message = done.stderr.strip()
    assert "\n" not in message and str(path) in message and "gSig" in message
    assert "MemoryError" not in message and "Traceback" not in done.stderr
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


@pytest.mark.parametrize("gsig", [1e9, [1e9, 1e9], 251.0])
def test_huge_gsig_refused_by_the_api(gsig, tiny_model):
    A = scipy.sparse.csc_matrix(disk_footprints())
    with pytest.raises(ValueError, match=r"gSig .* must be in \(0, 250\] px"):
        evaluate_components_4class(
            SimpleNamespace(A=A, dims=(64, 80)), {"init": {"gSig": gsig}}, model=tiny_model
        )
    with pytest.raises(ValueError, match="gSig"):
        classify_footprints(A, (64, 80), model=tiny_model, gSig=gsig)
    with pytest.raises(ValueError, match="gSig"):
        extract_patches(A, (64, 80), gSig=gsig)


def test_largest_allowed_gsig_still_works(tiny_model):
    A = scipy.sparse.csc_matrix(disk_footprints())
    assert classify_footprints(A, (64, 80), model=tiny_model, gSig=250).shape == (1, 4)
