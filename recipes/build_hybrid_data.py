"""Build the hybrid data: simulated sources injected into real recordings, run through real CaImAn.

For each field (a crop and frame window of a real recording, ``FIELDS``) and each seed: inject
simulated sources of every kind with known footprints and traces (``calcomp_caiman.research.
hybrid.make_hybrid``), motion-correct when the recording moves (more than 1 px), run batch CNMF and
OnACID with ordinary user settings (``calcomp_caiman.research.caiman_runs``), label every
component by the matching rule (``calcomp_caiman.research.gt_labels``; components on the
recording's own cells are ``unlabelled``, code 0) and write, under ``--out``::

    README.md                     recordings, licences, held-out split, keys of the files
    MANIFEST.json                 provenance: versions, settings, plan, CaImAn parameters
    calibration.json              statistics fitted on every recording + randomisation ranges
    PROGRESS.txt                  one line per finished movie
    build.log                     the log (when started as below)
    <recording>/provenance.json   where the recording came from, its licence, its SHA-256
    <recording>/<field>_analysis.npz   the field's noise fit, shifts and own-activity mask
    <recording>/<field>_s<seed>_cnmf.hdf5     CaImAn CNMF result (load_CNMF), all components, Cn
    <recording>/<field>_s<seed>_onacid.hdf5   CaImAn OnACID result, all components, Cn
    <recording>/<field>_s<seed>_labels.npz    labels of both, ground truth, settings

Keys of ``*_labels.npz`` are those of ``recipes/build_caiman_sim_data.py`` (``M_labels`` with
``M`` = ``cnmf`` / ``onacid``, ``M_matched``, ``M_spatial``, ``M_temporal``, ``M_share``,
``M_duplicate_of``, ``M_reason``, ``M_n_components``, ``cnmf_caiman_accepted``; ``gt_kind``,
``gt_class``, ``gt_parent``, ``gt_A_*``, ``gt_C``, ``gt_S``; ``dims``, ``seed``,
``user_settings_json``, ``label_rule_json``, ``generator_version``, ``timings_json``) plus
``M_recording_share`` (share of the component's energy on the recording's own active pixels),
``activity`` (rows, cols) bool, ``recording``, ``field``, ``held_out``, ``frame_index``,
``hybrid_json`` (everything drawn), ``motion_corrected`` and ``mc_shifts``. ``M_labels`` holds
class codes 1-4 (neuron, process, noise, doubtful) and **0 for unlabelled** components.

HELD OUT: every hybrid of ``optinist_mouse2p`` (the movie behind the shared ``real_mouse2p_*``
CaImAn results) is for the report only: never train, select models or tune thresholds on it.

Cached and resumable: a movie whose outputs all exist is skipped (``--relabel`` recomputes
the labels of built movies after a change of the label rule, without CaImAn); every file is written to a
temporary name and moved into place. The movies are never kept (regenerate one with
``make_hybrid`` from the cached recording, its field and seed). Runs with the CaImAn
environment's Python; the GitHub recordings come from local copies (``--allen-source``,
``--calscipy-source``: a git mirror, a checkout or the files)::

    mkdir -p ~/.cache/calcomp/hybrid && CAIMAN_DATA=/work/main/.venv-caiman/caiman_data \\
    nohup nice -n 10 .venv-caiman/bin/python recipes/build_hybrid_data.py --jobs 2 \\
        --allen-source /work/.mirror/AllenInstitute+ophys_etl_pipelines/repo \\
        --calscipy-source /work/.mirror/darikoneil+CalSciPy/repo \\
        >> ~/.cache/calcomp/hybrid/build.log 2>&1 &
"""

from __future__ import annotations

import argparse
import concurrent.futures
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
# this checkout's package first (the CaImAn environment may hold an older installed copy)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

logger = logging.getLogger("build_hybrid_data")

