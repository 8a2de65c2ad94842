"""Training of the fusion head (model v2): a small network over the shape logits and evidence.

The shape network stays as it is (v1's, :func:`head_shell`); what is fitted here, on
labelled CaImAn results (:mod:`calcomp_caiman.research.labelled_results`):

* the head (:func:`train_head`): on the training results with missing-evidence copies
  (:func:`training_rows`), its size and penalty chosen on validation
  (:func:`validation_nll`);
* its calibration, on validation only: the temperatures (:func:`calibrate_head`) and the
  acceptance cut ``min_prob`` (:func:`fit_min_prob`);
* the out-of-distribution reference and threshold (:func:`fit_ood`).

The entry that records provenance is :func:`calcomp_caiman.research.train.train`
(``fusion_head=True``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from calcomp_caiman.evidence.features import (
    FEATURE_GROUPS,
    OPTIONAL_GROUPS,
    feature_names,
    group_columns,
)
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.model.head import (
    FusionHead,
    fit_head,
    fit_temperature,
    head_inputs,
    probability_set_nll,
)
from calcomp_caiman.model.ood import calibrate_ood_threshold, fit_ood_reference, ood_score
from calcomp_caiman.refit import LabelledInputs
from calcomp_caiman.research.labelled_results import LabelledResult, result_inputs, result_patches
from calcomp_caiman.research.metrics import roc_auc
from calcomp_caiman.schema import CLASSES, label_masks

logger = logging.getLogger(__name__)

__all__ = [
    "HEAD_GRID",
    "calibrate_head",
    "fit_min_prob",
    "fit_ood",
    "fit_v2_head",
    "head_shell",
    "train_head",
    "training_rows",
    "validation_nll",
]

HEAD_GRID = ((16, 1e-3), (32, 3e-4), (32, 1e-3), (32, 3e-3))
"""``(hidden, l2)`` of the heads tried by :func:`train_head`; the lowest validation NLL wins."""


def head_shell(network: CalcompModel) -> CalcompModel:
    """A head-less model v2 over ``network``: its weights and thresholds, the v2 crop rule.

    The logits and features of :func:`~calcomp_caiman.research.labelled_results.result_inputs`
    computed with this shell are those the trained model v2 computes at run time.
    """
    return CalcompModel(
        network.weights, {**network.config, "scale_rule": "footprints"}, dict(network.thresholds)
    )


def training_rows(
    logits: Sequence[np.ndarray],
    features: Sequence[np.ndarray],
    items: Sequence[LabelledResult],
    *,
    copies: int = 3,
    p_drop: float = 0.5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Head inputs, allowed classes and weights, with missing-evidence copies.

    Every result appears once with all its evidence; results with optional evidence
    appear ``copies`` more times, each time with every present optional group dropped
    with probability ``p_drop`` (independently per copy and component). Classes are
    balanced within each source, and the two sources (simulated, real) get equal weight.
    """
    rng = np.random.default_rng(seed)
    columns = group_columns()
    rows, allowed, weights, sources = [], [], [], []
    for z, f, item in zip(logits, features, items):
        variants = [f]
        present = [g for g in OPTIONAL_GROUPS if f.shape[0] and f[0, columns[g][-1]] > 0]
        if present:
            for _ in range(copies):
                g = f.copy()
                for group in present:
                    drop = rng.random(len(g)) < p_drop
                    g[np.ix_(drop, columns[group])] = 0.0
                variants.append(g)
        for g in variants:
            rows.append(head_inputs(z, g))
            allowed.append(label_masks(item.labels).astype(bool))
            weights.append(np.full(len(g), 1.0 / len(variants)))
            sources.append(np.full(len(g), item.source, dtype=object))
    rows, allowed = np.concatenate(rows), np.concatenate(allowed)
    weights, sources = np.concatenate(weights), np.concatenate(sources)
    label_key = allowed.astype(np.int64) @ (1 << np.arange(allowed.shape[1]))  # a code per label
    balanced = np.zeros(len(rows))
    for source in np.unique(sources):
        in_source = sources == source
        keys = np.unique(label_key[in_source])
        for key in keys:
            members = in_source & (label_key == key)
            balanced[members] = weights[members] / weights[members].sum() / len(keys)
    return rows, allowed, balanced / balanced.mean()


def fit_v2_head(
    rows: np.ndarray, allowed: np.ndarray, weights: np.ndarray, *, hidden: int = 32, l2: float = 3e-4,
    seed: int = 0, max_iter: int = 600,
) -> FusionHead:  # fmt: skip
    """The fusion head of model v2 (see :func:`calcomp_caiman.model.head.fit_head`)."""
    return fit_head(rows, allowed, sample_weight=weights, hidden=hidden, l2=l2, seed=seed,
                    max_iter=max_iter)  # fmt: skip


