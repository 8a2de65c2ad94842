"""The calibration level of a refit (:func:`calcomp_caiman.refit.refit`), and the
acceptance cut every applied refit gets.

A calibration is one bias per class added to the fusion head's logits and one factor on the
calibration temperatures (:func:`~calcomp_caiman.model.head.fit_calibration`), judged by
cross-validation over every label (:func:`cross_validate_calibration`) and folded into the
model (:func:`calibrated_model`). The acceptance cut ``min_prob`` is fitted on the labels'
accept / reject decisions (:func:`fit_cut`, :func:`with_fitted_cut`), with a prior that
pulls towards the model's own cut.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.optimize

from calcomp_caiman.classify import acceptance_rule
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.model.head import (
    Calibration,
    FusionHead,
    calibrated_log_probs,
    fit_calibration,
)
from calcomp_caiman.refit_scores import label_folds, robust_set_nll, set_accuracy
from calcomp_caiman.schema import CLASSES

if TYPE_CHECKING:
    from calcomp_caiman.refit import LabelledInputs

__all__ = [
    "CUT_PRIOR",
    "CV_FOLDS",
    "calibrated_model",
    "cross_validate_calibration",
    "fit_cut",
    "row_temperatures",
    "with_fitted_cut",
]


CUT_PRIOR = 1.0
"""Standard deviation, in logit units, of the prior of ``logit(min_prob)`` around the
model's own cut."""

CV_FOLDS = 5
"""Cross-validation folds that judge a calibration (fewer labels: one label per fold)."""


def row_temperatures(model: CalcompModel, x: LabelledInputs) -> np.ndarray:
    """Each row's calibration temperature as :meth:`CalcompModel.fuse` applies it: a probe
    head whose logits are one for process and zero for the others gives process and noise
    probabilities whose log ratio is ``1 / T`` (the neuron shift of components without
    traces touches only the neuron column)."""
    head = model.head
    process, noise = CLASSES.index("process"), CLASSES.index("noise")
    probe = FusionHead(head.mean, head.scale, head.w1, head.b1, np.zeros_like(head.w2),
                       np.eye(head.w2.shape[1])[process])  # fmt: skip
    p = x.probs(model.with_head(probe)).astype(np.float64)
    return 1.0 / (np.log(p[:, process]) - np.log(p[:, noise]))


def cross_validate_calibration(
    model, log_p, temperature, allowed, codes, seed
) -> tuple[float, float, float]:
    """Cross-validated set NLL and accuracy of a calibration, and the model's NLL.

    Parameters
    ----------
    model : CalcompModel
        Not read: the calibration works on ``log_p``.
    log_p : (N, 4) float ndarray
        The model's log-probabilities of the labelled components.
    temperature : (N,) float ndarray
        Each row's temperature (:func:`row_temperatures`).
    allowed : (N, 4) bool ndarray
        The classes each label allows (:func:`~calcomp_caiman.schema.label_masks`).
    codes : (N,) int ndarray
        The labels' codes (folds are stratified by them).
    seed : int
        Seed of the folds (:func:`~calcomp_caiman.refit_scores.label_folds`).

    Returns
    -------
    tuple of float
        :func:`~calcomp_caiman.refit_scores.robust_set_nll` and
        :func:`~calcomp_caiman.refit_scores.set_accuracy` of the calibration on the folds
        it did not see, and the robust NLL of the model as it is, over :data:`CV_FOLDS`
        folds (fewer labels: one per fold).
    """
    k = min(CV_FOLDS, len(codes))
    fold = label_folds(codes, k, seed)
    log_q = np.empty_like(log_p)
    for i in range(k):
        test = fold == i
        cal = fit_calibration(log_p[~test], temperature[~test], allowed[~test])
        log_q[test] = calibrated_log_probs(log_p[test], temperature[test], cal)
    q = np.exp(log_q)
    return (robust_set_nll(q, allowed), set_accuracy(q, codes),
            robust_set_nll(np.exp(log_p), allowed))  # fmt: skip


