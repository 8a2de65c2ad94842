"""The fusion head: the shape network's output and the evidence features to four classes.

A one-hidden-layer perceptron over the standardised inputs (the shape network's log
class probabilities and :func:`calcomp_caiman.evidence.features.evidence_features`). It is small
(about a thousand weights) and fitted with SciPy's L-BFGS on the set-valued negative log
likelihood (a label may allow several classes, e.g. ``non_neuron`` = process or noise),
so a lab's refit takes seconds on a CPU and needs neither Keras nor a GPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.optimize

from calcomp_caiman.model.threads import single_threaded_blas

logger = logging.getLogger(__name__)

__all__ = [
    "BIAS_PRIOR",
    "TEMPERATURE_PRIOR",
    "Calibration",
    "FusionHead",
    "calibrated_log_probs",
    "fit_calibration",
    "fit_head",
    "fit_temperature",
    "probability_set_nll",
    "set_nll",
    "softmax",
]

_PREFIX = "head/"
_PARTS = ("mean", "scale", "w1", "b1", "w2", "b2")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax (in place on a copy of float input; float32 stays float32)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


def _log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def set_nll(logits: np.ndarray, allowed: np.ndarray) -> float:
    """Mean of ``-log P(label set)`` (``allowed``: (N, C) bool, the classes each label allows).

    Examples
    --------
    >>> import numpy as np
    >>> round(set_nll(np.zeros((1, 4)), np.array([[True, True, False, False]])), 4)
    0.6931
    """
    log_p = _log_softmax(np.asarray(logits, np.float64))
    masked = np.where(allowed, log_p, -np.inf)
    top = masked.max(axis=1, keepdims=True)
    log_set = top[:, 0] + np.log(np.exp(masked - top).sum(axis=1))
    return float(-log_set.mean())


def probability_set_nll(probs: np.ndarray, allowed: np.ndarray) -> float:
    """:func:`set_nll` from probabilities: mean ``-log`` of the probability each label allows.

    Examples
    --------
    >>> import numpy as np
    >>> round(probability_set_nll(np.array([[0.5, 0.25, 0.25, 0]]), np.array([[0, 1, 1, 0]])), 4)
    0.6931
    """
    p = (np.asarray(probs, np.float64) * np.asarray(allowed, bool)).sum(axis=1)
    return float(-np.log(np.clip(p, 1e-12, 1.0)).mean())


@dataclass(frozen=True, eq=False)
class FusionHead:
    """Standardise, one ReLU layer, four logits.

    Attributes
    ----------
    mean, scale : (F,) ndarray
        Input standardisation.
    w1, b1 : (F, H), (H,) ndarray
    w2, b2 : (H, C), (C,) ndarray
    """

    mean: np.ndarray
    scale: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    @property
    def n_inputs(self) -> int:
        """Number of input columns."""
        return int(self.w1.shape[0])

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """(N, C) logits of (N, F) raw inputs."""
        inputs = np.asarray(inputs, np.float64)
        if inputs.ndim != 2 or inputs.shape[1] != self.n_inputs:
            raise ValueError(
                f"the fusion head takes {self.n_inputs} input columns, got shape {inputs.shape}."
            )
        hidden = np.maximum((inputs - self.mean) / self.scale @ self.w1 + self.b1, 0.0)
        return hidden @ self.w2 + self.b2

    def to_arrays(self, prefix: str = _PREFIX) -> dict[str, np.ndarray]:
        """The head as ``<prefix><part>`` arrays (for ``weights.npz``); ``prefix`` names the
        perceptron among a model's (``head/``; model v3's temporal branch: ``temporal/``)."""
        return {prefix + part: np.asarray(getattr(self, part), np.float64) for part in _PARTS}

    @classmethod
    def from_arrays(cls, arrays, prefix: str = _PREFIX) -> FusionHead | None:
        """The perceptron stored in ``arrays`` as ``<prefix><part>``, or None when there is none."""
        if not any(key.startswith(prefix) for key in arrays):
            return None
        missing = [part for part in _PARTS if prefix + part not in arrays]
        if missing:
            raise ValueError(f"the fusion head lacks {', '.join(prefix + m for m in missing)}.")
        head = cls(*(np.asarray(arrays[prefix + part], np.float64) for part in _PARTS))
        f, h = head.w1.shape
        if head.mean.shape != (f,) or head.scale.shape != (f,) or head.b1.shape != (h,):
            raise ValueError("the fusion head's arrays do not fit together.")
        if head.w2.shape[0] != h or head.b2.shape != (head.w2.shape[1],):
            raise ValueError("the fusion head's arrays do not fit together.")
        return head

    def with_bias(self, biases: np.ndarray) -> FusionHead:
        """A copy whose output biases are shifted by ``biases`` ((C,): one per class)."""
        biases = np.asarray(biases, np.float64)
        if biases.shape != self.b2.shape:
            raise ValueError(f"biases must have shape {self.b2.shape}, got {biases.shape}.")
        return FusionHead(self.mean, self.scale, self.w1, self.b1, self.w2, self.b2 + biases)

    def _unpack(self, flat: np.ndarray) -> FusionHead:
        f, h = self.w1.shape
        c = self.w2.shape[1]
        sizes = np.cumsum([f * h, h, h * c])
        w1, b1, w2, b2 = np.split(flat, sizes)
        return FusionHead(self.mean, self.scale, w1.reshape(f, h), b1, w2.reshape(h, c), b2)

    def _pack(self) -> np.ndarray:
        return np.concatenate([self.w1.ravel(), self.b1, self.w2.ravel(), self.b2])


def fit_head(
    inputs: np.ndarray,
    allowed: np.ndarray,
    *,
    sample_weight: np.ndarray | None = None,
    hidden: int = 32,
    l2: float = 1e-3,
    start: FusionHead | None = None,
    anchor: float = 0.0,
    max_iter: int = 400,
    seed: int = 0,
) -> FusionHead:
    """Fit a fusion head by L-BFGS on the weighted set-valued NLL plus an L2 penalty.

    Parameters
    ----------
    inputs : (N, F) ndarray
        Raw input columns (standardised inside, with statistics from ``inputs`` or,
        when ``start`` is given, ``start``'s).
    allowed : (N, C) bool ndarray
        Classes each label allows (one for a class label, two for ``non_neuron``).
    sample_weight : (N,) ndarray, optional
        E.g. class-balancing weights; normalised to mean 1.
    hidden : int
        Hidden units (ignored when ``start`` is given).
    l2 : float
        Penalty on the weights (not the biases).
    start : FusionHead, optional
        Start from this head (fine-tuning) instead of a random one.
    anchor : float
        With ``start``: penalty on the distance to ``start``'s weights, so that a few
        hundred labels adapt the head without forgetting what it knew.
    max_iter : int
        L-BFGS iterations.
    seed : int
        Seed of the random start (its own generator; no global state).

    Returns
    -------
    FusionHead

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 3)); y = (x[:, 0] > 0).astype(int)
    >>> allowed = np.eye(4, dtype=bool)[y]
    >>> head = fit_head(x, allowed, hidden=4)
    >>> float((head.logits(x).argmax(axis=1) == y).mean()) > 0.9
    True
    """
    inputs = np.asarray(inputs, np.float64)
    allowed = np.asarray(allowed, bool)
    n, f = inputs.shape
    c = allowed.shape[1]
    if len(allowed) != n or not allowed.any(axis=1).all():
        raise ValueError("allowed must have one row per input row, each allowing a class.")
    weight = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)
    weight = weight / weight.mean()
    if start is None:
        rng = np.random.default_rng(seed)
        mean = inputs.mean(axis=0)
        scale = inputs.std(axis=0)
        scale = np.where(scale > 1e-8, scale, 1.0)
        start = FusionHead(
            mean,
            scale,
            rng.normal(0, np.sqrt(2.0 / f), (f, hidden)),
            np.zeros(hidden),
            rng.normal(0, np.sqrt(1.0 / hidden), (hidden, c)),
            np.zeros(c),
        )
        anchor = 0.0
    x = (inputs - start.mean) / start.scale
    origin = start._pack()
    h = start.w1.shape[1]
    penalised = np.concatenate([np.ones(f * h), np.zeros(h), np.ones(h * c), np.zeros(c)])

    def loss(flat: np.ndarray) -> tuple[float, np.ndarray]:
        head = start._unpack(flat)
        pre = x @ head.w1 + head.b1
        hid = np.maximum(pre, 0.0)
        z = hid @ head.w2 + head.b2
        log_p = _log_softmax(z)
        p = np.exp(log_p)
        in_set = p * allowed
        p_set = in_set.sum(axis=1)
        value = -(weight * np.log(np.maximum(p_set, 1e-300))).sum() / n
        dz = weight[:, None] * (p - in_set / np.maximum(p_set, 1e-300)[:, None]) / n
        dw2 = hid.T @ dz
        db2 = dz.sum(axis=0)
        dh = (dz @ head.w2.T) * (pre > 0)
        dw1 = x.T @ dh
        db1 = dh.sum(axis=0)
        grad = np.concatenate([dw1.ravel(), db1, dw2.ravel(), db2])
        value += l2 * float((penalised * flat**2).sum())
        grad += 2 * l2 * penalised * flat
        if anchor:
            value += anchor * float(((flat - origin) ** 2).sum())
            grad += 2 * anchor * (flat - origin)
        return value, grad

    with single_threaded_blas():
        result = scipy.optimize.minimize(
            loss, origin, jac=True, method="L-BFGS-B", options={"maxiter": int(max_iter)}
        )
    logger.debug("fusion head: loss %.4f after %d iterations", result.fun, result.nit)
    return start._unpack(result.x)


def fit_temperature(logits: np.ndarray, allowed: np.ndarray) -> float:
    """The softmax temperature that minimises the set NLL of held-out ``logits``.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[4.0, 0, 0, 0], [4.0, 0, 0, 0], [0, 4.0, 0, 0]])
    >>> allowed = np.eye(4, dtype=bool)[[0, 1, 1]]
    >>> fit_temperature(z, allowed) > 1
    True
    """
    logits = np.asarray(logits, np.float64)
    result = scipy.optimize.minimize_scalar(
        lambda log_t: set_nll(logits / np.exp(log_t), allowed),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
    )
    return float(np.exp(result.x))


class Calibration(NamedTuple):
    """What a few labels can carry: one bias per class and one temperature factor.

    A model calibrated this way computes ``softmax((logits + biases) / (T * factor))``
    from its fusion head's ``logits``, where ``T`` is the row's calibration temperature:
    the biases are added to the head's output bias and the factor multiplies
    ``thresholds.json``'s temperatures.
    """

    biases: np.ndarray
    """(C,) float: added to the head's logits (the head's own units, before the temperature)."""
    factor: float
    """Multiplies every calibration temperature (> 1: less confident)."""

    @property
    def is_identity(self) -> bool:
        """Whether it changes nothing."""
        return not np.any(self.biases) and self.factor == 1.0


BIAS_PRIOR = 1.0
"""Standard deviation of the class biases' prior (logit units): a few labels move a bias by
about one, many labels by as much as they need."""

TEMPERATURE_PRIOR = 0.5
"""Standard deviation of the log temperature factor's prior."""


