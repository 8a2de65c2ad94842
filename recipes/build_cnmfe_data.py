"""Build the one-photon data: simulated miniscope movies through real CaImAn CNMF-E, labelled.

For each preset of ``calcomp_caiman.research.onephoton.PRESETS`` and each seed: simulate a
movie, run CaImAn's CNMF-E the way its demo does (``demos/general/demo_pipeline_cnmfE.py`` with
``params_demo_pipeline_cnmfE.json``: rigid motion correction with a high-pass ``gSig_filt``,
``method_init='corr_pnr'``, ``center_psf=True``, ring background ``nb=0``,
``low_rank_background=None``, ``only_init=True`` patches, ``ssub_B=2``, ``tsub=2``,
``merge_thr``, p = 1, then ``evaluate_components`` with ``min_SNR``/``rval_thr`` and
``use_cnn=False``), with per-movie user choices (``gSiz``, ``ring_size_factor``,
``merge_thr``, ``min_corr`` / ``min_pnr``, lowered to what the movie's correlation and PNR
images show where it is dim) drawn from :data:`TRAIN_CHOICES` or :data:`HELD_OUT_CHOICES`;
label every
component by matching to the ground truth (``research.gt_labels``); and write, under
``--out``::

    <preset>/<id>_cnmfe.hdf5     CaImAn CNMF-E result (cnm.save; loads with load_CNMF), every
                                 component kept, CaImAn's idx_components / idx_components_bad,
                                 estimates.Cn = the correlation image of correlation_pnr
    <preset>/<id>_labels.npz     labels, ground-truth summary, settings JSON, timings
    MANIFEST.json                provenance: versions, CaImAn parameters, presets, seeds,
                                 which presets are held out
    PROGRESS.txt                 one line per finished movie (with its timings)
    build.log                    (when redirected there)

Keys of ``<id>_labels.npz`` (N components, K ground-truth objects): ``cnmfe_labels`` (N,) class
codes 1-4 in the order of ``CLASSES`` (neuron, process, noise, doubtful), ``cnmfe_matched``
GT index or -1, ``cnmfe_spatial``, ``cnmfe_temporal``, ``cnmfe_share``, ``cnmfe_duplicate_of``,
``cnmfe_reason``, ``cnmfe_n_components``, ``cnmfe_caiman_accepted`` (CaImAn's
``idx_components``); ``gt_kind``, ``gt_class``, ``gt_parent`` (K,), ``gt_A_data/indices/
indptr/shape`` (sparse GT footprints, Fortran pixel order), ``gt_C`` (K, T) float16 activity,
``gt_S`` spikes; ``dims``, ``seed``, ``settings_json``, ``user_settings_json`` (everything the
user gave CaImAn), ``caiman_shifts`` (T, 2) CaImAn's rigid shifts, ``label_rule_json``,
``generator_version``, ``timings_json``.

Cached and resumable: a movie whose two files exist is skipped; one whose CaImAn result exists
but whose labels do not is only relabelled; every file is written to a temporary name and
moved into place, so an interrupted build resumes cleanly by running the same command again.
Movies are not kept (``simulate_onephoton(PRESETS[preset], seed)`` regenerates them).

HELD-OUT settings (``heldout1p_*``: generator preset and CaImAn user choices together) are for
the final test only: never train, select models or tune thresholds on them.

One CaImAn process at a time (``dview=None``; one thread each for BLAS). Must run with the
CaImAn environment's Python (CaImAn 1.12.1)::

    mkdir -p ~/.cache/calcomp/cnmfe
    PYTHONPATH=$PWD CAIMAN_DATA=$PWD/.venv-caiman/caiman_data nohup nice -n 10 \\
        .venv-caiman/bin/python recipes/build_cnmfe_data.py --out ~/.cache/calcomp/cnmfe \\
        >> ~/.cache/calcomp/cnmfe/build.log 2>&1 &

(``PYTHONPATH``: the checkout's calcomp_caiman, not an older one installed in that
environment.) The same command resumes an interrupted build.
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
    os.environ.setdefault(_var, "1")  # one CaImAn process, one thread
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

logger = logging.getLogger("build_cnmfe_data")

SEED_BASE = {  # first seed of each preset; seeds SEED_BASE + i
    "train1p_gcamp6f_10hz": 21000,
    "train1p_gcamp6s_15hz_dense": 22000,
    "train1p_gcamp6f_20hz_vessels_motion": 23000,
    "train1p_gcamp6f_lowsnr_bright_background": 24000,
    "heldout1p_jgcamp8f_30hz_zoomed": 29000,
    "heldout1p_gcamp6s_12hz_dense_heavy_background": 29500,
}

DEMO = {  # CaImAn 1.12.1 demos/general/params_demo_pipeline_cnmfE.json (what a user copies)
    "tsub": 2,
    "ssub": 1,
    "ssub_B": 2,
    "p": 1,
    "min_SNR": 2.5,
    "rval_thr": 0.85,
    "max_shifts": 5,
}

TRAIN_CHOICES = {
    "min_corr": (0.7, 0.75, 0.8, 0.85),  # lowered to what the images show: seed_thresholds
    "min_pnr": (6.0, 8.0, 10.0, 12.0),
    "seed_percentile": (85.0, 90.0),
    "gsiz_per_gsig": (2, 4),  # gSiz = k gSig + 1: 2 in the demo notebook, 4 in the script
    "ring_size_factor": (1.2, 1.4, 1.6),
    "merge_thr": (0.65, 0.7, 0.8),
}
HELD_OUT_CHOICES = {  # values never drawn for training (gSiz rules are the demo's two)
    "min_corr": (0.78, 0.9),
    "min_pnr": (7.0, 9.0, 14.0),
    "seed_percentile": (88.0,),
    "gsiz_per_gsig": (2, 4),
    "ring_size_factor": (1.8,),
    "merge_thr": (0.75, 0.85),
}


def user_settings(sim) -> dict:
    """What a CNMF-E user sets for this movie: ``gSig`` from the movie (the blurred soma's
    sigma); ``gSiz``, ring, merge threshold, ``min_corr`` / ``min_pnr`` (lowered by
    :func:`seed_thresholds` once the images exist) from the choices (drawn with the movie's
    seed); patches ``rf`` = 3 ``gSiz`` (the notebook: 3-4
    neuron diameters; the demo's 40 at gSiz 13), ``stride`` = ``rf`` / 2 (the demo's 20); the
    demo's other values."""
    choices = HELD_OUT_CHOICES if sim.settings.held_out else TRAIN_CHOICES
    rng = np.random.default_rng([sim.seed, 1])
    drawn = {key: values[int(rng.integers(len(values)))] for key, values in choices.items()}
    g = int(sim.gSig[0])
    gsiz = int(drawn.pop("gsiz_per_gsig") * g + 1)
    rf = int(max(3 * gsiz, 20))
    return {
        "gSig": [g, g],
        "gSiz": [gsiz, gsiz],
        "fr": float(sim.fr),
        "decay_time": float(sim.decay_time),
        "rf": rf,
        "stride": rf // 2,
        **{k: float(v) for k, v in drawn.items()},
        **DEMO,
    }