METHODS = ("cnmf", "onacid")
MOTION_CORRECT_PX = 1.0  # motion-correct a field whose estimated motion exceeds this

# recording: (first seed, frames of each hybrid, [(field id, (t0, t1), (r0, c0, rows, cols))])
FIELDS = {
    "optinist_mouse2p": (
        20000,
        1000,
        [("w0", (0, 1000), (0, 0, 128, 128)), ("w1", (1000, 2000), (0, 0, 128, 128))],
    ),
    "allen_movie_100": (21000, 500, [("full", (0, 100), (0, 0, 100, 100))]),
    "allen_792757260": (22000, 500, [("full", (0, 100), (0, 0, 100, 100))]),
    "calscipy_bruker": (
        23000,
        500,
        [(f"r{r}c{c}", (0, 99), (128 * r, 128 * c, 128, 128)) for r in range(4) for c in range(4)],
    ),
}
SEEDS_PER_FIELD = {
    "optinist_mouse2p": 6,
    "allen_movie_100": 8,
    "allen_792757260": 8,
    "calscipy_bruker": 2,
}


def _atomic_npz(path: Path, **arrays) -> None:
    from calcomp_caiman.io.atomic import atomic_replace

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)

    atomic_replace(str(path), write, mode=0o644, original=None)


def _write_text(path: Path, text: str) -> None:
    from calcomp_caiman.io.atomic import atomic_write_text

    atomic_write_text(str(path), text)


def finite_json(value):
    """``value`` with every NaN or infinity replaced by None (strict JSON)."""
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(item) for item in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def read_components(path: Path):
    """``A`` (csc), ``C``, ``dims`` and CaImAn's accepted indices (or None) of a saved result."""
    import h5py
    import scipy.sparse

    with h5py.File(path, "r") as handle:
        est = handle["estimates"]
        dims = tuple(int(d) for d in np.asarray(est["dims"][()]).ravel())
        group = est["A"]
        if isinstance(group, h5py.Group):
            A = scipy.sparse.csc_matrix(
                (group["data"][()], group["indices"][()], group["indptr"][()]),
                shape=tuple(int(v) for v in group["shape"][()]),
            )
        else:  # CaImAn stores a dense A (or None) in some files
            value = group[()]
            A = scipy.sparse.csc_matrix(
                value if getattr(value, "ndim", 0) == 2 else np.zeros((dims[0] * dims[1], 0))
            )
        C = est["C"][()]
        C = np.asarray(C, float) if getattr(C, "ndim", 0) == 2 else np.zeros((A.shape[1], 0))
        accepted = est["idx_components"][()] if "idx_components" in est else None
        accepted = np.asarray(accepted, int) if getattr(accepted, "ndim", 0) == 1 else None
    return A, C, dims, accepted


def field_analysis(recording: str, field: tuple, cache: Path, out: Path):
    """The crop's analysis (``make_hybrid``'s noise, shifts, activity), cached in
    ``<recording>/<field>_analysis.npz``; returns ``(crop, analysis)``."""
    from calcomp_caiman.research.hybrid import RecordingAnalysis, analyse_recording
    from calcomp_caiman.research.recordings import load_recording

    field_id, (t0, t1), (r0, c0, rows, cols) = field
    rec = load_recording(recording, cache)
    crop = np.asarray(rec.movie[t0:t1, r0 : r0 + rows, c0 : c0 + cols], dtype=np.float32)
    path = out / recording / f"{field_id}_analysis.npz"
    if path.exists():
        with np.load(path) as saved:
            analysis = RecordingAnalysis(
                noise=json.loads(str(saved["noise_json"])),
                noise_correlation=float(saved["noise_correlation"]),
                shifts=saved["shifts"],
                activity=saved["activity"],
            )
        return crop, analysis
    analysis = analyse_recording(crop, soma_radius_px=rec.source.soma_radius_px)
    analysis = analysis._replace(shifts=analysis.shifts.astype(np.float32))  # as saved
    _atomic_npz(
        path,
        noise_json=np.array(json.dumps(analysis.noise)),
        noise_correlation=np.array(analysis.noise_correlation),
        shifts=analysis.shifts.astype(np.float32),
        activity=analysis.activity,
    )
    return crop, analysis


