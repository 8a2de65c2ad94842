"""End-to-end benchmark of models v2 and v3: ``classify_file`` on CaImAn result files with traces.

Simulated CaImAn-layout result files (``write_caiman_file``: footprints as in
``_footprints.simulate_footprints``, a correlation image ``Cn``, ``SNR_comp`` and
``r_values``; the traces ``estimates/C`` and ``estimates/YrA`` written afterwards with h5py
as contiguous (N, T) float32 datasets, row chunk by row chunk, so that the generator never
holds N x T values) at two sizes:

* throughput: 512 x 512 FOV, N = 10,000, T = 2,000 (target >= 3,000 components/s, and
  >= 10x CaImAn's ``evaluate_components_CNN`` algorithm on the same footprints);
* memory: 1024 x 1024 FOV, N = 50,000, T = 10,000 (target: peak RSS of the classifying
  process < 2 GB; the traces are 4 GB on disk, and the classified copy as much again).

Measured, each in its own child process (``_runner.py``, as in ``bench_inference.py``; the
parent imports only the standard library):

* ours: ``classify_file(path, model=model, out_path=..., overwrite=True)`` end to end, in
  components/s, with the child's peak RSS; then the same work split into reading
  (``read_evidence``), features (``evidence_features``, which reads the traces), patches
  (``crop_checked``), network and fusion head (``model.predict``) and writing
  (``write_classification``), each timed separately;
* the baseline: CaImAn's ``evaluate_components_CNN`` algorithm as re-implemented in
  ``bench_inference.py`` (per-component densify, ``center_of_mass``, crop, ``cv2.resize``,
  CaImAn's CNN in Keras with random weights), footprints read from the same file, capped
  at ``--baseline-max-n`` components and extrapolated beyond. The baseline does no file
  I/O and no trace features; ours includes both.

The model: the first bundled model with a fusion head (``model.uses_evidence``), or,
when there is none, the bundled v1 network with a head fitted on random inputs (the
speed does not depend on the head's values); ``-m`` picks one (a model v2 or v3 folder);
``--random-v3`` times model v3's run-time path (channels, transient profiles, features,
the multi-channel network, the temporal branch and the head) with a model of the
default v3 architecture and random weights (needs Keras to build it). The report says
which. For a model v3 the split's "patches" are its channels and "features" include the
transient profiles.

Examples
--------
    python benchmarks/bench_v2_end_to_end.py --quick
    python benchmarks/bench_v2_end_to_end.py --throughput-size 512x512:10000:2000 --skip-rss
    python benchmarks/bench_v2_end_to_end.py --random-v3 --skip-rss --skip-baseline
    nice -n 5 python benchmarks/bench_v2_end_to_end.py --json v2.json

Numbers depend on the machine and on whatever else runs on it; the load average is
printed at the start and the end. Files just written are in the page cache, so reading
them is faster than reading a cold file from a network disk.
"""

from __future__ import annotations

import argparse
import os
import shutil
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
from bench_inference import (  # noqa: E402  (standard library only at import time)
    caiman_baseline_net,
    caiman_throughput,
    print_baseline_setup,
)

GSIG = (4, 4)
THROUGHPUT_SIZE = "512x512:10000:2000"
RSS_SIZE = "1024x1024:50000:10000"
QUICK_THROUGHPUT_SIZE = "256x256:400:300"
QUICK_RSS_SIZE = "256x256:600:400"
QUICK_BASELINE_MAX_N = 200
WARMUP_N, WARMUP_T = 256, 200
TRACE_CHUNK_ELEMENTS = 1 << 22  # values per trace chunk the generator holds (16 MB float32)
TRACE_ELEMENTS = 1 << 23  # rows per chunk when timing the trace reading (as features.py)
COMPONENTS_PER_CHUNK = 4096  # as classify_evidence
DISK_MARGIN_BYTES = 1 << 30

TARGET_RATE = 3000.0  # components/s, end to end, at the throughput size
TARGET_RATIO = 10.0  # ours / baseline at the throughput size
TARGET_RSS_MB = 2048.0  # peak RSS at the memory size
SPLIT_PARTS = ("read", "features", "patches", "network", "other", "write")


# ------------------------------------------------------------------ helpers (any process)


