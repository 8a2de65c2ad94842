"""Inference benchmark: ``classify_footprints`` against CaImAn's ``evaluate_components_CNN``.

Simulated footprints (elliptical blobs, radius 4-6 px, sparse CSC, Fortran pixel order) on
a 512 x 512 FOV at N = 1,000 / 10,000 / 50,000 and a 1024 x 1024 FOV at N = 50,000.

Measured, each in its own child process (the parent imports neither NumPy nor Keras):

* ours, end to end: ``classify_footprints(A, dims, model=model, gSig=4)`` in components/s,
  with the child's peak RSS per size, and the split into patch extraction and model time
  (achieved GFLOP/s of the NumPy engine);
* the baseline: CaImAn's ``evaluate_components_CNN`` algorithm (densify every component,
  ``center_of_mass``, crop, resize with OpenCV, CaImAn's CNN in Keras with
  ``predict(batch_size=32)``; random weights), capped at ``--baseline-max-n`` components
  per size and extrapolated beyond;
* warm latency for 1 and 10 components, ours and baseline;
* engine comparison: the same weights on the same patches, NumPy engine vs Keras.

Examples
--------
    python benchmarks/bench_inference.py --quick --random-weights
    python benchmarks/bench_inference.py --sizes 512:10000 --baseline-max-n 2000 --json out.json
    python benchmarks/bench_inference.py --unset-openblas-coretype

Numbers depend on the machine and on whatever else runs on it; the load average is
printed at the start and the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import _runner  # noqa: E402  (standard library only)
from _runner import THREAD_VARIABLES, log, peak_rss_mb, size_label, vm_hwm_mb  # noqa: E402

GSIG = 4
PATCH_SIZE = 50
DEFAULT_SIZES = ("512x512:1000", "512x512:10000", "512x512:50000", "1024x1024:50000")
QUICK_SIZES = ("512x512:1000",)
CHUNK = 4096  # components per chunk in the split timing (as classify_footprints)
OPENBLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

# targets printed next to the numbers
TARGET_RATIO = 5.0  # ours / baseline at N = 10,000
TARGET_RATIO_N = 10_000
TARGET_RATE = 3000.0  # components/s end to end
TARGET_LATENCY_MS = 20.0  # one component, warm
TARGET_RSS_MB = 2048.0  # peak RSS at N = 50,000 on 1024 x 1024
TARGET_RSS_SIZE = ((1024, 1024), 50_000)


# ------------------------------------------------------------------ helpers (any process)


def median_time(function, repeats: int, warmup: int = 3) -> dict:
    """Median, min and max wall time (s) of ``function()`` after ``warmup`` calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def parse_size(text: str) -> tuple[tuple[int, int], int]:
    """``"512x512:10000"`` or ``"512:10000"`` -> ((512, 512), 10000)."""
    return _runner.parse_size(text, ("N",), "512x512:10000 or 1024:50000")


# ------------------------------------------------------------------ child tasks


def _load_model(spec: str):
    from calcomp_caiman import CalcompModel

    return CalcompModel.load(spec)


def _blas_setup() -> dict:
    """Short description of the BLAS NumPy uses (threadpoolctl if installed)."""
    import numpy as np

    info: dict = {"numpy": np.__version__}
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [
            {
                key: pool.get(key)
                for key in (
                    "internal_api",
                    "version",
                    "num_threads",
                    "architecture",
                    "threading_layer",
                )
            }
            | {"library": Path(pool.get("filepath", "")).name}
            for pool in threadpool_info()
        ]
    except ImportError:
        try:
            config = np.show_config(mode="dicts")
            info["build"] = config.get("Build Dependencies", {}).get("blas", {})
        except TypeError:  # NumPy < 1.25: no dict mode
            info["build"] = "numpy.show_config() (no dict mode in this NumPy)"
    info["env"] = {key: os.environ.get(key) for key in (*OPENBLAS_VARIABLES, *THREAD_VARIABLES)}
    return info


