import csv
import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import REAL_ROIS, require

from calcomp_caiman.apps.cli import main
from calcomp_caiman.evidence.patches import crop_checked, footprints_for
from calcomp_caiman.io.caiman_h5 import read_estimates, read_evidence
from calcomp_caiman.model.folder import CalcompModel

CALCOMP = shutil.which("calcomp", path=str(Path(sys.executable).parent)) or "calcomp"


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def model_dir(tiny_model, tmp_path_factory):
    return str(tiny_model.save(tmp_path_factory.mktemp("model") / "tiny"))


def test_help_is_fast_and_imports_no_framework():
    code = (
        "import sys\n"
        "from calcomp_caiman.apps.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules\n"
        "assert 'matplotlib' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_installed_entry_point_runs():
    out = subprocess.run([CALCOMP, "--version"], capture_output=True, text=True, check=True)
    assert "calcomp_caiman" in out.stdout


def test_classify_to_new_file_with_csv(caiman_copy, tmp_path, model_dir, capsys):
    source = caiman_copy("synthetic_cnmf.hdf5")
    before = sha(source)
    out, table = tmp_path / "out.hdf5", tmp_path / "table.csv"
    assert main(["classify", str(source), "--out", str(out), "--csv", str(table),
                 "--model", model_dir]) == 0  # fmt: skip
    assert sha(source) == before
    with h5py.File(out, "r") as handle:
        assert handle["estimates/class_probs"].shape == (40, 4)
    rows = list(csv.DictReader(open(table)))
    assert len(rows) == 40 and set(rows[0]) >= {"component", "label", "p_neuron", "accepted"}
    assert "40 components" in capsys.readouterr().out
    # existing output: refused unless --overwrite
    assert main(["classify", str(source), "--out", str(out), "--model", model_dir]) == 1
    assert (
        main(["classify", str(source), "--out", str(out), "--overwrite", "--model", model_dir]) == 0
    )


def test_classify_in_place_and_usage_errors(caiman_copy, model_dir, tmp_path, capsys):
    source = caiman_copy("real_mouse2p_cnmf.hdf5")
    assert main(["classify", str(source), "--model", model_dir]) == 1
    assert "--in-place" in capsys.readouterr().err
    assert main(["classify", str(source), "--in-place", "--model", model_dir]) == 0
    with h5py.File(source, "r") as handle:
        assert handle["estimates/class_labels"].shape == (59,)
    text = tmp_path / "notes.hdf5"
    text.write_text("not hdf5")
    assert main(["classify", str(text), "--in-place", "--model", model_dir]) == 1
    err = capsys.readouterr().err
    assert "notes.hdf5" in err and text.read_text() == "not hdf5"
    with pytest.raises(SystemExit) as exit_info:
        main(["classify"])
    assert exit_info.value.code == 2


def test_reprocess_folder_summary_failures_and_resume(caiman_copy, tmp_path, model_dir):
    folder = caiman_copy("synthetic_cnmf.hdf5").parent
    sub = folder / "session2"
    sub.mkdir()
    (sub / "synthetic_seeded_cnmf.hdf5").write_bytes(
        require(REAL_ROIS.parent / "caiman_results" / "synthetic_seeded_cnmf.hdf5").read_bytes()
    )
    (folder / "broken.hdf5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    out_dir = tmp_path / "out"
    argv = ["reprocess", str(folder), "--out-dir", str(out_dir), "--model", model_dir, "-q"]
    assert main(argv) == 1  # one failure
    rows = {
        r["file"].split("/")[-1]: r for r in csv.DictReader(open(out_dir / "calcomp_summary.csv"))
    }
    assert (
        rows["broken.hdf5"]["status"] == "failed" and "broken.hdf5" in rows["broken.hdf5"]["error"]
    )
    assert rows["synthetic_cnmf.hdf5"]["status"] == "classified"
    assert rows["synthetic_cnmf.hdf5"]["components"] == "40"
    assert (out_dir / "session2" / "synthetic_seeded_cnmf.hdf5").exists()
    assert main(argv) == 1
    rows = {
        r["file"].split("/")[-1]: r for r in csv.DictReader(open(out_dir / "calcomp_summary.csv"))
    }
    assert rows["synthetic_cnmf.hdf5"]["status"] == "skipped"


def test_montage(caiman_copy, tmp_path, model_dir, capsys):
    png = tmp_path / "m.png"
    source = caiman_copy("synthetic_seeded_cnmf.hdf5")
    assert main(["montage", str(source), "-o", str(png), "--model", model_dir]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert f"montage: {png}" in capsys.readouterr().out
    # the patches are those the model sees, so a model is needed even for stored classes
    assert main(["classify", str(source), "--in-place", "--model", model_dir]) == 0
    assert main(["montage", str(source), "-o", str(png), "--model", "no-such-model"]) == 1
    assert main(["montage", str(source), "-o", str(png), "--gsig", "0", "--model", model_dir]) == 1
    assert "--gsig" in capsys.readouterr().err


@pytest.fixture
def shown_montage(monkeypatch):
    """What ``calcomp montage`` passes to ``plot_montage``, which then writes no PNG."""
    shown = {}

    def record(patches, probs, path, **options):
        shown.update(patches=patches, probs=probs)
        return Path(path)

    monkeypatch.setattr("calcomp_caiman.apps.montage.plot_montage", record)
    return shown


def test_montage_shows_what_classify_stores(tmp_path, shown_montage):
    source = tmp_path / "demo.hdf5"
    shutil.copyfile(files("calcomp_caiman.data") / "demo_caiman_sim.hdf5", source)
    classified = tmp_path / "classified.hdf5"
    assert main(["classify", str(source), "--out", str(classified)]) == 0  # default model
    stored = read_estimates(classified).class_probs
    model = CalcompModel.load("default")
    flat, dims2, scale = footprints_for(read_evidence(source), model.scale_rule)
    seen = crop_checked(flat, dims2, scale, model.patch_size)
    png = str(tmp_path / "m.png")
    for argv in ([str(source)], [str(classified)], [str(classified), "--reclassify"]):
        shown_montage.clear()
        assert main(["montage", *argv, "-o", png]) == 0
        np.testing.assert_array_equal(shown_montage["probs"], stored, err_msg=str(argv))
        np.testing.assert_array_equal(shown_montage["patches"], seen, err_msg=str(argv))


def test_montage_gsig_reaches_the_model(tmp_path, model_dir, shown_montage):
    source = tmp_path / "demo.hdf5"
    shutil.copyfile(files("calcomp_caiman.data") / "demo_caiman_sim.hdf5", source)
    classified = tmp_path / "classified.hdf5"
    options = ["--model", model_dir]  # before model v2: the crop scale is gSig
    assert main(["classify", str(source), "--out", str(classified), "--gsig", "3", *options]) == 0
    png = str(tmp_path / "m.png")
    assert main(["montage", str(source), "-o", png, "--gsig", "3", *options]) == 0
    np.testing.assert_array_equal(shown_montage["probs"], read_estimates(classified).class_probs)
    with_gsig = shown_montage["patches"]
    assert main(["montage", str(source), "-o", png, *options]) == 0  # the file's gSig, 4
    assert not np.allclose(shown_montage["patches"], with_gsig)


def test_demo_with_bundled_model(tmp_path):
    out = subprocess.run(
        [CALCOMP, "demo", "--out", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "accuracy" in out.stdout
    for name in (
        "demo_cnmf.hdf5",
        "demo_classified.hdf5",
        "demo_components.csv",
        "demo_montage.png",
    ):
        assert (tmp_path / "demo" / name).stat().st_size > 0


def test_finetune_and_train_commands(caiman_copy, tmp_path, model_dir):
    source = caiman_copy("synthetic_seeded_cnmf.hdf5")
    table = tmp_path / "labels.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "component", "label"])
        labels = ["neuron"] * 30 + ["process"] * 4  # seeded file: sources 30-33 are dendrites
        writer.writerows([source.name, i, label] for i, label in enumerate(labels))
    table.rename(source.parent / "labels.csv")
    out = tmp_path / "tuned"
    assert main(["finetune", "--base", model_dir, "--labels", str(source.parent / "labels.csv"),
                 "--epochs", "1", "--out", str(out)]) == 0  # fmt: skip
    assert (out / "weights.npz").exists()
    yst = sorted(require(REAL_ROIS).glob("yst_part1*_suite2p.npz"))
    trained = tmp_path / "trained"
    assert main(["train", "--data", str(yst[0]), "--val-data", str(yst[1]), "--epochs", "1",
                 "--base", model_dir, "--out", str(trained)]) == 0  # fmt: skip
    assert (trained / "config.json").exists()


def test_evaluate_command(tmp_path, model_dir):
    archives = sorted(require(REAL_ROIS).glob("yst_part22_*.npz"))
    prefix = tmp_path / "report"
    assert main(["evaluate", *map(str, archives), "--model", model_dir, "--no-simulated",
                 "--out", str(prefix)]) == 0  # fmt: skip
    assert prefix.with_suffix(".json").stat().st_size > 0
    assert prefix.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert main(["evaluate", *map(str, archives), "--baselines", "--model", model_dir]) == 1


def test_evaluate_test_videos_are_the_models_own(tiny_model, model_dir, tmp_path, capsys):
    archives = sorted(require(REAL_ROIS).glob("yst_part2[12]_suite2p.npz"))
    assert main(["evaluate", *map(str, archives), "--model", model_dir, "--test-videos",
                 "--no-simulated", "--out", str(tmp_path / "none")]) == 1  # fmt: skip
    assert "'tiny' records no held-out videos" in capsys.readouterr().err
    split = {"real_validation_videos": ["caiman_paper_yst/YST_part21"],
             "real_test_videos": ["caiman_paper_yst/YST_part22"]}  # fmt: skip
    model = dataclasses.replace(tiny_model, config={**tiny_model.config, "training_data": split})
    folder = model.save(tmp_path / "with_split")
    prefix = tmp_path / "report"
    assert main(["evaluate", *map(str, archives), "--model", str(folder), "--test-videos",
                 "--no-simulated", "--out", str(prefix)]) == 0  # fmt: skip
    report = json.loads(prefix.with_suffix(".json").read_text())
    assert list(report["datasets"]) == ["caiman_paper_yst/YST_part22"]


def test_missing_file_and_unknown_model(caiman_copy, tmp_path, capsys):
    assert main(["classify", str(tmp_path / "nope.hdf5"), "--in-place"]) == 1
    assert "nope.hdf5" in capsys.readouterr().err
    source = caiman_copy("synthetic_cnmf.hdf5")
    assert main(["classify", str(source), "--in-place", "--model", "nosuch"]) == 1
    err = capsys.readouterr().err
    assert "nosuch" in err and "default" in err  # names the known models


def test_reprocess_applies_the_rule_given_as_classify_does(caiman_copy, tmp_path):
    # the default model's thresholds.json cuts at P(neuron) >= 0.45; argmax accepts fewer
    source = caiman_copy("real_mouse2p_cnmf.hdf5")
    for rule in (["--min-prob", "argmax"], ["--gsig", "3"]):
        single, out = tmp_path / "single.hdf5", tmp_path / "batch"
        assert main(["classify", str(source), "--out", str(single), "--overwrite", *rule]) == 0
        assert main(["reprocess", str(source), "--out-dir", str(out), "-q", "--no-resume",
                     "--overwrite", *rule]) == 0  # fmt: skip
        for name in ("idx_components", "class_probs"):
            np.testing.assert_array_equal(
                getattr(read_estimates(out / source.name), name),
                getattr(read_estimates(single), name),
                err_msg=f"{rule} {name}",
            )