def cnmfe_params(fname: str, user: dict):
    """CaImAn ``CNMFParams`` for CNMF-E, as ``params_demo_pipeline_cnmfE.json`` with the
    user's values (motion correction rigid, ``gSig_filt`` = ``gSig``)."""
    from caiman.source_extraction.cnmf import params

    g, gsiz = tuple(user["gSig"]), tuple(user["gSiz"])
    shifts = int(user["max_shifts"])
    return params.CNMFParams(
        params_dict={
            "data": {"fnames": [fname], "fr": user["fr"], "decay_time": user["decay_time"]},
            "init": {
                "method_init": "corr_pnr",
                "K": None,
                "gSig": g,
                "gSiz": gsiz,
                "ssub": user["ssub"],
                "tsub": user["tsub"],
                "nb": 0,
                "min_corr": user["min_corr"],
                "min_pnr": user["min_pnr"],
                "normalize_init": False,
                "center_psf": True,
                "ssub_B": user["ssub_B"],
                "ring_size_factor": user["ring_size_factor"],
            },
            "motion": {
                "pw_rigid": False,
                "max_shifts": (shifts, shifts),
                "gSig_filt": g,
                "strides": (48, 48),
                "overlaps": (24, 24),
                "max_deviation_rigid": 3,
                "border_nan": "copy",
            },
            "preprocess": {"p": user["p"]},
            "temporal": {"p": user["p"], "method_deconvolution": "oasis"},
            "spatial": {"update_background_components": True},
            "patch": {
                "rf": user["rf"],
                "stride": user["stride"],
                "only_init": True,
                "nb_patch": 0,
                "low_rank_background": None,
                "del_duplicates": True,
            },
            "merging": {"merge_thr": user["merge_thr"]},
            "quality": {
                "min_SNR": user["min_SNR"],
                "rval_thr": user["rval_thr"],
                "use_cnn": False,
            },
        }
    )