def task_prepare(task: dict) -> dict:
    """Write the simulated data sets, and the random model when asked for."""
    import scipy.sparse
    from _footprints import simulate_footprints

    out: dict = {"datasets": {}}
    for label, (dims, n) in task["sizes"].items():
        A = simulate_footprints(n, tuple(dims), seed=task["seed"])
        path = Path(task["tmp"]) / f"A_{label.replace(':', '_')}.npz"
        scipy.sparse.save_npz(path, A, compressed=False)
        out["datasets"][label] = {
            "path": str(path),
            "nnz_per_component": A.nnz / max(n, 1),
            "input_mb": (A.data.nbytes + A.indices.nbytes + A.indptr.nbytes) / 2**20,
        }
    if task["random_weights"]:
        from calcomp_caiman import CLASSES, CalcompModel
        from calcomp_caiman.model.network import DEFAULT_ARCHITECTURE, build_resnet

        net = build_resnet()
        config = {
            "classes": list(CLASSES),
            "patch_size": PATCH_SIZE,
            "architecture": DEFAULT_ARCHITECTURE,
            "name": "random",
        }
        model = CalcompModel.from_keras(net, config=config)
        model.save(Path(task["tmp"]) / "random_model")
        out["model"] = str(Path(task["tmp"]) / "random_model")
    else:
        model = _load_model(task["model"])  # raises if the bundled model is missing
        out["model"] = task["model"]
    out["model_name"] = model.name
    out["flops_per_patch"] = int(model.flops_per_patch)
    return out


def task_ours(task: dict) -> dict:
    """End-to-end throughput, peak RSS, and the extraction / model split for one size."""
    rss_start = peak_rss_mb()
    import numpy as np
    import scipy.sparse

    from calcomp_caiman import classify_footprints, extract_patches

    model = _load_model(task["model"])
    rss_imports = peak_rss_mb()
    dims, n = tuple(task["dims"]), task["n"]
    A = scipy.sparse.load_npz(task["data"]).tocsc()
    rss_input = peak_rss_mb()

    classify_footprints(A[:, : min(n, 256)], dims, model=model, gSig=GSIG)  # warm-up
    repeats = 3 if n <= 2000 else 1
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        probs = classify_footprints(A, dims, model=model, gSig=GSIG)
        times.append(time.perf_counter() - start)
    rss_peak = peak_rss_mb()
    hwm = vm_hwm_mb()
    assert probs.shape == (n, 4) and np.all(np.isfinite(probs))
    del probs

    # the same work split in two (after the RSS reading: this holds more patches)
    extract_runs, model_runs = [], []
    for _ in range(repeats):
        extract_s = model_s = 0.0
        for start in range(0, n, CHUNK):
            part = A[:, start : start + CHUNK]
            t0 = time.perf_counter()
            patches = extract_patches(part, dims, gSig=GSIG, patch_size=model.patch_size)
            t1 = time.perf_counter()
            model.predict(patches)
            extract_s += t1 - t0
            model_s += time.perf_counter() - t1
        extract_runs.append(extract_s)
        model_runs.append(model_s)
    return {
        "n": n,
        "dims": list(dims),
        "end_to_end_s": statistics.median(times),
        "end_to_end_runs_s": times,
        "extract_s": statistics.median(extract_runs),
        "model_s": statistics.median(model_runs),
        "rss_start_mb": rss_start,
        "rss_after_imports_mb": rss_imports,
        "rss_after_input_mb": rss_input,
        "rss_peak_mb": rss_peak,
        "vm_hwm_mb": hwm,
        "blas": _blas_setup(),
    }


def task_latency(task: dict) -> dict:
    """Warm latency of ``classify_footprints`` for 1 and 10 components (ours)."""
    from _footprints import simulate_footprints

    from calcomp_caiman import classify_footprints

    model = _load_model(task["model"])
    dims = tuple(task["dims"])
    A = simulate_footprints(max(task["counts"]), dims, seed=task["seed"] + 1)
    out = {}
    for k in task["counts"]:
        part = A[:, :k].tocsc()
        out[str(k)] = median_time(
            lambda part=part: classify_footprints(part, dims, model=model, gSig=GSIG),
            task["repeats"],
        )
    return out


