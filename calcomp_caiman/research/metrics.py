"""Metrics of class probabilities against labels: confusion, F1, ROC-AUC, calibration.

Functions over two arrays, the same inputs as the rest of the package: ``(N, 4)`` class
probabilities in ``CLASSES`` order and integer label codes, 1-4 for ``neuron``,
``process``, ``noise``, ``doubtful`` and 0 for ``non_neuron`` (a component known to be
process *or* noise, as in the real labelled data, whose labels are only ``neuron``,
``doubtful`` and ``non_neuron``).

* :func:`evaluation_metrics`: confusion matrices (4-class and the 3-way
  ``THREE_WAY_CLASSES`` view), F1, set accuracy and set NLL, ROC-AUC and precision at
  90 % recall of neuron vs non_neuron, and calibration (ECE in ``ECE_BINS`` bins) of one
  set of predictions; JSON-ready.
* :func:`selection_scores`: what a CaImAn user selects by: the share of noise rejected
  and the F1 of an accepted set against the true neurons.
* :func:`report_row`: one method on one test set as the model reports tabulate it (the
  numbers above at a default cut, and the best cut).
* :func:`roc_auc`: the rank (Mann-Whitney U) form of the area under the ROC curve.

Computed with NumPy and SciPy: no Keras, no matplotlib.
"""

from __future__ import annotations

import numpy as np
import scipy.stats

from calcomp_caiman.schema import CLASSES, class_codes, label_masks

__all__ = [
    "ECE_BINS",
    "THREE_WAY_CLASSES",
    "check_probs_labels",
    "evaluation_metrics",
    "report_row",
    "roc_auc",
    "selection_scores",
    "set_nll_of_probs",
]

THREE_WAY_CLASSES = ("neuron", "doubtful", "non_neuron")
"""Classes of the 3-way view: ``non_neuron`` = process or noise (``P = P(process) + P(noise)``)."""

ECE_BINS = 15
"""Equal-width confidence bins of the expected calibration error."""

_NEURON = CLASSES.index("neuron")
_DOUBTFUL = CLASSES.index("doubtful")
_ROC_POINTS = 201  # ROC curves stored in reports are thinned to at most this many points


def check_probs_labels(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 4)`` float64 probabilities and ``(N,)`` int64 codes 0-4 (names accepted), checked."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(CLASSES):
        raise ValueError(
            f"probs must have shape (N, {len(CLASSES)}) in CLASSES order, got {probs.shape}; "
            f"pass the output of CalcompModel.predict."
        )
    if not np.all(np.isfinite(probs)):
        raise ValueError("probs has NaN or Inf values; check the model that produced them.")
    raw = np.asarray(labels)
    if raw.size and not np.issubdtype(raw.dtype, np.integer):
        codes = class_codes([str(v) if not isinstance(v, bytes) else v for v in raw.ravel()])
    else:
        codes = raw.astype(np.int64).ravel()
    if codes.size and (codes.min() < 0 or codes.max() > len(CLASSES)):
        raise ValueError(
            f"labels must be codes 0-4 (0 = non_neuron), got values in "
            f"[{codes.min()}, {codes.max()}]."
        )
    if len(codes) != len(probs):
        raise ValueError(f"{len(probs)} rows of probs but {len(codes)} labels; pass one each.")
    return probs, codes


def set_nll_of_probs(probs: np.ndarray, labels) -> float:
    """Mean ``-log P(label set)`` of probabilities (``non_neuron`` allows process or noise).

    Examples
    --------
    >>> import numpy as np
    >>> round(set_nll_of_probs(np.array([[0.5, 0.25, 0.25, 0.0]]), [0]), 4)
    0.6931
    """
    allowed = np.sum(np.asarray(probs) * label_masks(labels), axis=1)
    return float(-np.mean(np.log(np.clip(allowed, 1e-7, 1.0))))