def calibrated_log_probs(
    log_probs: np.ndarray, temperature: np.ndarray, calibration: Calibration
) -> np.ndarray:
    """Log-probabilities after ``calibration``, from the model's own.

    Parameters
    ----------
    log_probs : (N, C) ndarray
        The model's log-probabilities, ``log softmax(logits / T)``.
    temperature : (N,) ndarray
        Each row's calibration temperature ``T``.
    calibration : Calibration

    Examples
    --------
    >>> import numpy as np
    >>> log_p = np.log(np.full((1, 4), 0.25))
    >>> np.exp(calibrated_log_probs(log_p, np.ones(1), Calibration(np.zeros(4), 1.0))).round(2)
    array([[0.25, 0.25, 0.25, 0.25]])
    """
    u = _calibrated_logits(np.asarray(log_probs, np.float64), np.asarray(temperature, np.float64),
                           np.asarray(calibration.biases, np.float64), np.log(calibration.factor))  # fmt: skip
    return _log_softmax(u)


def _calibrated_logits(
    log_p: np.ndarray, temperature: np.ndarray, biases, log_factor
) -> np.ndarray:
    # (logits + b) / (T * factor) = (log p + b / T) / factor, up to a constant per row
    return (log_p + biases[None, :] / temperature[:, None]) * np.exp(-log_factor)


