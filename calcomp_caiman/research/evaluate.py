"""Evaluation of a model on held-out labelled data, against baselines: ``calcomp evaluate``.

One entry, :func:`run_evaluation`, with two paths:

* the patch report (shape only): labelled-footprint archives, one dataset per video,
  plus simulated footprints; the model against the shape-feature baseline and CaImAn's
  CNN architecture trained here (:func:`evaluate_model`); per video and pooled by kind
  (real, simulated); JSON and a figure (PNG). Models v1 and v2 classify the footprint
  patches; a model v3, which reads channels, classifies the same footprints as
  :func:`~calcomp_caiman.classify.classify_evidence` does (:func:`evidence_probs`).
* the evidence report (``simulated_caiman``: a model v2 or v3): every component of
  CaImAn results of simulated movies and the real test masks
  (:mod:`calcomp_caiman.research.labelled_results`); the model, the model without each
  kind of evidence (:func:`ablations`, :func:`evidence_ablations`), the shape model alone
  (v1), the two baselines and CaImAn's own selection (:func:`evaluate_results`); per test
  set, with the share of noise rejected and the F1 of the accepted set; JSON and Markdown
  tables.

Both score with :func:`~calcomp_caiman.research.metrics.evaluation_metrics`, train the
baselines with :func:`~calcomp_caiman.research.baselines.fit_baselines` and write with
:func:`~calcomp_caiman.research.report.write_report`. Which real videos are held out is
a fact of a model (its ``config.json``,
:func:`~calcomp_caiman.research.train.held_out_videos`) and of the recipe that trained
it, never of this module. Keras is imported only by the CNN baseline,
matplotlib only to draw the figure.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

import numpy as np

from calcomp_caiman._version import __version__
from calcomp_caiman.classify import classify_evidence
from calcomp_caiman.evidence.evidence import EVIDENCE_KINDS, Evidence
from calcomp_caiman.evidence.features import OPTIONAL_GROUPS
from calcomp_caiman.evidence.patches import crop_checked, footprints_for
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.refit import LabelledInputs
from calcomp_caiman.research.baselines import caiman_rule_probs, fit_baselines, shape_features
from calcomp_caiman.research.datasets import (
    archive_paths,
    concatenate_sets,
    load_evaluation_data,
    simulate_evaluation_fields,
    simulated_evaluation_set,
    video_key,
)
from calcomp_caiman.research.labelled_results import (
    LabelledResult,
    drop_groups,
    evaluation_sets,
    load_real_masks,
    load_simulated,
    result_inputs,
    split,
)
from calcomp_caiman.research.metrics import evaluation_metrics, selection_scores
from calcomp_caiman.research.report import write_report
from calcomp_caiman.research.train import held_out_videos
from calcomp_caiman.schema import CLASSES

logger = logging.getLogger(__name__)

__all__ = [
    "ablations",
    "evaluate_model",
    "evidence_ablations",
    "evidence_probs",
    "evaluate_results",
    "run_evaluation",
]

_SIMULATED_PREFIX = "simulated"
_NEURON = CLASSES.index("neuron")


# -------------------------------------------------------------- patch report


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
    model_probs: Mapping[str, np.ndarray] | None = None,
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
    model_probs : dict of str to (N, 4) ndarray, optional
        The model's probabilities on every dataset, computed beforehand from more than
        the patches (a model v3: :func:`evidence_probs`); then ``model.predict`` is not
        called.

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
                f"{len(entry)} items; datasets.load_evaluation_data returns that form."
            )
        patches, labels, features = entry
        labels = np.asarray(labels, dtype=np.int64)
        kind = _kind(name)
        metrics = {}
        for method_name, method in methods.items():
            if method_name == "model" and model_probs is not None:
                probs = _given_probs(model_probs, name, len(labels))
            else:
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


def _given_probs(model_probs: Mapping[str, np.ndarray], name: str, n: int) -> np.ndarray:
    probs = model_probs.get(name)
    if probs is None or np.shape(probs) != (n, len(CLASSES)):
        raise ValueError(
            f"model_probs[{name!r}] must be the model's ({n}, {len(CLASSES)}) probabilities on "
            f"that dataset, got {None if probs is None else np.shape(probs)}."
        )
    return np.asarray(probs, dtype=np.float32)


def evidence_probs(
    model: CalcompModel, parts: Sequence[tuple[Evidence, np.ndarray]], labels: np.ndarray
) -> np.ndarray:
    """A model's probabilities on a dataset made of whole results: :func:`classify_evidence`
    of each, concatenated in order.

    Parameters
    ----------
    model : CalcompModel
    parts : sequence of (Evidence, (n,) labels)
        The results the dataset's components come from, in the dataset's order.
    labels : (N,) ndarray
        The dataset's labels, checked against the parts' (same components, same order).

    Returns
    -------
    (N, 4) float32 ndarray

    Raises
    ------
    ValueError
        The parts' labels are not ``labels``.
    """
    probs = [classify_evidence(evidence, model) for evidence, _ in parts]
    found = np.concatenate([np.asarray(part_labels) for _, part_labels in parts] or [[]])
    if not np.array_equal(found.astype(np.int64), np.asarray(labels, np.int64)):
        raise ValueError(
            f"the results classified hold {len(found)} labelled components that are not the "
            f"dataset's {len(labels)} in order; build both from the same archives."
        )
    return np.concatenate(probs) if probs else np.zeros((0, len(CLASSES)), np.float32)


def _patch_report_probs(model: CalcompModel, paths, datasets: Mapping[str, tuple], *, gSig,
                        group_by: str, simulated: tuple | None) -> dict[str, np.ndarray]:  # fmt: skip
    """:func:`evidence_probs` of every dataset of the patch report (a model v3): the real
    masks as :func:`~calcomp_caiman.research.labelled_results.load_real_masks` reads them,
    the simulated fields as :func:`simulate_evaluation_fields` makes them."""
    parts: dict[str, list] = {}
    for item in load_real_masks(paths, (), gSig=gSig):
        key = item.group if group_by == "video" else f"{item.group}/{item.method}"
        if key in datasets:
            parts.setdefault(key, []).append((item.evidence, item.labels))
    if simulated is not None:
        name, arguments = simulated
        parts[name] = [
            (Evidence.build(A, dims, gSig=gsig), labels)
            for A, dims, labels, gsig in simulate_evaluation_fields(*arguments)
        ]
    return {name: evidence_probs(model, parts.get(name, []), entry[1])
            for name, entry in datasets.items()}  # fmt: skip


# ------------------------------------------------------------ evidence report


def ablations(
    model: CalcompModel, logits: Sequence[np.ndarray], features: Sequence[np.ndarray]
) -> Mapping[str, list[np.ndarray]]:
    """v2's probabilities with all evidence, without each optional group, shape only."""
    out = {"v2": [model.fuse(z, f) for z, f in zip(logits, features)]}
    for group in OPTIONAL_GROUPS:
        out[f"v2-no-{group}"] = [
            model.fuse(z, drop_groups(f, [group])) for z, f in zip(logits, features)
        ]
    out["v2-shape-only"] = [
        model.fuse(z, drop_groups(f, OPTIONAL_GROUPS)) for z, f in zip(logits, features)
    ]
    return out


