"""Tests of calcomp_caiman.research.evaluate: the patch report (evaluate_model, run_evaluation)
and the evidence report of a model v2 or v3 (evaluate_results, run_evaluation with
simulated_caiman)."""

import json

import numpy as np
import pytest
from conftest import REAL_ROIS, require
from labelled_data import write_archive, write_results_folder
from test_baselines import disks_and_lines_data, small_cnn_baseline

from calcomp_caiman import CalcompModel
from calcomp_caiman.classify import classify_evidence
from calcomp_caiman.evidence import Evidence
from calcomp_caiman.research.baselines import ShapeBaseline
from calcomp_caiman.research.datasets import load_roi_archive
from calcomp_caiman.research.evaluate import evaluate_model, evaluate_results, run_evaluation
from calcomp_caiman.research.labelled_results import (
    evaluation_sets,
    load_simulated,
    result_inputs,
    split,
)
from calcomp_caiman.research.metrics import evaluation_metrics
from calcomp_caiman.research.train_head import fit_v2_head, head_shell, training_rows


def test_evaluate_model_per_dataset_and_pooled(tiny_model):
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
    with pytest.raises(ValueError, match="patches, labels, features"):
        evaluate_model(tiny_model, {"video": (patches, labels)})


def yst_files(*parts):
    folder = require(REAL_ROIS)
    return [p for part in parts for p in sorted(folder.glob(f"yst_part{part}_*.npz"))]


