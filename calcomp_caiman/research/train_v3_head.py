"""The fusion head and calibration of model v3 (:func:`fit_fusion_head`), its branches fixed.

:func:`~calcomp_caiman.research.train_branches.train_v3` calls :func:`fit_fusion_head` after
fitting the image and temporal branches; the one-photon recipe
(``recipes/train_calcomp_v3_1p.py``) calls it alone to fit a head for another modality on a
model's branches. On labelled results
(:class:`~calcomp_caiman.research.labelled_results.LabelledResult`) and their
:func:`~calcomp_caiman.research.v3_inputs.branch_inputs`:

1. the fusion head over both branches' log-probabilities, the channels' presence and the
   features, on every training result once with all its evidence and ``copies`` times
   with optional kinds of evidence left out (:func:`head_rows`), its size chosen on the
   validation set;
2. on the validation set, whose sources (simulated, hybrid, real) weigh the same: the
   temperatures with and without traces (:func:`weighted_temperature`), the acceptance cut
   ``min_prob`` (:func:`choose_min_prob`: the cut that keeps at least ``recall_target`` of
   the true neurons of every validation source, the best mean accepted-set F1 among those)
   and the neuron shift of components without traces (:func:`choose_neuron_shift`).

Model v2's head (over the shape network's logits, with an OOD reference) is fitted by
:mod:`calcomp_caiman.research.train_head`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import scipy.optimize

from calcomp_caiman.evidence.features import evidence_inputs, feature_names
from calcomp_caiman.evidence.patches import footprints_for
from calcomp_caiman.evidence.transients import SAMPLES
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.model.head import fit_head, probability_set_nll
from calcomp_caiman.refit import LabelledInputs
from calcomp_caiman.research.labelled_results import LabelledResult
from calcomp_caiman.research.v3_inputs import (
    OPTIONAL_KINDS,
    UNLABELLED,
    BranchInputs,
    V3Settings,
    source_weights,
)
from calcomp_caiman.schema import CLASSES, label_masks

logger = logging.getLogger(__name__)

__all__ = [
    "HeadRows",
    "choose_min_prob",
    "choose_neuron_shift",
    "fit_fusion_head",
    "head_rows",
    "weighted_temperature",
]


class HeadRows(NamedTuple):
    """What the fusion head reads about labelled components (:func:`head_rows`)."""

    logits: np.ndarray
    """(N, 4) the image branch's logits."""
    features: np.ndarray
    """(N, F) every feature column."""
    profiles: np.ndarray
    """(N, 2, S) transient profiles; all zero without traces."""
    presence: np.ndarray
    """(N, C - 1) the optional channels' presence."""
    labels: np.ndarray
    """(N,) codes 0-4."""
    sources: np.ndarray
    """(N,) source of each row."""

    def as_inputs(self) -> LabelledInputs:
        """What the head reads of these rows, as a refit keeps it (:func:`~calcomp_caiman.refit.labelled_inputs`)."""
        return LabelledInputs(self.logits, self.features, self.profiles, self.presence)

    def inputs(self, model: CalcompModel) -> np.ndarray:
        """The head's input columns (:meth:`CalcompModel.head_inputs`)."""
        return self.as_inputs().head_inputs(model)

    def probs(self, model: CalcompModel) -> np.ndarray:
        """Calibrated probabilities (:meth:`CalcompModel.fuse`)."""
        return self.as_inputs().probs(model)