def parse_size(text: str) -> tuple[tuple[int, int], int, int]:
    """``"512x512:10000:2000"`` or ``"512:10000:2000"`` -> ((512, 512), N, T)."""
    return _runner.parse_size(text, ("N", "T"), "512x512:10000:2000")


def trace_bytes(n: int, frames: int) -> int:
    """Bytes of C and YrA together, float32."""
    return 2 * n * frames * 4


# ------------------------------------------------------------------ child tasks


def task_model(task: dict) -> dict:
    """Pick the model: ``task["model"]``, a random-weight v3 (``task["random_v3"]``), a
    bundled head model, or v1 + a random head."""
    import numpy as np

    from calcomp_caiman import CLASSES, CalcompModel
    from calcomp_caiman.evidence.features import feature_names
    from calcomp_caiman.model.folder import bundled_models

    if task["model"]:
        model = CalcompModel.load(task["model"])
        if not model.uses_evidence:
            raise SystemExit(f"model {task['model']!r} has no fusion head (not a model v2 or v3)")
        spec, source = task["model"], f"given: {task['model']}"
    elif task.get("random_v3"):
        from calcomp_caiman.research.train_branches import untrained_v3
        from calcomp_caiman.research.v3_inputs import V3Settings

        settings = V3Settings(seed=task["seed"])
        model = untrained_v3(settings)
        spec = str(model.save(Path(task["tmp"]) / "model_v3"))
        source = (
            f"model v3 of the default architecture with random weights (widths "
            f"{settings.widths}, patch {settings.patch_size}, channels {settings.channels})"
        )
    else:
        spec = source = None
        for name in bundled_models():
            candidate = CalcompModel.load(name)
            if candidate.uses_evidence:
                model, spec, source = candidate, name, f"bundled model {name!r}"
                break
    if spec is None:
        from calcomp_caiman.model.head import fit_head

        v1 = CalcompModel.load("calcomp_resnet_v1")
        shell = CalcompModel(v1.weights, {**v1.config, "scale_rule": "footprints"}, {})
        rng = np.random.default_rng(task["seed"])
        width = len(CLASSES) + len(feature_names())
        inputs = rng.standard_normal((256, width))
        allowed = np.eye(len(CLASSES), dtype=bool)[rng.integers(0, len(CLASSES), 256)]
        head = fit_head(inputs, allowed, hidden=32, max_iter=5, seed=task["seed"])
        model = shell.with_head(head, name="calcomp_resnet_v1+random_head")
        spec = str(model.save(Path(task["tmp"]) / "model_v2"))
        source = (
            "no bundled model has a fusion head: bundled calcomp_resnet_v1 network, "
            "scale_rule='footprints', head (hidden=32) fitted 5 iterations on random inputs"
        )
    return {
        "spec": spec,
        "source": source,
        "name": model.name,
        "version": int(model.version),
        "uses_evidence": bool(model.uses_evidence),
        "scale_rule": model.scale_rule,
        "flops_per_patch": int(model.flops_per_patch),
        "bundled": sorted(bundled_models()),
    }


def _simulated_traces(rng, rows: int, frames: int):
    """C (spikes through an exponential decay) and YrA (white noise), float32 (rows, T)."""
    import numpy as np
    import scipy.signal

    rate = rng.choice(np.array([0.0, 0.003, 0.01, 0.03]), size=rows, p=[0.2, 0.3, 0.3, 0.2])
    amplitude = rng.uniform(0.5, 3.0, rows).astype(np.float32)
    spikes = rng.random((rows, frames), dtype=np.float32) < rate[:, None].astype(np.float32)
    spikes = spikes.astype(np.float32) * amplitude[:, None]
    decay = rng.choice(np.array([0.9, 0.95, 0.98]), size=rows)
    C = np.empty((rows, frames), np.float32)
    for g in np.unique(decay):
        index = np.flatnonzero(decay == g)
        C[index] = scipy.signal.lfilter([1.0], [1.0, -g], spikes[index], axis=1)
    noise = rng.uniform(0.1, 1.0, rows).astype(np.float32)
    YrA = rng.standard_normal((rows, frames), dtype=np.float32)
    YrA *= noise[:, None]
    return C, YrA