def user_settings(hybrid, spec) -> dict:
    """What a CaImAn user of this recording would pass: gSig, fr, decay_time, patches, K.

    Expected cells per patch: the injected somata and processes plus the recording's own
    active structure counted in somata (its active area over a dilated soma's)."""
    from calcomp_caiman.research.caiman_runs import patch_settings

    g = int(hybrid.gSig[0])
    area = hybrid.dims[0] * hybrid.dims[1]
    injected = sum(k not in ("neuropil_cloud", "speckle", "motion_edge") for k in hybrid.gt_kind)
    own = hybrid.activity.sum() / (np.pi * (spec.soma_radius_px + 2) ** 2)
    per_patch = (injected + own) * (2 * 4 * g + 1) ** 2 / area
    return {
        "gSig": [g, g],
        "fr": float(hybrid.fr),
        "decay_time": float(hybrid.decay_time),
        **patch_settings(g, 0.75 * per_patch),
    }


def label_arrays(hybrid, paths: dict, frames: int) -> dict:
    """Everything that goes in ``<id>_labels.npz`` (but timings)."""
    from calcomp_caiman.research.gt_labels import ground_truth_arrays, label_components
    from calcomp_caiman.research.hybrid import HYBRID_GENERATOR_VERSION

    arrays = {
        **ground_truth_arrays(hybrid, generator_version=HYBRID_GENERATOR_VERSION),
        "activity": hybrid.activity,
        "frame_index": hybrid.frame_index.astype(np.int32),
        "hybrid_json": np.array(hybrid.settings_json),
    }
    for method, path in paths.items():
        if not path.exists():
            continue
        A, C, dims, accepted = read_components(path)
        if A.shape[1] and C.shape[1] < frames:
            raise ValueError(f"{path}: C has {C.shape[1]} frames, the movie {frames}")
        C = C[:, :frames] if C.shape[1] else np.zeros((A.shape[1], frames))
        out = label_components(A, C, dims, hybrid, recording_activity=hybrid.activity)
        for key, value in out.items():
            arrays[f"{method}_{key}"] = value
        if accepted is not None:
            flags = np.zeros(A.shape[1], bool)
            flags[accepted] = True
            arrays[f"{method}_caiman_accepted"] = flags
        arrays[f"{method}_n_components"] = np.array(A.shape[1])
    return arrays


def movie_id(field_id: str, seed: int) -> str:
    return f"{field_id}_s{seed:05d}"