def head_rows(
    model: CalcompModel,
    items: Sequence[LabelledResult],
    inputs: Sequence[BranchInputs],
    *,
    copies: int = 0,
    p_drop: float = 0.4,
    seed: int = 0,
) -> HeadRows:
    """What the fusion head reads about the labelled components of ``items``.

    Every result once with all its evidence, then ``copies`` times with each optional kind
    of evidence present left out with probability ``p_drop`` (a kind left out of a result
    is absent for all its components, exactly as :func:`~calcomp_caiman.classify.classify_evidence`
    with ``use`` computes it: channels zeroed, features recomputed, no profiles).

    Parameters
    ----------
    model : CalcompModel
        A model v3 whose image branch makes the logits.
    items, inputs
        Labelled results and their :func:`~calcomp_caiman.research.v3_inputs.branch_inputs`.
    copies, p_drop, seed
        The missing-evidence copies.
    """
    rng = np.random.default_rng(seed)
    kind_of = {"neighbours": "neighbours", "cn": "image", "image": "image"}
    blocks: list[tuple] = []
    for item, found in zip(items, inputs):
        labelled = item.labels != UNLABELLED
        if not labelled.any():
            continue
        kinds = tuple(kind for kind in OPTIONAL_KINDS if kind in item.evidence.kinds)
        variants = [kinds]
        for _ in range(copies if kinds else 0):
            variants.append(tuple(k for k in kinds if rng.random() >= p_drop))
        n = int(labelled.sum())
        for use in variants:
            channels = found.channels[labelled]
            features = found.features[labelled]
            profiles = np.zeros((n, 2, SAMPLES), np.float32)
            if found.profiles is not None and "traces" in use:
                profiles = found.profiles[labelled]
            if use != kinds:
                channels = channels.copy()
                for c, name in enumerate(model.channel_names):
                    if kind_of.get(name, "shape") not in ("shape", *use):
                        channels[..., c] = 0.0
                found_fp = footprints_for(item.evidence, "footprints")
                features = evidence_inputs(item.evidence, *found_fp, use=use).features[labelled]
            blocks.append((model.shape_logits(channels), features, profiles,
                           model.channel_presence(channels), item.labels[labelled],
                           np.full(n, item.source)))  # fmt: skip
    if not blocks:
        raise ValueError("no labelled components to fit the fusion head on.")
    return HeadRows(*(np.concatenate(parts) for parts in zip(*blocks)))


def _selection_by_source(
    accepted: np.ndarray, labels: np.ndarray, sources: np.ndarray
) -> dict[str, tuple[float, float]]:
    """Per source with true neurons: recall of the true neurons and accepted-set F1 of the
    components ``accepted`` (unlabelled components left out)."""
    out = {}
    for source in np.unique(sources):
        members = (sources == source) & (labels != UNLABELLED)
        positive = labels[members] == 1
        if positive.any():
            tp = np.sum(accepted[members] & positive)
            recall = tp / positive.sum()
            precision = tp / max(accepted[members].sum(), 1)
            out[str(source)] = (
                float(recall),
                float(2 * precision * recall / max(precision + recall, 1e-12)),
            )
    return out


def choose_min_prob(
    probs: np.ndarray, labels: np.ndarray, sources: np.ndarray, *, recall_target: float = 0.95
) -> tuple[float, dict]:
    """The P(neuron) cut that keeps ``recall_target`` of the true neurons of every source.

    Among the cuts (0.01 steps) whose recall of true neurons (label 1) is at least
    ``recall_target`` on every source that has neurons, the one with the best mean
    accepted-set F1 over the sources (each source weighs the same). When no cut keeps
    that many on every source, the cut with the highest smallest recall (the lowest).

    Returns
    -------
    cut : float
    report : dict
        Per source: ``neurons``, ``recall`` and ``accepted_f1`` at the cut; ``feasible``
        (whether the target was met everywhere).

    Examples
    --------
    >>> p = np.zeros((6, 4)); p[:, 0] = [0.9, 0.8, 0.3, 0.2, 0.6, 0.1]
    >>> cut, report = choose_min_prob(p, np.array([1, 1, 3, 3, 1, 3]), np.array(["a"] * 6))
    >>> cut, report["a"]["recall"]
    (0.31, 1.0)
    """
    p = np.asarray(probs)[:, CLASSES.index("neuron")]
    labels = np.asarray(labels)
    sources = np.asarray(sources)
    cuts = np.round(np.arange(0.01, 1.0, 0.01), 2)
    per_cut = [_selection_by_source(p >= cut, labels, sources) for cut in cuts]
    names = list(per_cut[0])
    recall = np.array([[per[name][0] for name in names] for per in per_cut]).reshape(len(cuts), -1)
    f1 = np.array([[per[name][1] for name in names] for per in per_cut]).reshape(len(cuts), -1)
    feasible = recall.min(axis=1, initial=1.0) >= recall_target - 1e-12
    if feasible.any():
        score = np.where(feasible, f1.mean(axis=1) if names else 0.0, -np.inf)
        best = int(np.argmax(score))
    else:  # recall only falls with the cut: the lowest cut is the best there is
        best = 0
    report = {
        source: {
            "neurons": int(np.sum((sources.astype(str) == source) & (labels == 1))),
            "recall": float(recall[best, j]),
            "accepted_f1": float(f1[best, j]),
        }
        for j, source in enumerate(names)
    }
    report["feasible"] = bool(feasible.any())
    return float(cuts[best]), report


