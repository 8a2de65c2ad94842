"""A file that kills its worker process, or raises something unexpected, is reported
``failed`` in the summary with one line naming it; the other files go on.

The sabotage is a monkeypatched ``batch.classify_file``: worker processes are forked
(Linux's default start method), so they inherit it.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import test_reliability
from test_reliability import (
    assert_complete_classification,
    hold_lock,
    read_summary,
    sha256,
    shared_copy,
    temp_files,
)

from calcomp_caiman.apps import batch
from calcomp_caiman.apps.cli import main
from calcomp_caiman.io.atomic import remove_stale_temps

SHARED_NAMES = ("synthetic_cnmf.hdf5", "synthetic_seeded_cnmf.hdf5", "real_mouse2p_cnmf.hdf5")
VICTIM = "synthetic_seeded_cnmf.hdf5"

model_dir = test_reliability.model_dir  # the tiny model saved once per module

pytestmark = pytest.mark.skipif(
    multiprocessing.get_start_method() != "fork",
    reason="the sabotage reaches worker processes only when they are forked",
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Real CaImAn files: each shared file twice (as ``a_<name>`` and ``b_<name>``)."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in SHARED_NAMES:
        for prefix in ("a_", "b_"):
            shared_copy(name, folder, prefix + name)
    return folder


def sabotage(monkeypatch, victim: str, how: Callable[[], None], log: Path) -> None:
    """Make classifying ``victim`` call ``how``; every attempt on it adds a line to ``log``."""
    real = batch.classify_file

    def classify_file(path, **kwargs):
        if Path(path).name == victim:
            with open(log, "a") as handle:  # append: safe across worker processes
                handle.write(f"{os.getpid()}\n")
            how()
        return real(path, **kwargs)

    monkeypatch.setattr(batch, "classify_file", classify_file)


def reprocess_argv(folder: Path, out: Path, model_dir: str, jobs: int) -> list[str]:
    return ["reprocess", str(folder), "--out-dir", str(out), "--model", model_dir, "-q",
            "--jobs", str(jobs)]  # fmt: skip


def attempts(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def raise_key_error() -> None:
    raise KeyError("surprise")


@pytest.mark.parametrize("jobs", [1, 2])
def test_unexpected_exception_is_reported_and_batch_goes_on(
    folder, tmp_path, model_dir, monkeypatch, capsys, jobs
):
    victim = "a_" + VICTIM
    sabotage(monkeypatch, victim, raise_key_error, tmp_path / "attempts.txt")
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(reprocess_argv(folder, out, model_dir, jobs)) == 1
    err = capsys.readouterr().err
    rows = read_summary(out / "calcomp_summary.csv")
    assert len(rows) == 2 * len(SHARED_NAMES)
    row = rows[victim]
    assert row["status"] == "failed"
    assert row["error"] == f"{row['file']}: KeyError: 'surprise'"
    assert [line for line in err.splitlines() if victim in line] == [
        f"calcomp: error: {row['file']}: KeyError: 'surprise'"
    ], err
    assert all(r["status"] == "classified" for name, r in rows.items() if name != victim), rows
    assert not (out / victim).exists()
    assert attempts(tmp_path / "attempts.txt") == 1  # an exception is not retried


def test_unexpected_exception_traceback_is_logged_at_debug(
    folder, tmp_path, tiny_model, monkeypatch, caplog
):
    victim = "a_" + VICTIM
    sabotage(monkeypatch, victim, raise_key_error, tmp_path / "attempts.txt")
    with caplog.at_level(logging.DEBUG, logger="calcomp_caiman"):
        results = list(batch.reprocess([folder / victim], model=tiny_model, out_dir=tmp_path))
    assert [r.status for r in results] == ["failed"]
    logged = [r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info]
    assert logged and logged[0].exc_info[0] is KeyError


def die_mid_write(folder: Path, victim: str) -> Callable[[], None]:
    """Leave a temporary file beside ``victim`` as a worker killed while writing does; die."""

    def how() -> None:
        (folder / f".{victim}.calcomp-tmp-deadbeef").write_bytes(b"half an HDF5 file")
        os._exit(1)

    return how


# a broken pool also terminates the workers running other files: a file that had just been
# written is then "skipped" on its retry (it is classified by this model), not "classified"
DONE = {"classified", "skipped"}


@pytest.mark.parametrize("jobs", [2, 3])
def test_worker_death_is_reported_and_others_finish(
    folder, tmp_path, model_dir, monkeypatch, capsys, jobs
):
    victim = "a_" + VICTIM
    log = tmp_path / "attempts.txt"
    out = tmp_path / "out"
    out.mkdir()
    sabotage(monkeypatch, victim, die_mid_write(out, victim), log)
    before = {path.name: sha256(path) for path in folder.iterdir()}
    capsys.readouterr()
    assert main(reprocess_argv(folder, out, model_dir, jobs)) == 1
    stdout, err = capsys.readouterr()
    assert "skipped, 1 failed; summary:" in stdout
    rows = read_summary(out / "calcomp_summary.csv")
    assert set(rows) == set(before)
    row = rows[victim]
    assert row["status"] == "failed" and "worker process died" in row["error"], row
    assert row["error"].startswith(f"{row['file']}: "), row
    assert [line for line in err.splitlines() if "calcomp: error:" in line] == [
        f"calcomp: error: {row['error']}"
    ], err
    for name, other in rows.items():
        if name != victim:
            assert other["status"] in DONE, other
            assert_complete_classification(out / name)
    assert not (out / victim).exists()
    assert attempts(log) == 2  # killed its worker in the pool, then once more alone
    assert {path.name: sha256(path) for path in folder.iterdir()} == before
    assert temp_files(out) == []


def test_worker_death_in_place_leaves_the_file_unchanged(folder, tmp_path, tiny_model, monkeypatch):
    victim = "b_" + VICTIM
    sabotage(monkeypatch, victim, die_mid_write(folder, victim), tmp_path / "attempts.txt")
    before = sha256(folder / victim)
    results = {Path(r.file).name: r for r in batch.reprocess([folder], model=tiny_model, jobs=2)}
    assert len(results) == 2 * len(SHARED_NAMES)
    assert results[victim].status == "failed"
    assert sha256(folder / victim) == before
    for name, result in results.items():
        if name != victim:
            assert result.status in DONE, result
            assert_complete_classification(folder / name)
    assert temp_files(folder) == []


def test_stale_temporary_of_a_live_writer_is_kept(tmp_path):
    source = shared_copy("synthetic_cnmf.hdf5", tmp_path)
    stale = tmp_path / f".{source.name}.calcomp-tmp-0123abcd"
    stale.write_bytes(b"")
    with contextlib.ExitStack() as stack:
        hold_lock(source, stack)  # another calcomp process is writing it
        remove_stale_temps(source, source)
        assert stale.exists()
    remove_stale_temps(source, source)
    assert not stale.exists()
    assert temp_files(tmp_path) == []


def test_keyboard_interrupt_still_stops(folder, tmp_path, model_dir, monkeypatch):
    def interrupt() -> None:
        raise KeyboardInterrupt

    sabotage(monkeypatch, "a_" + VICTIM, interrupt, tmp_path / "attempts.txt")
    assert main(reprocess_argv(folder, tmp_path / "out", model_dir, 1)) == 130