def build_one(recording: str, field: tuple, seed: int, frames: int, out: str, cache: str,
              methods: tuple) -> dict:  # fmt: skip
    """Inject, motion-correct if needed, run CaImAn, label one hybrid; skips what exists."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(processName)s %(name)s: %(message)s"
    )
    logging.getLogger("caiman").setLevel(logging.WARNING)
    from calcomp_caiman.research import caiman_runs
    from calcomp_caiman.research.hybrid import make_hybrid
    from calcomp_caiman.research.recordings import RECORDINGS

    spec = RECORDINGS[recording]
    out_path = Path(out)
    folder = out_path / recording
    folder.mkdir(parents=True, exist_ok=True)
    name = movie_id(field[0], seed)
    paths = {m: folder / f"{name}_{m}.hdf5" for m in methods}
    labels_path = folder / f"{name}_labels.npz"
    if labels_path.exists() and all(p.exists() for p in paths.values()):
        return {"recording": recording, "id": name, "skipped": True}
    for stale in [*folder.glob(f".work_{name}_*"), *folder.glob(f".{name}_*.hdf5")]:
        if stale.is_dir():  # left by an interrupted build of this movie
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    timings = {}
    t0 = time.perf_counter()
    crop, analysis = field_analysis(recording, field, Path(cache), out_path)
    timings["analysis"] = time.perf_counter() - t0
    hybrid = make_hybrid(crop, fr=spec.fr, soma_radius_px=spec.soma_radius_px, seed=seed,
                         frames=frames, analysis=analysis)  # fmt: skip
    timings["inject"] = time.perf_counter() - t0 - timings["analysis"]
    user = user_settings(hybrid, spec)
    motion = float(np.abs(analysis.shifts).max())
    mc_shifts = np.zeros((0, 2), np.float32)
    work = Path(tempfile.mkdtemp(prefix=f".work_{name}_", dir=folder))
    try:
        tif = caiman_runs.write_movie(hybrid.movie, work / f"{name}.tif")
        if motion > MOTION_CORRECT_PX:
            tif, mc_shifts, seconds = caiman_runs.motion_correct(tif, work / f"{name}_mc.tif")
            timings["motion_correct"] = seconds
        Cn = None
        if "cnmf" in paths and not paths["cnmf"].exists():
            cnm, t = caiman_runs.run_cnmf(
                tif, paths["cnmf"], work_dir=work,
                **{k: user[k] for k in ("fr", "decay_time", "gSig", "K", "rf", "stride")},
            )  # fmt: skip
            Cn = cnm.estimates.Cn
            timings["cnmf"] = t["total"]
            del cnm
        if "onacid" in paths and not paths["onacid"].exists():
            if Cn is None:
                Cn = caiman_runs.correlation_image(hybrid.movie)
            _, t = caiman_runs.run_onacid(
                tif, paths["onacid"], fr=user["fr"], decay_time=user["decay_time"],
                gSig=user["gSig"], Cn=Cn, init_batch=min(200, frames // 3),
            )  # fmt: skip
            timings["onacid"] = t["total"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    t1 = time.perf_counter()
    arrays = label_arrays(hybrid, paths, frames)
    timings["label"] = time.perf_counter() - t1
    timings["total"] = time.perf_counter() - t0
    arrays.update(
        recording=np.array(recording),
        field=np.array(field[0]),
        held_out=np.array(spec.held_out),
        user_settings_json=np.array(json.dumps(user, sort_keys=True)),
        motion_corrected=np.array(motion > MOTION_CORRECT_PX),
        mc_shifts=mc_shifts.astype(np.float32),
        timings_json=np.array(json.dumps(timings)),
    )
    _atomic_npz(labels_path, **arrays)
    counts = {
        m: np.bincount(arrays[f"{m}_labels"], minlength=5).tolist()
        for m in methods
        if f"{m}_labels" in arrays
    }
    return {"recording": recording, "id": name, "skipped": False, "timings": timings,
            "counts": counts, "user": user}  # fmt: skip


KEPT_ON_RELABEL = ("recording", "field", "held_out", "user_settings_json", "motion_corrected",
                   "mc_shifts", "timings_json")  # fmt: skip


def relabel_one(recording: str, field: tuple, seed: int, frames: int, out: str, cache: str) -> dict:
    """Recompute ``<id>_labels.npz`` from the saved CaImAn results after a change of the label
    rule: the hybrid's ground truth is regenerated from its seed, CaImAn is not rerun."""
    from calcomp_caiman.research.hybrid import make_hybrid
    from calcomp_caiman.research.recordings import RECORDINGS

    spec = RECORDINGS[recording]
    folder = Path(out) / recording
    name = movie_id(field[0], seed)
    labels_path = folder / f"{name}_labels.npz"
    paths = {m: folder / f"{name}_{m}.hdf5" for m in METHODS}
    paths = {m: p for m, p in paths.items() if p.exists()}
    if not labels_path.exists() or not paths:
        return {"recording": recording, "id": name, "skipped": True}
    with np.load(labels_path) as old:
        kept = {key: old[key] for key in KEPT_ON_RELABEL if key in old}
    crop, analysis = field_analysis(recording, field, Path(cache), Path(out))
    hybrid = make_hybrid(crop, fr=spec.fr, soma_radius_px=spec.soma_radius_px, seed=seed,
                         frames=frames, analysis=analysis)  # fmt: skip
    arrays = {**label_arrays(hybrid, paths, frames), **kept}
    _atomic_npz(labels_path, **arrays)
    counts = {m: np.bincount(arrays[f"{m}_labels"], minlength=5).tolist() for m in paths}
    return {"recording": recording, "id": name, "skipped": False, "counts": counts,
            "timings": json.loads(str(kept.get("timings_json", "{}")))}  # fmt: skip