def save_result(cnm, out: Path) -> None:
    """``cnm.save`` to a temporary file, repacked gzip (lossless), moved into ``out``."""
    from calcomp_caiman.io.atomic import atomic_replace
    from calcomp_caiman.research.caiman_runs import repack_hdf5

    fd, raw = tempfile.mkstemp(prefix=f".{out.stem}.raw.", suffix=".hdf5", dir=out.parent)
    os.close(fd)
    try:
        cnm.save(str(Path(raw).resolve()))
        atomic_replace(str(out), lambda tmp: repack_hdf5(raw, tmp), mode=0o644, original=None)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(raw)


def seed_thresholds(correlation: np.ndarray, pnr: np.ndarray, user: dict) -> dict:
    """``min_corr`` / ``min_pnr`` as a user sets them after looking at the correlation and PNR
    images (CaImAn's notebook: ``nb_inspect_correlation_pnr``; Inscopix's guide: lower them
    when cells are missed): the user's demo-like values, lowered to the ``seed_percentile``-th
    of the image's pixels where the movie is dimmer than that, rounded as a user writes them
    (0.05; a whole number, at least 3). On the default preset the 90th percentile is about
    the demo's 0.8 and 10, so only dim or low-SNR movies are lowered."""
    corr = float(np.nanpercentile(correlation, user["seed_percentile"]))
    peak = float(np.nanpercentile(pnr, user["seed_percentile"]))
    return {
        "min_corr": float(min(user["min_corr"], max(0.5, round(corr * 20) / 20))),
        "min_pnr": float(min(user["min_pnr"], max(3, round(peak)))),
    }


def run_cnmfe(tif: Path, out: Path, user: dict):
    """Rigid motion correction, memmap, correlation and PNR images, seed thresholds read off
    them, CNMF-E on patches, ``evaluate_components``, save: every component kept.

    Returns ``(cnm, user, rigid shifts, timings)``; ``user`` with ``min_corr`` / ``min_pnr``.
    """
    import caiman as cm
    from caiman.motion_correction import MotionCorrect
    from caiman.source_extraction.cnmf import cnmf
    from caiman.summary_images import correlation_pnr

    from calcomp_caiman.research.caiman_runs import quiet_caiman

    timings = {}
    t0 = time.perf_counter()
    with quiet_caiman():
        opts = cnmfe_params(str(tif), user)  # min_corr / min_pnr lowered below if need be
        motion = MotionCorrect([str(tif)], dview=None, **opts.get_group("motion"))
        motion.motion_correct(save_movie=True)
        try:  # CaImAn writes its memmaps under CAIMAN_DATA/temp (named after the movie): removed
            # once used
            memmap = cm.save_memmap(
                motion.mmap_file, base_name=f"{tif.stem}_memmap_", order="C", border_to_0=0
            )
        finally:
            for name in motion.mmap_file:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(name)
        try:
            Yr, dims, T = cm.load_memmap(memmap)
            images = Yr.T.reshape((T,) + dims, order="F")
            timings["motion"] = time.perf_counter() - t0
            Cn, pnr = correlation_pnr(images, gSig=user["gSig"][0], swap_dim=False)
            user = {**user, **seed_thresholds(Cn, pnr, user)}
            opts.change_params(
                params_dict={
                    "dims": dims,
                    "border_pix": 0,
                    "min_corr": user["min_corr"],
                    "min_pnr": user["min_pnr"],
                }
            )
            timings["summary_images"] = time.perf_counter() - t0 - sum(timings.values())
            cnm = cnmf.CNMF(n_processes=1, dview=None, params=opts)
            cnm.fit(images)
            timings["cnmfe"] = time.perf_counter() - t0 - sum(timings.values())
            cnm.estimates.evaluate_components(images, cnm.params, dview=None)
            cnm.estimates.Cn = np.nan_to_num(Cn).astype(np.float32)
            timings["evaluate"] = time.perf_counter() - t0 - sum(timings.values())
            del Yr, images
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(memmap)
        save_result(cnm, out)
    timings["total"] = time.perf_counter() - t0
    shifts = np.asarray(motion.shifts_rig, dtype=np.float32)
    return cnm, user, shifts, timings