def build_caiman_cnn(patch_size: int = PATCH_SIZE):
    """CaImAn's shipped component CNN (``cnn_model``), with random weights."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input(shape=(patch_size, patch_size, 1)),
            layers.Conv2D(32, 3, activation="relu"),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(0.25),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(0.25),
            layers.Flatten(),
            layers.Dense(512, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(2, activation="softmax"),
        ]
    )


def caiman_crops(A, dims, gSig, patch_size: int = PATCH_SIZE):
    """The patches of CaImAn's ``evaluate_components_CNN``, computed as CaImAn does.

    One component at a time: densify to the full FOV, ``scipy.ndimage.center_of_mass``,
    clip the centre so the window of half-width ``min(4 * gSig + 1, patch_size)`` stays
    inside the FOV (the window slides inwards at the border), densify again and crop,
    divide by the L2 norm, ``cv2.resize`` to ``patch_size``. Unlike CaImAn, each crop is
    copied, so the dense FOVs are freed (CaImAn keeps views of all of them alive).
    """
    import cv2
    import numpy as np
    import scipy.ndimage

    A = A.tocsc()
    n = A.shape[1]
    half = np.minimum(np.asarray(gSig) * 4 + 1, patch_size).astype(int)
    dims_array = np.asarray(dims)
    centres = np.empty((n, 2))
    for i in range(n):
        centres[i] = scipy.ndimage.center_of_mass(A[:, i].toarray().reshape(dims, order="F"))
    centres = np.minimum(np.maximum(centres, half), dims_array - half).astype(int)
    crops = np.empty((n, patch_size, patch_size), dtype=np.float32)
    for i, (row, col) in enumerate(centres):
        image = A[:, i].toarray().reshape(dims, order="F")
        crop = image[row - half[0] : row + half[0], col - half[1] : col + half[1]].copy()
        crops[i] = cv2.resize(crop / np.linalg.norm(crop), (patch_size, patch_size))
    return crops


def caiman_baseline_net() -> tuple:
    """CaImAn's CNN in Keras on the CPU (random weights), and the report of its setup.

    Returns
    -------
    net : keras.Model
        :func:`build_caiman_cnn`.
    report : dict
        Keras version and backend, ``import_and_build_s`` (not counted in the rates) and
        an empty ``sizes`` for :func:`caiman_throughput` results.
    """
    # as evaluate_components_CNN does when no GPU is requested (benchmark child only)
    os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    os.environ["KERAS_BACKEND"] = "tensorflow"
    t0 = time.perf_counter()
    import keras

    net = build_caiman_cnn()
    import_s = time.perf_counter() - t0
    report: dict = {"keras": keras.__version__, "backend": keras.backend.backend()}
    report["import_and_build_s"] = import_s
    report["sizes"] = {}
    return net, report


def caiman_evaluate(net, A, dims, gSig) -> tuple[float, float]:
    """CaImAn's ``evaluate_components_CNN`` on the columns of ``A``: (crops s, predict s)."""
    t_start = time.perf_counter()
    crops = caiman_crops(A, dims, gSig)
    t_mid = time.perf_counter()
    net.predict(crops[:, :, :, None], batch_size=32, verbose=0)
    return t_mid - t_start, time.perf_counter() - t_mid


def caiman_throughput(net, A, dims, gSig, max_n: int) -> dict:
    """Time :func:`caiman_evaluate` on the first ``max_n`` components of ``A`` (warm).

    The rate of larger ``A`` is extrapolated from these (``per_component_s``).
    """
    n = A.shape[1]
    measured = min(n, max_n)
    caiman_evaluate(net, A[:, : min(measured, 64)], dims, gSig)  # warm-up (traces predict)
    crops_s, predict_s = caiman_evaluate(net, A[:, :measured], dims, gSig)
    return {
        "n": n,
        "measured_n": measured,
        "crops_s": crops_s,
        "predict_s": predict_s,
        "per_component_s": (crops_s + predict_s) / measured,
        "extrapolated": measured < n,
    }


