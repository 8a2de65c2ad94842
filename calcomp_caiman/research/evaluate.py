"""Evaluation of a classifier on held-out labelled components, against two baselines.

* :func:`evaluate_model`: :func:`~calcomp_caiman.research.metrics.evaluation_metrics` of a
  model and of baselines per video and pooled by kind (real, simulated).
* :func:`write_report`: the report as JSON and a summary figure (PNG).
* :func:`load_evaluation_data`: patches, labels and shape features of real-ROI
  archives, one entry per video.
* :func:`run_evaluation`: the whole job behind ``calcomp evaluate``: load the data,
  train the baselines of :mod:`calcomp_caiman.research.baselines` on other videos, evaluate,
  write the report.

* :func:`held_out_videos`: the real videos a model was early-stopped and tested on, as
  its folder's ``config.json`` records them.

Which videos are held out is a fact of a model (its ``config.json``) and of the recipe
that trained it, never of this module. Keras is imported only by the CNN baseline,
matplotlib only by :func:`write_report`.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zipfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np

from calcomp_caiman._version import __version__
from calcomp_caiman.errors import InvalidFileError
from calcomp_caiman.evidence.patches import extract_patches, project_footprints, resolve_gsig
from calcomp_caiman.io.atomic import atomic_replace, atomic_write_text
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.research.baselines import (
    SHAPE_FEATURES,
    ShapeBaseline,
    shape_features,
    train_caiman_cnn_baseline,
)
from calcomp_caiman.research.datasets import load_roi_archive
from calcomp_caiman.research.metrics import evaluation_metrics
from calcomp_caiman.schema import CLASSES, PATCH_SIZE

logger = logging.getLogger(__name__)

__all__ = [
    "evaluate_model",
    "held_out_videos",
    "write_report",
    "load_evaluation_data",
    "run_evaluation",
]

_SIMULATED_PREFIX = "simulated"
_HELD_OUT_KEYS = ("real_validation_videos", "real_test_videos")


# ------------------------------------------------------------- held-out videos


def held_out_videos(model: CalcompModel) -> tuple[frozenset[str], frozenset[str]]:
    """The real videos a model was validated and tested on, from its ``config.json``.

    Parameters
    ----------
    model : CalcompModel
        A model whose ``config.json`` ``training_data`` records
        ``real_validation_videos`` and ``real_test_videos`` (``"<dataset>/<video>"``
        keys of the ``real_rois`` archives), as the bundled models do (a model trained
        further or refitted records none: its new labels may come from those videos).

    Returns
    -------
    validation : frozenset of str
        Videos used for early stopping and calibration: never trained on.
    test : frozenset of str
        Videos held out for testing: never used for any choice.

    Raises
    ------
    ValueError
        The model's ``config.json`` records no such lists (e.g. a model a lab trained
        with ``calcomp train``), or they are not lists of video keys.

    Examples
    --------
    >>> from calcomp_caiman.model.folder import CalcompModel
    >>> validation, test = held_out_videos(CalcompModel.load())
    >>> sorted(validation)
    ['caiman_paper_yst/YST_part21', 'neurofinder_train/02.01']
    >>> sorted(test)  # doctest: +NORMALIZE_WHITESPACE
    ['caiman_paper_yst/YST_part22', 'neurofinder_test/01.01', 'neurofinder_test/02.01',
     'neurofinder_test/04.01']
    """
    data = model.config.get("training_data")
    lists = []
    for key in _HELD_OUT_KEYS:
        videos = data.get(key) if isinstance(data, Mapping) else None
        if not isinstance(videos, (list, tuple)) or not all(isinstance(v, str) for v in videos):
            raise ValueError(
                f"model {model.name!r} records no held-out videos: its config.json "
                f"training_data has no {key!r} list of video keys (models trained outside "
                f"the bundled recipes may not). Name the videos to evaluate yourself "
                f"(calcomp evaluate without --test-videos, or run_evaluation(videos=...)), "
                f"or add 'real_validation_videos' and 'real_test_videos' to its config.json."
            )
        lists.append(frozenset(videos))
    return lists[0], lists[1]


# -------------------------------------------------------------------- evaluation


def _kind(name: str) -> str:
    return "simulated" if str(name).startswith(_SIMULATED_PREFIX) else "real"


def _predict(method, patches, features) -> np.ndarray | None:
    """Probabilities of a model or baseline; ``None`` when it needs features that are missing."""
    if hasattr(method, "predict_proba"):
        return None if features is None else method.predict_proba(features)
    return method.predict(patches)


def evaluate_model(
    model,
    datasets: Mapping[str, tuple],
    *,
    baselines: Mapping[str, object] | None = None,
) -> dict:
    """Metrics of a model and baselines on every dataset and pooled by kind.

    Parameters
    ----------
    model : CalcompModel
        Or any object with ``predict(patches) -> (N, 4)``.
    datasets : dict of str to (patches, labels, features)
        One entry per video (or simulated set): ``(N, 50, 50)`` patches, ``(N,)`` label
        codes 0-4, and ``(N, F)`` :func:`~calcomp_caiman.research.baselines.shape_features` or
        ``None``. Names starting with ``"simulated"`` are pooled as simulated data, all
        others as real data.
    baselines : dict of str to object, optional
        Extra methods by name: objects with ``predict_proba(features)`` (like
        :class:`~calcomp_caiman.research.baselines.ShapeBaseline`; skipped on datasets without
        features) or ``predict(patches)`` (like
        :class:`~calcomp_caiman.research.baselines.KerasBaseline`).

    Returns
    -------
    dict
        ``calcomp_version``, ``created`` (ISO date and time), ``model`` (``name``,
        ``sha256``), ``classes``, ``methods`` (``["model", *baselines]``),
        ``datasets`` (by name: ``kind``, ``n``, ``metrics`` by method, each an
        :func:`~calcomp_caiman.research.metrics.evaluation_metrics` dict) and ``pooled`` (by kind,
        ``"real"`` and/or ``"simulated"``: ``datasets`` (names), ``metrics`` by method
        over the concatenated components of that kind's datasets).

    Examples
    --------
    >>> import numpy as np
    >>> class Uniform:
    ...     def predict(self, patches):
    ...         return np.full((len(patches), 4), 0.25, np.float32)
    >>> data = {"video": (np.zeros((3, 50, 50), np.float32), np.array([1, 0, 4]), None)}
    >>> report = evaluate_model(Uniform(), data)
    >>> report["pooled"]["real"]["metrics"]["model"]["auc_neuron_vs_non_neuron"]
    0.5
    """
    methods = {"model": model, **dict(baselines or {})}
    report: dict = {
        "calcomp_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "model": {
            "name": str(getattr(model, "name", type(model).__name__)),
            "sha256": str(getattr(model, "sha256", "")),
        },
        "classes": list(CLASSES),
        "methods": list(methods),
        "datasets": {},
        "pooled": {},
    }
    collected: dict = {}
    for name, entry in datasets.items():
        if len(entry) != 3:
            raise ValueError(
                f"datasets[{name!r}] must be (patches, labels, features or None), got "
                f"{len(entry)} items; load_evaluation_data returns that form."
            )
        patches, labels, features = entry
        labels = np.asarray(labels, dtype=np.int64)
        kind = _kind(name)
        metrics = {}
        for method_name, method in methods.items():
            probs = _predict(method, patches, features)
            if probs is None:
                logger.info("%s: no shape features, %s skipped", name, method_name)
                continue
            metrics[method_name] = evaluation_metrics(probs, labels)
            store = collected.setdefault(kind, {}).setdefault(method_name, ([], [], []))
            store[0].append(np.asarray(probs, dtype=np.float32))
            store[1].append(labels)
            store[2].append(str(name))
        report["datasets"][str(name)] = {"kind": kind, "n": int(len(labels)), "metrics": metrics}
        logger.info("evaluated %s (%d components)", name, len(labels))
    for kind, by_method in collected.items():
        names = [n for n, d in report["datasets"].items() if d["kind"] == kind]
        report["pooled"][kind] = {
            "datasets": names,
            "metrics": {
                method_name: dict(
                    evaluation_metrics(np.concatenate(probs), np.concatenate(labels)),
                    datasets=used,
                )
                for method_name, (probs, labels, used) in by_method.items()
            },
        }
    return report


# ------------------------------------------------------------------------ report


def write_report(report: dict, out_prefix: str | os.PathLike) -> tuple[Path, Path]:
    """Write a report as ``<out_prefix>.json`` and a summary figure ``<out_prefix>.png``.

    Parameters
    ----------
    report : dict
        From :func:`evaluate_model` (or :func:`run_evaluation`).
    out_prefix : str or path-like
        Path without suffix; its folder is created if needed.

    Returns
    -------
    json_path, png_path : Path

    Raises
    ------
    ValueError
        The report holds values JSON cannot store (NaN, Inf, arrays).

    Notes
    -----
    The figure has, for each pooled kind of data (real, simulated), one confusion matrix
    per method (3-way neuron / doubtful / non_neuron for real data, 4-class for
    simulated data, rows normalised), then per-class F1 bars, ROC curves of neuron vs
    non_neuron and a reliability diagram. It is drawn with matplotlib's Agg canvas, so no
    display is needed and the global backend is not changed. Both files are written to
    temporary names and renamed.
    """
    prefix = Path(out_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    json_path = prefix.with_name(prefix.name + ".json")
    png_path = prefix.with_name(prefix.name + ".png")
    try:
        text = json.dumps(report, indent=1, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"report cannot be written as JSON ({err}); build it with evaluate_model."
        ) from err
    atomic_write_text(json_path, text + "\n")
    figure = _report_figure(report)
    atomic_replace(
        str(png_path),
        lambda name: figure.savefig(name, format="png", dpi=110),
        mode=0o644,
        original=str(png_path) if png_path.exists() else None,
    )
    logger.info("wrote %s and %s", json_path, png_path)
    return json_path, png_path


def _report_figure(report: dict):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pooled = report.get("pooled", {})
    kinds = [kind for kind in ("real", "simulated") if kind in pooled] or list(pooled)
    methods = list(report.get("methods", [])) or ["model"]
    n_cols = max(len(methods), 4)
    n_rows = len(kinds) + 1
    figure = Figure(figsize=(3.6 * n_cols, 3.4 * n_rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(n_rows, n_cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_visible(False)
    colours = {name: f"C{i}" for i, name in enumerate(methods)}

    def view(kind):
        return "four_class" if kind == "simulated" else "three_way"

    for row, kind in enumerate(kinds):
        for col, method in enumerate(methods):
            metrics = pooled[kind]["metrics"].get(method)
            if metrics is None:
                continue
            ax = axes[row, col]
            ax.set_visible(True)
            summary = metrics[view(kind)]
            matrix = np.asarray(summary["confusion"], dtype=float)
            share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
            ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
            for (i, j), value in np.ndenumerate(matrix):
                ax.text(
                    j,
                    i,
                    f"{int(value)}",
                    ha="center",
                    va="center",
                    color="white" if share[i, j] > 0.6 else "black",
                    fontsize=8,
                )
            ticks = range(len(summary["classes"]))
            ax.set_xticks(ticks, summary["classes"], rotation=30, fontsize=8)
            ax.set_yticks(ticks, summary["classes"], fontsize=8)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            macro = summary["macro_f1"]
            ax.set_title(
                f"{kind}: {method}\nmacro-F1 {macro:.3f}"
                if macro is not None
                else f"{kind}: {method}",
                fontsize=9,
            )

    bottom = axes[-1]
    for col, kind in enumerate(kinds[:2]):
        ax = bottom[col]
        ax.set_visible(True)
        classes = pooled[kind]["metrics"][next(iter(pooled[kind]["metrics"]))][view(kind)][
            "classes"
        ]
        width = 0.8 / len(methods)
        for i, method in enumerate(methods):
            metrics = pooled[kind]["metrics"].get(method)
            if metrics is None:
                continue
            f1 = [metrics[view(kind)]["f1"][c] for c in classes]
            ax.bar(
                np.arange(len(classes)) + i * width,
                [v if v is not None else 0 for v in f1],
                width,
                label=method,
                color=colours[method],
            )
        ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("F1")
        ax.set_title(f"per-class F1 ({kind})", fontsize=9)
        ax.legend(fontsize=7)
    if kinds:
        kind = kinds[0]
        roc_ax, rel_ax = bottom[2], bottom[3]
        roc_ax.set_visible(True)
        rel_ax.set_visible(True)
        for method in methods:
            metrics = pooled[kind]["metrics"].get(method)
            if metrics is None:
                continue
            roc = metrics["neuron_vs_non_neuron"]["roc"]
            if roc is not None:
                auc = metrics["auc_neuron_vs_non_neuron"]
                roc_ax.plot(
                    roc["fpr"], roc["tpr"], color=colours[method], label=f"{method} (AUC {auc:.3f})"
                )
            bins = metrics["calibration"]["bins"]
            points = [(c, a) for c, a in zip(bins["confidence"], bins["accuracy"]) if c is not None]
            if points:
                ece = metrics["calibration"]["ece"]
                rel_ax.plot(
                    *zip(*points),
                    "o-",
                    color=colours[method],
                    ms=3,
                    label=f"{method} (ECE {ece:.3f})",
                )
        for ax in (roc_ax, rel_ax):
            ax.plot([0, 1], [0, 1], ":", color="grey")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.legend(fontsize=7, loc="lower right")
        roc_ax.set_xlabel("false positive rate")
        roc_ax.set_ylabel("true positive rate")
        roc_ax.set_title(f"neuron vs non_neuron ({kind})", fontsize=9)
        rel_ax.set_xlabel("top-class confidence")
        rel_ax.set_ylabel("accuracy")
        rel_ax.set_title(f"reliability ({kind})", fontsize=9)
    figure.suptitle(f"calcomp evaluation: {report.get('model', {}).get('name', '')}")
    return figure


# ------------------------------------------------------------------------- data


def _archive_paths(paths) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            found.extend(sorted(path.glob("*.npz")))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such labelled-footprint archive or folder")
    return found


def _video_key(path: Path) -> str:
    """``"<dataset>/<video>"`` of an archive (``video`` alone, or the file stem, if unknown)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            dataset = str(data["dataset"]) if "dataset" in data.files else ""
            video = str(data["video"]) if "video" in data.files else path.stem
    except (OSError, ValueError, EOFError, AttributeError, zipfile.BadZipFile) as err:
        raise InvalidFileError(path, f"not a labelled-footprint archive (.npz): {err}") from err
    return f"{dataset}/{video}" if dataset else video


def load_evaluation_data(
    paths,
    *,
    gSig=None,
    videos: Collection[str] | None = None,
    exclude_videos: Collection[str] = (),
    group_by: str = "video",
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Patches, labels and shape features of real-ROI archives, one entry per video.

    Parameters
    ----------
    paths : path-like or sequence of path-likes
        Labelled-footprint archives (``.npz``, :func:`~calcomp_caiman.research.datasets.load_roi_archive`)
        or folders of them (every ``*.npz`` inside).
    gSig : float, optional
        Typical neuron half-size in px; by default estimated per file from its footprints,
        as :func:`~calcomp_caiman.research.train.make_training_set` does for training.
    videos : collection of str, optional
        Keep only these video keys (e.g. the test videos of :func:`held_out_videos`).
    exclude_videos : collection of str
        Drop these video keys.
    group_by : {"video", "file"}
        One entry per video (key ``"<dataset>/<video>"``, as in the training recipe; the
        files of the methods of one video are concatenated in path order) or per file
        (key ``"<dataset>/<video>/<method>"``).

    Returns
    -------
    dict of str to (patches, labels, features)
        ``(N, 50, 50)`` float32 patches, ``(N,)`` int64 codes (1 neuron, 4 doubtful,
        0 non_neuron), ``(N, 10)`` float64
        :func:`~calcomp_caiman.research.baselines.shape_features`; sorted by key.

    Raises
    ------
    FileNotFoundError
        A path does not exist.
    InvalidFileError
        An archive cannot be read.
    ValueError
        ``group_by`` is neither ``"video"`` nor ``"file"``.
    """
    if group_by not in ("video", "file"):
        raise ValueError(f"group_by must be 'video' or 'file', got {group_by!r}.")
    keep = None if videos is None else set(videos)
    parts: dict[str, list] = {}
    for path in _archive_paths(paths):
        key = _video_key(path)
        if (keep is not None and key not in keep) or key in set(exclude_videos):
            continue
        source = load_roi_archive(path)
        if group_by == "file":
            key = f"{key}/{source.method or path.stem}"
        flat, dims2 = project_footprints(source.A, source.dims)
        gsig = resolve_gsig(flat, dims2, gSig)
        patches = extract_patches(flat, dims2, gSig=gsig)
        features = shape_features(flat, dims2, gSig=gsig)
        parts.setdefault(key, []).append((patches, source.labels.astype(np.int64), features))
        logger.info("loaded %s: %d components (gSig %.2f)", path.name, len(patches), gsig)
    return {key: _concatenate(items) for key, items in sorted(parts.items())}


def _resolve_settings(settings):
    """``simulate.TRAIN_SETTINGS`` / ``SHIFTED_SETTINGS`` for ``"train"`` / ``"shifted"``."""
    if not isinstance(settings, str):
        return settings
    from calcomp_caiman.research import simulate

    names = {"train": simulate.TRAIN_SETTINGS, "shifted": simulate.SHIFTED_SETTINGS}
    if settings not in names:
        raise ValueError(
            f"simulation settings must be 'train', 'shifted' or a SimulationSettings, "
            f"got {settings!r}."
        )
    return names[settings]


def _simulated_data(fields: int, per_class: int, seed: int, settings) -> tuple:
    """(patches, labels, features) of ``fields`` simulated fields of view."""
    from calcomp_caiman.research.simulate import simulate_footprints

    options = {} if settings is None else {"settings": _resolve_settings(settings)}
    parts = []
    for index in range(int(fields)):
        A, dims, labels, gsig = simulate_footprints(per_class, seed=seed + index, **options)
        parts.append(
            (
                extract_patches(A, dims, gSig=gsig),
                np.asarray(labels, np.int64),
                shape_features(A, dims, gSig=gsig),
            )
        )
    if not parts:
        return (
            np.zeros((0, PATCH_SIZE, PATCH_SIZE), np.float32),
            np.zeros(0, np.int64),
            np.zeros((0, len(SHAPE_FEATURES))),
        )
    return _concatenate(parts)


def _concatenate(items: Sequence[tuple]) -> tuple:
    """Concatenate ``(patches, labels, features)`` triples part by part."""
    return tuple(np.concatenate([item[i] for item in items]) for i in range(3))


def run_evaluation(
    model: CalcompModel,
    paths,
    *,
    out_prefix: str | os.PathLike,
    videos: Collection[str] | None = None,
    group_by: str = "video",
    gSig=None,
    baselines: bool = True,
    training_paths=None,
    validation_videos: Collection[str] = frozenset(),
    test_videos: Collection[str] = frozenset(),
    training_simulated_fields: int = 8,
    training_simulated_per_class: int = 600,
    training_simulated_settings="train",
    cnn_epochs: int = 15,
    simulated: bool = True,
    simulated_fields: int = 2,
    simulated_per_class: int = 250,
    simulated_settings="train",
    seed: int = 0,
) -> tuple[dict, Path, Path]:
    """Evaluate a model (and baselines trained here) and write the report: ``calcomp evaluate``.

    Parameters
    ----------
    model : CalcompModel
    paths : path-like or sequence
        Real-ROI archives or folders to evaluate on (:func:`load_evaluation_data`).
    out_prefix : path-like
        The report goes to ``<out_prefix>.json`` and ``<out_prefix>.png``.
    videos : collection of str, optional
        Evaluate only these videos, e.g. the model's test videos
        (:func:`held_out_videos`) when ``paths`` is the whole ``real_rois`` folder.
    group_by, gSig
        As in :func:`load_evaluation_data`.
    baselines : bool
        Train and evaluate :class:`~calcomp_caiman.research.baselines.ShapeBaseline` and the
        CaImAn CNN (:func:`~calcomp_caiman.research.baselines.train_caiman_cnn_baseline`).
    training_paths : path-like or sequence, optional
        Real-ROI archives or folders the baselines are trained on (required when
        ``baselines``). Videos in ``test_videos`` or among the evaluated ones are dropped;
        those in ``validation_videos`` are used for early stopping.
    validation_videos, test_videos : collection of str
        The real videos the baselines validate on and never train on; pass the model's
        own (:func:`held_out_videos`) so that the baselines see the model's split.
        Default: none, i.e. the baselines train on every real video of
        ``training_paths`` that is not evaluated and validate on simulated data only
        (``training_simulated_fields`` > 0).
    training_simulated_fields, training_simulated_per_class, training_simulated_settings
        Simulated footprints added to the baselines' training data, as in the recipe of
        the bundled model (8 fields of 600 per class, ``"train"`` settings, seeds 0-7;
        validation adds every fourth footprint of seeds 1000-1007). Settings as for
        ``simulated_settings``. 0 fields: real data only.
    cnn_epochs : int
        Maximum epochs of the CaImAn CNN (early stopping with patience 5).
    simulated : bool
        Also evaluate on a simulated set: ``simulated_fields`` fields of view of
        ``simulated_per_class`` footprints per class from
        :func:`~calcomp_caiman.research.simulate.simulate_footprints` with seeds 900000 and up
        (never used in training). ``simulated_settings``: ``"train"``
        (``TRAIN_SETTINGS``, the default), ``"shifted"`` (``SHIFTED_SETTINGS``) or a
        ``SimulationSettings``. The dataset is named ``"simulated/<settings name>"``
        (``"simulated/custom"`` for an object) and pooled as ``"simulated"``.
    seed : int
        Seed of the CNN baseline's training.

    Returns
    -------
    report : dict
        :func:`evaluate_model`'s report plus ``training`` (sizes, seconds, CNN history)
        when baselines were trained, and ``evaluation_files``.
    json_path, png_path : Path

    Raises
    ------
    ValueError
        ``baselines`` without ``training_paths``, or nothing to evaluate.

    Notes
    -----
    Time on two CPU cores (measured with the recipe's defaults): loading and featurising
    the real archives, about 1.5 s per 10 000 components; simulating and cropping, about
    1.6 s per field of 2 400 footprints (16 fields for the baselines' training and
    validation data, 2 for the test set: about 30 s); the shape baseline fits in about
    2 s; the CaImAn CNN dominates at about 3.5 ms per training patch per epoch, i.e.
    about 100 s per epoch over ~27 000 training patches (8 000 real + 19 200 simulated),
    so ``cnn_epochs=15`` takes up to about 25 minutes. ``baselines=False`` finishes in
    under a minute; ``cnn_epochs`` or ``training_simulated_per_class`` bound the rest.
    """
    eval_paths = _archive_paths(paths)
    datasets: dict = dict(
        load_evaluation_data(eval_paths, gSig=gSig, videos=videos, group_by=group_by)
    )
    if simulated:
        label = simulated_settings if isinstance(simulated_settings, str) else "custom"
        datasets[f"{_SIMULATED_PREFIX}/{label}"] = _simulated_data(
            simulated_fields, simulated_per_class, 900_000, simulated_settings
        )
    if not datasets:
        raise ValueError(
            f"nothing to evaluate: no archives in {[str(p) for p in eval_paths]} match "
            f"videos={sorted(videos) if videos is not None else None}, and simulated=False."
        )
    evaluated = {key.rsplit("/", 1)[0] if group_by == "file" else key for key in datasets}
    methods: dict = {}
    training_info = None
    if baselines:
        if not training_paths:
            raise ValueError(
                "baselines=True needs training_paths (real-ROI archives or folders to train "
                "the baselines on, e.g. the real_rois folder); or pass baselines=False."
            )
        start = time.perf_counter()
        real = load_evaluation_data(
            training_paths, gSig=gSig, exclude_videos=set(test_videos) | evaluated
        )
        train_parts = [d for k, d in real.items() if k not in set(validation_videos)]
        val_parts = [d for k, d in real.items() if k in set(validation_videos)]
        if training_simulated_fields:
            settings = training_simulated_settings
            per_class = training_simulated_per_class
            train_parts.append(_simulated_data(training_simulated_fields, per_class, 0, settings))
            sim_val = _simulated_data(training_simulated_fields, per_class, 1000, settings)
            every_fourth = np.arange(len(sim_val[1])) % 4 == 0
            val_parts.append(tuple(part[every_fourth] for part in sim_val))
        if not train_parts or not val_parts:
            raise ValueError(
                f"the baselines need training and validation data: training_paths gave "
                f"{len(train_parts)} training and {len(val_parts)} validation videos "
                f"(validation videos: {sorted(validation_videos)})."
            )
        train, val = _concatenate(train_parts), _concatenate(val_parts)
        prepared = time.perf_counter()
        shape = ShapeBaseline().fit(train[2], train[1])
        fitted = time.perf_counter()
        cnn = train_caiman_cnn_baseline(
            train[0], train[1], val_patches=val[0], val_labels=val[1], epochs=cnn_epochs, seed=seed
        )
        done = time.perf_counter()
        methods = {"shape_baseline": shape, "caiman_cnn": cnn}
        training_info = {
            "train_components": int(len(train[1])),
            "validation_components": int(len(val[1])),
            "real_videos": sorted(real),
            "validation_videos": sorted(set(validation_videos) & set(real)),
            "simulated_fields": int(training_simulated_fields),
            "seconds": {
                "data": prepared - start,
                "shape_baseline": fitted - prepared,
                "caiman_cnn": done - fitted,
            },
            "caiman_cnn_history": cnn.history,
        }
    report = evaluate_model(model, datasets, baselines=methods)
    report["evaluation_files"] = [str(p) for p in eval_paths if _video_key(p) in evaluated]
    if training_info is not None:
        report["training"] = training_info
    json_path, png_path = write_report(report, out_prefix)
    return report, json_path, png_path