def _atomic_npz(path: Path, **arrays) -> None:
    from calcomp_caiman.io.atomic import atomic_replace

    def build(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)

    atomic_replace(str(path), build, mode=0o644, original=None)


def read_result(path: Path):
    """A, C, dims and CaImAn's accepted indices of a saved CNMF-E result (h5py only)."""
    import h5py

    from calcomp_caiman.io.caiman_h5 import read_estimates

    result = read_estimates(path)
    with h5py.File(path, "r") as handle:
        C = np.asarray(handle["estimates/C"][()], dtype=np.float64)
    if C.ndim != 2 or C.shape[0] != result.A.shape[1]:  # CaImAn stores None for no components
        C = np.zeros((result.A.shape[1], 0))
    return result, C


def saved_thresholds(path: Path) -> dict:
    """``min_corr`` / ``min_pnr`` of a saved CNMF-E result (its ``params/init``)."""
    import h5py

    with h5py.File(path, "r") as handle:
        return {key: float(handle[f"params/init/{key}"][()]) for key in ("min_corr", "min_pnr")}


def label_arrays(sim, result_path: Path, user: dict) -> dict:
    """Everything that goes in ``<id>_labels.npz``."""
    from calcomp_caiman.research.gt_labels import ground_truth_arrays, label_components
    from calcomp_caiman.research.onephoton import GENERATOR_VERSION

    arrays = {
        **ground_truth_arrays(sim, generator_version=GENERATOR_VERSION),
        "settings_json": np.array(sim.settings.to_json()),
        "user_settings_json": np.array(json.dumps(user, sort_keys=True)),
    }
    result, C = read_result(result_path)
    frames = sim.C.shape[1]
    n = result.A.shape[1]
    if n and C.shape[1] < frames:
        raise ValueError(f"{result_path}: C has {C.shape[1]} frames, the movie {frames}")
    C = C[:, :frames] if C.shape[1] else np.zeros((n, frames))
    for key, value in label_components(result.A, C, result.dims, sim).items():
        arrays[f"cnmfe_{key}"] = value
    accepted = np.zeros(n, bool)
    if result.idx_components is not None:
        accepted[np.asarray(result.idx_components, int)] = True
    arrays["cnmfe_caiman_accepted"] = accepted
    arrays["cnmfe_n_components"] = np.array(n)
    return arrays