def choose_neuron_shift(
    model: CalcompModel,
    rows: HeadRows,
    rows_without_traces: np.ndarray,
    *,
    recall_target: float = 0.95,
) -> tuple[float, dict]:
    """The shift of the neuron logit of components without traces (masks) at ``min_prob``.

    Among shifts from -3 to 3 (0.1 steps) whose recall of true neurons is at least
    ``recall_target`` on every source of ``rows[rows_without_traces]`` at the model's
    ``min_prob``, the one with the best mean accepted-set F1; when none reaches it, the
    largest shift (the most neurons kept).

    Returns
    -------
    shift : float
    report : dict
        As :func:`choose_min_prob`'s, at the chosen shift.
    """
    cut = float(model.thresholds["min_prob"])
    labels, sources = rows.labels[rows_without_traces], rows.sources[rows_without_traces]
    best = None
    for shift in np.round(np.arange(-3.0, 3.01, 0.1), 1):
        probs = rows.probs(model.with_thresholds(neuron_shift_without_traces=float(shift)))
        accepted = probs[rows_without_traces, CLASSES.index("neuron")] >= cut
        per = _selection_by_source(accepted, labels, sources)
        recalls, f1s = [r for r, _ in per.values()], [f for _, f in per.values()]
        feasible = bool(min(recalls, default=1.0) >= recall_target - 1e-12)
        key = (feasible, float(np.mean(f1s)) if feasible else float(shift))
        if best is None or key > best[0]:
            best = (key, float(shift), {"recall": recalls, "accepted_f1": f1s,
                                        "sources": list(per), "feasible": feasible})  # fmt: skip
    return best[1], best[2]


def weighted_temperature(logits: np.ndarray, allowed: np.ndarray, weights: np.ndarray) -> float:
    """The softmax temperature minimising the weighted set NLL of ``logits`` (as
    :func:`~calcomp_caiman.model.head.fit_temperature`, with a weight per row).

    Examples
    --------
    >>> from calcomp_caiman.model.head import fit_temperature
    >>> z = np.array([[4.0, 0, 0, 0], [4.0, 0, 0, 0], [0, 4.0, 0, 0]])
    >>> allowed = np.eye(4, dtype=bool)[[0, 1, 1]]
    >>> t = weighted_temperature(z, allowed, np.ones(3))
    >>> bool(abs(t - fit_temperature(z, allowed)) < 1e-3)
    True
    """
    z = np.asarray(logits, np.float64)
    log_allowed = np.where(np.asarray(allowed, bool), 0.0, -np.inf)
    weights = np.asarray(weights, np.float64)

    def loss(log_t: float) -> float:
        scaled = z / np.exp(log_t)
        scaled = scaled - scaled.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(scaled).sum(axis=1))
        kept = scaled + log_allowed
        top = kept.max(axis=1)
        log_set = top + np.log(np.exp(kept - top[:, None]).sum(axis=1)) - log_norm
        return float(-(weights * log_set).sum() / weights.sum())

    found = scipy.optimize.minimize_scalar(
        loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded"
    )
    return float(np.exp(found.x))


def _temperatures(model: CalcompModel, rows: HeadRows) -> dict[str, float]:
    """Temperatures of the head's logits, with and without traces (as :meth:`CalcompModel.fuse`
    applies them), every source weighing the same (its classes as they come)."""
    z = model.head.logits(rows.inputs(model))
    allowed = label_masks(rows.labels).astype(bool)
    has = rows.features[:, feature_names().index("has_traces")] > 0
    out = {}
    for key, chosen in (("temperature", has), ("temperature_without_traces", ~has)):
        if chosen.any():
            _, index, counts = np.unique(rows.sources[chosen], return_inverse=True,
                                         return_counts=True)  # fmt: skip
            out[key] = weighted_temperature(z[chosen], allowed[chosen], 1.0 / counts[index])
    return out


def _source_nll(probs: np.ndarray, rows: HeadRows) -> float:
    """Mean set NLL, every source weighing the same."""
    allowed = label_masks(rows.labels)
    return float(np.mean([probability_set_nll(probs[rows.sources == s], allowed[rows.sources == s])
                          for s in np.unique(rows.sources)]))  # fmt: skip


