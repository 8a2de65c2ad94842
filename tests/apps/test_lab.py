"""`calcomp lab show / set / reset`: which model is the default and why (issue 21)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from calcomp_caiman.apps.cli import main
from calcomp_caiman.io.caiman_h5 import read_evidence
from calcomp_caiman.model.defaults import BUNDLED_DEFAULT
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.refit import refit

DEMO = Path(str(resources.files("calcomp_caiman.data") / "demo_caiman_sim.hdf5"))


@pytest.fixture
def xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("CALCOMP_MODEL", raising=False)
    return tmp_path / "xdg" / "calcomp" / "config.json"


@pytest.fixture(scope="module")
def lab_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lab")
    csv = folder / "labels.csv"
    csv.write_text("file,component,label\n" + "".join(f"d.hdf5,{k},noise\n" for k in range(10)))
    new, report = refit(CalcompModel.load(), [read_evidence(DEMO)], [np.full(10, 3)],
                        [np.arange(10)], labels_file=csv, name="lab_x")  # fmt: skip
    assert report["applied"]
    return new.save(folder / "model")


def test_show_set_reset(xdg, lab_folder, capsys):
    assert main(["lab", "show"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"default model: {BUNDLED_DEFAULT} ({BUNDLED_DEFAULT}, weights SHA256 ")
    assert f"why: no CALCOMP_MODEL and no model in {xdg}" in out

    assert main(["lab", "set", str(lab_folder)]) == 0
    out = capsys.readouterr().out
    assert out == f"the default model is now {lab_folder.resolve()} (lab_x); written to {xdg}\n"
    assert json.loads(xdg.read_text()) == {"model": str(lab_folder.resolve())}

    assert main(["lab", "show"]) == 0
    out = capsys.readouterr().out
    assert f"default model: {lab_folder.resolve()} (lab_x, " in out
    assert f"why: config file {xdg}" in out
    assert f"made by: refit (calibration) of {BUNDLED_DEFAULT} (" in out
    assert "on 10 labels from " in out

    assert main(["lab", "reset"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        f"removed the default model from {xdg}\ndefault model: {BUNDLED_DEFAULT} "
    )
    assert main(["lab", "reset"]) == 0
    assert capsys.readouterr().out.startswith("no default model was set in the config file\n")


def test_set_refuses_what_is_not_a_model(xdg, tmp_path, capsys):
    assert main(["lab", "set", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "not a model folder" in err and len(err.strip().splitlines()) == 1
    assert not xdg.exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["lab", "set"])
    assert exit_info.value.code == 2
    assert "needs the model FOLDER" in capsys.readouterr().err


def test_environment_variable_overrides_in_a_new_process(xdg, lab_folder, tmp_path):
    assert main(["lab", "set", str(lab_folder)]) == 0
    env = dict(os.environ, CALCOMP_MODEL="calcomp_resnet_v1")
    code = "from calcomp_caiman.apps.cli import main; raise SystemExit(main(['lab', 'show']))"
    shown = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("default model: calcomp_resnet_v1 (calcomp_resnet_v1, ")
    assert f"CALCOMP_MODEL overrides the config file {xdg}" in shown.stdout


def test_a_refitted_model_v3_as_the_default(xdg, tmp_path, random_v3, capsys):
    from calcomp_caiman.classify import classify_evidence

    evidence = read_evidence(DEMO)
    probs = classify_evidence(evidence, random_v3)
    rare = int(probs.mean(axis=0).argmin())  # labels of the class the model misses
    components = np.argsort(probs[:, rare])[:10]
    new, report = refit(random_v3, [evidence], [np.full(10, rare + 1)], [components], name="lab_v3")
    assert report["applied"] and report["level"] == "calibration"
    folder = new.save(tmp_path / "lab_v3")
    assert main(["lab", "set", str(folder)]) == 0
    assert main(["lab", "show"]) == 0
    out = capsys.readouterr().out
    assert f"default model: {folder.resolve()} (lab_v3, " in out
    assert "made by: refit (calibration) of random_v3 (" in out and "on 10 labels" in out
    default = CalcompModel.load()
    assert default.version == 3 and default.sha256 == CalcompModel.load(folder).sha256
