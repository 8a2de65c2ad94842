"""Dask benchmark: files/s of ``reprocess_dask`` with 1 and 2 workers, and their ratio.

``--copies`` copies (default 200) of one shared CaImAn result file are made in a temporary
folder and classified in place (resume off, as ``calcomp reprocess DIR --in-place
--no-resume --dask --jobs N``). Every worker count gets fresh copies. For each count a
``LocalCluster`` (worker processes, one thread each, 127.0.0.1; the settings
``reprocess_dask`` uses for its own cluster) is started first, so that the files/s
measure the processing (scatter of the model, one task per file, reading and writing
every file) and the cluster start-up is reported on its own.

With ``--scheduler tcp://HOST:PORT`` the files are processed once on that running cluster
(e.g. a dask-jobqueue ``SLURMCluster``); ``--tmp-dir`` must then be a folder that the
workers see under the same path (a cluster file system).

Examples
--------
    python benchmarks/bench_dask.py --copies 20
    python benchmarks/bench_dask.py --copies 200 --workers 1 2 4 --random-weights
    python benchmarks/bench_dask.py --scheduler tcp://10.0.0.5:8786 --tmp-dir /scratch/$USER

Numbers depend on the machine and on whatever else runs on it (the load average is
printed); 2 workers cannot be faster than 1 on a machine with one free core.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

DEFAULT_SOURCE = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "caiman_results"
    / "real_mouse2p_cnmf.hdf5"
)  # fmt: skip


def load_model(random_weights: bool):
    """The bundled model, or (``random_weights``, or no bundled model) random weights."""
    from calcomp_caiman import CLASSES, CalcompError, CalcompModel

    if not random_weights:
        try:
            return CalcompModel.load()
        except (FileNotFoundError, CalcompError) as err:
            print(f"no bundled model ({err}); using random weights", file=sys.stderr)
    import keras

    from calcomp_caiman.model.network import DEFAULT_ARCHITECTURE, build_resnet

    keras.utils.set_random_seed(0)
    config = {
        "classes": list(CLASSES),
        "patch_size": 50,
        "architecture": DEFAULT_ARCHITECTURE,
        "name": "random",
    }
    return CalcompModel.from_keras(build_resnet(), config=config)


def make_copies(source: Path, folder: Path, copies: int) -> list[Path]:
    """``copies`` writable copies of ``source`` in ``folder`` (made empty first)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    paths = []
    for index in range(copies):
        path = folder / f"{source.stem}_{index:04d}.hdf5"
        shutil.copyfile(source, path)  # not copy2: the shared file is read-only
        paths.append(path)
    return paths


def run_once(folder: Path, model, scheduler: str) -> dict:
    """Classify every file of ``folder`` on ``scheduler``; time it and count the statuses."""
    from calcomp_caiman.apps.distributed import reprocess_dask

    start = time.perf_counter()
    statuses = Counter()
    errors = []
    for result in reprocess_dask([folder], model=model, scheduler=scheduler, resume=False):
        statuses[result.status] += 1
        if result.status == "failed":
            errors.append(result.error)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "statuses": dict(statuses), "errors": errors}


def bench_local(folder: Path, source: Path, copies: int, model, n_workers: int) -> dict:
    """Start a LocalCluster with ``n_workers``, then time :func:`run_once` on it."""
    from dask.distributed import Client, LocalCluster

    make_copies(source, folder, copies)
    start = time.perf_counter()
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        client.wait_for_workers(n_workers, timeout=120)
        startup = time.perf_counter() - start
        out = run_once(folder, model, cluster.scheduler_address)
    out["startup_s"] = startup
    return out


def report(label: str, copies: int, out: dict) -> float:
    rate = copies / out["seconds"]
    startup = out.get("startup_s")
    extra = "" if startup is None else f", cluster start {startup:5.1f} s"
    print(
        f"{label}: {copies} files in {out['seconds']:6.2f} s = {rate:6.2f} files/s"
        f"{extra}; {out['statuses']}"
    )
    for error in out["errors"][:3]:
        print(f"    failed: {error}")
    return rate


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example: python benchmarks/bench_dask.py --copies 20",
    )
    parser.add_argument("--copies", type=int, default=200, help="copies of the source file")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="CaImAn .hdf5 file")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts")
    parser.add_argument(
        "--random-weights", action="store_true", help="random-weight model, not the bundled one"
    )
    parser.add_argument("--scheduler", help="run once on this running scheduler instead")
    parser.add_argument("--tmp-dir", type=Path, help="where the copies go (default: system tmp)")
    args = parser.parse_args(argv)
    if not args.source.is_file():
        parser.error(f"--source {args.source}: no such file")

    model = load_model(args.random_weights)
    size_mb = args.source.stat().st_size / 1e6
    load = os.getloadavg() if hasattr(os, "getloadavg") else ()
    print(
        f"source {args.source.name} ({size_mb:.1f} MB) x {args.copies}; model {model.name}; "
        f"{os.cpu_count()} CPUs; load average {' '.join(f'{x:.2f}' for x in load)}"
    )
    root = Path(tempfile.mkdtemp(prefix="calcomp_bench_dask_", dir=args.tmp_dir))
    try:
        if args.scheduler:
            make_copies(args.source, root / "files", args.copies)
            report(args.scheduler, args.copies, run_once(root / "files", model, args.scheduler))
            return 0
        rates = {}
        for n_workers in args.workers:
            out = bench_local(root / "files", args.source, args.copies, model, n_workers)
            rates[n_workers] = report(f"{n_workers} worker(s)", args.copies, out)
        base = min(rates)
        for n_workers, rate in rates.items():
            if n_workers != base:
                print(
                    f"ratio {n_workers}-worker/{base}-worker: {rate / rates[base]:.2f} "
                    f"(ideal {n_workers / base:.0f})"
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if hasattr(os, "getloadavg"):
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":  # the guard matters: Dask starts worker processes with spawn
    raise SystemExit(main())