def calibrate_head(model: CalcompModel, logits, features, items) -> dict[str, float]:
    """Temperatures of the head's logits on validation results (set NLL).

    ``temperature`` from the results with traces, ``temperature_without_traces`` from
    those without (masks; the real videos), as :meth:`CalcompModel.fuse` applies them.
    """
    column = feature_names().index("has_traces")
    z = np.concatenate([model.head.logits(head_inputs(a, b)) for a, b in zip(logits, features)])
    has = np.concatenate([b[:, column] > 0 for b in features])
    allowed = np.concatenate([label_masks(item.labels).astype(bool) for item in items])
    out = {}
    for key, rows in (("temperature", has), ("temperature_without_traces", ~has)):
        if rows.any():
            out[key] = fit_temperature(z[rows], allowed[rows])
    return out


def fit_min_prob(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The P(neuron) cut that maximises the F1 of the accepted set (neurons vs the rest).

    Returns the cut and its F1 on these (validation) components.
    """
    p = probs[:, CLASSES.index("neuron")]
    positive = labels == 1
    best = (0.5, -1.0)
    for cut in np.linspace(0.05, 0.95, 91):
        accepted = p >= cut
        tp = np.sum(accepted & positive)
        precision = tp / max(accepted.sum(), 1)
        recall = tp / max(positive.sum(), 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        if f1 > best[1] + 1e-9:
            best = (float(round(cut, 2)), float(f1))
    return best


def validation_nll(model: CalcompModel, logits, features, items) -> float:
    """Mean set NLL of ``model`` on validation results, simulated and real weighted equally."""
    by_source: dict[str, list[float]] = {}
    for z, f, item in zip(logits, features, items):
        value = probability_set_nll(model.fuse(z, f), label_masks(item.labels))
        by_source.setdefault(item.source, []).extend([value] * len(item.labels))
    return float(np.mean([np.mean(values) for values in by_source.values()]))


def train_head(
    network: CalcompModel,
    train: Sequence[LabelledResult],
    val: Sequence[LabelledResult],
    *,
    inputs: Mapping[int, LabelledInputs] | None = None,
    grid: Sequence[tuple[int, float]] = HEAD_GRID,
    seed: int = 0,
    record: Mapping | None = None,
) -> tuple[CalcompModel, dict]:
    """Model v2: a fusion head over ``network``, chosen, calibrated and cut on validation.

    Parameters
    ----------
    network : CalcompModel
        The shape network (v1's), kept as it is (:func:`head_shell`).
    train, val : sequence of LabelledResult
        Training and validation results (:func:`~calcomp_caiman.research.labelled_results.split`).
    inputs : mapping, optional
        ``{id(result): (logits, features)}`` computed with :func:`head_shell` of
        ``network`` (:func:`~calcomp_caiman.research.labelled_results.result_inputs`);
        missing results are computed here. Pass them to reuse them in the report.
    grid : sequence of (int, float)
        ``(hidden, l2)`` of the candidate heads; the one with the lowest
        :func:`validation_nll` (after :func:`calibrate_head`) is kept.
    seed : int
        Seeds the missing-evidence copies and the head's initialisation.
    record : mapping, optional
        Entries of ``config.json`` that say what the model is (``name``, versions, seed,
        ``training_data``: :func:`calcomp_caiman.research.train.training_record`).

    Returns
    -------
    model : CalcompModel
        Not saved yet: the network's weights plus ``head/*``; ``thresholds.json`` with the
        two temperatures, ``accept = ["neuron"]``, ``min_prob`` (the accepted-set F1 cut
        on the simulated validation results) and ``shape_temperature`` (the network's own,
        for the network alone, e.g. a bioimage.io export).
    history : dict
        ``candidates`` (``hidden``, ``l2``, ``validation_nll`` each), the chosen
        ``hidden`` and ``l2``, ``temperatures``, ``min_prob`` and ``val_accepted_f1``.
    """
    shell = head_shell(network)
    inputs = dict(inputs or {})
    for item in [*train, *val]:
        if id(item) not in inputs:
            inputs[id(item)] = result_inputs(shell, item)
    rows, allowed, weights = training_rows(
        [inputs[id(i)].logits for i in train],
        [inputs[id(i)].features for i in train],
        train,
        seed=seed,
    )
    val_z = [inputs[id(i)].logits for i in val]
    val_f = [inputs[id(i)].features for i in val]
    candidates, best = [], None
    for hidden, l2 in grid:
        candidate = fit_v2_head(rows, allowed, weights, hidden=hidden, l2=l2, seed=seed)
        trial = shell.with_head(candidate).with_thresholds(temperature=1.0)
        trial = trial.with_thresholds(**calibrate_head(trial, val_z, val_f, val))
        score = validation_nll(trial, val_z, val_f, val)
        logger.info("head hidden=%d l2=%g: validation set-NLL %.4f", hidden, l2, score)
        candidates.append({"hidden": hidden, "l2": l2, "validation_nll": score})
        if best is None or score < best[0]:
            best = (score, candidate, hidden, l2)
    _, head, hidden, l2 = best
    logger.info("chosen: hidden=%d l2=%g", hidden, l2)
    config = {
        **{k: v for k, v in network.config.items() if k not in ("weights_sha256",)},
        "scale_rule": "footprints",
        "shape_network": f"{network.name} ({network.sha256[:12]}), unchanged",
        "fusion_head": {"hidden": hidden, "l2": l2,
                        "inputs": ["log_p_" + c for c in network.config["classes"]] + feature_names()},
        "feature_groups": FEATURE_GROUPS,
        **dict(record or {}),
    }  # fmt: skip
    model = shell.with_head(head, **config).with_thresholds(temperature=1.0)
    temperatures = calibrate_head(model, val_z, val_f, val)
    model = model.with_thresholds(**temperatures)
    val_sim = [i for i in val if i.source == "simulated"]
    val_probs = np.concatenate([inputs[id(i)].probs(model) for i in val_sim])
    val_labels = np.concatenate([i.labels for i in val_sim])
    min_prob, val_f1 = fit_min_prob(val_probs, val_labels)
    model = model.with_thresholds(
        accept=["neuron"], min_prob=min_prob, shape_temperature=network.thresholds["temperature"]
    )
    logger.info("T=%.3f, min_prob=%.2f, validation accepted-F1 %.3f",
                temperatures["temperature"], min_prob, val_f1)  # fmt: skip
    history = {"candidates": candidates, "hidden": hidden, "l2": l2,
               "temperatures": temperatures, "min_prob": min_prob, "val_accepted_f1": val_f1}  # fmt: skip
    return model, history


def fit_ood(model: CalcompModel, train, calibration, measured_in, measured_out, *, seed: int = 0):
    """The out-of-distribution reference of a model v2, its threshold, and its ROC.

    Reference: a sample of the training results' patches (groups: class x source);
    threshold: 1.02 x the largest file score of the ``calibration`` results (validation);
    measured on ``measured_in`` (in-distribution results used for nothing else) against
    ``measured_out`` (the held-out simulator settings): ROC-AUC of the file scores and the
    share of each side flagged. Undefined numbers (the score of a result without
    components, an AUC over one) are ``None`` in the JSON-ready report.
    """
    rng = np.random.default_rng(seed)
    patches, groups = [], []
    for item in train:
        p = result_patches(model, item)
        keep = rng.permutation(len(p))[: max(1, min(len(p), 400))]
        patches.append(p[keep])
        groups.append(np.array([f"{item.source}-{c}" for c in item.labels[keep]]))
    reference = fit_ood_reference(model, np.concatenate(patches), np.concatenate(groups))

    def scores(items):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.array(
                [ood_score(i.evidence, model, reference=reference).score for i in items]
            )

    reference = calibrate_ood_threshold(reference, scores(calibration))
    inside, outside = scores(measured_in), scores(measured_out)
    labels = np.r_[np.zeros(len(inside), bool), np.ones(len(outside), bool)]
    auc = roc_auc(np.r_[inside, outside], labels)
    report = {
        "threshold": reference.threshold,
        "auc_heldout_settings_vs_in_distribution": _defined(auc),
        "flagged_in_distribution": float(np.mean(inside > reference.threshold)) if len(inside) else None,
        "flagged_heldout_settings": float(np.mean(outside > reference.threshold)) if len(outside) else None,
        "n_in_distribution": int(len(inside)),
        "n_heldout_settings": int(len(outside)),
        "scores_in_distribution": [_defined(v) for v in inside.round(4).tolist()],
        "scores_heldout_settings": [_defined(v) for v in outside.round(4).tolist()],
    }  # fmt: skip
    return reference, report


def _defined(value: float | None) -> float | None:
    """``value``, or ``None`` where it is NaN (JSON has no NaN)."""
    return None if value is None or np.isnan(value) else value