def print_baseline_setup(baseline: dict) -> bool:
    """Print why the baseline failed, or its Keras setup; whether it has sizes to print."""
    if "error" in baseline:
        print(f"baseline failed: {baseline['error']}")
        return False
    if baseline:
        print(
            f"baseline: Keras {baseline['keras']} ({baseline['backend']}), "
            f"import + build {baseline['import_and_build_s']:.1f} s (not counted)"
        )
    return bool(baseline)


def task_baseline(task: dict) -> dict:
    """CaImAn's algorithm: throughput per size (capped, extrapolated) and warm latency."""
    import scipy.sparse
    from _footprints import simulate_footprints

    net, out = caiman_baseline_net()
    gsig = (GSIG, GSIG)
    for label, spec in task["sizes"].items():
        A = scipy.sparse.load_npz(spec["data"]).tocsc()
        out["sizes"][label] = caiman_throughput(net, A, tuple(spec["dims"]), gsig, task["max_n"])
    dims = tuple(task["latency_dims"])
    A = simulate_footprints(max(task["counts"]), dims, seed=task["seed"] + 1)
    out["latency"] = {}
    for k in task["counts"]:
        part = A[:, :k].tocsc()
        out["latency"][str(k)] = median_time(
            lambda part=part: caiman_evaluate(net, part, dims, gsig), task["latency_repeats"]
        )
    return out


def task_engine(task: dict) -> dict:
    """The same weights on the same patches: NumPy engine vs Keras ``predict``."""
    import numpy as np
    from _footprints import simulate_footprints

    from calcomp_caiman import extract_patches

    model = _load_model(task["model"])
    A = simulate_footprints(task["n"], tuple(task["dims"]), seed=task["seed"] + 2)
    patches = extract_patches(A, tuple(task["dims"]), gSig=GSIG, patch_size=model.patch_size)
    ours = median_time(lambda: model.predict(patches), task["repeats"], warmup=1)
    probs_ours = model.predict(patches)

    t0 = time.perf_counter()
    import keras

    t1 = time.perf_counter()
    net = model.to_keras()
    t2 = time.perf_counter()
    x = patches[..., None]
    net.predict(x[:256], batch_size=256, verbose=0)  # warm-up (traces the function)
    keras_timing = median_time(
        lambda: net.predict(x, batch_size=256, verbose=0), task["repeats"], warmup=0
    )
    probs_keras = net.predict(x, batch_size=256, verbose=0)
    temperature = float(model.thresholds.get("temperature", 1.0))
    logits = np.log(np.maximum(probs_keras, 1e-30)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    probs_keras = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return {
        "n": task["n"],
        "numpy": ours,
        "keras": keras_timing,
        "keras_import_s": t1 - t0,
        "keras_build_s": t2 - t1,
        "keras_version": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "max_abs_diff": float(np.abs(probs_ours - probs_keras).max()),
        "blas": _blas_setup(),
    }


TASKS = {
    "prepare": task_prepare,
    "ours": task_ours,
    "latency": task_latency,
    "baseline": task_baseline,
    "engine": task_engine,
}


# ------------------------------------------------------------------ parent


class Runner(_runner.Runner):
    """Starts each measurement in a fresh child process of this script.

    The children get the chosen BLAS environment; the log line of each names the sizes
    of its task.
    """

    def __init__(self, tmp: Path, unset_coretype: bool, blas_threads: int | None):
        unset = OPENBLAS_VARIABLES if unset_coretype else ()
        super().__init__(__file__, tmp, blas_threads, unset=unset, log_done=False)

    def __call__(self, name: str, **task) -> dict:
        return super().__call__(name, describe_task(task), **task)


def describe_task(task: dict) -> str:
    if "dims" in task and "n" in task:
        return size_label(task["dims"], task["n"])
    if "sizes" in task:
        return ", ".join(task["sizes"])
    return ""


def mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def build_parser() -> argparse.ArgumentParser:
    parser = _runner.new_parser(
        __doc__, "python benchmarks/bench_inference.py --quick --random-weights"
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        type=parse_size,
        default=None,
        metavar="ROWSxCOLS:N",
        help=f"FOV sizes and component counts (default: {' '.join(DEFAULT_SIZES)})",
    )
    parser.add_argument("--quick", action="store_true", help="only 512x512:1000")
    parser.add_argument(
        "-m", "--model", default="default", help="bundled model name or model folder"
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="build the default architecture with random weights instead of loading a model",
    )
    parser.add_argument(
        "--baseline-max-n",
        type=int,
        default=10_000,
        help="components the baseline really runs per size; larger N is extrapolated",
    )
    parser.add_argument("--skip-baseline", action="store_true", help="do not run the baseline")
    parser.add_argument(
        "--skip-engine", action="store_true", help="do not run the engine comparison"
    )
    parser.add_argument(
        "--engine-n", type=int, default=10_000, help="patches in the engine comparison"
    )
    parser.add_argument(
        "--latency-repeats", type=int, default=20, help="timed calls per latency measurement"
    )
    parser.add_argument(
        "--unset-openblas-coretype",
        action="store_true",
        help="run the measurements without OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE",
    )
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=None,
        help="set OPENBLAS/OMP/MKL_NUM_THREADS in the measurements (default: inherited)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated footprints")
    _runner.add_output_arguments(parser)
    return parser