def evidence_ablations(
    model: CalcompModel, items: Sequence[LabelledResult]
) -> Mapping[str, list[np.ndarray]]:
    """A model's probabilities with all evidence, without each optional kind, shape only.

    Each row is :func:`~calcomp_caiman.classify.classify_evidence` of every result, with
    ``use`` leaving out the kind (``neighbours``, ``image``, ``traces``, ``metrics``;
    shape only: all of them): the run-time answer when that evidence is missing. A model
    v3 then also sees the kind's channels as missing (``neighbours``; ``cn`` and
    ``image``). Rows are named ``v<version>``, ``v<version>-no-<kind>`` and
    ``v<version>-shape-only``.

    Parameters
    ----------
    model : CalcompModel
    items : sequence of LabelledResult

    Returns
    -------
    dict of str to list of (n, 4) float32 ndarray
        One array per result, in order.
    """
    tag = f"v{model.version}"
    optional = EVIDENCE_KINDS[1:]
    uses = {tag: None, **{f"{tag}-no-{kind}": [k for k in optional if k != kind]
                          for kind in optional}, f"{tag}-shape-only": []}  # fmt: skip
    return {
        name: [classify_evidence(item.evidence, model, use=use) for item in items]
        for name, use in uses.items()
    }


def _score(
    probs: Sequence[np.ndarray],
    items: Sequence[LabelledResult],
    accept: Callable[[np.ndarray], np.ndarray],
) -> dict:
    """Pooled metrics of one method's probabilities over the results of a test set."""
    p = np.concatenate(probs)
    labels = np.concatenate([item.labels for item in items])
    report = evaluation_metrics(p, labels)
    report["selection"] = selection_scores(accept(p), labels)
    return report