def fit_fusion_head(
    shell: CalcompModel,
    train: Sequence[LabelledResult],
    train_inputs: Sequence[BranchInputs],
    validation: Sequence[LabelledResult],
    val_inputs: Sequence[BranchInputs],
    *,
    settings: V3Settings,
) -> tuple[CalcompModel, dict]:
    """The fusion head and calibration of a model v3 whose branches are fixed.

    The head is fitted on ``train`` (with ``settings.copies`` missing-evidence copies) for
    each ``settings.head_grid`` size; the lowest source-weighted validation NLL wins. Then
    the temperatures and the acceptance cut (:func:`choose_min_prob`) come from
    ``validation``. :func:`~calcomp_caiman.research.train_branches.train_v3` calls it after
    fitting the branches; a model for another modality refits it alone on that modality's
    results.

    Parameters
    ----------
    shell : CalcompModel
        A model v3: its image and temporal branches are kept, its head replaced.
    train, validation : sequence of LabelledResult
    train_inputs, val_inputs : sequence of BranchInputs
        :func:`~calcomp_caiman.research.v3_inputs.branch_inputs` of the same results.
    settings : V3Settings

    Returns
    -------
    model : CalcompModel
        With the new head, temperatures, ``accept = ["neuron"]`` and ``min_prob``.
    history : dict
        ``head`` candidates and the chosen size, ``temperatures``, ``min_prob`` and
        ``min_prob_report``.
    """
    # a shift fitted for another head means nothing for the new one
    kept = {k: v for k, v in shell.thresholds.items() if k != "neuron_shift_without_traces"}
    shell = CalcompModel(shell.weights, shell.config, kept)
    rows = head_rows(shell, train, train_inputs, copies=settings.copies, p_drop=settings.p_drop,
                     seed=settings.seed)  # fmt: skip
    val_rows = head_rows(shell, validation, val_inputs)
    allowed = label_masks(rows.labels).astype(bool)
    row_weights = source_weights(rows.labels, rows.sources)
    row_inputs = rows.inputs(shell)
    candidates, best = [], None
    for hidden, l2 in settings.head_grid:
        head = fit_head(row_inputs, allowed, sample_weight=row_weights, hidden=hidden, l2=l2,
                        seed=settings.seed, max_iter=600)  # fmt: skip
        trial = shell.with_head(head)
        trial = trial.with_thresholds(**_temperatures(trial, val_rows))
        score = _source_nll(val_rows.probs(trial), val_rows)
        logger.info("v3 head hidden=%d l2=%g: validation set-NLL %.4f", hidden, l2, score)
        candidates.append({"hidden": hidden, "l2": l2, "validation_nll": score})
        if best is None or score < best[0]:
            best = (score, trial, hidden, l2)
    _, model, hidden, l2 = best
    model = model.with_head(
        model.head, fusion_head={"hidden": hidden, "l2": l2, "inputs": model.head_input_names}
    ).with_thresholds(**model.thresholds)
    # the cut on the results with traces (CaImAn's); masks reach it by a neuron shift
    traces = val_rows.features[:, feature_names().index("has_traces")] > 0
    probs = val_rows.probs(model)
    min_prob, report = choose_min_prob(probs[traces], val_rows.labels[traces],
                                       val_rows.sources[traces], recall_target=settings.recall_target)  # fmt: skip
    model = model.with_thresholds(accept=["neuron"], min_prob=min_prob)
    logger.info("v3: min_prob %.2f, per source %s", min_prob, json.dumps(report))
    shift, shift_report = None, None
    if np.any(~traces & (val_rows.labels == 1)):
        shift, shift_report = choose_neuron_shift(model, val_rows, ~traces,
                                                  recall_target=settings.recall_target)  # fmt: skip
        model = model.with_thresholds(neuron_shift_without_traces=shift)
        logger.info("v3: neuron shift without traces %.2f, per source %s", shift,
                    json.dumps(shift_report))  # fmt: skip
    history = {
        "head": {"candidates": candidates, "hidden": hidden, "l2": l2},
        "temperatures": {k: model.thresholds[k] for k in ("temperature", "temperature_without_traces")
                         if k in model.thresholds},
        "min_prob": min_prob,
        "min_prob_report": report,
        "neuron_shift_without_traces": shift,
        "neuron_shift_report": shift_report,
    }  # fmt: skip
    return model, history
