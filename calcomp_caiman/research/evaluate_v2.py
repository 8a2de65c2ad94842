"""The model v2 report: v2, v2 without each kind of evidence, v1 and three baselines.

On each test set (held-out simulator settings through real CaImAn, CNMF and OnACID; the
real test masks), every method's probabilities are scored with
:func:`calcomp_caiman.metrics.evaluation_metrics` plus the two numbers a CaImAn user
selects by: the share of noise rejected and the F1 of the accepted set (accepted =
the method's acceptance rule; true = neuron).

Methods: ``v2`` (its thresholds.json rule), ``v2-<group>`` (that evidence removed),
``v2-shape-only``, ``v1`` (the bundled shape model, as it classified before v2),
``caiman-rule`` (CaImAn's own SNR / r-value selection stored in the file, as
``evaluate_components`` applied it), ``caiman-cnn`` (CaImAn's CNN architecture trained
on the same data) and ``shape-features`` (shape features + logistic regression).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from .._checks import CLASSES
from ..metrics import evaluation_metrics
from ..model import CalcompModel
from .train_v2 import LabelledResult, drop_groups

logger = logging.getLogger(__name__)

__all__ = ["selection_scores", "score_method", "ablations"]

_NEURON = CLASSES.index("neuron")


def selection_scores(accepted: np.ndarray, labels: np.ndarray) -> dict:
    """Share of noise rejected and F1 of the accepted set against the true neurons."""
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


def score_method(
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


def ablations(
    model: CalcompModel, logits: Sequence[np.ndarray], features: Sequence[np.ndarray]
) -> Mapping[str, list[np.ndarray]]:
    """v2's probabilities with all evidence, without each optional group, shape only."""
    from ..features import OPTIONAL_GROUPS

    out = {"v2": [model.fuse(z, f) for z, f in zip(logits, features)]}
    for group in OPTIONAL_GROUPS:
        out[f"v2-no-{group}"] = [
            model.fuse(z, drop_groups(f, [group])) for z, f in zip(logits, features)
        ]
    out["v2-shape-only"] = [
        model.fuse(z, drop_groups(f, OPTIONAL_GROUPS)) for z, f in zip(logits, features)
    ]
    return out


def caiman_rule_probs(item: LabelledResult) -> np.ndarray | None:
    """CaImAn's stored selection as probabilities: accepted -> neuron, rejected -> noise."""
    if item.caiman_accepted is None:
        return None
    accepted = np.asarray(item.caiman_accepted, bool)
    probs = np.zeros((len(accepted), len(CLASSES)), np.float32)
    probs[accepted, _NEURON] = 1.0
    probs[~accepted, CLASSES.index("noise")] = 1.0
    return probs