def _patches_and_shape(model: CalcompModel, item: LabelledResult):
    """Patches at the model's crop scale, and the shape features of the baseline."""
    flat, dims, scale = footprints_for(item.evidence, model.scale_rule)
    return crop_checked(flat, dims, scale, model.patch_size), shape_features(flat, dims, gSig=scale)


def evaluate_results(
    model: CalcompModel,
    shape_model: CalcompModel,
    train: Sequence[LabelledResult],
    val: Sequence[LabelledResult],
    test: Sequence[LabelledResult],
    *,
    inputs: Mapping[int, LabelledInputs] | None = None,
    cnn_baseline: bool = True,
    seed: int = 0,
) -> dict:
    """Score a model v2 or v3, its ablations, the shape model and the baselines on every
    test set.

    Parameters
    ----------
    model : CalcompModel
        A model v2 (with a fusion head: :func:`ablations` of its head) or v3
        (:func:`evidence_ablations`).
    shape_model : CalcompModel
        The shape model it is compared with (the bundled ``calcomp_resnet_v1``), as it
        classifies on its own.
    train, val, test : sequence of LabelledResult
        :func:`~calcomp_caiman.research.labelled_results.split`. The test sets are
        :func:`~calcomp_caiman.research.labelled_results.evaluation_sets`.
    inputs : mapping, optional
        Model v2: precomputed ``{id(result): (logits, features)}`` of ``model``.
    cnn_baseline : bool
        Also train CaImAn's CNN architecture (on ``train``, early-stopped on ``val``).
    seed : int

    Returns
    -------
    dict
        JSON-ready: ``model``, ``sha256``, ``min_prob``, ``temperature`` and ``sets``: per
        test set, ``results``, ``components``, ``settings`` and ``methods``: per method
        (``v2``, ``v2-no-<group>``, ``v2-shape-only`` or ``v3``, ``v3-no-<kind>``,
        ``v3-shape-only``; then ``v1``, ``shape-features``, ``caiman-cnn``,
        ``caiman-rule``) an :func:`~calcomp_caiman.research.metrics.evaluation_metrics`
        dict plus ``selection``
        (:func:`~calcomp_caiman.research.metrics.selection_scores`; the model's rows
        accept ``P(neuron) >= min_prob``, the others their top class). The ``v3`` row is
        :func:`~calcomp_caiman.classify.classify_evidence` of every result.

    Notes
    -----
    The shape-feature baseline and the CNN are trained at the same crops as v2.
    ``caiman-rule`` is CaImAn's own SNR / r-value selection stored in the files
    (``idx_components``, as ``evaluate_components`` applied it), where every result has it.
    """
    everything = [*train, *val, *test]
    tag = f"v{model.version}"
    inputs = dict(inputs or {})
    for item in everything if model.version < 3 else ():
        if id(item) not in inputs:
            inputs[id(item)] = result_inputs(model, item)
    shape = {id(i): _patches_and_shape(model, i) for i in everything}
    fitted, _ = fit_baselines(
        np.concatenate([shape[id(i)][0] for i in train]),
        np.concatenate([shape[id(i)][1] for i in train]),
        np.concatenate([i.labels for i in train]),
        val_patches=np.concatenate([shape[id(i)][0] for i in val]) if cnn_baseline else None,
        val_labels=np.concatenate([i.labels for i in val]) if cnn_baseline else None,
        cnn=cnn_baseline,
        seed=seed,
    )
    min_prob = model.thresholds.get("min_prob")
    report = {"model": model.name, "sha256": model.sha256, "min_prob": min_prob,
              "temperature": model.thresholds.get("temperature"), "sets": {}}  # fmt: skip
    for name, items in evaluation_sets(val, test).items():
        if not items:
            continue
        if model.version < 3:
            logits = [inputs[id(i)].logits for i in items]
            features = [inputs[id(i)].features for i in items]
            methods = dict(ablations(model, logits, features))
        else:
            methods = dict(evidence_ablations(model, items))
        methods["v1"] = [classify_evidence(i.evidence, shape_model) for i in items]
        methods["shape-features"] = [
            fitted["shape_baseline"].predict_proba(shape[id(i)][1]) for i in items
        ]
        if "caiman_cnn" in fitted:
            methods["caiman-cnn"] = [fitted["caiman_cnn"].predict(shape[id(i)][0]) for i in items]
        rule = [caiman_rule_probs(i.caiman_accepted) for i in items]
        if all(r is not None for r in rule):
            methods["caiman-rule"] = rule
        rows = {}
        for method, probs in methods.items():
            if method.startswith(tag) and min_prob is not None:
                cut = float(min_prob)
                accept = lambda p, cut=cut: p[:, _NEURON] >= cut  # noqa: E731
            else:
                accept = lambda p: p.argmax(axis=1) == _NEURON  # noqa: E731
            rows[method] = _score(probs, items, accept)
        report["sets"][name] = {
            "results": len(items),
            "components": int(sum(i.evidence.n for i in items)),
            "settings": sorted({i.setting for i in items}),
            "methods": rows,
        }
        logger.info("%s (%d components)", name, report["sets"][name]["components"])
        for method, r in rows.items():
            logger.info(
                "  %-18s macro-F1 %.3f  AUC %.3f  ECE %.3f  noise rejected %s  accepted-F1 %.3f",
                method, r["four_class"]["macro_f1"], r["auc_neuron_vs_rest"] or float("nan"),
                r["calibration"]["ece"], r["selection"]["noise_rejected"],
                r["selection"]["accepted_f1"],
            )  # fmt: skip
    return report