def run_benchmark(args) -> dict:
    sizes = args.sizes or [parse_size(s) for s in (QUICK_SIZES if args.quick else DEFAULT_SIZES)]
    sizes = {size_label(dims, n): (list(dims), n) for dims, n in sizes}
    report: dict = {
        **_runner.report_start(),
        "openblas_env_parent": {key: os.environ.get(key) for key in OPENBLAS_VARIABLES},
        "unset_openblas_coretype": args.unset_openblas_coretype,
        "blas_threads": args.blas_threads,
        "gsig": GSIG,
    }
    with tempfile.TemporaryDirectory(prefix="calcomp_bench_") as tmp:
        run = Runner(Path(tmp), args.unset_openblas_coretype, args.blas_threads)
        log("preparing data and model")
        prepared = run(
            "prepare",
            sizes=sizes,
            seed=args.seed,
            tmp=tmp,
            model=args.model,
            random_weights=args.random_weights,
        )
        if "error" in prepared:
            hint = "" if args.random_weights else " (no bundled model? pass --random-weights)"
            raise SystemExit(f"bench_inference: preparation failed{hint}: {prepared['error']}")
        model = prepared["model"]
        report["model"] = {"name": prepared["model_name"], "source": model}
        report["flops_per_patch"] = prepared["flops_per_patch"]
        report["datasets"] = {
            label: {k: v for k, v in info.items() if k != "path"}
            for label, info in prepared["datasets"].items()
        }

        log("ours: end to end, one child per size")
        report["ours"] = {
            label: run(
                "ours", dims=dims, n=n, data=prepared["datasets"][label]["path"], model=model
            )
            for label, (dims, n) in sizes.items()
        }
        log("ours: warm latency")
        report["latency"] = run(
            "latency",
            dims=[512, 512],
            counts=[1, 10],
            repeats=args.latency_repeats,
            seed=args.seed,
            model=model,
        )
        if not args.skip_baseline:
            log("baseline (CaImAn evaluate_components_CNN algorithm, Keras)")
            report["baseline"] = run(
                "baseline",
                sizes={
                    label: {"dims": dims, "n": n, "data": prepared["datasets"][label]["path"]}
                    for label, (dims, n) in sizes.items()
                },
                max_n=args.baseline_max_n,
                latency_dims=[512, 512],
                counts=[1, 10],
                latency_repeats=args.latency_repeats,
                seed=args.seed,
            )
        if not args.skip_engine:
            log("engine comparison (NumPy vs Keras, same weights)")
            report["engine"] = run(
                "engine", dims=[512, 512], n=args.engine_n, repeats=3, seed=args.seed, model=model
            )
    report["load_average_end"] = list(os.getloadavg())
    add_derived(report)
    return report


