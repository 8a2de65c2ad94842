"""reprocess_dask on a real Dask cluster: a scheduler and two worker processes on 127.0.0.1.

One module-scoped cluster (``LocalCluster(processes=True)``, reached through its scheduler
address) serves the scheduler-address path; one test lets ``reprocess_dask`` start and
close its own local cluster. The folders hold copies of a real CaImAn result file and
one file that is not HDF5.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from conftest import CAIMAN_RESULTS, require
from test_cli import release, stalling_copy

pytest.importorskip("dask.distributed")

from calcomp_caiman import CLASSES  # noqa: E402
from calcomp_caiman.apps.batch import find_result_files, reprocess, write_summary_csv  # noqa: E402
from calcomp_caiman.apps.distributed import reprocess_dask  # noqa: E402
from calcomp_caiman.apps.one_file import SUMMARY_COLUMNS  # noqa: E402
from calcomp_caiman.io.caiman_h5 import read_estimates  # noqa: E402
from calcomp_caiman.model.folder import CalcompModel  # noqa: E402

SOURCE_NAME = "synthetic_cnmf.hdf5"
N_COMPONENTS = 40  # columns of estimates/A in synthetic_cnmf.hdf5 (README of the data)
BAD_NAME = "bad.hdf5"


@pytest.fixture(scope="module")
def model(tiny_model, tmp_path_factory) -> CalcompModel:
    """The tiny model, saved and loaded so that it has a SHA256 (resume needs one)."""
    folder = tiny_model.save(tmp_path_factory.mktemp("tiny_model"))
    return CalcompModel.load(folder)


@pytest.fixture(scope="module")
def cluster():
    """A scheduler and two single-threaded worker processes on 127.0.0.1, and a client."""
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as local,
        Client(local, set_as_default=False) as client,
    ):
        yield local, client


def make_folder(folder: Path, copies: int) -> dict[str, bytes]:
    """``copies`` writable copies of the CaImAn file plus ``bad.hdf5`` (text); name -> bytes."""
    source = require(CAIMAN_RESULTS / SOURCE_NAME)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(copies):
        shutil.copyfile(source, folder / f"session_{index:02d}.hdf5")  # no read-only bit
    (folder / BAD_NAME).write_text("not an HDF5 file\n")
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def by_name(results) -> dict:
    results = list(results)
    names = [Path(result.file).name for result in results]
    assert len(names) == len(set(names)), f"a file was reported twice: {sorted(names)}"
    return {Path(result.file).name: result for result in results}


def assert_classified(path: Path, model: CalcompModel) -> None:
    source = read_estimates(path)
    assert source.n_components == N_COMPONENTS
    assert source.classification["model_sha256"] == model.sha256
    with h5py.File(path, "r") as handle:
        assert handle["estimates/class_probs"].shape == (N_COMPONENTS, len(CLASSES))


def test_local_cluster_classifies_folder_then_resume_skips(tmp_path, model, cluster):
    folder = tmp_path / "results"
    original = make_folder(folder, copies=8)

    results = list(reprocess_dask([folder], model=model, workers=2))  # own LocalCluster

    found = by_name(results)
    assert sorted(found) == sorted(original)
    bad = found.pop(BAD_NAME)
    assert bad.status == "failed"
    assert BAD_NAME in bad.error and "HDF5" in bad.error
    assert (folder / BAD_NAME).read_bytes() == original[BAD_NAME]
    for name, result in found.items():
        assert result.status == "classified", result.error
        assert result.components == N_COMPONENTS
        assert sum(result.counts.values()) == N_COMPONENTS
        assert Path(result.output) == (folder / name).resolve()
        assert_classified(folder / name, model)

    summary = write_summary_csv(results, tmp_path / "calcomp_summary.csv")
    with open(summary, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == SUMMARY_COLUMNS
    assert {Path(row["file"]).name: row["status"] for row in rows} == {
        name: result.status for name, result in by_name(results).items()
    }
    for row in rows:
        if row["status"] == "classified":
            assert int(row["components"]) == N_COMPONENTS
            assert sum(int(row[name]) for name in CLASSES) == N_COMPONENTS

    # resume (the default), now through a running scheduler: nothing is redone
    local, _ = cluster
    again = by_name(reprocess_dask([folder], model=model, scheduler=local.scheduler_address))
    assert again.pop(BAD_NAME).status == "failed"
    assert {result.status for result in again.values()} == {"skipped"}


def test_out_dir_matches_single_machine_path(tmp_path, model, cluster):
    folder = tmp_path / "results"
    make_folder(folder / "day1", copies=2)
    make_folder(folder / "day2", copies=1)
    local, _ = cluster

    def relative(results, root: Path) -> dict:
        results = list(results)
        found = {Path(r.output).relative_to(root).as_posix(): r for r in results}
        assert len(found) == len(results)
        return found

    dask_out, single_out = tmp_path / "dask", tmp_path / "single"
    on_dask = relative(
        reprocess_dask([folder], model=model, scheduler=local.scheduler_address, out_dir=dask_out),
        dask_out.resolve(),
    )
    single = relative(reprocess([folder], model=model, out_dir=single_out), single_out)

    assert sorted(on_dask) == sorted(single)
    assert sorted(on_dask) == [
        "day1/bad.hdf5",
        "day1/session_00.hdf5",
        "day1/session_01.hdf5",
        "day2/bad.hdf5",
        "day2/session_00.hdf5",
    ]
    for key, result in on_dask.items():
        assert result.status == single[key].status, result.error
        assert result.counts == single[key].counts
        assert result.accepted == single[key].accepted
        if result.status == "classified":
            assert_classified(dask_out / key, model)
    assert not (dask_out / "day1" / BAD_NAME).exists()


def test_closing_stream_early_leaves_remote_cluster_running(tmp_path, model, cluster):
    folder = tmp_path / "results"
    make_folder(folder, copies=4)
    local, client = cluster

    stream = reprocess_dask([folder], model=model, scheduler=local.scheduler_address)
    first = next(stream)
    stream.close()

    assert first.status in ("classified", "failed")
    client.wait_for_workers(2, timeout=30)
    assert len(client.scheduler_info()["workers"]) == 2


def test_worker_killed_during_run_every_file_classified_or_reported(tmp_path, model, cluster):
    folder = tmp_path / "results"
    original = make_folder(folder, copies=12)
    local, client = cluster
    client.wait_for_workers(2, timeout=30)

    results, killed = [], None
    for result in reprocess_dask([folder], model=model, scheduler=local.scheduler_address):
        results.append(result)
        if killed is None:
            killed = next(iter(client.run(os.getpid).values()))
            os.kill(killed, signal.SIGKILL)

    assert killed not in client.run(os.getpid).values()
    found = by_name(results)
    assert sorted(found) == sorted(original)
    assert found[BAD_NAME].status == "failed"
    for name, result in found.items():
        path = folder / name
        if name == BAD_NAME:
            assert path.read_bytes() == original[name]
            continue
        # a file whose task was rerun after being written is reported "skipped" (resume)
        assert result.status in ("classified", "skipped", "failed"), result
        if result.status == "failed":
            assert result.error
        unchanged = path.read_bytes() == original[name]
        with h5py.File(path, "r") as handle:  # opens and reads: not corrupt
            handle["estimates/A/data"][()]
            assert unchanged or "class_probs" in handle["estimates"]
        if not unchanged or result.status != "failed":
            assert_classified(path, model)
    # temporary files a killed worker may leave behind are hidden from the next run
    assert sorted(path.name for path, _ in find_result_files([folder])) == sorted(original)


def test_arguments_checked_and_module_imports_without_dask(tmp_path, model):
    with pytest.raises(TypeError, match="model must be a CalcompModel"):
        next(reprocess_dask([tmp_path], model="default"))
    with pytest.raises(ValueError, match="workers"):
        next(reprocess_dask([tmp_path], model=model, workers=0))
    with pytest.raises(FileNotFoundError, match="no such file"):
        next(reprocess_dask([tmp_path / "missing"], model=model))
    assert list(reprocess_dask([tmp_path], model=model)) == []  # no files: no cluster

    code = (
        "import sys, calcomp_caiman.apps.distributed; "
        "print(sorted({'dask', 'distributed'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def write_plane(folder: Path, dims=(40, 48), n=4) -> Path:
    """A small Suite2p plane folder (stat.npy and ops.npy pickled, as Suite2p saves them)."""
    import numpy as np
    from conftest import disk_footprints

    folder.mkdir(parents=True)
    A = disk_footprints(dims, centres=[(10 + 6 * k, 12 + 7 * k) for k in range(n)], radius=4)
    stat = []
    for column in A.T:
        pixels = np.flatnonzero(column)  # Fortran order: row + col * Ly
        stat.append({"ypix": pixels % dims[0], "xpix": pixels // dims[0],
                     "lam": np.ones(len(pixels), np.float32)})  # fmt: skip
    np.save(folder / "stat.npy", np.array(stat, dtype=object), allow_pickle=True)
    np.save(folder / "ops.npy", {"Ly": dims[0], "Lx": dims[1]}, allow_pickle=True)
    np.save(folder / "iscell.npy", np.ones((n, 2)))
    return folder


def test_format_and_replace_iscell_reach_the_workers(tmp_path, model, cluster, capsys):
    from calcomp_caiman.apps.cli import main

    root = tmp_path / "results"
    make_folder(root, copies=1)  # a CaImAn file and bad.hdf5: not Suite2p, not searched
    planes = [write_plane(root / "suite2p" / f"plane{k}") for k in range(2)]
    before = {plane: (plane / "iscell.npy").read_bytes() for plane in planes}
    folder = model.save(tmp_path / "model")
    local, _ = cluster
    argv = ["reprocess", str(root), "--in-place", "--scheduler", local.scheduler_address,
            "--format", "suite2p", "--replace-iscell", "--allow-pickle", "--model", str(folder), "-q",
            "--summary", str(tmp_path / "summary.csv")]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    with open(tmp_path / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(Path(row["file"]).name for row in rows) == ["plane0", "plane1"]
    assert {(row["format"], row["status"]) for row in rows} == {("suite2p", "classified")}
    for plane in planes:
        assert (plane / "iscell_suite2p.npy").read_bytes() == before[plane]
        assert (plane / "iscell.npy").read_bytes() == (plane / "calcomp_iscell.npy").read_bytes()


def test_plane_reaches_the_workers(tmp_path, model, cluster):
    pytest.importorskip("pynwb")
    import numpy as np
    from conftest import disk_footprints, write_caiman_nwb

    A = disk_footprints(centres=[(20, 20), (40, 50)])
    path = write_caiman_nwb(tmp_path / "session.nwb", A, (64, 80), np.ones((2, 20)),
                            np.ones((64 * 80, 1)), np.ones((1, 20)), np.zeros((2, 20)))  # fmt: skip
    local, _ = cluster
    (result,) = reprocess_dask([path], model=model, scheduler=local.scheduler_address,
                               plane="nope", out_dir=tmp_path / "out")  # fmt: skip
    assert result.status == "failed" and "nope" in result.error, result
    (result,) = reprocess_dask([path], model=model, scheduler=local.scheduler_address,
                               plane="PlaneSegmentation", out_dir=tmp_path / "out")  # fmt: skip
    assert result.status == "classified" and result.components == 2, result


def test_timeout_stops_a_stalled_file_on_dask(tmp_path, model, cluster):
    folder = tmp_path / "results"
    make_folder(folder, copies=2)
    stalled, fifo = stalling_copy(folder)
    local, _ = cluster
    try:
        found = by_name(reprocess_dask([folder], model=model, scheduler=local.scheduler_address,
                                       out_dir=tmp_path / "out", timeout=3))  # fmt: skip
    finally:
        release(fifo)
    late = found.pop(stalled.name)
    assert late.status == "failed" and late.error_type == "TimeoutError", late
    assert late.error.startswith(f"{stalled.resolve()}: stopped waiting after 3 s"), late
    assert found.pop(BAD_NAME).status == "failed"
    assert {result.status for result in found.values()} == {"classified"}