def task_write(task: dict) -> dict:
    """Write one CaImAn-layout result file; traces in row chunks (bounded memory)."""
    import h5py
    import numpy as np
    from _footprints import simulate_footprints

    from calcomp_caiman.research.caiman_files import write_caiman_file

    start = time.perf_counter()
    dims, n, frames = tuple(task["dims"]), task["n"], task["frames"]
    rng = np.random.default_rng(task["seed"])
    A = simulate_footprints(n, dims, seed=task["seed"])
    image = np.asarray(A.sum(axis=1)).reshape(dims, order="F")
    Cn = 0.15 + 0.7 * image / max(float(image.max()), 1e-12)
    Cn += 0.05 * rng.standard_normal(dims)
    extra = {
        "Cn": np.clip(Cn, 0, 1).astype(np.float32),
        "SNR_comp": rng.lognormal(1.0, 0.8, n),
        "r_values": rng.uniform(-0.3, 1.0, n),
    }
    path = task["path"]
    write_caiman_file(
        path, A=A, C=None, YrA=None, dims=dims, gSig=GSIG, extra_estimates=extra, overwrite=True
    )
    rows = max(1, TRACE_CHUNK_ELEMENTS // frames)
    with h5py.File(path, "r+") as handle:
        estimates = handle["estimates"]
        datasets = {}
        for name in ("C", "YrA"):  # 'NoneType' placeholders from write_caiman_file
            del estimates[name]
            datasets[name] = estimates.create_dataset(name, shape=(n, frames), dtype="float32")
        for first in range(0, n, rows):
            last = min(n, first + rows)
            C, YrA = _simulated_traces(rng, last - first, frames)
            datasets["C"][first:last] = C
            datasets["YrA"][first:last] = YrA
    return {
        "path": path,
        "file_mb": os.path.getsize(path) / 2**20,
        "nnz_per_component": A.nnz / max(n, 1),
        "write_s": time.perf_counter() - start,
        "rss_peak_mb": peak_rss_mb(),
        "vm_hwm_mb": vm_hwm_mb(),
    }


def _split(path: str, out: str, model) -> dict:
    """The work of ``classify_file`` in its steps, each timed on its own."""
    import numpy as np

    from calcomp_caiman.classify import acceptance_rule, classification_fields
    from calcomp_caiman.evidence.channels import ChannelSource
    from calcomp_caiman.evidence.features import evidence_inputs
    from calcomp_caiman.evidence.footprints import footprint_fingerprint, footprint_flags
    from calcomp_caiman.evidence.patches import crop_checked, footprints_for
    from calcomp_caiman.io.caiman_h5 import read_evidence
    from calcomp_caiman.io.caiman_h5_write import write_classification

    times = dict.fromkeys(SPLIT_PARTS, 0.0)
    t0 = time.perf_counter()
    evidence = read_evidence(path)
    times["read"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    flat, flat_dims, scale = footprints_for(evidence, model.scale_rule)
    times["scale"] = time.perf_counter() - t0

    traces = evidence.traces
    t0 = time.perf_counter()
    if traces is not None:  # only the reading the features do (float64 chunks)
        for _ in traces.chunks(max(1, TRACE_ELEMENTS // max(traces.frames, 1))):
            pass
    times["traces_read"] = time.perf_counter() - t0

    v3 = model.version >= 3
    t0 = time.perf_counter()  # a model v3: the transient profiles in the same pass
    features, profiles = evidence_inputs(
        evidence, flat, flat_dims, scale, profiles=v3, profile_options=model.temporal_options
    )
    times["features"] = time.perf_counter() - t0

    n = flat.shape[1]
    probs = np.empty((n, 4), np.float32)
    t0 = time.perf_counter()
    channels = None
    if v3:
        channels = ChannelSource.from_evidence(
            evidence, (flat, flat_dims, scale), patch_size=model.patch_size,
            names=model.channel_names,
        )  # fmt: skip
    times["patches"] = time.perf_counter() - t0
    for start in range(0, n, COMPONENTS_PER_CHUNK):
        stop = min(n, start + COMPONENTS_PER_CHUNK)
        t0 = time.perf_counter()
        if channels is None:
            patches = crop_checked(flat[:, start:stop], flat_dims, scale, model.patch_size)
        else:
            patches = channels.crop(start, stop)
        t1 = time.perf_counter()
        part = None if profiles is None else profiles[start:stop]
        probs[start:stop] = model.predict(patches, features[start:stop], profiles=part)
        times["patches"] += t1 - t0
        times["network"] += time.perf_counter() - t1

    t0 = time.perf_counter()
    accept, min_prob = acceptance_rule(model, None, None)
    fields = classification_fields(
        probs,
        flags=footprint_flags(evidence.A, evidence.dims),
        accept=accept,
        min_prob=min_prob,
        fingerprint=footprint_fingerprint(evidence.A),
    )
    times["other"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    write_classification(
        path, dict(fields, provenance={"model": model.name}), out_path=out, overwrite=True
    )
    times["write"] = time.perf_counter() - t0
    times["other"] += times.pop("scale")
    return times


def _profile(path: str, out: str, model, top: int) -> str:
    """cProfile of one ``classify_file``: the top functions by own time."""
    import cProfile
    import io
    import pstats

    from calcomp_caiman.apps.one_file import classify_file

    profiler = cProfile.Profile()
    profiler.enable()
    classify_file(path, model=model, out_path=out, overwrite=True)
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(top)
    return text.getvalue()


def task_ours(task: dict) -> dict:
    """``classify_file`` end to end: time, peak RSS; then the split and the profile."""
    rss_start = peak_rss_mb()
    import numpy as np

    from calcomp_caiman import CalcompModel
    from calcomp_caiman.apps.one_file import classify_file

    model = CalcompModel.load(task["model"])
    rss_imports = peak_rss_mb()
    out = task["out"]
    classify_file(task["warmup"], model=model, out_path=out, overwrite=True)
    os.remove(out)
    rss_warm = peak_rss_mb()
    times = []
    for _ in range(task["repeats"]):
        start = time.perf_counter()
        result, fields = classify_file(task["path"], model=model, out_path=out, overwrite=True)
        times.append(time.perf_counter() - start)
        os.remove(out)
    rss_peak = peak_rss_mb()
    hwm = vm_hwm_mb()
    probs = fields["class_probs"]
    assert probs.shape == (task["n"], 4) and np.all(np.isfinite(probs))
    report = {
        "n": task["n"],
        "end_to_end_s": statistics.median(times),
        "end_to_end_runs_s": times,
        "counts": result.counts,
        "rss_start_mb": rss_start,
        "rss_after_imports_mb": rss_imports,
        "rss_after_warmup_mb": rss_warm,
        "rss_peak_mb": rss_peak,
        "vm_hwm_mb": hwm,
    }
    if task["split"]:
        report["split_s"] = _split(task["path"], out, model)
        os.remove(out)
    if task["profile"]:
        report["profile"] = _profile(task["path"], out, model, task["profile"])
        os.remove(out)
    threads = {key: os.environ.get(key) for key in THREAD_VARIABLES}
    report["thread_env"] = {k: v for k, v in threads.items() if v is not None}
    return report


def task_baseline(task: dict) -> dict:
    """CaImAn's ``evaluate_components_CNN`` algorithm on the files' footprints (capped)."""
    from calcomp_caiman.io.caiman_h5 import read_estimates

    net, out = caiman_baseline_net()
    for label, spec in task["sizes"].items():
        source = read_estimates(spec["path"])
        out["sizes"][label] = caiman_throughput(
            net, source.A, tuple(source.dims), GSIG, task["max_n"]
        )
    return out


TASKS = {"model": task_model, "write": task_write, "ours": task_ours, "baseline": task_baseline}


def build_parser() -> argparse.ArgumentParser:
    parser = _runner.new_parser(__doc__, "python benchmarks/bench_v2_end_to_end.py --quick")
    parser.add_argument(
        "--throughput-size",
        type=parse_size,
        default=None,
        metavar="ROWSxCOLS:N:T",
        help=f"FOV, components and frames of the throughput file (default {THROUGHPUT_SIZE})",
    )
    parser.add_argument(
        "--rss-size",
        type=parse_size,
        default=None,
        metavar="ROWSxCOLS:N:T",
        help=f"FOV, components and frames of the memory file (default {RSS_SIZE})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"small files ({QUICK_THROUGHPUT_SIZE}, {QUICK_RSS_SIZE}), baseline on "
        f"{QUICK_BASELINE_MAX_N} components: under a minute",
    )
    parser.add_argument("--skip-rss", action="store_true", help="no memory-size file")
    parser.add_argument("--skip-baseline", action="store_true", help="do not run the baseline")
    parser.add_argument(
        "-m",
        "--model",
        default=None,
        help="model v2 or v3 (bundled name or folder); default: see above",
    )
    parser.add_argument(
        "--random-v3",
        action="store_true",
        help="time a model v3 of the default architecture with random weights (needs Keras)",
    )
    parser.add_argument(
        "--baseline-max-n",
        type=int,
        default=10_000,
        help="components the baseline really runs per file; larger N is extrapolated",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed classify_file calls per file (default 3; 1 with --quick or N > 20,000)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="TOP",
        help="also profile one classify_file on the throughput file and print the TOP "
        "functions by own time (waiting on the network threads shows as lock acquire)",
    )
    parser.add_argument(
        "--no-split", action="store_true", help="skip the read/features/.../write split"
    )
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=None,
        help="set OPENBLAS/OMP/MKL_NUM_THREADS in the measurements (default: inherited)",
    )
    parser.add_argument(
        "--tmp-dir", type=Path, default=None, help="where the files go (default: system temp)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated data")
    _runner.add_output_arguments(parser)
    return parser


def run_benchmark(args) -> dict:
    sizes = {
        "throughput": args.throughput_size
        or parse_size(QUICK_THROUGHPUT_SIZE if args.quick else THROUGHPUT_SIZE),
    }
    if not args.skip_rss:
        sizes["rss"] = args.rss_size or parse_size(QUICK_RSS_SIZE if args.quick else RSS_SIZE)
    max_n = min(args.baseline_max_n, QUICK_BASELINE_MAX_N) if args.quick else args.baseline_max_n
    report: dict = {
        **_runner.report_start(),
        "quick": args.quick,
        "sizes": {role: size_label(*spec) for role, spec in sizes.items()},
        "files": {},
        "ours": {},
        "notes": [],
    }
    if args.tmp_dir:
        args.tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="calcomp_v2_bench_", dir=args.tmp_dir) as tmp:
        tmp_path = Path(tmp)
        free = shutil.disk_usage(tmp).free
        report["disk_free_gb"] = free / 2**30
        log(f"temp dir {tmp}: {free / 2**30:.1f} GB free")
        run = _runner.Runner(__file__, tmp_path, args.blas_threads)
        model = run(
            "model", "pick or build the model", model=args.model, seed=args.seed, tmp=tmp,
            random_v3=args.random_v3,
        )  # fmt: skip
        if "error" in model:
            raise SystemExit(f"bench_v2_end_to_end: no model: {model['error']}")
        report["model"] = model

        warmup = run(
            "write",
            f"warm-up file {WARMUP_N} x {WARMUP_T}",
            dims=[128, 128],
            n=WARMUP_N,
            frames=WARMUP_T,
            seed=args.seed + 99,
            path=str(tmp_path / "warmup.hdf5"),
        )
        if "error" in warmup:
            raise SystemExit(f"bench_v2_end_to_end: writing failed: {warmup['error']}")

        for role, (dims, n, frames) in sizes.items():
            label = size_label(dims, n, frames)
            # input + the classified copy (write_classification copies the traces)
            needed = 2 * trace_bytes(n, frames) + DISK_MARGIN_BYTES
            free = shutil.disk_usage(tmp).free
            if free < needed:
                note = (
                    f"{label}: skipped, needs {needed / 2**30:.1f} GB free in {tmp}, "
                    f"has {free / 2**30:.1f} GB (use --tmp-dir)"
                )
                log(note)
                report["notes"].append(note)
                continue
            path = str(tmp_path / f"{role}.hdf5")
            written = run(
                "write",
                f"{label} ({trace_bytes(n, frames) / 2**20:,.0f} MB of traces)",
                dims=list(dims),
                n=n,
                frames=frames,
                seed=args.seed,
                path=path,
            )
            report["files"][role] = written
            if "error" in written:
                continue
            repeats = args.repeats or (1 if args.quick or n > 20_000 else 3)
            ours = run(
                "ours",
                f"classify_file {label}, {repeats} run(s)",
                model=model["spec"],
                path=path,
                out=str(tmp_path / f"{role}_classified.hdf5"),
                warmup=warmup["path"],
                n=n,
                repeats=repeats,
                split=not args.no_split,
                profile=args.profile if role == "throughput" else 0,
            )
            ours.update(dims=list(dims), frames=frames)
            report["ours"][role] = ours

        if not args.skip_baseline:
            available = {
                report["sizes"][role]: {"path": info["path"]}
                for role, info in report["files"].items()
                if "error" not in info
            }
            report["baseline"] = run(
                "baseline",
                f"CaImAn evaluate_components_CNN algorithm, at most {max_n} components per file",
                sizes=available,
                max_n=max_n,
            )
            report["baseline_max_n"] = max_n
    report["load_average_end"] = list(os.getloadavg())
    add_derived(report)
    return report


def add_derived(report: dict) -> None:
    """Rates, ratios and target checks."""
    baseline = report.get("baseline", {})
    for role, ours in report["ours"].items():
        if "error" in ours:
            continue
        label = report["sizes"][role]
        ours["rate"] = ours["n"] / ours["end_to_end_s"]
        base = baseline.get("sizes", {}).get(label)
        if base:
            base["rate"] = 1.0 / base["per_component_s"]
            ours["ratio"] = ours["rate"] / base["rate"]
    targets = {}
    at_target = {
        "throughput": not report["quick"] and report["sizes"]["throughput"] == THROUGHPUT_SIZE,
        "rss": not report["quick"] and report["sizes"].get("rss") == RSS_SIZE,
    }
    fast = report["ours"].get("throughput", {})
    fast_label = report["sizes"]["throughput"]
    if "rate" in fast:
        targets["rate"] = {
            "what": f"throughput >= {TARGET_RATE:,.0f} components/s at {THROUGHPUT_SIZE}",
            "value": f"{fast['rate']:,.0f} components/s (measured at {fast_label})",
            "met": fast["rate"] >= TARGET_RATE if at_target["throughput"] else None,
        }
    if "ratio" in fast:
        extrapolated = baseline["sizes"][fast_label]["extrapolated"]
        targets["ratio"] = {
            "what": f"ours / baseline >= {TARGET_RATIO:.0f}x at {THROUGHPUT_SIZE}",
            "value": f"{fast['ratio']:.1f}x (measured at {fast_label}"
            + (", baseline extrapolated)" if extrapolated else ")"),
            "met": fast["ratio"] >= TARGET_RATIO if at_target["throughput"] else None,
        }
    big = report["ours"].get("rss", {})
    if "rss_peak_mb" in big:
        targets["rss"] = {
            "what": f"peak RSS < {TARGET_RSS_MB:,.0f} MB at {RSS_SIZE}",
            "value": f"{big['rss_peak_mb']:,.0f} MB (measured at {report['sizes'].get('rss')})",
            "met": big["rss_peak_mb"] < TARGET_RSS_MB if at_target["rss"] else None,
        }
    report["targets"] = targets


def yes_no(met: bool | None) -> str:
    return "n/a (not the target size)" if met is None else ("yes" if met else "NO")


def print_report(report: dict) -> None:
    _runner.print_header(
        report,
        "calcomp_caiman model v2/v3 end-to-end benchmark (classify_file on CaImAn result files)",
        "timings are pessimistic and noisy.",
    )
    model = report["model"]
    print(
        f"model: {model['name']} (version {model.get('version', 2)}, uses_evidence="
        f"{model['uses_evidence']}, scale_rule="
        f"{model['scale_rule']}, {model['flops_per_patch'] / 1e6:.2f} MFLOP/patch)"
    )
    print(f"model source: {model['source']}; bundled: {', '.join(model['bundled'])}")
    for role, info in report["files"].items():
        label = report["sizes"][role]
        if "error" in info:
            print(f"file {label}: writing failed: {info['error']}")
            continue
        print(
            f"file {label}: {info['file_mb']:,.0f} MB, {info['nnz_per_component']:.0f} "
            f"px/component, written in {info['write_s']:.1f} s, generator peak RSS "
            f"{info['rss_peak_mb']:,.0f} MB"
        )
    for note in report["notes"]:
        print(f"note: {note}")

    baseline = report.get("baseline", {})
    print("\nEnd to end (ours: classify_file, file to file; baseline: CaImAn")
    print("evaluate_components_CNN algorithm on the same footprints, in memory, no traces)")
    print(
        f"{'FOV':>10} {'N':>7} {'T':>6} {'ours s':>8} {'ours comp/s':>12} "
        f"{'baseline comp/s':>26} {'ratio':>7} {'peak RSS MB':>12}"
    )
    for role, ours in report["ours"].items():
        dims_text = report["sizes"][role].split(":")[0]
        if "error" in ours:
            print(f"{dims_text:>10}  ours failed: {ours['error']}")
            continue
        base = baseline.get("sizes", {}).get(report["sizes"][role])
        base_text = "-"
        if base:
            note = f" (extrap. from {base['measured_n']:,})" if base["extrapolated"] else ""
            base_text = f"{base['rate']:,.0f}{note}"
        ratio = f"{ours['ratio']:.1f}x" if "ratio" in ours else "-"
        print(
            f"{dims_text:>10} {ours['n']:>7,} {ours['frames']:>6,} {ours['end_to_end_s']:>8.2f} "
            f"{ours['rate']:>12,.0f} {base_text:>26} {ratio:>7} {ours['rss_peak_mb']:>12,.0f}"
        )
    if print_baseline_setup(baseline):
        for label, base in baseline["sizes"].items():
            print(
                f"  {label}: on {base['measured_n']:,} components, crops {base['crops_s']:.2f} s, "
                f"predict {base['predict_s']:.2f} s"
            )

    split_rows = [(r, o) for r, o in report["ours"].items() if "split_s" in o]
    if split_rows:
        print("\nOurs, split (same work, each step timed separately, s; share of their sum)")
        print(
            f"{'FOV:N:T':>22} "
            + " ".join(f"{part:>13}" for part in SPLIT_PARTS)
            + f" {'sum':>7} {'(traces read)':>14}"
        )
        for role, ours in split_rows:
            split = ours["split_s"]
            total = sum(split[part] for part in SPLIT_PARTS)
            cells = " ".join(
                f"{split[part]:>6.2f} ({100 * split[part] / total:>3.0f}%)" for part in SPLIT_PARTS
            )
            print(
                f"{report['sizes'][role]:>22} {cells} {total:>7.2f} {split['traces_read']:>14.2f}"
            )
        print(
            "  features include reading the traces (traces read: the same chunks read alone); "
            "network = shape network + fusion head (v3: + temporal branch); patches (v3: "
            "channels); other = crop scale, flags, fields"
        )

    print("\nOurs, memory of the child process (MB; ru_maxrss; VmHWM = this address space)")
    print(f"{'FOV:N:T':>22} {'after imports':>13} {'after warm-up':>13} {'peak':>7} {'VmHWM':>7}")
    for role, ours in report["ours"].items():
        if "error" in ours:
            continue
        hwm = "-" if ours["vm_hwm_mb"] is None else f"{ours['vm_hwm_mb']:,.0f}"
        print(
            f"{report['sizes'][role]:>22} {ours['rss_after_imports_mb']:>13,.0f} "
            f"{ours['rss_after_warmup_mb']:>13,.0f} {ours['rss_peak_mb']:>7,.0f} {hwm:>7}"
        )

    print("\nTargets")
    for target in report["targets"].values():
        print(f"  {target['what']}: {target['value']} -> met: {yes_no(target['met'])}")
    if not report["targets"]:
        print("  none measured")

    for role, ours in report["ours"].items():
        if ours.get("profile"):
            print(f"\nProfile of one classify_file, {report['sizes'][role]} (by own time)")
            lines = ours["profile"].strip().splitlines()
            start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
            print("\n".join(lines[max(0, start - 2) :]))


def main(argv=None) -> int:
    return _runner.benchmark_main(argv, build_parser(), TASKS, run_benchmark, print_report)


if __name__ == "__main__":
    raise SystemExit(main())
