"""A lab's model becomes its default (issue 21): CALCOMP_MODEL, then the config file under
XDG_CONFIG_HOME, then the bundled model; an explicit model always wins; every edge that
takes ``model=None`` / ``"default"`` follows it, and every output records the labels."""

from __future__ import annotations

import json
import os
import sys
from importlib import resources
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from calcomp_caiman import CalcompModel, classify_footprints, evaluate_components_4class
from calcomp_caiman.classify import classify
from calcomp_caiman.errors import CalcompError
from calcomp_caiman.io.caiman_h5 import read_evidence
from calcomp_caiman.model.defaults import (
    BUNDLED_DEFAULT,
    config_path,
    default_model,
    reset_default_model,
    set_default_model,
)
from calcomp_caiman.refit import refit

DEMO = Path(str(resources.files("calcomp_caiman.data") / "demo_caiman_sim.hdf5"))


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh XDG_CONFIG_HOME and no CALCOMP_MODEL."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("CALCOMP_MODEL", raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def lab_model(tmp_path_factory):
    """A model refitted (calibrated) on labels of a labels CSV, saved: (folder, csv)."""
    folder = tmp_path_factory.mktemp("lab")
    evidence = read_evidence(DEMO)
    base = CalcompModel.load(BUNDLED_DEFAULT)
    components = np.arange(12)
    labels = np.full(12, 3)  # this lab calls every one of them noise
    csv = folder / "labels.csv"
    csv.write_text("file,component,label\n" + "".join(f"demo.hdf5,{k},noise\n" for k in components))
    new, report = refit(base, [evidence], [labels], [components], labels_file=csv, name="our_lab")
    assert report["applied"] and report["level"] == "calibration"
    return new.save(folder / "our_lab"), csv


def test_without_a_setting_the_default_is_the_bundled_model(home):
    assert default_model().model == BUNDLED_DEFAULT
    assert config_path() == home / "xdg" / "calcomp" / "config.json"
    assert CalcompModel.load().sha256 == CalcompModel.load(BUNDLED_DEFAULT).sha256


def test_environment_beats_config_beats_bundled(home, lab_model, monkeypatch):
    folder, _ = lab_model
    written = set_default_model(folder)
    assert written == home / "xdg" / "calcomp" / "config.json"
    assert json.loads(written.read_text()) == {"model": str(folder.resolve())}
    chosen = default_model()
    assert (chosen.model, chosen.source) == (str(folder.resolve()), "config")
    assert str(written) in chosen.reason
    assert CalcompModel.load().name == "our_lab" == CalcompModel.load("default").name
    assert CalcompModel.load(BUNDLED_DEFAULT).name == BUNDLED_DEFAULT  # explicit wins
    monkeypatch.setenv("CALCOMP_MODEL", "calcomp_resnet_v1")
    assert default_model().reason == "environment variable CALCOMP_MODEL"
    assert CalcompModel.load().name == "calcomp_resnet_v1"
    monkeypatch.delenv("CALCOMP_MODEL")
    assert reset_default_model() == written and not written.exists()
    assert reset_default_model() is None
    assert CalcompModel.load().name == BUNDLED_DEFAULT


def test_config_keeps_other_keys_and_relative_folders(home, lab_model):
    folder, _ = lab_model
    path = config_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"other": 1, "model": os.path.relpath(folder, path.parent)}))
    assert default_model().model == str(path.parent / os.path.relpath(folder, path.parent))
    assert CalcompModel.load().name == "our_lab"
    reset_default_model()
    assert json.loads(path.read_text()) == {"other": 1}
    set_default_model(folder)
    assert json.loads(path.read_text()) == {"other": 1, "model": str(folder.resolve())}