# ------------------------------------------------------------------ the entry


def run_evaluation(
    model: CalcompModel,
    paths,
    *,
    out_prefix: str | os.PathLike,
    simulated_caiman: str | os.PathLike | None = None,
    shape_model: CalcompModel | None = None,
    videos: Collection[str] | None = None,
    test_videos_only: bool = False,
    group_by: str = "video",
    gSig=None,
    baselines: bool = True,
    training_paths=None,
    validation_videos: Collection[str] | None = None,
    test_videos: Collection[str] | None = None,
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
        Real-ROI archives or folders (:func:`~calcomp_caiman.research.datasets.archive_paths`):
        evaluated on (patch report), or the real masks of the evidence report.
    out_prefix : path-like
        The report goes to ``<out_prefix>.json`` and ``<out_prefix>.png`` (patch report)
        or ``<out_prefix>.md`` (evidence report).
    simulated_caiman : path-like, optional
        The evidence report of a model v2 or v3 instead of the patch report: a
        ``recipes/build_caiman_sim_data.py`` folder of CaImAn results of simulated
        movies, split with ``paths`` by whole movie and video
        (:func:`~calcomp_caiman.research.labelled_results.split`) and scored by
        :func:`evaluate_results`. Of the options below only ``validation_videos``,
        ``test_videos``, ``baselines`` (the CNN; the shape-feature baseline always runs)
        and ``seed`` apply.
    shape_model : CalcompModel, optional
        Evidence report: the shape model the model is compared with (the bundled
        ``calcomp_resnet_v1``).
    videos : collection of str, optional
        Evaluate only these videos, e.g. the model's test videos when ``paths`` is the
        whole ``real_rois`` folder.
    test_videos_only : bool
        Evaluate only ``test_videos`` (the model's own by default).
    group_by, gSig
        As in :func:`~calcomp_caiman.research.datasets.load_evaluation_data`.
    baselines : bool
        Train and evaluate :class:`~calcomp_caiman.research.baselines.ShapeBaseline` and the
        CaImAn CNN (:func:`~calcomp_caiman.research.baselines.fit_baselines`).
    training_paths : path-like or sequence, optional
        Real-ROI archives or folders the baselines are trained on (required when
        ``baselines``). Videos in ``test_videos`` or among the evaluated ones are dropped;
        those in ``validation_videos`` are used for early stopping.
    validation_videos, test_videos : collection of str, optional
        The real videos the baselines validate on and never train on. Default: the
        model's own (:func:`~calcomp_caiman.research.train.held_out_videos`), so that the baselines see the model's
        split; none when its ``config.json`` records none (then the baselines train on
        every real video of ``training_paths`` that is not evaluated and validate on
        simulated data only), an error for ``test_videos_only`` and the evidence report.
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
        when baselines were trained, and ``evaluation_files``; or :func:`evaluate_results`'.
    json_path, summary_path : Path
        As :func:`~calcomp_caiman.research.report.write_report` wrote them.

    Raises
    ------
    ValueError
        ``baselines`` without ``training_paths``; nothing to evaluate; no held-out
        videos where they are needed; the evidence report of a model without a fusion
        head, or without ``shape_model``.

    Notes
    -----
    Time of the patch report on two CPU cores (measured with the recipe's defaults):
    loading and featurising the real archives, about 1.5 s per 10 000 components;
    simulating and cropping, about 1.6 s per field of 2 400 footprints (16 fields for the
    baselines' training and validation data, 2 for the test set: about 30 s); the shape
    baseline fits in about 2 s; the CaImAn CNN dominates at about 3.5 ms per training
    patch per epoch, i.e. about 100 s per epoch over ~27 000 training patches (8 000 real
    + 19 200 simulated), so ``cnn_epochs=15`` takes up to about 25 minutes.
    ``baselines=False`` finishes in under a minute; ``cnn_epochs`` or
    ``training_simulated_per_class`` bound the rest.
    """
    strict = test_videos_only or simulated_caiman is not None
    validation_videos, test_videos = _held_out(model, validation_videos, test_videos, strict)
    if simulated_caiman is not None:
        if shape_model is None or not model.uses_evidence:
            raise ValueError(
                f"the evidence report (simulated_caiman) scores a model v2 or v3 against a shape "
                f"model: {model.name!r} must have a fusion head, and shape_model must be "
                f"given (e.g. CalcompModel.load('calcomp_resnet_v1'))."
            )
        items = load_simulated(simulated_caiman) + load_real_masks(paths, test_videos)
        train, val, test = split(items, validation_videos, test_videos)
        report = evaluate_results(
            model, shape_model, train, val, test, cnn_baseline=baselines, seed=seed
        )
        return (report, *write_report(report, out_prefix))
    if test_videos_only:
        videos = test_videos
    eval_paths = archive_paths(paths)
    datasets: dict = dict(
        load_evaluation_data(eval_paths, gSig=gSig, videos=videos, group_by=group_by)
    )
    simulated_set = None
    if simulated:
        label = simulated_settings if isinstance(simulated_settings, str) else "custom"
        arguments = (simulated_fields, simulated_per_class, 900_000, simulated_settings)
        simulated_set = (f"{_SIMULATED_PREFIX}/{label}", arguments)
        datasets[simulated_set[0]] = simulated_evaluation_set(*arguments)
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
            fields, per_class = training_simulated_fields, training_simulated_per_class
            settings = training_simulated_settings
            train_parts.append(simulated_evaluation_set(fields, per_class, 0, settings))
            sim_val = simulated_evaluation_set(fields, per_class, 1000, settings)
            every_fourth = np.arange(len(sim_val[1])) % 4 == 0
            val_parts.append(tuple(part[every_fourth] for part in sim_val))
        if not train_parts or not val_parts:
            raise ValueError(
                f"the baselines need training and validation data: training_paths gave "
                f"{len(train_parts)} training and {len(val_parts)} validation videos "
                f"(validation videos: {sorted(validation_videos)})."
            )
        train, val = concatenate_sets(train_parts), concatenate_sets(val_parts)
        prepared = time.perf_counter()
        methods, seconds = fit_baselines(
            train[0], train[2], train[1], val_patches=val[0], val_labels=val[1],
            cnn_epochs=cnn_epochs, seed=seed,
        )  # fmt: skip
        training_info = {
            "train_components": int(len(train[1])),
            "validation_components": int(len(val[1])),
            "real_videos": sorted(real),
            "validation_videos": sorted(set(validation_videos) & set(real)),
            "simulated_fields": int(training_simulated_fields),
            "seconds": {"data": prepared - start, **seconds},
            "caiman_cnn_history": methods["caiman_cnn"].history,
        }
    model_probs = None
    if isinstance(model, CalcompModel) and model.version >= 3:  # reads more than a patch
        model_probs = _patch_report_probs(model, eval_paths, datasets, gSig=gSig,
                                          group_by=group_by, simulated=simulated_set)  # fmt: skip
    report = evaluate_model(model, datasets, baselines=methods, model_probs=model_probs)
    report["evaluation_files"] = [str(p) for p in eval_paths if video_key(p) in evaluated]
    if training_info is not None:
        report["training"] = training_info
    return (report, *write_report(report, out_prefix))


def _held_out(model, validation_videos, test_videos, strict: bool):
    """The given held-out videos, else the model's own (none if it records none and not ``strict``)."""
    if validation_videos is None or test_videos is None:
        try:
            own = held_out_videos(model)
        except ValueError:
            if strict and test_videos is None:
                raise
            own = (frozenset(), frozenset())
        validation_videos = own[0] if validation_videos is None else validation_videos
        test_videos = own[1] if test_videos is None else test_videos
    return frozenset(validation_videos), frozenset(test_videos)
