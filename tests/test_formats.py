"""Format detection and the CaImAn path through the dispatch."""

from __future__ import annotations

import csv
import shutil

import h5py
import numpy as np
import pytest

from calcomp_caiman import InvalidFileError
from calcomp_caiman.apps.batch import find_result_files
from calcomp_caiman.apps.cli import main
from calcomp_caiman.io.caiman_h5 import read_estimates
from calcomp_caiman.io.registry import detect_format, find_inputs, get_format


def test_detect_by_name_content_and_override(tmp_path):
    plane = tmp_path / "suite2p" / "plane0"
    plane.mkdir(parents=True)
    np.save(plane / "stat.npy", np.array([], dtype=object), allow_pickle=True)
    np.save(plane / "ops.npy", {"Ly": 4, "Lx": 4}, allow_pickle=True)
    assert detect_format(plane) == "suite2p"
    with pytest.raises(InvalidFileError, match="give its plane folders"):
        detect_format(tmp_path / "suite2p")
    for name, kind in (
        ("a.h5", "caiman"),
        ("b.HDF5", "caiman"),
        ("c.nwb", "nwb"),
        ("d.TIFF", "masks"),
    ):
        assert detect_format(tmp_path / name) == kind
    odd = tmp_path / "session.result"
    with h5py.File(odd, "w") as handle:
        handle.attrs["nwb_version"] = "2.8.0"
    assert detect_format(odd) == "nwb"  # HDF5 with another ending: by its content
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InvalidFileError, match="unknown ending '.txt'.*--format"):
        detect_format(tmp_path / "notes.txt")
    assert get_format("masks", tmp_path / "notes.txt").name == "masks"  # the override wins
    with pytest.raises(ValueError, match="format must be"):
        get_format("tiff")


def test_find_inputs_per_format(tmp_path):
    (tmp_path / "p" / "plane0").mkdir(parents=True)
    for name in ("stat.npy", "ops.npy", "F.npy"):
        (tmp_path / "p" / "plane0" / name).write_bytes(b"")
    for name in ("a.hdf5", "b.nwb", "labels.tif", "calcomp_probs.npy", ".hidden.hdf5"):
        (tmp_path / name).write_bytes(b"")
    names = lambda found: sorted(p.name for p in found)  # noqa: E731
    assert names(find_inputs(tmp_path, "auto")) == ["a.hdf5", "b.nwb", "plane0"]
    assert names(find_inputs(tmp_path, "caiman")) == ["a.hdf5"]
    assert names(find_inputs(tmp_path, "masks")) == ["labels.tif"]  # not Suite2p's, not ours
    assert [r.name for _, r in find_result_files([tmp_path / "p" / "plane0"])] == ["plane0"]


def test_caiman_file_through_the_dispatch(tmp_path, caiman_copy, capsys):
    source = caiman_copy("synthetic_cnmf.hdf5")
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.move(source, folder / source.name)
    out = tmp_path / "out"
    assert main(["reprocess", str(folder), "--out-dir", str(out), "-q", "--format", "caiman"]) == 0
    with open(out / "calcomp_summary.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["format"] == "caiman" and row["status"] == "classified"
    assert read_estimates(out / source.name).class_probs.shape == (40, 4)
    capsys.readouterr()