def test_a_wrong_default_says_where_it_was_set(home, tmp_path, monkeypatch):
    monkeypatch.setenv("CALCOMP_MODEL", str(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError, match="environment variable CALCOMP_MODEL.*unset"):
        CalcompModel.load()
    monkeypatch.delenv("CALCOMP_MODEL")
    config_path().parent.mkdir(parents=True)
    config_path().write_text('{"model": "/no/such/model"}')
    with pytest.raises(FileNotFoundError, match=r"config file .*calcomp lab reset"):
        CalcompModel.load("default")
    config_path().write_text("{model = 1}")
    with pytest.raises(CalcompError, match=r"config\.json: not valid JSON"):
        CalcompModel.load()
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        set_default_model(tmp_path)


def test_xdg_config_home_must_be_absolute(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")  # the XDG spec: ignored
    assert config_path() == Path.home() / ".config" / "calcomp" / "config.json"


def test_every_edge_uses_the_lab_default(home, lab_model):
    folder, csv = lab_model
    lab = CalcompModel.load(folder)
    bundled = CalcompModel.load(BUNDLED_DEFAULT)
    evidence = read_evidence(DEMO)
    A, dims = evidence.A, evidence.dims
    before = classify_footprints(A, dims)
    set_default_model(folder)
    after = classify_footprints(A, dims)  # model=None
    np.testing.assert_allclose(after, classify_footprints(A, dims, model=lab), atol=1e-6)
    assert not np.allclose(after, before, atol=1e-3)
    np.testing.assert_allclose(before, classify_footprints(A, dims, model=bundled), atol=1e-6)
    estimates = evaluate_components_4class(SimpleNamespace(A=A, dims=dims))  # the hook
    np.testing.assert_allclose(estimates.class_probs, after, atol=1e-6)


def test_outputs_record_the_model_and_its_labels(home, lab_model):
    folder, csv = lab_model
    lab = CalcompModel.load(folder)
    recorded = lab.config["labels_file"]
    assert recorded["path"] == str(csv.resolve()) and recorded["count"] == 12
    assert len(recorded["sha256"]) == 64
    record = classify(read_evidence(DEMO), lab)
    assert record.provenance["model"] == "our_lab"
    assert record.provenance["model_sha256"] == lab.sha256
    assert json.loads(record.provenance["labels_file"]) == recorded
    assert record.provenance["refit_level"] == "calibration"
    assert "labels_file" not in classify(read_evidence(DEMO), CalcompModel.load()).provenance


def test_cli_classify_uses_the_default_and_records_it(home, lab_model, tmp_path):
    import h5py

    from calcomp_caiman.apps.cli import main

    folder, _ = lab_model
    set_default_model(folder)
    out = tmp_path / "out.hdf5"
    assert main(["classify", str(DEMO), "--out", str(out)]) == 0
    with h5py.File(out, "r") as handle:
        attrs = dict(handle["estimates/class_probs"].attrs)
    assert attrs["calcomp_model"] == "our_lab"
    assert json.loads(attrs["calcomp_labels_file"])["count"] == 12
    assert main(["classify", str(DEMO), "--out", str(out), "--overwrite", "--model",
                 BUNDLED_DEFAULT]) == 0  # fmt: skip
    with h5py.File(out, "r") as handle:
        assert handle["estimates/class_probs"].attrs["calcomp_model"] == BUNDLED_DEFAULT


@pytest.mark.caiman
def test_onacid_screen_uses_the_lab_default(home, lab_model):
    """use_calcomp_screening(model=None) on a real CaImAn OnACID object."""
    os.environ.setdefault("CAIMAN_DATA", str(Path(sys.prefix) / "caiman_data"))
    caiman = pytest.importorskip("caiman")
    if not hasattr(caiman, "source_extraction"):
        pytest.skip("the 'caiman' installed is not CaImAn")
    from caiman.source_extraction.cnmf import online_cnmf, params

    from calcomp_caiman.integrations.onacid import use_calcomp_screening

    folder, _ = lab_model
    set_default_model(folder)
    opts = params.CNMFParams(params_dict={"init": {"gSig": (3, 3)}})
    screen = use_calcomp_screening(online_cnmf.OnACID(params=opts))
    assert screen.model.name == "our_lab"
