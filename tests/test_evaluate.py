"""Tests of calcomp_caiman.research.evaluate: evaluate_model, write_report, loading data, run_evaluation."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REAL_ROIS, require
from test_baselines import disks_and_lines_data, small_cnn_baseline

from calcomp_caiman import CalcompModel, InvalidFileError
from calcomp_caiman.research.baselines import ShapeBaseline
from calcomp_caiman.research.evaluate import (
    evaluate_model,
    held_out_videos,
    load_evaluation_data,
    run_evaluation,
    write_report,
)


def test_evaluate_model_and_write_report(tiny_model, tmp_path):
    patches, labels, features = disks_and_lines_data()
    cnn_baseline = small_cnn_baseline()
    real_labels = np.where(labels == 2, 0, 1)
    real_labels[::7] = 4
    datasets = {
        "video/a": (patches[:100], real_labels[:100], features[:100]),
        "video/b": (patches[100:], real_labels[100:], None),
        "simulated/test": (patches, labels, features),
    }
    shape = ShapeBaseline().fit(features, labels)
    report = evaluate_model(
        tiny_model, datasets, baselines={"shape_baseline": shape, "caiman_cnn": cnn_baseline}
    )
    assert report["methods"] == ["model", "shape_baseline", "caiman_cnn"]
    assert report["model"]["name"] == "tiny"
    assert report["datasets"]["video/a"]["kind"] == "real"
    assert set(report["datasets"]["video/b"]["metrics"]) == {"model", "caiman_cnn"}
    real = report["pooled"]["real"]
    assert real["datasets"] == ["video/a", "video/b"]
    assert real["metrics"]["model"]["counts"]["total"] == len(labels)
    assert real["metrics"]["shape_baseline"]["datasets"] == ["video/a"]
    assert report["pooled"]["simulated"]["metrics"]["shape_baseline"]["set_accuracy"] > 0.9

    json_path, png_path = write_report(report, tmp_path / "out" / "report")
    assert json.loads(json_path.read_text())["pooled"]["real"]["datasets"] == ["video/a", "video/b"]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png_path.stat().st_size > 10_000
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.json", "report.png"]
    with pytest.raises(ValueError, match="JSON"):
        write_report({"bad": float("nan")}, tmp_path / "bad")


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


def test_run_evaluation_small(tiny_model, tmp_path, monkeypatch):
    patches, labels, features = disks_and_lines_data()
    monkeypatch.setattr(
        "calcomp_caiman.research.evaluate._simulated_data",
        lambda fields, per_class, seed, settings: (patches, labels, features),
    )
    report, json_path, png_path = run_evaluation(
        tiny_model,
        yst_files(22),
        out_prefix=tmp_path / "eval",
        training_paths=yst_files(11, 12, 21, 22),
        validation_videos={"caiman_paper_yst/YST_part21"},
        test_videos={"caiman_paper_yst/YST_part11"},
        training_simulated_fields=0,
        cnn_epochs=1,
    )
    assert json_path.is_file() and png_path.is_file()
    assert set(report["datasets"]) == {"caiman_paper_yst/YST_part22", "simulated/train"}
    # neither the evaluated video nor a test video is trained on
    assert report["training"]["real_videos"] == [
        "caiman_paper_yst/YST_part12",
        "caiman_paper_yst/YST_part21",
    ]
    assert set(report["pooled"]["real"]["metrics"]) == {"model", "shape_baseline", "caiman_cnn"}
    with pytest.raises(ValueError, match="training_paths"):
        run_evaluation(tiny_model, yst_files(22), out_prefix=tmp_path / "x", simulated=False)


V1_VALIDATION = {"caiman_paper_yst/YST_part21", "neurofinder_train/02.01"}
V1_TEST = {
    "caiman_paper_yst/YST_part22",
    "neurofinder_test/01.01",
    "neurofinder_test/02.01",
    "neurofinder_test/04.01",
}


def test_held_out_videos_come_from_the_model_folder(tiny_model, tmp_path):
    for name in ("calcomp_resnet_v1", "calcomp_v2", "default"):
        assert held_out_videos(CalcompModel.load(name)) == (V1_VALIDATION, V1_TEST)
    recorded = {"real_validation_videos": ["a/1"], "real_test_videos": ["a/2", "b/1"]}
    model = dataclasses.replace(tiny_model, config={**tiny_model.config, "training_data": recorded})
    validation, test = held_out_videos(CalcompModel.load(model.save(tmp_path / "m")))
    assert (validation, test) == ({"a/1"}, {"a/2", "b/1"}) and isinstance(test, frozenset)
    for training_data in (None, "free text", {"real_test_videos": ["a/2"]},
                          {"real_validation_videos": "a/1", "real_test_videos": []}):  # fmt: skip
        config = {**tiny_model.config, "training_data": training_data}
        with pytest.raises(ValueError, match="'tiny' records no held-out videos.*config.json"):
            held_out_videos(dataclasses.replace(tiny_model, config=config))