def add_derived(report: dict) -> None:
    """Rates, ratios and target checks from the raw timings."""
    flops = report["flops_per_patch"]
    baseline = report.get("baseline", {})
    for label, ours in report["ours"].items():
        if "error" in ours:
            continue
        n = ours["n"]
        ours["rate"] = n / ours["end_to_end_s"]
        ours["model_gflops"] = flops * n / ours["model_s"] / 1e9
        ours["peak_minus_imports_mb"] = ours["rss_peak_mb"] - ours["rss_after_imports_mb"]
        ours["target_rate"] = ours["rate"] >= TARGET_RATE
        base = baseline.get("sizes", {}).get(label)
        if base:
            base["rate"] = 1.0 / base["per_component_s"]
            ours["ratio"] = ours["rate"] / base["rate"]
            if n == TARGET_RATIO_N:
                ours["target_ratio"] = ours["ratio"] >= TARGET_RATIO
        if (tuple(ours["dims"]), n) == TARGET_RSS_SIZE:
            ours["target_rss"] = ours["rss_peak_mb"] < TARGET_RSS_MB
    latency = report.get("latency", {})
    if "1" in latency:
        latency["target_1"] = latency["1"]["median_s"] * 1e3 < TARGET_LATENCY_MS
    engine = report.get("engine", {})
    if "numpy" in engine:
        for key in ("numpy", "keras"):
            engine[key]["rate"] = engine["n"] / engine[key]["median_s"]
            engine[key]["gflops"] = flops * engine[key]["rate"] / 1e9


def print_report(report: dict) -> None:
    _runner.print_header(
        report,
        "calcomp_caiman inference benchmark",
        "timings are pessimistic and noisy, multi-threaded BLAS suffers most.",
    )
    print_blas(report)
    print(
        f"model: {report['model']['name']} ({report['flops_per_patch'] / 1e6:.2f} MFLOP/patch), "
        f"gSig={report['gsig']}"
    )
    for label, info in report["datasets"].items():
        print(
            f"data {label}: {info['nnz_per_component']:.0f} px/component, "
            f"A = {info['input_mb']:.1f} MB"
        )

    print("\nEnd to end (classify_footprints; baseline = CaImAn evaluate_components_CNN)")
    header = f"{'FOV:N':>16} {'ours comp/s':>12} {'baseline comp/s':>28} {'ratio':>7}  targets"
    print(header)
    baseline = report.get("baseline", {})
    for label, ours in report["ours"].items():
        if "error" in ours:
            print(f"{label:>16}  ours failed: {ours['error']}")
            continue
        base = baseline.get("sizes", {}).get(label)
        base_text = "-"
        if base:
            note = f" (extrap. from {base['measured_n']})" if base["extrapolated"] else ""
            base_text = f"{base['rate']:,.0f}{note}"
        ratio = f"{ours['ratio']:.1f}x" if "ratio" in ours else "-"
        targets = [f">={TARGET_RATE:,.0f}/s {mark(ours['target_rate'])}"]
        if "target_ratio" in ours:
            extrap = " (baseline extrapolated)" if base["extrapolated"] else ""
            targets.append(f">={TARGET_RATIO:.0f}x {mark(ours['target_ratio'])}{extrap}")
        print(
            f"{label:>16} {ours['rate']:>12,.0f} {base_text:>28} {ratio:>7}  {', '.join(targets)}"
        )
    if print_baseline_setup(baseline):
        for label, base in baseline["sizes"].items():
            print(
                f"{label:>16}  baseline on {base['measured_n']} components: "
                f"crops {base['crops_s']:.2f} s, predict {base['predict_s']:.2f} s"
            )

    print("\nOurs, split (same work, timed separately; model = NumPy engine)")
    print(f"{'FOV:N':>16} {'total s':>8} {'extract s':>10} {'model s':>8} {'GFLOP/s':>8}")
    for label, ours in report["ours"].items():
        if "error" not in ours:
            print(
                f"{label:>16} {ours['end_to_end_s']:>8.2f} {ours['extract_s']:>10.2f} "
                f"{ours['model_s']:>8.2f} {ours['model_gflops']:>8.1f}"
            )

    print("\nOurs, memory of the child process (MB; ru_maxrss, VmHWM = this address space)")
    print(
        f"{'FOV:N':>16} {'after imports':>13} {'after input':>11} {'peak':>7} "
        f"{'peak-imports':>12} {'VmHWM':>7}  target"
    )
    for label, ours in report["ours"].items():
        if "error" in ours:
            continue
        hwm = "-" if ours["vm_hwm_mb"] is None else f"{ours['vm_hwm_mb']:.0f}"
        target = (
            f"peak <{TARGET_RSS_MB:,.0f} MB {mark(ours['target_rss'])}"
            if "target_rss" in ours
            else ""
        )
        print(
            f"{label:>16} {ours['rss_after_imports_mb']:>13.0f} {ours['rss_after_input_mb']:>11.0f} "
            f"{ours['rss_peak_mb']:>7.0f} {ours['peak_minus_imports_mb']:>12.0f} {hwm:>7}  {target}"
        )

    latency = report.get("latency", {})
    base_latency = baseline.get("latency", {})
    print("\nWarm latency (median of repeated calls on a 512x512 FOV, ms)")
    print(f"{'components':>10} {'ours':>8} {'baseline':>9}  target")
    if "error" in latency:
        print(f"  failed: {latency['error']}")
    for k in ("1", "10"):
        if k not in latency:
            continue
        ours_ms = latency[k]["median_s"] * 1e3
        base_ms = f"{base_latency[k]['median_s'] * 1e3:.1f}" if k in base_latency else "-"
        target = f"<{TARGET_LATENCY_MS:.0f} ms {mark(latency['target_1'])}" if k == "1" else ""
        print(f"{k:>10} {ours_ms:>8.1f} {base_ms:>9}  {target}")

    engine = report.get("engine")
    if engine:
        print(f"\nEngine comparison (same weights, {engine.get('n', '?')} pre-extracted patches)")
        if "error" in engine:
            print(f"  failed: {engine['error']}")
        else:
            for key, name in (("numpy", "NumPy engine (model.predict)"), ("keras", "Keras")):
                timing = engine[key]
                print(
                    f"  {name:<30} {timing['median_s']:7.2f} s  {timing['rate']:>9,.0f} patches/s "
                    f"{timing['gflops']:6.1f} GFLOP/s"
                )
            print(
                f"  Keras {engine['keras_version']} ({engine['keras_backend']}): import "
                f"{engine['keras_import_s']:.1f} s + build {engine['keras_build_s']:.1f} s, "
                f"predict(batch_size=256); max |p_numpy - p_keras| = {engine['max_abs_diff']:.1e}"
            )


