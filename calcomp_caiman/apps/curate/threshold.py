"""The acceptance cut that best matches a lab's accept / reject decisions.

``calcomp`` accepts a component when the summed probability of the accepted classes is at
least ``min_prob`` (:func:`calcomp_caiman.accept_components`). From labelled components
(accepted: labelled as one of the accepted classes; rejected: any other label) the cut
that agrees with the most decisions is chosen, and its agreement on held-out labels is
estimated by stratified k-fold cross-validation (the cut refitted on the other folds).
"""

from __future__ import annotations

import numpy as np

__all__ = ["best_cut", "fit_min_prob"]


def best_cut(p_accept: np.ndarray, accepted: np.ndarray) -> float:
    """The ``min_prob`` with the highest agreement.

    Agreement only changes at the probabilities themselves, so the candidates are 0, the
    midpoints between consecutive distinct values, and 1; of equally good ones the median.

    Examples
    --------
    >>> import numpy as np
    >>> best_cut(np.array([0.1, 0.2, 0.6, 0.9]), np.array([False, False, True, True]))
    0.4
    """
    p = np.asarray(p_accept, dtype=np.float64)
    accepted = np.asarray(accepted, dtype=bool)
    values = np.unique(p)
    cuts = np.r_[0.0, (values[1:] + values[:-1]) / 2.0, 1.0]
    agreement = ((p[None, :] >= cuts[:, None]) == accepted[None, :]).mean(axis=1)
    best = cuts[agreement == agreement.max()]
    return round(float(best[(len(best) - 1) // 2]), 6)


def fit_min_prob(
    p_accept: np.ndarray, accepted: np.ndarray, *, folds: int = 5, seed: int = 0
) -> dict:
    """Fit ``min_prob`` to accept / reject decisions, with its cross-validated agreement.

    Parameters
    ----------
    p_accept : (N,) float ndarray
        P(accepted classes) of each labelled component.
    accepted : (N,) bool ndarray
        The lab's decision for each.
    folds : int
        Cross-validation folds (fewer when a decision has fewer labels).
    seed : int

    Returns
    -------
    dict
        ``min_prob`` (fitted on all labels), ``agreement`` (its agreement on them),
        ``cv_agreement`` (mean held-out agreement; None with fewer than 2 labels of each
        decision), ``cv_folds``, ``labels`` and ``accepted`` (counts).

    Raises
    ------
    ValueError
        The lengths differ, or no label is accepted or none rejected.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([0.05, 0.1, 0.3, 0.45, 0.55, 0.7, 0.8, 0.95])
    >>> fit = fit_min_prob(p, p > 0.5, folds=2)
    >>> fit["min_prob"], fit["agreement"], fit["cv_agreement"]
    (0.5, 1.0, 0.75)
    """
    p = np.asarray(p_accept, dtype=np.float64).ravel()
    accepted = np.asarray(accepted, dtype=bool).ravel()
    if p.shape != accepted.shape:
        raise ValueError(f"p_accept has {len(p)} entries but accepted has {len(accepted)}.")
    n_yes, n_no = int(accepted.sum()), int((~accepted).sum())
    if n_yes == 0 or n_no == 0:
        raise ValueError(
            f"fitting min_prob needs accepted and rejected labels; got {n_yes} accepted and "
            f"{n_no} rejected. Label a few of each."
        )
    cut = best_cut(p, accepted)
    result = {
        "min_prob": cut,
        "agreement": round(float(((p >= cut) == accepted).mean()), 4),
        "cv_agreement": None,
        "cv_folds": 0,
        "labels": int(len(p)),
        "accepted": n_yes,
    }
    k = min(int(folds), n_yes, n_no)
    if k < 2:
        return result
    rng = np.random.default_rng(seed)
    fold = np.empty(len(p), np.int64)
    for decision in (True, False):
        members = rng.permutation(np.flatnonzero(accepted == decision))
        fold[members] = np.arange(len(members)) % k
    hits = 0
    for i in range(k):
        test = fold == i
        held_cut = best_cut(p[~test], accepted[~test])
        hits += int(((p[test] >= held_cut) == accepted[test]).sum())
    result.update(cv_agreement=round(hits / len(p), 4), cv_folds=k)
    return result
