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
percentile; this extra time is not counted in the frame times).

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
    from calcomp_caiman.online import use_calcomp_screening

    onacid = onacid_for(path, movie, min_num_trial=10)
    calls, sweeps, excluded = [], [], [0.0]
    if crop is not None:
        screen = use_calcomp_screening(onacid, crop=crop)
        predict = screen.predict

        def timed_predict(X, batch_size=None, verbose=0):
            start = time.perf_counter()
            out = predict(X, batch_size=batch_size, verbose=verbose)
            calls.append((len(X), time.perf_counter() - start))
            if len(calls) > _WARMUP_CALLS and len(calls) % _SWEEP_EVERY == 0:
                # the first k of this frame's candidates alone, k = 1 .. len(X); not
                # counted in the frame's time
                sweep_start = time.perf_counter()
                for k in range(1, len(X) + 1):
                    begin = time.perf_counter()
                    predict(X[:k], batch_size=batch_size, verbose=verbose)
                    sweeps.append((k, time.perf_counter() - begin))
                excluded[0] += time.perf_counter() - sweep_start
            return out

        screen.predict = timed_predict  # this instance only
    frames = []
    fit_next = onacid.fit_next

    def timed_fit_next(*args, **kwargs):
        excluded[0] = 0.0
        start = time.perf_counter()
        out = fit_next(*args, **kwargs)
        frames.append(time.perf_counter() - start - excluded[0])
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


def summarise(name, run, baseline_ms):
    frame_ms = 1e3 * float(np.mean(run["frames"]))
    out = {
        "run": name,
        "frames": len(run["frames"]),
        "components": run["components"],
        "frame_ms_mean": frame_ms,
        "frame_ms_median": 1e3 * float(np.median(run["frames"])),
        "ratio_to_baseline": frame_ms / baseline_ms if baseline_ms else 1.0,
    }
    calls = run["calls"][_WARMUP_CALLS:]
    if calls:
        by_size = defaultdict(list)
        for n, seconds in run["sweeps"]:
            by_size[n].append(1e3 * seconds)
        out["predict_ms"] = {
            n: {
                "calls": len(v),
                "median": float(np.median(v)),
                "p95": float(np.percentile(v, 95)),
            }
            for n, v in sorted(by_size.items())
        }
        screen_s = sum(seconds for _, seconds in run["calls"])
        out["predict_ms_per_call"] = 1e3 * float(np.mean([s for _, s in calls]))
        out["share_of_frame_time"] = screen_s / sum(run["frames"])
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
    baseline_ms = 1e3 * float(np.mean(runs["caiman rval (sniper_mode=False)"]["frames"]))
    results = [summarise(name, run, baseline_ms) for name, run in runs.items()]

    print(
        f"\n{args.dims[0]}x{args.dims[1]} px, {args.frames} frames ({movie.source}), "
        f"min_num_trial 10; one process, same movie\n"
    )
    print(
        "| run | components | ms per frame (mean / median) | vs baseline | predict ms per call | share of frame time |"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        per_call = f"{r['predict_ms_per_call']:.2f}" if "predict_ms_per_call" in r else "-"
        share = f"{100 * r['share_of_frame_time']:.0f} %" if "share_of_frame_time" in r else "-"
        print(
            f"| {r['run']} | {r['components']} | {r['frame_ms_mean']:.2f} / "
            f"{r['frame_ms_median']:.2f} | {r['ratio_to_baseline']:.2f}x | {per_call} | {share} |"
        )
    for r in results:
        if "predict_ms" not in r:
            continue
        print(f"\n{r['run']}: predict per call by number of candidates (warm, in the loop)\n")
        print("| candidates | calls | median ms | p95 ms |")
        print("|---|---|---|---|")
        for n, v in r["predict_ms"].items():
            print(f"| {n} | {v['calls']} | {v['median']:.2f} | {v['p95']:.2f} |")
    print(f"\nload average at end: {os.getloadavg()}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"args": str(vars(args)), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