def plan_movies(recordings, seeds_scale: float = 1.0) -> list:
    """(recording, field, seed, frames) of every movie, round robin over recordings and fields
    so that a partial build covers all of them."""
    from calcomp_caiman.research.recordings import RECORDINGS

    queues = []
    for recording in recordings:
        if RECORDINGS[recording].role == "calibration":
            continue
        base, frames, fields = FIELDS[recording]
        n = max(1, int(round(SEEDS_PER_FIELD[recording] * seeds_scale)))
        queue = [
            (recording, field, base + 100 * f + i, frames)
            for i in range(n)
            for f, field in enumerate(fields)
        ]
        queues.append(queue)
    plan = []
    for i in range(max((len(q) for q in queues), default=0)):
        plan.extend(q[i] for q in queues if i < len(q))
    return plan


def fetch_all(args, cache: Path, names) -> None:
    from calcomp_caiman.research.recordings import RECORDINGS, fetch_recording

    sources = {
        "optinist_mouse2p": args.optinist_source,
        "sima_example": args.sima_source,
        "allen_movie_100": args.allen_source,
        "allen_792757260": args.allen_source,
        "calscipy_bruker": args.calscipy_source,
    }
    for name in names:
        fetch_recording(name, cache, source=sources.get(name))
        logger.info("%s cached (%s)", name, RECORDINGS[name].licence)


def calibrate(cache: Path, out: Path, names) -> dict:
    """Fit every recording's statistics; ranges from the training recordings only."""
    from calcomp_caiman.research.calibration import (
        CALIBRATION_VERSION,
        fit_recording,
        randomisation_ranges,
        statistics_table,
    )
    from calcomp_caiman.research.recordings import load_recording

    path = out / "calibration.json"
    if path.exists():
        return json.loads(path.read_text())
    statistics = {}
    for name in names:
        rec = load_recording(name, cache)
        stats = fit_recording(rec.movie, fr=rec.source.fr, soma_radius_px=rec.source.soma_radius_px)
        stats["role"] = rec.source.role
        statistics[name] = stats
        logger.info("calibrated on %s", name)
    training = {n: s for n, s in statistics.items() if s["role"] != "held_out"}
    held_out = [n for n, s in statistics.items() if s["role"] == "held_out"]
    record = {
        "calibration_version": CALIBRATION_VERSION,
        "note": "ranges are fitted on the recordings whose role is not held_out",
        "ranges": randomisation_ranges(training),
        "table": statistics_table(statistics, held_out=held_out),
        "statistics": statistics,
    }
    _write_text(path, json.dumps(finite_json(record), indent=1, allow_nan=False) + "\n")
    return record