def build_one(preset: str, seed: int, out: str, relabel: bool = False) -> dict:
    """Simulate, run CNMF-E, label one movie; skips what exists. Runs in a child process."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("caiman").setLevel(logging.WARNING)
    from calcomp_caiman.research import caiman_runs
    from calcomp_caiman.research.onephoton import PRESETS, simulate_onephoton

    folder = Path(out).resolve() / preset
    folder.mkdir(parents=True, exist_ok=True)
    movie_id = f"s{seed:05d}"
    result_path = folder / f"{movie_id}_cnmfe.hdf5"
    labels_path = folder / f"{movie_id}_labels.npz"
    if labels_path.exists() and result_path.exists() and not relabel:
        return {"preset": preset, "seed": seed, "skipped": True}
    if relabel and not result_path.exists():
        return {"preset": preset, "seed": seed, "skipped": True}
    t0 = time.perf_counter()
    timings, shifts = {}, None
    if relabel and labels_path.exists():
        with np.load(labels_path) as old:
            timings = json.loads(str(old["timings_json"]))
            shifts = old["caiman_shifts"] if "caiman_shifts" in old else None
    sim = simulate_onephoton(PRESETS[preset], seed)
    timings["simulate"] = time.perf_counter() - t0
    user = user_settings(sim)
    if not result_path.exists():
        work = Path(tempfile.mkdtemp(prefix=f".work_{movie_id}_", dir=folder))
        try:
            tif = caiman_runs.write_movie(sim.movie, work / f"{movie_id}.tif")
            cnm, user, shifts, run_timings = run_cnmfe(tif, result_path, user)
            timings.update({f"caiman_{k}": v for k, v in run_timings.items()})
            del cnm
        finally:
            shutil.rmtree(work, ignore_errors=True)
    else:  # the thresholds read off the images are in the saved parameters
        user.update(saved_thresholds(result_path))
    t1 = time.perf_counter()
    arrays = label_arrays(sim, result_path, user)
    timings["label"] = time.perf_counter() - t1
    timings["total"] = time.perf_counter() - t0 + (timings.get("caiman_total", 0) if relabel else 0)
    if shifts is not None:
        arrays["caiman_shifts"] = np.asarray(shifts, np.float32)
    arrays["timings_json"] = np.array(json.dumps(timings))
    _atomic_npz(labels_path, **arrays)
    labels = arrays["cnmfe_labels"]
    accepted = arrays["cnmfe_caiman_accepted"]
    return {
        "preset": preset,
        "seed": seed,
        "skipped": False,
        "timings": timings,
        "counts": np.bincount(labels, minlength=5)[1:].tolist(),
        "caiman_accepted_counts": np.bincount(labels[accepted], minlength=5)[1:].tolist(),
        "somata": sim.gt_kind.count("soma"),
        "min_corr": user["min_corr"],
        "min_pnr": user["min_pnr"],
    }


def plan_movies(presets, movies_per_preset: int, held_out_movies: int) -> list:
    """(preset, seed) pairs, round robin over presets so a partial build covers every one."""
    from calcomp_caiman.research.onephoton import PRESETS

    counts = {p: held_out_movies if PRESETS[p].held_out else movies_per_preset for p in presets}
    plan = []
    for i in range(max(counts.values(), default=0)):
        plan += [(p, SEED_BASE[p] + i) for p in presets if i < counts[p]]
    return plan


def completed_movies(out: Path, plan: list) -> dict:
    """Per preset, the planned movies whose labels exist."""
    done = {}
    for preset, seed in plan:
        if (out / preset / f"s{seed:05d}_labels.npz").exists():
            done.setdefault(preset, []).append(seed)
    return done


def write_manifest(out: Path, plan: list, *, completed=None) -> None:
    from calcomp_caiman._version import __version__
    from calcomp_caiman.io.atomic import atomic_write_text
    from calcomp_caiman.research.gt_labels import LABEL_RULE
    from calcomp_caiman.research.movies import INDICATORS
    from calcomp_caiman.research.onephoton import GENERATOR_VERSION, HELD_OUT_PRESETS, PRESETS

    try:
        import caiman

        caiman_version = caiman.__version__
    except ImportError:  # pragma: no cover - the recipe needs CaImAn
        caiman_version = None
    presets = sorted({p for p, _ in plan})
    manifest = {
        "description": "one-photon data: simulated miniscope movies, real CaImAn CNMF-E, "
        "ground-truth labels of every component",
        "classes": ["neuron", "process", "noise", "doubtful"],
        "label_codes": {"neuron": 1, "process": 2, "noise": 3, "doubtful": 4},
        "generator_version": GENERATOR_VERSION,
        "calcomp_caiman_version": __version__,
        "caiman_version": caiman_version,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "label_rule": LABEL_RULE,
        "indicators": INDICATORS,
        "caiman_parameters": {
            "cnmfe": cnmfe_params.__doc__,
            "demo_values": DEMO,
            "train_choices": TRAIN_CHOICES,
            "held_out_choices": HELD_OUT_CHOICES,
            "per_movie": "user_settings_json in <id>_labels.npz",
            "steps": "MotionCorrect (rigid) -> save_memmap -> CNMF(n_processes=1).fit -> "
            "estimates.evaluate_components (use_cnn False) -> Cn from correlation_pnr -> save",
        },
        "held_out_presets": sorted(HELD_OUT_PRESETS),
        "held_out_note": "HELD-OUT settings (generator preset and CaImAn user choices) are for "
        "the final test only: never train, select models or tune thresholds on them.",
        "presets": {
            p: {
                "held_out": PRESETS[p].held_out,
                "settings": dataclasses.asdict(PRESETS[p]),
                "seeds": sorted(s for q, s in plan if q == p),
            }
            for p in presets
        },
        "status": "running" if completed is None else "finished",
        "completed": completed,
        "command": sys.argv,
    }
    atomic_write_text(out / "MANIFEST.json", json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example: PYTHONPATH=$PWD CAIMAN_DATA=$PWD/.venv-caiman/caiman_data nice "
        ".venv-caiman/bin/python "
        "recipes/build_cnmfe_data.py --out ~/.cache/calcomp/cnmfe --movies-per-preset 8",
    )
    parser.add_argument(
        "--out", default=str(Path.home() / ".cache" / "calcomp" / "cnmfe"), help="output folder"
    )
    parser.add_argument("--movies-per-preset", type=int, default=8, help="TRAIN presets")
    parser.add_argument("--held-out-movies", type=int, default=4, help="per HELD-OUT preset")
    parser.add_argument("--presets", nargs="*", default=None, help="subset of presets")
    parser.add_argument("--quick", action="store_true", help="one movie of the first preset")
    parser.add_argument(
        "--relabel", action="store_true",
        help="only recompute the labels of movies already run (after a label-rule change)",
    )  # fmt: skip
    parser.add_argument(
        "--manifest-only", action="store_true", help="only rewrite MANIFEST.json from what exists"
    )
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        from calcomp_caiman.research.onephoton import PRESETS
    except ImportError as err:
        raise SystemExit(
            f"build_cnmfe_data: this Python's calcomp_caiman has no research.onephoton ({err}); "
            "run it from the repository with PYTHONPATH=$PWD, or pip install the checkout"
        ) from err

    out = Path(args.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    presets = args.presets or list(PRESETS)
    unknown = sorted(set(presets) - set(PRESETS))
    if unknown:
        raise SystemExit(f"unknown presets {unknown}; known: {sorted(PRESETS)}")
    plan = plan_movies(presets, args.movies_per_preset, args.held_out_movies)
    if args.quick:
        plan = plan[:1]
    if args.manifest_only:
        write_manifest(out, plan, completed=completed_movies(out, plan))
        return 0
    write_manifest(out, plan)
    logger.info("%d movies planned in %s, one CaImAn process", len(plan), out)
    progress = out / "PROGRESS.txt"
    t0 = time.perf_counter()
    failures = 0
    context = multiprocessing.get_context("spawn")
    # one movie per child process: CaImAn's memory is returned after each movie
    for done, (preset, seed) in enumerate(plan, start=1):
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            future = pool.submit(build_one, preset, seed, str(out), args.relabel)
            try:
                info = future.result()
            except Exception:  # one movie failing must not stop the build; it is reported
                logger.exception("movie %s seed %d failed", preset, seed)
                failures += 1
                info = None
        # the time the movie finished
        stamp = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {done}/{len(plan)} {preset} s{seed:05d}"
        if info is None:
            line = f"{stamp} FAILED"
        elif info["skipped"]:
            line = f"{stamp} cached"
        else:
            seconds = {k: round(v) for k, v in info["timings"].items()}
            line = (
                f"{stamp} somata={info['somata']} labels[neuron,process,noise,doubtful]="
                f"{info['counts']} caiman_accepted={info['caiman_accepted_counts']} "
                f"min_corr={info['min_corr']} min_pnr={info['min_pnr']} seconds={seconds}"
            )
        logger.info(line)
        with open(progress, "a") as handle:
            handle.write(line + "\n")
    total = time.perf_counter() - t0
    write_manifest(out, plan, completed=completed_movies(out, plan))
    with open(progress, "a") as handle:
        handle.write(
            f"{time.strftime('%Y-%m-%d %H:%M:%S')} DONE {len(plan)} movies, {failures} failed, "
            f"{total:.0f} s\n"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
