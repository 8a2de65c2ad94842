"""Tests of calcomp_caiman.research.report: JSON and summary (PNG or Markdown) of a report."""

import json

import numpy as np
import pytest
from test_baselines import disks_and_lines_data

from calcomp_caiman.research.evaluate import evaluate_model
from calcomp_caiman.research.metrics import evaluation_metrics
from calcomp_caiman.research.report import summary_table, write_report


class Uniform:
    name = "uniform"

    def predict(self, patches):
        return np.full((len(patches), 4), 0.25, np.float32)


def test_patch_report_is_json_and_a_figure(tmp_path):
    patches, labels, features = disks_and_lines_data()
    datasets = {"video/a": (patches, np.where(labels == 2, 0, 1), features),
                "simulated/test": (patches, labels, features)}  # fmt: skip
    report = evaluate_model(Uniform(), datasets)
    json_path, png_path = write_report(report, tmp_path / "out" / "report")
    assert json.loads(json_path.read_text())["pooled"]["real"]["datasets"] == ["video/a"]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png_path.stat().st_size > 10_000
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.json", "report.png"]


def test_evidence_report_is_json_and_tables(tmp_path):
    labels = np.array([1, 1, 3, 3, 4])
    probs = np.eye(4)[[0, 0, 2, 0, 3]]
    row = dict(evaluation_metrics(probs, labels), selection={"noise_rejected": np.float64(0.5),
                                                             "accepted_f1": 0.8})  # fmt: skip
    report = {"model": "m", "min_prob": np.float32(0.25),
              "sets": {"test": {"components": 5, "results": 1, "methods": {"v2": row}}}}  # fmt: skip
    json_path, md_path = write_report(report, tmp_path / "v2")
    written = json.loads(json_path.read_text())
    assert written["min_prob"] == 0.25 and isinstance(written["min_prob"], float)
    assert md_path.read_text() == summary_table(report)
    assert "**test** (5 components, 1 results)" in md_path.read_text()
    assert "| v2 | " in md_path.read_text() and "| 0.500 | 0.800 |" in md_path.read_text()


def test_values_json_cannot_store_are_an_error(tmp_path):
    for bad in ({"bad": float("nan")}, {"bad": np.zeros(3)}):
        with pytest.raises(ValueError, match="JSON"):
            write_report(bad, tmp_path / "bad")
    assert not list(tmp_path.iterdir())  # nothing half-written