def print_blas(report: dict) -> None:
    blas = next(
        (ours["blas"] for ours in report["ours"].values() if "blas" in ours),
        None,
    )
    parent_env = report["openblas_env_parent"]
    if blas is None:
        return
    pools = blas.get("threadpools")
    if pools:
        for pool in pools:
            print(
                f"BLAS: {pool['internal_api']} {pool['version']} ({pool['library']}), "
                f"{pool['num_threads']} threads, architecture {pool.get('architecture')}"
            )
    else:
        print(f"BLAS: {blas.get('build')}")
    child_env = blas["env"]
    shown = ", ".join(f"{k}={v}" for k, v in child_env.items() if v is not None) or "none set"
    print(f"BLAS environment in the measurements: {shown}")
    if child_env.get("OPENBLAS_CORETYPE"):
        print(
            f"NOTE: OPENBLAS_CORETYPE={child_env['OPENBLAS_CORETYPE']} is set: it forces older "
            f"OpenBLAS kernels and slows the model on this machine; rerun with "
            f"--unset-openblas-coretype to compare."
        )
    elif report["unset_openblas_coretype"] and parent_env.get("OPENBLAS_CORETYPE"):
        print(
            f"NOTE: OPENBLAS_CORETYPE={parent_env['OPENBLAS_CORETYPE']} was removed for the "
            f"measurements (--unset-openblas-coretype)."
        )


def main(argv=None) -> int:
    return _runner.benchmark_main(argv, build_parser(), TASKS, run_benchmark, print_report)


if __name__ == "__main__":
    raise SystemExit(main())
