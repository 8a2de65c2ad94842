"""Tests of calcomp_caiman.research.datasets: archives, video keys, patch and evaluation sets."""

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import REAL_ROIS, require
from labelled_data import write_archive

from calcomp_caiman import InvalidFileError
from calcomp_caiman.research.datasets import (
    TrainingSet,
    archive_paths,
    labels_from_csv,
    load_evaluation_data,
    load_roi_archive,
    load_training_set,
    video_key,
)


def test_archive_paths_and_video_keys(tmp_path):
    folder = tmp_path / "archives"
    folder.mkdir()
    write_archive(folder / "b.npz", dataset="lab", video="v2")
    write_archive(folder / "a.npz", dataset=None, video=None, method=None)
    single = tmp_path / "c.npz"
    write_archive(single, dataset="lab", video="v3")
    assert archive_paths(folder) == [folder / "a.npz", folder / "b.npz"]  # sorted
    assert archive_paths([single, folder])[0] == single
    # the key names the video within its dataset, or falls back to the file stem
    assert [video_key(p) for p in archive_paths(folder)] == ["a", "lab/v2"]
    source = load_roi_archive(folder / "b.npz")
    assert (source.dataset, source.video, source.key) == ("lab", "v2", "lab/v2")
    with pytest.raises(FileNotFoundError, match="no/such"):
        archive_paths([folder, tmp_path / "no" / "such"])
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an archive")
    with pytest.raises(InvalidFileError, match="bad.npz"):
        video_key(bad)


def test_load_training_set_groups_by_video_key(tmp_path):
    codes_a = write_archive(tmp_path / "a.npz", per_class=2, seed=1, dataset="lab", video="x")
    codes_b = write_archive(tmp_path / "b.npz", per_class=3, seed=2, dataset="lab", video="y")
    data = load_training_set(tmp_path)
    assert data.patches.shape == (len(codes_a) + len(codes_b), 50, 50)
    assert data.labels.tolist() == [*codes_a, *codes_b]
    assert sorted(set(data.groups)) == ["lab/x", "lab/y"]
    empty = load_training_set([])
    assert empty.patches.shape == (0, 50, 50) and empty.labels.size == 0


def test_labels_from_csv(tmp_path, caiman_copy):
    path = caiman_copy("synthetic_cnmf.hdf5")
    table = tmp_path / "labels.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "component", "label"])
        writer.writerows(
            [[path.name, 0, "neuron"], [path.name, 3, "2"], [path.name, 5, "non_neuron"]]
        )
    data = labels_from_csv(table)
    assert data.patches.shape == (3, 50, 50) and data.labels.tolist() == [1, 2, 0]
    with open(table, "a", newline="") as handle:
        csv.writer(handle).writerow([path.name, 1, "cell"])
    with pytest.raises(ValueError, match="line 5"):
        labels_from_csv(table)


def test_training_set_concatenate_and_select():
    a = TrainingSet(
        np.zeros((2, 50, 50), np.float32), np.array([1, 2]), np.array(["x", "x"], object)
    )
    b = TrainingSet(np.ones((1, 50, 50), np.float32), np.array([0]), np.array(["y"], object))
    both = TrainingSet.concatenate([a, b])
    assert both.labels.tolist() == [1, 2, 0] and both.select(
        both.groups == "y"
    ).labels.tolist() == [0]


def yst_files(*parts):
    folder = require(REAL_ROIS)
    return [p for part in parts for p in sorted(folder.glob(f"yst_part{part}_*.npz"))]


def test_load_evaluation_data_groups_files_of_a_video():
    files = yst_files(22)
    data = load_evaluation_data(files)
    assert list(data) == ["caiman_paper_yst/YST_part22"]
    patches, labels, features = data["caiman_paper_yst/YST_part22"]
    assert patches.shape == (55 + 75 + 79 + 43, 50, 50) and features.shape == (len(labels), 10)
    assert set(np.unique(labels)) <= {0, 1, 4}
    per_file = load_evaluation_data(files, group_by="file")
    assert "caiman_paper_yst/YST_part22/suite2p" in per_file and len(per_file) == 4
    assert load_evaluation_data(files, videos={"caiman_paper_yst/YST_part11"}) == {}
    with pytest.raises(FileNotFoundError):
        load_evaluation_data([Path("no/such.npz")])


def test_load_evaluation_data_names_a_bad_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an archive")
    with pytest.raises(InvalidFileError, match="bad.npz"):
        load_evaluation_data(tmp_path)
