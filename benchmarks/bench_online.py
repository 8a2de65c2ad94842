"""Latency of our OnACID candidate screen, measured inside a running OnACID loop.

One seeded simulated movie (``_online_movies.simulated_movie``) runs through real CaImAn
OnACID ``fit_online`` three times in this process:

1. baseline: ``sniper_mode=False`` (CaImAn's correlation test), every ``fit_next`` timed;
2. ``use_calcomp_screening(onacid)`` (our own crop, the default), every ``fit_next`` and
   every ``predict`` call CaImAn makes timed;
3. the same with ``crop="remap"`` (CaImAn's crop only, no residual-buffer work).

``min_num_trial=10``: CaImAn passes up to 10 candidates per call. Reported: the mean
time of the real ``predict`` calls and their share of OnACID's per-frame time; the
per-frame time of each run against the baseline (ratio), all from the same process; and
the per-call time by number of candidates: on every 10th warm call, the screen is also
called on the first 1, 2, ..., n of that frame's candidates alone (median and 95th
percentile; this extra time is not counted in the frame times). Every time is given as
wall-clock time and, in brackets, as CPU time of the thread running OnACID
(``time.thread_time``; everything here runs in that thread), which other processes on a
busy machine inflate much less.

Examples
--------
    CAIMAN_DATA=... .venv-caiman/bin/python benchmarks/bench_online.py
    .venv-caiman/bin/python benchmarks/bench_online.py --dims 256 256 --frames 500 --json out.json

Numbers depend on the machine and on whatever else runs on it; the load average is
printed at the start and the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _online_movies import onacid_for, simulated_movie, write_tif  # noqa: E402

_WARMUP_CALLS = 5
_SWEEP_EVERY = 10  # every 10th call, also time the first 1, 2, ... candidates alone


def timed_run(path, movie, crop):
    """fit_online with every fit_next (and predict, when screened) timed."""
    from calcomp_caiman.integrations.onacid import use_calcomp_screening

    onacid = onacid_for(path, movie, min_num_trial=10)
    calls, sweeps, excluded = [], [], [0.0, 0.0]
    if crop is not None:
        screen = use_calcomp_screening(onacid, crop=crop)
        predict = screen.predict

        def timed_predict(X, batch_size=None, verbose=0):
            start, cpu = time.perf_counter(), time.thread_time()
            out = predict(X, batch_size=batch_size, verbose=verbose)
            calls.append((len(X), time.perf_counter() - start, time.thread_time() - cpu))
            if len(calls) > _WARMUP_CALLS and len(calls) % _SWEEP_EVERY == 0:
                # the first k of this frame's candidates alone, k = 1 .. len(X); not
                # counted in the frame's time
                sweep_start, sweep_cpu = time.perf_counter(), time.thread_time()
                for k in range(1, len(X) + 1):
                    begin, cpu = time.perf_counter(), time.thread_time()
                    predict(X[:k], batch_size=batch_size, verbose=verbose)
                    sweeps.append((k, time.perf_counter() - begin, time.thread_time() - cpu))
                excluded[0] += time.perf_counter() - sweep_start
                excluded[1] += time.thread_time() - sweep_cpu
            return out

        screen.predict = timed_predict  # this instance only
    frames = []
    fit_next = onacid.fit_next

    def timed_fit_next(*args, **kwargs):
        excluded[0] = excluded[1] = 0.0
        start, cpu = time.perf_counter(), time.thread_time()
        out = fit_next(*args, **kwargs)
        frames.append(
            (time.perf_counter() - start - excluded[0], time.thread_time() - cpu - excluded[1])
        )
        return out

    onacid.fit_next = timed_fit_next  # instance attribute: fit_online calls it per frame
    start = time.perf_counter()
    onacid.fit_online()
    total = time.perf_counter() - start
    return {
        "frames": frames,
        "calls": calls,
        "sweeps": sweeps,
        "total_s": total,
        "components": int(onacid.estimates.A.shape[1]),
    }


def summarise(name, run, baseline):
    frames = np.asarray(run["frames"])  # (frames, 2): wall, CPU seconds
    out = {
        "run": name,
        "frames": len(frames),
        "components": run["components"],
        "frame_ms": 1e3 * frames.mean(axis=0),  # wall, CPU
        "frame_ms_median": 1e3 * float(np.median(frames[:, 0])),
        "ratio_to_baseline": (frames.mean(axis=0) / baseline) if baseline is not None else None,
    }
    calls = np.asarray(run["calls"][_WARMUP_CALLS:]).reshape(-1, 3)
    if len(calls):
        by_size = defaultdict(list)
        for n, wall, cpu in run["sweeps"]:
            by_size[int(n)].append((1e3 * wall, 1e3 * cpu))
        out["predict_ms"] = {
            n: {
                "calls": len(v),
                "median": float(np.median(np.asarray(v)[:, 0])),
                "p95": float(np.percentile(np.asarray(v)[:, 0], 95)),
                "cpu_median": float(np.median(np.asarray(v)[:, 1])),
            }
            for n, v in sorted(by_size.items())
        }
        everything = np.asarray(run["calls"]).reshape(-1, 3)
        out["candidates_per_call"] = float(calls[:, 0].mean())
        out["predict_ms_per_call"] = 1e3 * calls[:, 1:].mean(axis=0)  # wall, CPU
        out["share_of_frame_time"] = everything[:, 1:].sum(axis=0) / frames.sum(axis=0)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs=2, default=(128, 128))
    parser.add_argument("--frames", type=int, default=700)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--builtin", action="store_true", help="use the built-in simulator")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    print(f"load average at start: {os.getloadavg()}", file=sys.stderr)

    movie = simulated_movie(args.seed, tuple(args.dims), args.frames, builtin=args.builtin)
    with tempfile.TemporaryDirectory() as folder:
        path = write_tif(movie, Path(folder), "movie")
        runs = {
            "caiman rval (sniper_mode=False)": timed_run(path, movie, None),
            "calcomp (own crop)": timed_run(path, movie, "calcomp"),
            "calcomp remap": timed_run(path, movie, "remap"),
        }
    baseline = np.asarray(runs["caiman rval (sniper_mode=False)"]["frames"]).mean(axis=0)
    results = [summarise(name, run, baseline) for name, run in runs.items()]

    print(
        f"\n{args.dims[0]}x{args.dims[1]} px, {args.frames} frames ({movie.source}), "
        f"min_num_trial 10; one process, same movie; wall (CPU of the OnACID thread)\n"
    )
    print(
        "| run | components | ms per frame | vs baseline | candidates per call "
        "| predict ms per call | share of frame time |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        wall, cpu = r["frame_ms"]
        ratio = "{:.2f}x ({:.2f}x)".format(*r["ratio_to_baseline"])
        if "predict_ms_per_call" in r:
            per_call = "{:.2f} ({:.2f})".format(*r["predict_ms_per_call"])
            share = "{:.0f} % ({:.0f} %)".format(*(100 * r["share_of_frame_time"]))
            candidates = f"{r['candidates_per_call']:.1f}"
        else:
            per_call = share = candidates = "-"
        print(
            f"| {r['run']} | {r['components']} | {wall:.2f} ({cpu:.2f}) | {ratio} | "
            f"{candidates} | {per_call} | {share} |"
        )
    for r in results:
        if "predict_ms" not in r:
            continue
        print(f"\n{r['run']}: predict per call by number of candidates (warm, in the loop)\n")
        print("| candidates | calls | median ms | p95 ms | median CPU ms |")
        print("|---|---|---|---|---|")
        for n, v in r["predict_ms"].items():
            cells = (v["calls"], f"{v['median']:.2f}", f"{v['p95']:.2f}", f"{v['cpu_median']:.2f}")
            print(f"| {n} | " + " | ".join(map(str, cells)) + " |")
    print(f"\nload average at end: {os.getloadavg()}", file=sys.stderr)
    if args.json:
        args.json.write_text(
            json.dumps({"args": str(vars(args)), "results": results}, indent=2, default=list)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