def calibrated_model(
    model: CalcompModel, calibration: Calibration, min_prob: float | None = None, **config
) -> CalcompModel:
    """``model`` with ``calibration`` folded in: biases added to its head's output biases,
    its temperatures multiplied by the factor and its ``neuron_shift_without_traces``
    (added after the temperature, :meth:`CalcompModel.fuse`) divided by it, so that the
    model computes :func:`~calcomp_caiman.model.head.calibrated_log_probs` of its own
    log-probabilities, with or without traces; ``min_prob`` when given. Not saved."""
    keys = [k for k in ("temperature", "temperature_without_traces") if k in model.thresholds]
    thresholds = {key: float(model.thresholds[key]) * calibration.factor for key in keys}
    thresholds.setdefault("temperature", calibration.factor)
    shift = model.thresholds.get("neuron_shift_without_traces")
    if shift is not None:
        thresholds["neuron_shift_without_traces"] = float(shift) / calibration.factor
    if min_prob is not None:
        thresholds["min_prob"] = min_prob
    head = model.head.with_bias(calibration.biases)
    return model.with_head(head, **config).with_thresholds(**thresholds)


def _accept_decisions(model: CalcompModel, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which labels decide acceptance under the model's rule, and their decision."""
    accept = acceptance_rule(model).accept
    columns = [CLASSES.index(name) + 1 for name in accept]
    # non_neuron (process or noise) decides only when both or neither are accepted
    both = {2, 3} <= set(columns) or not ({2, 3} & set(columns))
    decides = (codes > 0) | both
    return decides, np.isin(codes, columns) | ((codes == 0) & (2 in columns))


def fit_cut(
    p_accept: np.ndarray, accepted: np.ndarray, prior_cut: float, *, prior: float = CUT_PRIOR
) -> float:
    """The acceptance cut ``min_prob`` by penalised likelihood on accept / reject decisions.

    A decision is taken to follow ``P(accept) = sigmoid(logit(p) - logit(min_prob))`` (for
    calibrated probabilities the best cut is then 0.5), with a Gaussian prior of standard
    deviation ``prior`` on ``logit(min_prob)`` around ``logit(prior_cut)``: a few decisions
    move the cut a little, many as far as they agree.

    Parameters
    ----------
    p_accept : (N,) ndarray
        Summed probability of the accepted classes of each labelled component.
    accepted : (N,) bool ndarray
        The lab's decision for each.
    prior_cut : float
        The cut without labels (the model's ``min_prob``).
    prior : float

    Returns
    -------
    float
        The cut, rounded to 4 decimals.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([0.2, 0.3, 0.35, 0.4, 0.7, 0.8])
    >>> fit_cut(p, np.array([0, 0, 0, 0, 1, 1], bool), 0.45) > 0.45   # stricter than the model
    True
    >>> fit_cut(np.zeros(0), np.zeros(0, bool), 0.45)
    0.45
    """
    p = np.clip(np.asarray(p_accept, np.float64), 1e-6, 1 - 1e-6)
    sign = np.where(np.asarray(accepted, bool), 1.0, -1.0)
    logit_p = np.log(p / (1 - p))
    c0 = float(np.log(prior_cut / (1 - prior_cut))) if 0 < prior_cut < 1 else 0.0
    if not len(p):
        return round(float(prior_cut), 4)

    def loss(c: float) -> float:
        return float(np.logaddexp(0.0, -sign * (logit_p - c)).sum()) + (c - c0) ** 2 / (
            2 * prior**2
        )

    best = scipy.optimize.minimize_scalar(loss, bounds=(c0 - 8 * prior, c0 + 8 * prior),
                                          method="bounded").x  # fmt: skip
    return round(float(1.0 / (1.0 + np.exp(-best))), 4)


def with_fitted_cut(
    model: CalcompModel, new: CalcompModel, x: LabelledInputs, code
) -> CalcompModel:
    """``new`` with the acceptance cut fitted on the labels (none under the argmax rule).

    ``model`` is the model refitted (its rule and ``min_prob``, the prior, say which labels
    decide acceptance), ``x`` the labelled components' inputs
    (:func:`~calcomp_caiman.refit.labelled_inputs`) and ``code`` their label codes 0-4; the
    cut is :func:`fit_cut`'s on ``new``'s probabilities, recorded as ``min_prob_fit``.
    """
    rule = acceptance_rule(model)
    if rule.min_prob is None:
        return new
    decides, accepted = _accept_decisions(model, code)
    columns = [CLASSES.index(name) for name in rule.accept]
    p_accept = x.take(decides).probs(new)[:, columns].sum(axis=1)
    cut = fit_cut(p_accept, accepted[decides], rule.min_prob)
    fit = {"method": "penalised likelihood", "prior_min_prob": rule.min_prob,
           "labels": int(decides.sum()), "accepted": int(accepted[decides].sum()),
           "agreement": round(float(((p_accept >= cut) == accepted[decides]).mean()), 4)
           if decides.any() else None}  # fmt: skip
    return new.with_thresholds(min_prob=cut, min_prob_fit=fit)