def test_run_evaluation_small(tiny_model, tmp_path, monkeypatch):
    patches, labels, features = disks_and_lines_data()
    monkeypatch.setattr(
        "calcomp_caiman.research.evaluate.simulated_evaluation_set",
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
    assert json_path.is_file() and png_path.suffix == ".png" and png_path.is_file()
    assert set(report["datasets"]) == {"caiman_paper_yst/YST_part22", "simulated/train"}
    # neither the evaluated video nor a test video is trained on
    assert report["training"]["real_videos"] == [
        "caiman_paper_yst/YST_part12",
        "caiman_paper_yst/YST_part21",
    ]
    assert set(report["pooled"]["real"]["metrics"]) == {"model", "shape_baseline", "caiman_cnn"}
    with pytest.raises(ValueError, match="training_paths"):
        run_evaluation(tiny_model, yst_files(22), out_prefix=tmp_path / "x", simulated=False)


def test_test_videos_only_needs_the_models_split(tiny_model, tmp_path):
    write_archive(tmp_path / "a.npz", dataset="lab", video="a")
    write_archive(tmp_path / "b.npz", dataset="lab", video="b", seed=1)
    kwargs = {"out_prefix": tmp_path / "r", "baselines": False, "simulated": False}
    with pytest.raises(ValueError, match="'tiny' records no held-out videos"):
        run_evaluation(tiny_model, tmp_path, test_videos_only=True, **kwargs)
    report, _, _ = run_evaluation(tiny_model, tmp_path, test_videos_only=True,
                                  test_videos={"lab/b"}, **kwargs)  # fmt: skip
    assert list(report["datasets"]) == ["lab/b"]
    report, _, _ = run_evaluation(tiny_model, tmp_path, **kwargs)  # no split: every video
    assert list(report["datasets"]) == ["lab/a", "lab/b"]


@pytest.fixture(scope="module")
def tiny_v2(tmp_path_factory):
    """A model v2 with a tiny head over v1's network, and the results folder it came from."""
    folder = write_results_folder(tmp_path_factory.mktemp("simdata"))
    train, _, _ = split(load_simulated(folder), set(), set())
    shell = head_shell(CalcompModel.load("calcomp_resnet_v1"))
    inputs = [result_inputs(shell, i) for i in train]
    rows, allowed, weights = training_rows(
        [x.logits for x in inputs], [x.features for x in inputs], train
    )
    head = fit_v2_head(rows, allowed, weights, hidden=8, max_iter=50)
    split_lists = {"real_validation_videos": [], "real_test_videos": ["lab/t"]}
    return shell.with_head(head, name="tiny_v2", training_data=split_lists), folder


def test_evidence_report_has_every_row(tiny_v2):
    model, folder = tiny_v2
    train, val, test = split(load_simulated(folder), set(), set())
    report = evaluate_results(
        model, CalcompModel.load("calcomp_resnet_v1"), train, val, test, cnn_baseline=False
    )
    methods = report["sets"]["simulated_heldout_cnmf"]["methods"]
    assert set(methods) >= {"v2", "v2-no-traces", "v2-shape-only", "v1", "shape-features",
                            "caiman-rule"}  # fmt: skip
    rule = methods["caiman-rule"]["selection"]
    assert rule["accepted"] == len(range(0, test[0].evidence.n, 2))


def test_run_evaluation_evidence_report(tiny_v2, tiny_model, tmp_path):
    model, folder = tiny_v2
    real = tmp_path / "real"
    real.mkdir()
    write_archive(real / "t.npz", dataset="lab", video="t")
    write_archive(real / "u.npz", dataset="lab", video="u", seed=1)
    v1 = CalcompModel.load("calcomp_resnet_v1")
    report, json_path, md_path = run_evaluation(
        model, [real], out_prefix=tmp_path / "out" / "v2", simulated_caiman=folder,
        shape_model=v1, baselines=False,
    )  # fmt: skip
    assert (json_path.name, md_path.name) == ("v2.json", "v2.md")
    assert json.loads(json_path.read_text())["sets"] == report["sets"]
    assert report["sets"]["real_test_masks"]["results"] == 1  # lab/t, the model's test video
    assert "| v2 |" in md_path.read_text()
    with pytest.raises(ValueError, match="fusion head"):
        run_evaluation(tiny_model, [real], out_prefix=tmp_path / "x", simulated_caiman=folder,
                       shape_model=v1, validation_videos=(), test_videos=())  # fmt: skip


# ------------------------------------------------------------------ model v3


def _without_dates(metrics: dict) -> dict:
    return json.loads(json.dumps(metrics, default=float))


def test_evidence_report_of_a_v3_model(random_v3, tmp_path):
    """Its rows are classify_evidence's answers: all evidence, each kind left out, shape only."""
    folder = write_results_folder(tmp_path / "sim")
    train, val, test = split(load_simulated(folder), set(), set())
    report = evaluate_results(
        random_v3, CalcompModel.load("calcomp_resnet_v1"), train, val, test, cnn_baseline=False
    )
    methods = report["sets"]["simulated_heldout_cnmf"]["methods"]
    assert set(methods) == {"v3", "v3-no-neighbours", "v3-no-image", "v3-no-traces",
                            "v3-no-metrics", "v3-shape-only", "v1", "shape-features",
                            "caiman-rule"}  # fmt: skip
    items = evaluation_sets(val, test)["simulated_heldout_cnmf"]
    labels = np.concatenate([i.labels for i in items])
    probs = np.concatenate([classify_evidence(i.evidence, random_v3) for i in items])
    expected = evaluation_metrics(probs, labels)
    row = {k: v for k, v in methods["v3"].items() if k != "selection"}
    assert _without_dates(row) == _without_dates(expected)
    no_traces = np.concatenate(
        [classify_evidence(i.evidence, random_v3, use=("neighbours", "image", "metrics"))
         for i in items]
    )  # fmt: skip
    assert methods["v3-no-traces"]["counts"] == evaluation_metrics(no_traces, labels)["counts"]
    assert not np.allclose(no_traces, probs)  # the traces matter to this model
    # the model's rows use its cut (min_prob, when set), the others their top class
    assert methods["v3"]["selection"]["accepted"] == int(np.sum(probs.argmax(axis=1) == 0))


def test_patch_report_of_a_v3_model(random_v3, tmp_path):
    """A model v3 reads channels, not patches: it is scored on what classify_evidence gives
    for the same footprints (real archives, per video or per file, and simulated fields)."""
    real = tmp_path / "real"
    real.mkdir()
    write_archive(real / "a1.npz", dataset="lab", video="a", method="m1")
    write_archive(real / "a2.npz", dataset="lab", video="a", method="m2", seed=2)
    write_archive(real / "b.npz", dataset="lab", video="b", seed=1)
    kwargs = {"baselines": False, "simulated_fields": 1, "simulated_per_class": 4}
    report, _, png = run_evaluation(random_v3, [real], out_prefix=tmp_path / "r", **kwargs)
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert set(report["datasets"]) == {"lab/a", "lab/b", "simulated/train"}
    sources = [load_roi_archive(real / name) for name in ("a1.npz", "a2.npz")]
    probs = np.concatenate([classify_evidence(Evidence.build(s.A, s.dims), random_v3)
                            for s in sources])  # fmt: skip
    labels = np.concatenate([s.labels for s in sources])
    expected = evaluation_metrics(probs, labels)
    assert _without_dates(report["datasets"]["lab/a"]["metrics"]["model"]) == _without_dates(
        expected
    )
    assert report["datasets"]["simulated/train"]["n"] == 16
    by_file, _, _ = run_evaluation(random_v3, [real], out_prefix=tmp_path / "f", group_by="file",
                                   simulated=False, baselines=False)  # fmt: skip
    assert set(by_file["datasets"]) == {"lab/a/m1", "lab/a/m2", "lab/b/m"}
    one = evaluation_metrics(probs[: len(sources[0].labels)], sources[0].labels)
    assert _without_dates(by_file["datasets"]["lab/a/m1"]["metrics"]["model"]) == _without_dates(
        one
    )


def test_evaluate_model_checks_given_probabilities(tiny_model):
    patches, labels, features = disks_and_lines_data()
    datasets = {"video": (patches[:10], labels[:10], None)}
    with pytest.raises(ValueError, match=r"model_probs\['video'\] must be"):
        evaluate_model(tiny_model, datasets, model_probs={"video": np.zeros((9, 4))})
    given = np.random.default_rng(0).dirichlet(np.ones(4), 10)
    report = evaluate_model(tiny_model, datasets, model_probs={"video": given})
    expected = evaluation_metrics(given.astype(np.float32), labels[:10])
    assert _without_dates(report["datasets"]["video"]["metrics"]["model"]) == _without_dates(
        expected
    )


def test_evaluate_command_with_a_v3_model(random_v3, tmp_path, capsys):
    """`calcomp evaluate` with a v3 folder: the patch report and the evidence report."""
    from calcomp_caiman.apps.cli import main

    split_lists = {"real_validation_videos": [], "real_test_videos": ["lab/t"]}
    config = {**random_v3.config, "training_data": split_lists}
    model = CalcompModel(random_v3.weights, config, random_v3.thresholds)
    folder = str(model.save(tmp_path / "v3"))
    real = tmp_path / "real"
    real.mkdir()
    write_archive(real / "t.npz", dataset="lab", video="t")
    prefix = tmp_path / "patch"
    assert main(["evaluate", str(real), "--model", folder, "--no-simulated",
                 "--out", str(prefix)]) == 0  # fmt: skip
    report = json.loads(prefix.with_suffix(".json").read_text())
    assert report["datasets"]["lab/t"]["metrics"]["model"]["counts"]["total"] == 12
    sim = write_results_folder(tmp_path / "sim")
    prefix = tmp_path / "evidence"
    assert main(["evaluate", str(real), "--model", folder, "--simulated-caiman", str(sim),
                 "--out", str(prefix)]) == 0  # fmt: skip
    assert "| v3 |" in prefix.with_suffix(".md").read_text()
    assert main(["evaluate", str(real), "--model", "calcomp_resnet_v1", "--simulated-caiman",
                 str(sim), "--out", str(prefix)]) == 1  # fmt: skip
    assert "calcomp_resnet_v1 has none" in capsys.readouterr().err