def write_readme(out: Path, names, calibration: dict) -> None:
    from calcomp_caiman.research.recordings import provenance_markdown

    text = f"""# Hybrid data (calcomp_caiman, issue 20)

Simulated sources injected into real two-photon recordings, run through real CaImAn 1.12.1
(CNMF and OnACID, ordinary settings), every component labelled by the matching rule. Built by
`recipes/build_hybrid_data.py` (see its docstring for the file layout and keys). The movies
and the recordings themselves are NOT here and must not be redistributed with these files;
each derived file carries the licence of its recording:

{provenance_markdown(names)}

**Held out**: every hybrid of `optinist_mouse2p` (the movie behind the shared
`real_mouse2p_*` CaImAn results). Use it for the report only: never train, select models or
tune thresholds on it. `sima_example` (20 frames) is used for calibration only.

Labels: 1 neuron, 2 process, 3 noise, 4 doubtful, **0 unlabelled** (a component on the
recording's own cells: nobody labelled those; leave it out of training).

## Fitted statistics of the recordings (`calibration.json`)

{calibration["table"]}
"""
    _write_text(out / "README.md", text)


def write_manifest(out: Path, plan: list, args, *, status: str) -> None:
    from calcomp_caiman._version import __version__
    from calcomp_caiman.research.gt_labels import LABEL_RULE
    from calcomp_caiman.research.hybrid import (
        HYBRID_GENERATOR_VERSION,
        HYBRID_KIND_CLASS,
        HYBRID_SETTINGS,
    )
    from calcomp_caiman.research.movies import GENERATOR_VERSION
    from calcomp_caiman.research.recordings import RECORDINGS

    try:
        import caiman

        caiman_version = caiman.__version__
    except ImportError:  # pragma: no cover - the recipe needs CaImAn
        caiman_version = None
    done = []
    for recording, field, seed, _ in plan:
        name = movie_id(field[0], seed)
        if (out / recording / f"{name}_labels.npz").exists():
            done.append(f"{recording}/{name}")
    manifest = {
        "description": "hybrid data: simulated sources in real recordings, real CaImAn "
        "CNMF/OnACID, labels by the matching rule (0 = unlabelled)",
        "label_codes": {"unlabelled": 0, "neuron": 1, "process": 2, "noise": 3, "doubtful": 4},
        "hybrid_generator_version": HYBRID_GENERATOR_VERSION,
        "simulator_generator_version": GENERATOR_VERSION,
        "hybrid_settings": json.loads(HYBRID_SETTINGS.to_json()),
        "kind_class": HYBRID_KIND_CLASS,
        "label_rule": LABEL_RULE,
        "calcomp_caiman_version": __version__,
        "caiman_version": caiman_version,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "motion_correct_above_px": MOTION_CORRECT_PX,
        "caiman_parameters": {
            "cnmf": "caiman_runs.cnmf_params (greedy_roi, nb 2, p 1, merge_thr 0.85, patches, "
            "refit, evaluate_components min_SNR 2 rval_thr 0.85, no CNN); gSig/fr/decay_time/"
            "K/rf/stride per movie in user_settings_json",
            "onacid": "caiman_runs.onacid_params (K 2, nb 2, p 1, bare init on "
            "min(200, T/3) frames, one epoch, no sniper mode, no online motion correction)",
            "motion_correction": "caiman_runs.motion_correct (rigid, max_shifts 6, "
            "border_nan copy) when the field's estimated motion exceeds 1 px",
        },
        "recordings": {
            n: {
                "role": r.role,
                "licence": r.licence,
                "fr": r.fr,
                "soma_radius_px": r.soma_radius_px,
            }
            for n, r in RECORDINGS.items()
        },  # fmt: skip
        "held_out_recordings": sorted(n for n, r in RECORDINGS.items() if r.held_out),
        "plan": [f"{r}/{movie_id(f[0], s)}" for r, f, s, _ in plan],
        "fields": {r: [list(f) for f in FIELDS[r][2]] for r in FIELDS},
        "completed": done,
        "status": status,
        "command": sys.argv,
    }
    _write_text(out / "MANIFEST.json", json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def build_parser() -> argparse.ArgumentParser:
    from calcomp_caiman.research.recordings import default_cache

    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", default=str(default_cache().parent / "hybrid"),
                        help="output folder")  # fmt: skip
    parser.add_argument("--recordings", default=str(default_cache()),
                        help="cache of the real recordings")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=2, help="movies processed in parallel")
    parser.add_argument("--only", nargs="*", default=None, help="subset of recordings")
    parser.add_argument("--seeds-scale", type=float, default=1.0,
                        help="multiply every recording's seeds per field")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="the first movie only (smoke test)")
    parser.add_argument("--allen-source", default=None,
                        help="local copy of AllenInstitute/ophys_etl_pipelines (git dir, "
                        "checkout or file)")  # fmt: skip
    parser.add_argument(
        "--calscipy-source",
        default=None,
        help="local copy of darikoneil/CalSciPy (git dir or checkout)",
    )
    parser.add_argument("--optinist-source", default=None,
                        help="optinist-2.4.1 wheel (default: pip download)")  # fmt: skip
    parser.add_argument("--sima-source", default=None,
                        help="sima-1.3.2 sdist (default: pip download)")  # fmt: skip
    parser.add_argument("--fetch-only", action="store_true", help="only fetch the recordings")
    parser.add_argument("--relabel", action="store_true",
                        help="only recompute the labels of movies already built (after a "
                        "change of the label rule)")  # fmt: skip
    parser.add_argument("--calibrate-only", action="store_true",
                        help="only fetch and write calibration.json and README.md")  # fmt: skip
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from calcomp_caiman.research.recordings import RECORDINGS

    names = args.only or list(RECORDINGS)
    unknown = sorted(set(names) - set(RECORDINGS))
    if unknown:
        raise SystemExit(f"unknown recordings {unknown}; known: {sorted(RECORDINGS)}")
    cache, out = Path(args.recordings).expanduser(), Path(args.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    fetch_all(args, cache, names)
    if args.fetch_only:
        return 0
    for name in names:
        (out / name).mkdir(exist_ok=True)
        shutil.copyfile(cache / name / "provenance.json", out / name / "provenance.json")
    calibration = calibrate(cache, out, list(RECORDINGS) if not args.only else names)
    write_readme(out, names, calibration)
    if args.calibrate_only:
        return 0
    plan = plan_movies(names, args.seeds_scale)
    if args.quick:
        plan = plan[:1]
    if not args.relabel:
        write_manifest(out, plan, args, status="running")
    logger.info("%d movies planned in %s with %d jobs", len(plan), out, args.jobs)
    progress = out / "PROGRESS.txt"
    t0 = time.perf_counter()
    failures = 0
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        futures = {
            (
                pool.submit(relabel_one, r, field, seed, frames, str(out), str(cache))
                if args.relabel
                else pool.submit(build_one, r, field, seed, frames, str(out), str(cache), METHODS)
            ): (r, movie_id(field[0], seed))
            for r, field, seed, frames in plan
        }
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            recording, name = futures[future]
            stamp = f"{time.strftime('%H:%M:%S')} {done}/{len(plan)} {recording} {name}"
            try:
                info = future.result()
            except Exception:  # one movie failing must not stop the build; it is reported
                logger.exception("%s %s failed", recording, name)
                failures += 1
                line = f"{stamp} FAILED"
            else:
                if info["skipped"]:
                    line = f"{stamp} {'not built' if args.relabel else 'cached'}"
                else:
                    seconds = {k: round(v) for k, v in info["timings"].items()}
                    line = (f"{stamp} counts[unlabelled,neuron,process,noise,doubtful]="
                            f"{info['counts']} seconds={seconds}")  # fmt: skip
            logger.info(line)
            with open(progress, "a") as handle:
                handle.write(line + "\n")
    total = time.perf_counter() - t0
    write_manifest(out, plan, args, status="finished")
    with open(progress, "a") as handle:
        handle.write(f"{time.strftime('%H:%M:%S')} DONE {len(plan)} movies, {failures} failed, "
                     f"{total:.0f} s\n")  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