def fit_calibration(
    log_probs: np.ndarray,
    temperature: np.ndarray,
    allowed: np.ndarray,
    *,
    bias_prior: float = BIAS_PRIOR,
    temperature_prior: float = TEMPERATURE_PRIOR,
) -> Calibration:
    """Class biases and a temperature factor by penalised likelihood on a few labels.

    Minimises the summed set-valued NLL of the labels (a label may allow several classes)
    plus Gaussian priors centred on no change: ``sum(b**2) / (2 bias_prior**2)`` and
    ``log(factor)**2 / (2 temperature_prior**2)``. With no labels, or labels the model
    already fits, it returns (close to) no change; the more labels, the less the priors
    matter. Shifting every bias by one constant changes no probability: the prior keeps
    their mean at zero.

    Parameters
    ----------
    log_probs : (N, C) ndarray
        The model's log-probabilities of the labelled components.
    temperature : (N,) ndarray
        Their calibration temperatures (:class:`Calibration`).
    allowed : (N, C) bool ndarray
        Classes each label allows.
    bias_prior, temperature_prior : float
        Standard deviations of the priors.

    Returns
    -------
    Calibration

    Examples
    --------
    >>> import numpy as np
    >>> log_p = np.log(np.tile([[0.7, 0.1, 0.1, 0.1]], (20, 1)))  # says neuron; labels: noise
    >>> cal = fit_calibration(log_p, np.ones(20), np.eye(4, dtype=bool)[np.full(20, 2)])
    >>> int(np.argmax(cal.biases))
    2
    """
    log_p = np.asarray(log_probs, np.float64)
    temperature = np.asarray(temperature, np.float64)
    allowed = np.asarray(allowed, bool)
    n, c = log_p.shape
    if allowed.shape != (n, c) or temperature.shape != (n,):
        raise ValueError("log_probs, temperature and allowed must describe the same rows.")
    if n == 0:
        return Calibration(np.zeros(c), 1.0)
    if not allowed.any(axis=1).all():
        raise ValueError("every label must allow a class.")

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        biases, log_factor = theta[:c], theta[c]
        u = _calibrated_logits(log_p, temperature, biases, log_factor)
        log_q = _log_softmax(u)
        p = np.exp(log_q)
        in_set = p * allowed
        p_set = np.maximum(in_set.sum(axis=1), 1e-300)
        value = -float(np.log(p_set).sum())
        du = p - in_set / p_set[:, None]  # d(-log P(set)) / du
        grad_b = (du / (temperature[:, None] * np.exp(log_factor))).sum(axis=0)
        grad_s = -float((du * u).sum())
        value += float((biases**2).sum()) / (2 * bias_prior**2)
        value += log_factor**2 / (2 * temperature_prior**2)
        grad_b = grad_b + biases / bias_prior**2
        grad_s += log_factor / temperature_prior**2
        return value, np.r_[grad_b, grad_s]

    with single_threaded_blas():  # a few small products: many BLAS threads only slow them
        result = scipy.optimize.minimize(
            loss, np.zeros(c + 1), jac=True, method="L-BFGS-B", options={"maxiter": 200}
        )
    biases = result.x[:c] - result.x[:c].mean()  # the mean changes no probability
    return Calibration(biases, float(np.exp(result.x[c])))


def head_inputs(shape_logits: np.ndarray, features: np.ndarray) -> np.ndarray:
    """The fusion head's input columns: the shape network's log-probabilities, features."""
    z = np.asarray(shape_logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return np.concatenate([log_p, np.asarray(features, np.float64)], axis=1)
