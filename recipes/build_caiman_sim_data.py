"""Build the model-v2/v3 data: simulated movies run through real CaImAn, every component labelled.

For each preset of ``calcomp_caiman.research.movies.PRESETS``, and for ``train_calibrated_2p``
(model v3: every movie's settings drawn by ``research.calibration.randomised_settings`` around
the statistics fitted to the real training recordings, ``recipes/calibration_2p.json``), and
each seed: simulate a movie,
run batch CNMF and OnACID with ordinary user settings (``calcomp_caiman.research.caiman_runs``),
label every component by matching to the ground truth (``calcomp_caiman.research.gt_labels``)
and write, under ``--out``::

    <preset>/<id>_cnmf.hdf5      CaImAn CNMF result (load_CNMF), all components, estimates.Cn
    <preset>/<id>_onacid.hdf5    CaImAn OnACID result (load_OnlineCNMF), all components, Cn
    <preset>/<id>_labels.npz     labels of both results, ground-truth summary, settings JSON
    MANIFEST.json                provenance: versions, settings, seeds, CaImAn parameters,
                                 which presets are held out
    PROGRESS.txt                 one line per finished movie
    build.log                    (when redirected there)

Keys of ``<id>_labels.npz`` (``M`` = ``cnmf`` or ``onacid``; N components, K GT objects):
``M_labels`` (N,) class codes 1-4 in the order of ``CLASSES`` (neuron, process, noise,
doubtful), ``M_matched`` GT index or -1, ``M_spatial``, ``M_temporal``, ``M_share``,
``M_duplicate_of``, ``M_reason``, ``M_n_components``, ``cnmf_caiman_accepted`` (CaImAn's
``idx_components``; OnACID computes none); ``gt_kind``, ``gt_class``, ``gt_parent`` (K,),
``gt_A_data/indices/indptr/shape`` (sparse GT footprints, Fortran pixel order), ``gt_C``
(K, T) float16 calcium, ``gt_S`` spikes; ``dims``, ``seed``, ``settings_json``,
``user_settings_json`` (gSig, fr, decay_time, K, rf, stride given to CaImAn),
``label_rule_json``, ``generator_version``, ``timings_json``.

Cached: a movie whose outputs all exist is skipped; every file is written to a temporary
name and moved into place (``os.replace``), so an interrupted build resumes cleanly. The
movies themselves are not kept (regenerate them with ``simulate_movie(movie_settings(preset,
seed), seed)``,
same generator version).

HELD-OUT presets (``heldout_*``) are for the final test only: never train, select models or
tune thresholds on them.

Must run with the CaImAn environment's Python (CaImAn 1.12.1)::

    CAIMAN_DATA=/work/main/.venv-caiman/caiman_data nohup nice -n 5 \\
        .venv-caiman/bin/python recipes/build_caiman_sim_data.py --out /work/simdata --jobs 2 \\
        > /work/simdata/build.log 2>&1 &
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread per worker; --jobs sets the parallelism
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

logger = logging.getLogger("build_caiman_sim_data")

SEED_BASE = {  # first seed of each preset; seeds SEED_BASE + i, i < movies per preset
    "train_gcamp6f_standard": 1000,
    "train_gcamp6s_dense": 2000,
    "train_dendrite_rich": 3000,
    "train_gcamp6s_neuropil_zoom15": 4000,
    "train_gcamp6f_lowsnr_axons": 5000,
    "heldout_jgcamp8f_zoom075_dense": 9000,
    "heldout_heavy_neuropil_lowsnr_zoom125": 9500,
    "train_calibrated_2p": 6000,
}
CALIBRATED = "train_calibrated_2p"  # every movie its own settings, drawn around real recordings
CALIBRATION = Path(__file__).with_name("calibration_2p.json")
DEMO_SEED = 777  # the packaged demo file (train_gcamp6f_standard, 96 x 96): never in the build
METHODS = ("cnmf", "onacid")


def user_settings(sim) -> dict:
    """What a CaImAn user would pass for this movie: gSig, fr, decay_time, patches, K."""
    from calcomp_caiman.research.caiman_runs import patch_settings

    s = sim.settings
    g = int(sim.gSig[0])
    area = s.dims[0] * s.dims[1]
    visible = np.mean(s.n_somata) + np.mean(s.n_dendrites) + np.mean(s.n_axons)
    per_patch = visible * (2 * 4 * g + 1) ** 2 / area
    return {
        "gSig": [g, g],
        "fr": float(sim.fr),
        "decay_time": float(sim.decay_time),
        **patch_settings(g, 0.75 * per_patch),
    }


def movie_settings(preset: str, seed: int):
    """The settings of one movie: a preset's, or for ``CALIBRATED`` a draw of
    ``research.calibration.randomised_settings`` (seeded by the movie's seed) from the ranges
    fitted to the non-held-out real recordings (``recipes/calibration_2p.json``)."""
    from calcomp_caiman.research.calibration import randomised_settings
    from calcomp_caiman.research.movies import PRESETS

    if preset != CALIBRATED:
        return PRESETS[preset]
    ranges = json.loads(CALIBRATION.read_text())["ranges"]
    return randomised_settings(ranges, seed, name=CALIBRATED)


def _atomic_npz(path: Path, **arrays) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez_compressed(tmp, **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def read_result(path: Path):
    """A, C, dims and CaImAn's accepted indices of a saved CNMF/OnACID result (h5py only)."""
    import h5py

    from calcomp_caiman.io.caiman_h5 import read_estimates

    result = read_estimates(path)
    with h5py.File(path, "r") as handle:
        C = np.asarray(handle["estimates/C"][()], dtype=np.float64)
    if C.ndim != 2 or C.shape[0] != result.A.shape[1]:  # CaImAn stores None for no components
        C = np.zeros((result.A.shape[1], 0))
    return result, C


def label_arrays(sim, paths: dict) -> dict:
    """Everything that goes in ``<id>_labels.npz``."""
    from calcomp_caiman.research.gt_labels import ground_truth_arrays, label_components
    from calcomp_caiman.research.movies import GENERATOR_VERSION

    arrays = {
        **ground_truth_arrays(sim, generator_version=GENERATOR_VERSION),
        "settings_json": np.array(sim.settings.to_json()),
        "user_settings_json": np.array(json.dumps(user_settings(sim), sort_keys=True)),
    }
    for method, path in paths.items():
        if not path.exists():
            continue
        result, C = read_result(path)
        frames = sim.C.shape[1]
        if result.A.shape[1] and C.shape[1] < frames:
            raise ValueError(f"{path}: C has {C.shape[1]} frames, the movie {frames}")
        C = C[:, :frames] if C.shape[1] else np.zeros((result.A.shape[1], frames))
        out = label_components(result.A, C, result.dims, sim)
        for key, value in out.items():
            arrays[f"{method}_{key}"] = value
        n = result.A.shape[1]
        if result.idx_components is not None:  # CNMF's evaluate_components; OnACID: none
            accepted = np.zeros(n, bool)
            accepted[np.asarray(result.idx_components, int)] = True
            arrays[f"{method}_caiman_accepted"] = accepted
        arrays[f"{method}_n_components"] = np.array(n)
    return arrays


def build_one(preset: str, seed: int, out: str, methods: tuple, refit: bool) -> dict:
    """Simulate, run CaImAn, label one movie; skips what exists. Runs in a worker process."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(processName)s %(name)s: %(message)s"
    )
    logging.getLogger("caiman").setLevel(logging.WARNING)
    from calcomp_caiman.research import caiman_runs
    from calcomp_caiman.research.movies import simulate_movie

    folder = Path(out).resolve() / preset
    folder.mkdir(parents=True, exist_ok=True)
    movie_id = f"s{seed:05d}"
    paths = {m: folder / f"{movie_id}_{m}.hdf5" for m in methods}
    labels_path = folder / f"{movie_id}_labels.npz"
    timings = {}
    t0 = time.perf_counter()
    if labels_path.exists() and all(p.exists() for p in paths.values()):
        return {"preset": preset, "seed": seed, "skipped": True}
    sim = simulate_movie(movie_settings(preset, seed), seed)
    timings["simulate"] = time.perf_counter() - t0
    user = user_settings(sim)
    work = Path(tempfile.mkdtemp(prefix=f".work_{movie_id}_", dir=folder))
    try:
        tif = caiman_runs.write_movie(sim.movie, work / f"{movie_id}.tif")
        Cn = None
        if "cnmf" in paths and not paths["cnmf"].exists():
            cnm, t = caiman_runs.run_cnmf(
                tif, paths["cnmf"], refit=refit, work_dir=work,
                **{k: user[k] for k in ("fr", "decay_time", "gSig", "K", "rf", "stride")},
            )  # fmt: skip
            Cn = cnm.estimates.Cn
            timings["cnmf"] = t["total"]
            del cnm
        if "onacid" in paths and not paths["onacid"].exists():
            if Cn is None:
                Cn = caiman_runs.correlation_image(sim.movie)
            _, t = caiman_runs.run_onacid(
                tif, paths["onacid"], fr=user["fr"], decay_time=user["decay_time"],
                gSig=user["gSig"], Cn=Cn,
            )  # fmt: skip
            timings["onacid"] = t["total"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    t1 = time.perf_counter()
    arrays = label_arrays(sim, paths)
    timings["label"] = time.perf_counter() - t1
    timings["total"] = time.perf_counter() - t0
    arrays["timings_json"] = np.array(json.dumps(timings))
    _atomic_npz(labels_path, **arrays)
    counts = {
        m: np.bincount(arrays[f"{m}_labels"], minlength=5)[1:].tolist()
        for m in methods
        if f"{m}_labels" in arrays
    }
    return {"preset": preset, "seed": seed, "skipped": False, "timings": timings,
            "counts": counts, "user": user}  # fmt: skip


def relabel_one(preset: str, seed: int, out: str) -> dict:
    """Recompute ``<id>_labels.npz`` from the saved CaImAn results (after a change of the label
    rule): the movie is regenerated from its seed, CaImAn is not rerun."""
    from calcomp_caiman.research.movies import simulate_movie

    folder = Path(out).resolve() / preset
    movie_id = f"s{seed:05d}"
    labels_path = folder / f"{movie_id}_labels.npz"
    paths = {m: folder / f"{movie_id}_{m}.hdf5" for m in METHODS}
    paths = {m: p for m, p in paths.items() if p.exists()}
    if not paths:
        return {"preset": preset, "seed": seed, "skipped": True}
    timings = "{}"
    if labels_path.exists():
        with np.load(labels_path) as old:
            timings = str(old["timings_json"]) if "timings_json" in old else timings
    sim = simulate_movie(movie_settings(preset, seed), seed)
    arrays = label_arrays(sim, paths)
    arrays["timings_json"] = np.array(timings)
    _atomic_npz(labels_path, **arrays)
    counts = {m: np.bincount(arrays[f"{m}_labels"], minlength=5)[1:].tolist() for m in paths}
    return {"preset": preset, "seed": seed, "skipped": False, "counts": counts,
            "timings": json.loads(timings)}  # fmt: skip


def completed_movies(out: Path, plan: list) -> dict:
    """Per preset, the planned movies whose labels exist, with the methods that ran."""
    done = {}
    for preset, seed, _ in plan:
        movie_id = f"s{seed:05d}"
        if (out / preset / f"{movie_id}_labels.npz").exists():
            methods = [m for m in METHODS if (out / preset / f"{movie_id}_{m}.hdf5").exists()]
            done.setdefault(preset, []).append({"id": movie_id, "seed": seed, "methods": methods})
    return done


def write_manifest(out: Path, plan: list, args, methods, *, completed=None) -> None:
    from calcomp_caiman._version import __version__
    from calcomp_caiman.research import caiman_runs
    from calcomp_caiman.research.gt_labels import LABEL_RULE
    from calcomp_caiman.research.movies import (
        GENERATOR_VERSION,
        HELD_OUT_PRESETS,
        INDICATORS,
        PRESETS,
    )

    try:
        import caiman

        caiman_version = caiman.__version__
    except ImportError:  # pragma: no cover - the recipe needs CaImAn
        caiman_version = None
    presets = sorted({p for p, _ in plan})
    manifest = {
        "description": "model-v2 data: simulated movies, real CaImAn CNMF/OnACID, GT labels",
        "classes": ["neuron", "process", "noise", "doubtful"],
        "label_codes": {"neuron": 1, "process": 2, "noise": 3, "doubtful": 4},
        "generator_version": GENERATOR_VERSION,
        "calcomp_caiman_version": __version__,
        "caiman_version": caiman_version,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "label_rule": LABEL_RULE,
        "indicators": INDICATORS,
        "methods": list(methods),
        "cnmf_refit": not args.no_refit,
        "caiman_parameters": {
            "cnmf": "caiman_runs.cnmf_params: nb 2, greedy_roi, p 1, merge_thr 0.85, only_init "
            "patches, refit, evaluate_components(min_SNR 2, rval_thr 0.85, use_cnn False); "
            "gSig/fr/decay_time/K/rf/stride per movie in <id>_labels.npz user_settings_json",
            "onacid": "caiman_runs.onacid_params: K 2, nb 2, p 1, init_batch 200, bare init, "
            "epochs 1, sniper_mode False, motion_correct False, min_SNR 1.5, rval_thr 0.9",
            "cnmf_doc": caiman_runs.cnmf_params.__doc__,
        },
        "held_out_presets": sorted(HELD_OUT_PRESETS),
        "held_out_note": "HELD-OUT presets are for the final test only: never train, select "
        "models or tune thresholds on them.",
        "presets": {
            p: {
                "held_out": p != CALIBRATED and PRESETS[p].held_out,
                "settings": (
                    {
                        "randomised_around": str(CALIBRATION.name),
                        "ranges": json.loads(CALIBRATION.read_text())["ranges"],
                    }
                    if p == CALIBRATED
                    else dataclasses.asdict(PRESETS[p])
                ),
                "seeds": sorted(s for q, s in plan if q == p),
            }
            for p in presets
        },
        "demo_seed_excluded": DEMO_SEED,
        "status": "running" if completed is None else "finished",
        "completed": completed,
        "command": sys.argv,
    }
    _atomic_text(out / "MANIFEST.json", json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def demo_settings():
    """The packaged demo movie's settings: ``train_gcamp6f_standard`` at 96 x 96 px, 800 frames,
    object counts scaled to the smaller field."""
    from calcomp_caiman.research.movies import TRAIN_PRESETS

    base = TRAIN_PRESETS["train_gcamp6f_standard"]
    scale = 96 * 96 / (base.dims[0] * base.dims[1])

    def scaled(bounds):
        return tuple(max(1, int(round(b * scale))) for b in bounds)

    return dataclasses.replace(
        base,
        name="demo_gcamp6f_standard_96px",
        dims=(96, 96),
        frames=800,
        **{
            f: scaled(getattr(base, f))
            for f in (
                "n_somata",
                "n_dendrites",
                "n_axons",
                "n_out_of_focus",
                "n_border_cut",
                "n_dim",
            )
        },  # fmt: skip
    )


def build_demo(folder: Path) -> None:
    """Write ``demo_caiman_sim.hdf5`` (CNMF, all components, Cn) and its labels to ``folder``."""
    from calcomp_caiman.research import caiman_runs
    from calcomp_caiman.research.movies import simulate_movie

    logging.getLogger("caiman").setLevel(logging.WARNING)
    folder.mkdir(parents=True, exist_ok=True)
    sim = simulate_movie(demo_settings(), DEMO_SEED)
    user = user_settings(sim)
    out = folder / "demo_caiman_sim.hdf5"
    work = Path(tempfile.mkdtemp(prefix=".work_demo_", dir=folder))
    try:
        tif = caiman_runs.write_movie(sim.movie, work / "demo.tif")
        cnm, timings = caiman_runs.run_cnmf(
            tif, out, work_dir=work,
            **{k: user[k] for k in ("fr", "decay_time", "gSig", "K", "rf", "stride")},
        )  # fmt: skip
        small = work / "small.hdf5"  # float32 and gzip 9, to keep the packaged file small
        caiman_runs.repack_hdf5(out, small, min_bytes=4096, float32=True, level=9)
        os.chmod(small, 0o644)
        os.replace(small, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    arrays = label_arrays(sim, {"cnmf": out})
    arrays.pop("gt_S")
    arrays["timings_json"] = np.array(json.dumps(timings))
    _atomic_npz(folder / "demo_caiman_sim_labels.npz", **arrays)
    logger.info(
        "demo: %d components, labels %s, user settings %s",
        cnm.estimates.A.shape[1], np.bincount(arrays["cnmf_labels"], minlength=5)[1:], user,
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example: CAIMAN_DATA=$PWD/.venv-caiman/caiman_data .venv-caiman/bin/python "
        "recipes/build_caiman_sim_data.py --out /work/simdata --jobs 2 --movies-per-preset 5",
    )
    parser.add_argument("--out", default="/work/simdata", help="output folder")
    parser.add_argument("--jobs", type=int, default=2, help="movies processed in parallel")
    parser.add_argument("--movies-per-preset", type=int, default=5, help="TRAIN presets")
    parser.add_argument("--held-out-movies", type=int, default=3, help="movies per HELD-OUT preset")
    parser.add_argument("--calibrated-movies", type=int, default=12,
                        help=f"movies of {CALIBRATED} (settings drawn around the real recordings)")  # fmt: skip
    parser.add_argument("--presets", nargs="*", default=None, help="subset of presets")
    parser.add_argument(
        "--onacid-every", type=int, default=1,
        help="run OnACID on movies whose index is a multiple of this (1: all)",
    )  # fmt: skip
    parser.add_argument("--no-refit", action="store_true", help="skip cnm.refit")
    parser.add_argument(
        "--quick", action="store_true", help="one movie of the first preset (smoke test)"
    )
    parser.add_argument(
        "--manifest-only", action="store_true",
        help="only rewrite MANIFEST.json from what exists (after an interrupted build)",
    )  # fmt: skip
    parser.add_argument(
        "--relabel", action="store_true",
        help="only recompute the labels of movies already built (after a label-rule change)",
    )  # fmt: skip
    parser.add_argument(
        "--demo", metavar="FOLDER", default=None,
        help="only write the packaged demo file and its labels into FOLDER "
        "(calcomp_caiman/data)",
    )  # fmt: skip
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from calcomp_caiman.research.movies import PRESETS

    if args.demo:
        build_demo(Path(args.demo).resolve())
        return 0
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    presets = args.presets or [*PRESETS, CALIBRATED]
    unknown = sorted(set(presets) - {*PRESETS, CALIBRATED})
    if unknown:
        raise SystemExit(f"unknown presets {unknown}; known: {sorted(PRESETS)}")
    plan = []  # round robin over presets, so a partial build covers every preset
    counts = {
        p: args.calibrated_movies if p == CALIBRATED
        else args.held_out_movies if PRESETS[p].held_out else args.movies_per_preset
        for p in presets
    }  # fmt: skip
    if args.quick:
        presets, counts = presets[:1], {presets[0]: 1}
    for i in range(max(counts.values())):
        for p in presets:
            if i < counts[p]:
                plan.append((p, SEED_BASE[p] + i, i))
    if args.manifest_only:
        write_manifest(
            out, [(p, s) for p, s, _ in plan], args, METHODS, completed=completed_movies(out, plan)
        )
        return 0
    write_manifest(out, [(p, s) for p, s, _ in plan], args, METHODS)
    logger.info("%d movies planned in %s with %d jobs", len(plan), out, args.jobs)
    progress = out / "PROGRESS.txt"
    t0 = time.perf_counter()
    failures = 0
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        if args.relabel:
            futures = {
                pool.submit(relabel_one, p, seed, str(out)): (p, seed) for p, seed, _ in plan
            }
        else:
            futures = {
                pool.submit(
                    build_one, p, seed, str(out),
                    METHODS if i % args.onacid_every == 0 else ("cnmf",), not args.no_refit,
                ): (p, seed)
                for p, seed, i in plan
            }  # fmt: skip
        done = 0
        for future in concurrent.futures.as_completed(futures):
            preset, seed = futures[future]
            done += 1
            try:
                info = future.result()
            except Exception:  # one movie failing must not stop the build; it is reported
                logger.exception("movie %s seed %d failed", preset, seed)
                failures += 1
                line = f"{time.strftime('%H:%M:%S')} {done}/{len(plan)} {preset} s{seed:05d} FAILED"
            else:
                if info["skipped"]:
                    line = f"{time.strftime('%H:%M:%S')} {done}/{len(plan)} {preset} s{seed:05d} cached"
                else:
                    tm = {k: round(v) for k, v in info["timings"].items()}
                    line = (
                        f"{time.strftime('%H:%M:%S')} {done}/{len(plan)} {preset} s{seed:05d} "
                        f"counts[neuron,process,noise,doubtful]={info['counts']} seconds={tm}"
                    )
            logger.info(line)
            with open(progress, "a") as handle:
                handle.write(line + "\n")
    total = time.perf_counter() - t0
    write_manifest(
        out, [(p, s) for p, s, _ in plan], args, METHODS, completed=completed_movies(out, plan)
    )
    with open(progress, "a") as handle:
        handle.write(f"{time.strftime('%H:%M:%S')} DONE {len(plan)} movies, {failures} failed, "
                     f"{total:.0f} s\n")  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
