"""The model by modality (issue 23): ``"default"`` is the bundled one-photon model for a
one-photon result when one is bundled, else the two-photon default with one warning; an
explicit model always wins (warned on a mismatch); the modality used is recorded beside the
model and printed. The one-photon model here is a random-weight v3 saved as a fake bundled
folder (plumbing only)."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from conftest import CAIMAN_RESULTS, disk_footprints, require

import calcomp_caiman.apps.one_file as one_file_module
import calcomp_caiman.classify as classify_module
import calcomp_caiman.model.folder as folder_module
from calcomp_caiman import evaluate_components_4class
from calcomp_caiman.apps.batch import ReprocessOptions
from calcomp_caiman.apps.cli import main
from calcomp_caiman.apps.one_file import load_models
from calcomp_caiman.classify import classify
from calcomp_caiman.evidence.evidence import Evidence
from calcomp_caiman.io.caiman_h5 import read_estimates, read_evidence
from calcomp_caiman.model.defaults import BUNDLED_DEFAULT, BUNDLED_ONE_PHOTON, resolve
from calcomp_caiman.model.folder import CalcompModel

CNMFE = {"init": {"method_init": "corr_pnr", "center_psf": True, "nb": 0, "gSig": (5, 5)}}
MISMATCH = "trained on two-photon data"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """No lab default: a fresh XDG_CONFIG_HOME and no CALCOMP_MODEL."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("CALCOMP_MODEL", raising=False)
    return tmp_path


def bundle(monkeypatch, extra: dict[str, Path]) -> dict[str, Path]:
    """The bundled models as the package has them, with ``extra`` added (or, for a name
    mapped to None, removed) wherever the runtime looks them up."""
    known = {
        name: folder
        for name, folder in {**folder_module.bundled_models(), **extra}.items()
        if folder is not None
    }
    for module in (folder_module, classify_module, one_file_module):
        monkeypatch.setattr(module, "bundled_models", lambda: dict(known))
    return known


@pytest.fixture(scope="module")
def one_photon_folder(random_v3, tmp_path_factory) -> Path:
    config = dict(random_v3.config, name=BUNDLED_ONE_PHOTON, modality="1p")
    model = CalcompModel(random_v3.weights, config, random_v3.thresholds)
    return model.save(tmp_path_factory.mktemp("models") / BUNDLED_ONE_PHOTON)


@pytest.fixture
def with_one_photon(home, monkeypatch, one_photon_folder):
    """A one-photon model bundled (a fake folder)."""
    return bundle(monkeypatch, {BUNDLED_ONE_PHOTON: one_photon_folder})


@pytest.fixture
def without_one_photon(home, monkeypatch):
    """No one-photon model bundled, whatever this version ships."""
    return bundle(monkeypatch, {BUNDLED_ONE_PHOTON: None})


def cnmfe_copy(tmp_path: Path, name: str = "cnmfe.hdf5") -> Path:
    """The shared synthetic CNMF result, its params made CNMF-E's (``center_psf``)."""
    target = tmp_path / name
    shutil.copyfile(require(CAIMAN_RESULTS / "synthetic_cnmf.hdf5"), target)
    with h5py.File(target, "r+") as handle:
        handle["params/init/center_psf"][()] = True
    return target


def mismatch_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if MISMATCH in r.getMessage()]


def test_default_by_modality(with_one_photon, monkeypatch, tmp_path, random_v3):
    known = with_one_photon
    assert resolve("default", known, modality="1p") == BUNDLED_ONE_PHOTON
    assert resolve("default", known, modality="2p") == resolve("default", known) == BUNDLED_DEFAULT
    assert resolve("calcomp_resnet_v1", known, modality="1p") == "calcomp_resnet_v1"
    one = CalcompModel.load(modality="1p")
    assert (one.name, one.modality) == (BUNDLED_ONE_PHOTON, "1p")
    assert CalcompModel.load().modality == "2p"
    # a lab's two-photon default: its files; one-photon files still get the bundled 1p model
    lab_2p = random_v3.save(tmp_path / "lab_2p")
    monkeypatch.setenv("CALCOMP_MODEL", str(lab_2p))
    assert resolve("default", known) == str(lab_2p)
    assert resolve("default", known, modality="1p") == BUNDLED_ONE_PHOTON
    # a lab's one-photon default (refitted from the 1p model) is its default for 1p too
    lab_1p = CalcompModel(random_v3.weights, dict(random_v3.config, modality="1p")).save(
        tmp_path / "lab_1p"
    )
    monkeypatch.setenv("CALCOMP_MODEL", str(lab_1p))
    assert resolve("default", known, modality="1p") == str(lab_1p)


def test_without_a_one_photon_model_default_is_the_two_photon_one(without_one_photon):
    assert resolve("default", without_one_photon, modality="1p") == BUNDLED_DEFAULT
    model, one_photon = load_models("default", "auto")
    assert (model.name, one_photon) == (BUNDLED_DEFAULT, None)


def test_load_models_by_request(with_one_photon, one_photon_folder):
    model, one_photon = load_models("default", "auto")
    assert (model.name, one_photon.name) == (BUNDLED_DEFAULT, BUNDLED_ONE_PHOTON)
    assert load_models("default", "1p")[0].name == BUNDLED_ONE_PHOTON
    assert load_models("default", "2p")[1] is None
    model, one_photon = load_models("calcomp_resnet_v1", "auto")  # explicit: for every file
    assert (model.name, one_photon) == ("calcomp_resnet_v1", None)
    with pytest.raises(ValueError, match="modality must be one of"):
        load_models("default", "3p")


