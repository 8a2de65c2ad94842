import contextlib
import csv
import dataclasses
import hashlib
import json
import os
import re
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
    with pytest.raises(SystemExit) as exit_info:
        main(["classify", str(source), "--model", model_dir])
    assert exit_info.value.code == 2 and "--in-place" in capsys.readouterr().err
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


# ------------------------------------------------- the newcomer's path (issue 22), each fixed


def usage_error(argv, capsys) -> str:
    """The message of a usage error (exit code 2, as argparse's own)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: calcomp "), err
    return err.strip().splitlines()[-1]


def write_plane(folder: Path, n: int = 3, dims=(32, 40), stat=None) -> Path:
    """A small Suite2p plane folder (stat.npy and ops.npy pickled, as Suite2p saves them)."""
    folder.mkdir(parents=True)
    if stat is None:
        stat = [{"ypix": np.arange(4, 9) + 7 * k, "xpix": np.full(5, 6 + 8 * k),
                 "lam": np.ones(5, np.float32)} for k in range(n)]  # fmt: skip
    np.save(folder / "stat.npy", np.array(stat, dtype=object), allow_pickle=True)
    np.save(folder / "ops.npy", {"Ly": dims[0], "Lx": dims[1]}, allow_pickle=True)
    return folder


def test_missing_out_is_a_usage_error_worded_for_the_format(caiman_copy, tmp_path, capsys):
    source = caiman_copy("synthetic_cnmf.hdf5")
    assert "give --out OUT.hdf5" in usage_error(["classify", str(source)], capsys)
    plane = usage_error(["classify", str(write_plane(tmp_path / "plane0"))], capsys)
    assert "--out DIR" in plane and "beside Suite2p's" in plane and ".hdf5" not in plane
    np.save(tmp_path / "rois.npy", np.zeros((3, 8, 8), bool))
    masks = usage_error(["classify", str(tmp_path / "rois.npy")], capsys)
    assert "--out OUT.csv" in masks and ".hdf5" not in masks
    nwb = tmp_path / "session.nwb"
    nwb.write_bytes(b"")
    assert "--out OUT.nwb" in usage_error(["classify", str(nwb)], capsys)
    err = usage_error(["reprocess", str(source.parent)], capsys)
    assert "--out-dir DIR" in err and "--in-place" in err


def test_overwrite_is_named_as_the_command_line_names_it(caiman_copy, tmp_path, capsys):
    source = caiman_copy("synthetic_cnmf.hdf5")
    out = tmp_path / "out" / source.name
    out.parent.mkdir()
    out.write_bytes(source.read_bytes())
    capsys.readouterr()
    assert main(["classify", str(source), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == f"calcomp: error: {out}: already exists; use --overwrite to replace it, " \
                  "or choose another output.\n"  # fmt: skip
    assert main(["reprocess", str(source), "--out-dir", str(out.parent), "-q"]) == 1
    err = capsys.readouterr().err
    assert "already exists; use --overwrite" in err and "overwrite=True" not in err
    rows = list(csv.DictReader(open(out.parent / "calcomp_summary.csv")))
    assert "use --overwrite" in rows[0]["error"] and "overwrite=True" not in rows[0]["error"]
    # from Python, the message names Python's keyword
    from calcomp_caiman.apps.one_file import classify_file
    from calcomp_caiman.errors import OutputExistsError

    with pytest.raises(OutputExistsError, match="pass overwrite=True") as raised:
        classify_file(source, model=CalcompModel.load(), out_path=out)
    assert "--overwrite" not in str(raised.value)


COMMANDS = ("classify", "reprocess", "export-bioimageio", "montage", "demo", "train",
            "finetune", "evaluate", "curate")  # fmt: skip


def test_help_shows_each_default_once_and_never_none(capsys):
    for name in COMMANDS:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = capsys.readouterr().out
        for option in text.split("\n  -")[1:]:  # one block per option
            option = " ".join(option.split())  # help wraps lines
            assert "(default: None)" not in option and "(default: False)" not in option, name
            assert option.count("(default") <= 1, (name, option)
    with pytest.raises(SystemExit):
        main(["curate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "labels CSV (default: curate_labels.csv beside the first file) --model-out" in text


def test_out_equal_to_the_input_needs_in_place_or_overwrite(caiman_copy, capsys):
    source = caiman_copy("synthetic_cnmf.hdf5")
    before = sha(source)
    err = usage_error(["classify", str(source), "--out", str(source)], capsys)
    assert "is the input itself; use --in-place" in err
    alias = source.parent / "alias.hdf5"
    alias.symlink_to(source)
    from calcomp_caiman.apps.one_file import classify_file
    from calcomp_caiman.errors import OutputIsInputError

    with pytest.raises(OutputIsInputError, match="is the input itself"):
        classify_file(source, model=CalcompModel.load(), out_path=alias)
    assert sha(source) == before
    assert main(["classify", str(source), "--out", str(alias), "--overwrite"]) == 0
    assert read_estimates(source).class_probs is not None


def test_bad_csv_path_fails_before_the_input_is_changed(caiman_copy, tmp_path, capsys):
    source = caiman_copy("synthetic_cnmf.hdf5")
    before = sha(source)
    table = tmp_path / "no_such_folder" / "table.csv"
    capsys.readouterr()
    assert main(["classify", str(source), "--in-place", "--csv", str(table)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"calcomp: error: {table}: cannot be written") and ".tmp" not in err
    assert sha(source) == before
    assert sorted(p.name for p in source.parent.iterdir()) == [source.name]  # no temp file


def test_classify_says_what_caiman_kept_and_how_reliable_its_classes_are(
    caiman_copy, tmp_path, capsys
):
    source = caiman_copy("real_mouse2p_cnmf.hdf5")
    kept = len(read_estimates(source).idx_components)  # CaImAn's own selection
    # model v2 accepts less than half of what CaImAn kept: the line says to check
    out = tmp_path / "v2.hdf5"
    assert main(["classify", str(source), "--out", str(out), "--model", "calcomp_v2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    accepted = len(read_estimates(out).idx_components)
    assert accepted < kept / 2
    assert (
        f"; calcomp accepts {accepted}, CaImAn's own selection kept {kept}; OOD score " in lines[0]
    )
    assert lines[0].endswith(" (threshold 1.16: in distribution); 2p data, model calcomp_v2"), lines
    assert lines[1].startswith("calcomp and CaImAn's own selection differ a lot: check with "
                               f"`calcomp curate {out}` (label ~30 components)")  # fmt: skip
    # the default model (v3) accepts more than half of it: the same line, no advice
    assert main(["classify", str(source), "--in-place"]) == 0
    lines = capsys.readouterr().out.splitlines()
    accepted = len(read_estimates(source).idx_components)
    assert kept / 2 <= accepted < kept
    assert len(lines) == 1, lines
    # v3 has a reliability map: the expected error takes the OOD score's place
    assert (
        f"; calcomp accepts {accepted}, CaImAn's own selection kept {kept}; expected error 0.33 "
        in lines[0]
    )
    assert lines[0].endswith(" (warns above 0.36: no warning); 2p data, model calcomp_v3"), lines
    # the real OnACID result of the same movie: the map expects many errors and says so
    onacid = caiman_copy("real_mouse2p_onacid.hdf5")
    assert main(["classify", str(onacid), "--out", str(tmp_path / "onacid.hdf5")]) == 0
    captured = capsys.readouterr()
    assert "; expected error 0.46 (warns above 0.36: classes unreliable); 2p" in captured.out
    assert "the classes may be unreliable here: expected error 0.46 (0.21 on the " in captured.err


def test_summary_paths_absolute_rows_ordered_columns_documented(caiman_copy, tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("synthetic_cnmf.hdf5", "real_mouse2p_cnmf.hdf5", "synthetic_seeded_cnmf.hdf5"):
        caiman_copy(name).rename(folder / name)
    monkeypatch.chdir(tmp_path)
    assert main(["reprocess", folder.name, "--out-dir", "out", "-q", "--jobs", "2"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "calcomp_summary.csv")))
    assert [row["file"] for row in rows] == sorted(str(p.resolve()) for p in folder.glob("*.hdf5"))
    for row in rows:
        assert Path(row["file"]).is_absolute() and Path(row["output"]).is_absolute(), row
        assert Path(row["output"]) == (tmp_path / "out" / Path(row["file"]).name).resolve()
        assert row["caiman_accepted"] == str(len(read_estimates(row["file"]).idx_components))
    from calcomp_caiman.apps.one_file import SUMMARY_COLUMNS

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    documented = re.search(r"writes a summary CSV \(`([^`]+)`", readme)
    assert documented and " ".join(documented.group(1).split()).split(", ") == list(SUMMARY_COLUMNS)


def stalling_copy(folder: Path, name: str = "stall.hdf5") -> tuple[Path, Path]:
    """A CaImAn file whose ``estimates/C`` is stored in a FIFO: reading it blocks until
    someone writes to the FIFO. Returns the file and the FIFO."""
    folder.mkdir(parents=True, exist_ok=True)
    path, fifo = folder / name, folder / f".{name}.C.fifo"
    shutil.copyfile(require(REAL_ROIS.parent / "caiman_results" / "synthetic_cnmf.hdf5"), path)
    os.mkfifo(fifo)
    with h5py.File(path, "r+") as handle:
        shape, dtype = handle["estimates/C"].shape, handle["estimates/C"].dtype
        del handle["estimates/C"]
        handle["estimates"].create_dataset(
            "C", shape=shape, dtype=dtype, external=[(str(fifo), 0, h5py.h5f.UNLIMITED)]
        )
    return path, fifo


def release(fifo: Path) -> None:
    """Let a reader blocked on ``fifo`` go on (it then reads nothing and fails)."""
    with contextlib.suppress(OSError):  # ENXIO: no reader is left
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_reprocess_timeout_reports_a_stalled_file_and_goes_on(tmp_path, capsys):
    folder = tmp_path / "in"
    stalled, fifo = stalling_copy(folder)
    shutil.copyfile(require(REAL_ROIS.parent / "caiman_results" / "synthetic_seeded_cnmf.hdf5"),
                    folder / "good.hdf5")  # fmt: skip
    before = sha(stalled)
    argv = ["reprocess", str(folder), "--in-place", "--timeout", "3", "-q",
            "--summary", str(tmp_path / "summary.csv")]  # fmt: skip
    try:
        assert main(argv) == 1
    finally:
        release(fifo)
    out, err = capsys.readouterr()
    assert "1 classified, 0 skipped, 1 failed" in out
    rows = {Path(row["file"]).name: row for row in csv.DictReader(open(tmp_path / "summary.csv"))}
    assert rows["good.hdf5"]["status"] == "classified"
    assert rows[stalled.name]["status"] == "failed"
    assert rows[stalled.name]["error"].startswith(f"{stalled.resolve()}: stopped after 3 s")
    assert f"calcomp: error: {rows[stalled.name]['error']}" in err
    assert sha(stalled) == before


class _Marker:
    """Unpickling this creates a folder: what a hostile stat.npy could do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_suite2p_pickles_are_loaded_only_with_allow_pickle(tmp_path, capsys):
    marker = tmp_path / "unpickled"
    stat = [{"ypix": np.arange(4, 9), "xpix": np.full(5, 6), "lam": np.ones(5, np.float32),
             "payload": _Marker(marker)}]  # fmt: skip
    plane = write_plane(tmp_path / "data" / "suite2p" / "plane0", stat=stat)
    capsys.readouterr()
    assert main(["reprocess", str(tmp_path / "data"), "--in-place", "-q",
                 "--summary", str(tmp_path / "summary.csv")]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert err == f"calcomp: error: {plane}: holds pickled Python objects (Suite2p's stat.npy " \
                  "and ops.npy), and loading a pickle can run any code; add --allow-pickle " \
                  "if you trust this folder.\n"  # fmt: skip
    assert main(["classify", str(plane), "--in-place"]) == 1
    assert "add --allow-pickle" in capsys.readouterr().err
    assert not marker.exists() and not (plane / "calcomp_iscell.npy").exists()
    assert main(["classify", str(plane), "--in-place", "--allow-pickle"]) == 0
    assert marker.exists() and (plane / "calcomp_iscell.npy").exists()
