"""How a refit is judged on labels it did not see (:func:`calcomp_caiman.refit.refit`).

Held-out labels (:func:`held_out_split`: whole files when there are several) and
cross-validation folds (:func:`label_folds`) say which labels a fit does not see; a
likelihood that allows a few labels to be wrong (:func:`robust_set_nll`) and the share of
labels whose top class the label allows (:func:`set_accuracy`) score it there;
:func:`clearly_worse` keeps the simpler level unless the richer one is clearly better.
"""

from __future__ import annotations

import numpy as np

from calcomp_caiman.schema import label_masks

__all__ = [
    "LABEL_NOISE",
    "clearly_worse",
    "held_out_split",
    "label_folds",
    "robust_losses",
    "robust_set_nll",
    "set_accuracy",
]


LABEL_NOISE = 0.05
"""Share of labels :func:`robust_set_nll` allows to be wrong."""


def held_out_split(codes: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Held-out mask: whole groups when there are two or more, else stratified.

    Parameters
    ----------
    codes : (N,) int ndarray
        Label codes 0-4.
    groups : (N,) ndarray
        The group (file) of each label.
    fraction : float
        Share of labels to hold out (whole groups are added until it is reached).
    seed : int
        Seed of the order of groups and of the stratified draw (own generator).

    Returns
    -------
    (N,) bool ndarray
        True for held-out labels.

    Examples
    --------
    >>> import numpy as np
    >>> int(held_out_split(np.ones(4, int), np.array([0, 0, 1, 1]), 0.25, 0).sum())
    2
    """
    rng = np.random.default_rng(seed)
    held = np.zeros(len(codes), dtype=bool)
    unique = np.unique(groups)
    if len(unique) >= 2:
        for group in rng.permutation(unique):
            if held.mean() >= fraction:
                break
            held |= groups == group
        if held.all():
            held[groups == unique[0]] = False
    if not held.any():
        for code in np.unique(codes):
            members = np.flatnonzero(codes == code)
            take = min(int(round(len(members) * fraction)), len(members) - 1)
            held[rng.choice(members, size=max(take, 0), replace=False)] = True
    return held


def label_folds(codes: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold of each label, stratified by label code.

    Examples
    --------
    >>> import numpy as np
    >>> sorted(label_folds(np.array([1, 1, 3, 3]), 2, 0).tolist())
    [0, 0, 1, 1]
    """
    rng = np.random.default_rng(seed)
    fold = np.empty(len(codes), np.int64)
    offset = 0
    for code in np.unique(codes):
        members = rng.permutation(np.flatnonzero(codes == code))
        fold[members] = (offset + np.arange(len(members))) % k
        offset += len(members)
    return fold


def robust_set_nll(probs: np.ndarray, allowed: np.ndarray, noise: float = LABEL_NOISE) -> float:
    """Mean ``-log`` likelihood of labels of which a share ``noise`` may be wrong (a wrong
    label falls on any class at random): what judges a refit on labels it did not see, so
    that one label the model deems impossible (a slip, or a component no calibration can
    save) cannot outweigh all the others.

    Examples
    --------
    >>> import numpy as np
    >>> round(robust_set_nll(np.array([[1.0, 0, 0, 0]]), np.array([[0, 0, 1, 0]], bool)), 3)
    4.382
    """
    return float(robust_losses(probs, allowed, noise).mean())


def robust_losses(probs: np.ndarray, allowed: np.ndarray, noise: float = LABEL_NOISE) -> np.ndarray:
    """Per label, the ``-log`` likelihood that :func:`robust_set_nll` averages.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[1.0, 0, 0, 0], [0.5, 0.5, 0, 0]])
    >>> robust_losses(probs, np.array([[1, 0, 0, 0], [1, 0, 0, 0]], bool)).round(3)
    array([0.038, 0.718])
    """
    probs = np.asarray(probs, np.float64)
    allowed = np.asarray(allowed, bool)
    p_set = (probs * allowed).sum(axis=1)
    share = allowed.sum(axis=1) / allowed.shape[1]
    return -np.log((1 - noise) * p_set + noise * share)


def set_accuracy(probs: np.ndarray, codes: np.ndarray) -> float:
    """Share of labels (codes 0-4) whose top class (``probs``, (N, 4)) the label allows;
    NaN without labels.

    Examples
    --------
    >>> import numpy as np
    >>> set_accuracy(np.array([[0.1, 0.6, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1]]), np.array([0, 1]))
    1.0
    """
    if not len(codes):
        return float("nan")
    allowed = label_masks(codes).astype(bool)
    return float(allowed[np.arange(len(codes)), probs.argmax(axis=1)].mean())


def clearly_worse(losses: np.ndarray, than: np.ndarray) -> bool:
    """Whether ``losses`` exceed ``than`` (paired, per label) by more than one standard
    error: the simpler level is kept unless the richer one is clearly better.

    Examples
    --------
    >>> clearly_worse([1.0, 1.1, 1.2], [0.2, 0.3, 0.2])
    True
    """
    d = np.asarray(losses) - np.asarray(than)
    if len(d) < 2:
        return bool(d.mean() > 0)
    return bool(d.mean() > d.std(ddof=1) / np.sqrt(len(d)))