def test_a_model_config_with_another_modality_is_refused(random_v3):
    with pytest.raises(Exception, match="modality must be one of"):
        CalcompModel(random_v3.weights, dict(random_v3.config, modality="two-photon"))


def test_two_photon_model_on_one_photon_evidence_warns_once_and_records(without_one_photon, caplog):
    evidence = Evidence.build(disk_footprints(centres=((30, 40), (20, 20))), (64, 80),
                              modality="1p", source="cnmfe.hdf5")  # fmt: skip
    model = CalcompModel.load("calcomp_resnet_v1")
    with caplog.at_level(logging.WARNING, logger="calcomp_caiman"):
        record = classify(evidence, model)
    (message,) = mismatch_warnings(caplog)
    assert message.startswith("cnmfe.hdf5: one-photon components classified by calcomp_resnet_v1")
    assert "bundles no one-photon model" in message and "calcomp curate" in message
    assert record.provenance["modality"] == "1p" and record.provenance["model"] == model.name
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="calcomp_caiman"):
        forced = classify(evidence, model, modality="2p")
    assert mismatch_warnings(caplog) == [] and forced.provenance["modality"] == "2p"
    np.testing.assert_array_equal(forced.fields["class_probs"], record.fields["class_probs"])
    assert classify(Evidence.build(evidence.A, evidence.dims), model).provenance["modality"] == "2p"


def test_hook_picks_the_one_photon_model_and_explicit_model_wins(with_one_photon, caplog):
    A = disk_footprints(centres=((30, 40), (20, 20), (45, 60)))
    evidence = Evidence.from_estimates(SimpleNamespace(A=A, dims=(64, 80)), CNMFE)
    one_photon = CalcompModel.load(BUNDLED_ONE_PHOTON)
    expected = classify(evidence, one_photon).fields["class_probs"]
    with caplog.at_level(logging.WARNING, logger="calcomp_caiman"):
        est = evaluate_components_4class(SimpleNamespace(A=A, dims=(64, 80)), CNMFE)
    np.testing.assert_array_equal(est.class_probs, expected)
    assert mismatch_warnings(caplog) == []
    two_photon = CalcompModel.load()
    with caplog.at_level(logging.WARNING, logger="calcomp_caiman"):
        est = evaluate_components_4class(SimpleNamespace(A=A, dims=(64, 80)), CNMFE,
                                         model=two_photon)  # fmt: skip
    (message,) = mismatch_warnings(caplog)
    assert f"--model {BUNDLED_ONE_PHOTON}" in message
    np.testing.assert_array_equal(
        est.class_probs, classify(evidence, two_photon).fields["class_probs"]
    )


def test_cli_classify_modality_flag_and_summary_line(with_one_photon, tmp_path, capsys):
    source = cnmfe_copy(tmp_path)
    out = tmp_path / "auto.hdf5"
    assert main(["classify", str(source), "--out", str(out)]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.endswith(f"; 1p data, model {BUNDLED_ONE_PHOTON}"), line
    stored = read_estimates(out).classification
    assert (stored["modality"], stored["model"]) == ("1p", BUNDLED_ONE_PHOTON)
    # forced two-photon: the two-photon default, no warning
    out2 = tmp_path / "forced.hdf5"
    assert main(["classify", str(source), "--out", str(out2), "--modality", "2p"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].endswith(f"; 2p data, model {BUNDLED_DEFAULT}")
    assert MISMATCH not in captured.err
    assert read_estimates(out2).classification["modality"] == "2p"
    # an explicit two-photon model on a one-photon file: classified, one warning
    out3 = tmp_path / "explicit.hdf5"
    assert main(["classify", str(source), "--out", str(out3), "--model", BUNDLED_DEFAULT]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].endswith(f"; 1p data, model {BUNDLED_DEFAULT}")
    assert captured.err.count(MISMATCH) == 1
    with pytest.raises(SystemExit):
        main(["classify", str(source), "--out", str(tmp_path / "x.hdf5"), "--modality", "3p"])


def test_cli_classify_one_photon_without_a_one_photon_model(without_one_photon, tmp_path, capsys):
    source = cnmfe_copy(tmp_path)
    out = tmp_path / "out.hdf5"
    assert main(["classify", str(source), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].endswith(f"; 1p data, model {BUNDLED_DEFAULT}")
    assert captured.err.count(MISMATCH) == 1 and "bundles no one-photon model" in captured.err
    assert read_evidence(out).modality == "1p"
    assert read_estimates(out).classification["modality"] == "1p"


def test_cli_reprocess_mixed_folder_each_file_by_its_modality(with_one_photon, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    cnmfe_copy(folder, "a_cnmfe.hdf5")
    shutil.copyfile(require(CAIMAN_RESULTS / "synthetic_cnmf.hdf5"), folder / "b_cnmf.hdf5")
    assert main(["reprocess", str(folder), "--out-dir", str(tmp_path / "out"), "-q"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "calcomp_summary.csv")))
    assert [(Path(r["file"]).name, r["modality"]) for r in rows] == [
        ("a_cnmfe.hdf5", "1p"), ("b_cnmf.hdf5", "2p")
    ]  # fmt: skip
    models = {r["modality"]: read_estimates(r["output"]).classification["model"] for r in rows}
    assert models == {"1p": BUNDLED_ONE_PHOTON, "2p": BUNDLED_DEFAULT}
    # resume: each output is classified by one of the run's models
    assert main(["reprocess", str(folder), "--out-dir", str(tmp_path / "out"), "-q"]) == 0
    assert "0 classified, 2 skipped" in capsys.readouterr().out
    with pytest.raises(ValueError, match="modality must be one of"):
        ReprocessOptions(CalcompModel.load(), modality="both")