def roc_auc(scores, positive) -> float | None:
    """Area under the ROC curve, from ranks (Mann-Whitney U), ties counting one half.

    Parameters
    ----------
    scores : (N,) float ndarray
        Higher means more likely positive.
    positive : (N,) bool ndarray

    Returns
    -------
    float or None
        Probability that a random positive scores above a random negative (ties 1/2);
        ``None`` when there are no positives or no negatives.

    Examples
    --------
    >>> roc_auc([0.9, 0.5, 0.5, 0.1], [True, True, False, False])
    0.875
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.asarray(positive, dtype=bool).ravel()
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = scipy.stats.rankdata(scores)  # average ranks of tied scores
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _threshold_sweep(scores: np.ndarray, positive: np.ndarray):
    """Distinct thresholds (descending) with true and false positives at ``score >= t``."""
    order = np.argsort(-scores, kind="mergesort")
    ordered = scores[order]
    hits = positive[order]
    tp = np.cumsum(hits)
    fp = np.cumsum(~hits)
    last = np.r_[ordered[1:] != ordered[:-1], True]  # end of each group of tied scores
    return ordered[last], tp[last], fp[last]


def _binary_summary(scores: np.ndarray, positive: np.ndarray, min_recall: float) -> dict:
    n_pos = int(positive.sum())
    n_neg = int(positive.size - n_pos)
    out = {
        "auc": roc_auc(scores, positive),
        "precision_at_recall": None,
        "threshold_at_recall": None,
        "roc": None,
    }
    if n_pos == 0:
        return out
    thresholds, tp, fp = _threshold_sweep(scores, positive)
    recall = tp / n_pos
    precision = tp / (tp + fp)
    reach = recall >= min_recall - 1e-12
    if np.any(reach):
        best = np.flatnonzero(reach)[np.argmax(precision[reach])]
        out["precision_at_recall"] = float(precision[best])
        out["threshold_at_recall"] = float(thresholds[best])
    if n_neg:
        fpr = np.r_[0.0, fp / n_neg]
        tpr = np.r_[0.0, recall]
        if fpr.size > _ROC_POINTS:
            keep = np.unique(np.linspace(0, fpr.size - 1, _ROC_POINTS).round().astype(int))
            fpr, tpr = fpr[keep], tpr[keep]
        out["roc"] = {"fpr": fpr.round(5).tolist(), "tpr": tpr.round(5).tolist()}
    return out


def _confusion_summary(true_index: np.ndarray, pred_index: np.ndarray, classes) -> dict:
    k = len(classes)
    matrix = np.bincount(true_index * k + pred_index, minlength=k * k).reshape(k, k)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    hits = np.diag(matrix)
    precision, recall, f1 = {}, {}, {}
    for i, name in enumerate(classes):
        precision[name] = float(hits[i] / predicted[i]) if predicted[i] else None
        recall[name] = float(hits[i] / support[i]) if support[i] else None
        both = support[i] + predicted[i]
        f1[name] = float(2 * hits[i] / both) if both else None
    present = [name for i, name in enumerate(classes) if support[i]]
    total = int(matrix.sum())
    return {
        "classes": list(classes),
        "confusion": matrix.tolist(),
        "n": total,
        "accuracy": float(hits.sum() / total) if total else None,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "macro_f1": float(np.mean([f1[name] for name in present])) if present else None,
    }


def _top_class_allowed(probs: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """(N,) float32: 1 where the most probable class is one the label allows, else 0."""
    return label_masks(codes)[np.arange(len(codes)), probs.argmax(axis=1)]


def _calibration(probs: np.ndarray, codes: np.ndarray, bins: int = ECE_BINS) -> dict:
    confidence = probs.max(axis=1) if len(probs) else np.zeros(0)
    correct = _top_class_allowed(probs, codes) > 0
    index = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    count = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=bins)
    hit_sum = np.bincount(index, weights=correct.astype(np.float64), minlength=bins)
    filled = count > 0
    mean_conf = np.where(filled, conf_sum / np.maximum(count, 1), np.nan)
    mean_hit = np.where(filled, hit_sum / np.maximum(count, 1), np.nan)
    n = int(count.sum())
    ece = (
        float(np.sum(count[filled] * np.abs(mean_hit[filled] - mean_conf[filled])) / n)
        if n
        else None
    )
    return {
        "ece": ece,
        "n": n,
        "bins": {
            "lower": (np.arange(bins) / bins).round(6).tolist(),
            "count": count.tolist(),
            "confidence": [float(v) if f else None for v, f in zip(mean_conf, filled)],
            "accuracy": [float(v) if f else None for v, f in zip(mean_hit, filled)],
        },
    }


def evaluation_metrics(probs, labels, *, min_recall: float = 0.9) -> dict:
    """Metrics of one set of predictions against labels, as a JSON-ready dict.

    Parameters
    ----------
    probs : (N, 4) float ndarray
        Class probabilities in ``CLASSES`` order (neuron, process, noise, doubtful).
    labels : (N,) int ndarray or sequence of str
        Codes 1-4, or 0 for ``non_neuron`` (process or noise); names are accepted too.
    min_recall : float
        Recall the ``precision_at_recall_90`` entry must reach (0.9).

    Returns
    -------
    dict
        Only ``float``, ``int``, ``str``, ``list``, ``dict`` and ``None`` (for undefined
        values, never NaN):

        ``counts``
            Components per label (``neuron``, ``process``, ``noise``, ``doubtful``,
            ``non_neuron``) and ``total``.
        ``four_class``
            Over the components labelled 1-4: ``confusion`` (rows true, columns predicted,
            ``CLASSES`` order), ``n``, ``accuracy``, per-class ``precision``, ``recall``,
            ``f1`` (dicts by class name; ``None`` when undefined) and ``macro_f1`` (mean
            F1 over the classes that occur among the labels).
        ``three_way``
            The same over all components with classes ``neuron``, ``doubtful``,
            ``non_neuron``: true ``non_neuron`` is label 0, 2 or 3; the predicted class is
            the argmax of ``(P(neuron), P(doubtful), P(process) + P(noise))``. This is
            the view that real labels (which never say process or noise) support.
        ``set_accuracy``
            Share of components whose most probable class is allowed by the label (for
            ``non_neuron``: process or noise).
        ``set_nll``
            Mean ``-log`` of the summed probability of the allowed classes (the training
            loss).
        ``neuron_vs_non_neuron``
            Score ``P(neuron)``; positives are labels 1, negatives labels 0, 2, 3;
            ``doubtful`` is left out. ``auc`` (rank formula, ties count 1/2),
            ``precision_at_recall`` (best precision over thresholds ``P(neuron) >= t``
            whose recall is at least ``min_recall``), ``threshold_at_recall`` and ``roc``
            (``fpr``, ``tpr`` lists, at most 201 points).
        ``auc_neuron_vs_non_neuron``, ``precision_at_recall_90``
            Copies of the two headline numbers above.
        ``auc_neuron_vs_rest``
            The AUC with ``doubtful`` counted as negative.
        ``calibration``
            ``ece``: expected calibration error of the top-class confidence
            (``max(probs)``) in 15 equal-width bins, ``sum_b n_b / N * |acc_b - conf_b|``;
            ``n``; ``bins`` (``lower`` edge, ``count``, mean ``confidence`` and
            ``accuracy`` per bin, ``None`` for empty bins).

    Notes
    -----
    A ``non_neuron`` label counts a prediction of process *or* noise as correct (in
    ``set_accuracy``, the 3-way view and the ECE). Its top-class confidence is still the
    single largest probability, so a model that splits ``non_neuron`` mass between
    process and noise looks under-confident on real data; compare ECEs within one kind
    of data. ``N == 0`` gives zero counts and ``None`` metrics.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[0.8, 0.1, 0.05, 0.05], [0.1, 0.5, 0.3, 0.1], [0.6, 0.3, 0.05, 0.05]])
    >>> m = evaluation_metrics(probs, [1, 0, 0])
    >>> m["auc_neuron_vs_non_neuron"], m["three_way"]["confusion"]
    (1.0, [[1, 0, 0], [0, 0, 0], [1, 0, 1]])
    """
    probs, codes = check_probs_labels(probs, labels)
    counts = {name: int(np.sum(codes == i + 1)) for i, name in enumerate(CLASSES)}
    counts["non_neuron"] = int(np.sum(codes == 0))
    counts["total"] = int(codes.size)

    four = codes > 0
    four_class = _confusion_summary(codes[four] - 1, probs[four].argmax(axis=1), CLASSES)
    # 3-way: neuron / doubtful / non_neuron (process + noise)
    true_three = np.select([codes == 1, codes == 4], [0, 1], default=2)
    three_probs = np.stack(
        [probs[:, _NEURON], probs[:, _DOUBTFUL], probs[:, 1] + probs[:, 2]], axis=1
    )
    pred_three = three_probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
    three_way = _confusion_summary(true_three, pred_three, THREE_WAY_CLASSES)

    if len(codes):
        set_accuracy = float(np.mean(_top_class_allowed(probs, codes)))
        set_nll = set_nll_of_probs(probs, codes)
    else:
        set_accuracy = set_nll = None

    score = probs[:, _NEURON]
    split = codes != 4
    binary = _binary_summary(score[split], codes[split] == 1, min_recall)
    return {
        "counts": counts,
        "four_class": four_class,
        "three_way": three_way,
        "set_accuracy": set_accuracy,
        "set_nll": set_nll,
        "neuron_vs_non_neuron": binary,
        "auc_neuron_vs_non_neuron": binary["auc"],
        "precision_at_recall_90": binary["precision_at_recall"],
        "auc_neuron_vs_rest": roc_auc(score, codes == 1),
        "calibration": _calibration(probs, codes),
    }


def selection_scores(accepted, labels) -> dict:
    """Share of noise rejected and F1 of the accepted set against the true neurons.

    Parameters
    ----------
    accepted : (N,) bool ndarray
        The components a selection rule keeps.
    labels : (N,) int ndarray
        Codes 0-4 (0 = non_neuron).

    Returns
    -------
    dict
        ``noise_rejected`` and ``non_neuron_rejected`` (shares of labels 3, and 0, 2 or
        3, not accepted; ``None`` without such labels), ``accepted_precision``,
        ``accepted_recall``, ``accepted_f1`` (true = label 1) and ``accepted`` (count).

    Examples
    --------
    >>> scores = selection_scores([True, True, False, False], [1, 3, 1, 3])
    >>> scores["noise_rejected"], scores["accepted_f1"]
    (0.5, 0.5)
    """
    accepted = np.asarray(accepted, bool)
    labels = np.asarray(labels)
    noise = labels == CLASSES.index("noise") + 1
    positive = labels == 1
    tp = int(np.sum(accepted & positive))
    precision = tp / max(int(accepted.sum()), 1)
    recall = tp / max(int(positive.sum()), 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    non_neuron = (labels == 0) | (labels == 2) | (labels == 3)
    return {
        "noise_rejected": float(1 - accepted[noise].mean()) if noise.any() else None,
        "non_neuron_rejected": float(1 - accepted[non_neuron].mean()) if non_neuron.any() else None,
        "accepted_precision": precision,
        "accepted_recall": recall,
        "accepted_f1": f1,
        "accepted": int(accepted.sum()),
    }


def report_row(probs, labels, min_prob: float | None) -> dict:
    """One method on one test set: four-class metrics, the selection at a cut, the best cut.

    Parameters
    ----------
    probs : (N, 4) ndarray
    labels : (N,) int ndarray
        Codes 0-4.
    min_prob : float or None
        The default cut on P(neuron); None accepts a component whose top class is neuron.

    Returns
    -------
    dict
        ``components``, ``macro_f1``, per-class ``f1``, ``auc_neuron_vs_rest``, ``ece``,
        ``min_prob``, ``at_default_rule`` (:func:`selection_scores`), ``best_cut`` (the
        P(neuron) cut, in 0.01 steps, with the best accepted-set F1) and ``at_best_cut``.

    Examples
    --------
    >>> p = np.array([[0.9, 0, 0.1, 0], [0.4, 0, 0.6, 0], [0.2, 0, 0.8, 0]])
    >>> row = report_row(p, np.array([1, 1, 3]), 0.5)
    >>> row["at_default_rule"]["accepted_recall"], row["best_cut"]
    (0.5, 0.21)
    """
    probs, labels = np.asarray(probs), np.asarray(labels)
    metrics = evaluation_metrics(probs, labels)
    p = probs[:, _NEURON]
    accepted = probs.argmax(axis=1) == _NEURON if min_prob is None else p >= min_prob
    cuts = np.round(np.arange(0.01, 1.0, 0.01), 2)
    f1 = [selection_scores(p >= cut, labels)["accepted_f1"] for cut in cuts]
    best_cut = float(cuts[int(np.argmax(f1))])
    return {
        "components": int(len(labels)),
        "macro_f1": metrics["four_class"]["macro_f1"],
        "f1": metrics["four_class"]["f1"],
        "auc_neuron_vs_rest": metrics["auc_neuron_vs_rest"],
        "ece": metrics["calibration"]["ece"],
        "min_prob": min_prob,
        "at_default_rule": selection_scores(accepted, labels),
        "best_cut": best_cut,
        "at_best_cut": selection_scores(p >= best_cut, labels),
    }
