"""Which component to label next: uncertain and varied, across files and classes.

Pure functions over the model's probabilities and features; the page's session
(:mod:`calcomp_caiman.apps.curate.session`) and ``benchmarks/curation_gain.py`` use them.
"""

from __future__ import annotations

import numpy as np

from calcomp_caiman.schema import CLASSES, class_codes

__all__ = ["DIVERSE_FIRST", "contradicts", "label_order", "label_points", "uncertainty"]

_LOG4 = float(np.log(len(CLASSES)))  # entropy of the uniform distribution


DIVERSE_FIRST = 100
"""How many components :func:`label_order` places by uncertainty and diversity; the rest
follow by uncertainty alone."""


def uncertainty(probs: np.ndarray) -> np.ndarray:
    """Normalised entropy of each row of probabilities: 0 certain, 1 uniform.

    Examples
    --------
    >>> import numpy as np
    >>> uncertainty(np.array([[1.0, 0, 0, 0], [0.25, 0.25, 0.25, 0.25]])).round(3).tolist()
    [0.0, 1.0]
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1) / _LOG4


def label_points(probs: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Where a file's components lie for :func:`label_order`: log-probabilities and evidence
    features, float64 (standardised there, over all files together)."""
    return np.concatenate(
        [
            np.log(np.clip(np.asarray(probs, np.float64), 1e-6, 1.0)),
            np.asarray(features, np.float64),
        ],
        axis=1,
    )


def label_order(
    probs: list[np.ndarray],
    points: list[np.ndarray] | None = None,
    labelled: list[np.ndarray] | None = None,
    *,
    first: int = DIVERSE_FIRST,
    seed: int = 0,
) -> list[tuple[int, int]]:
    """The order in which the page shows components: the labels that help most first.

    Greedily, each next component is the one with the highest ``uncertainty x
    (1 - similarity) x spread``: :func:`uncertainty` of its probabilities; its similarity
    (a Gaussian kernel on standardised ``points``) to the nearest component labelled or
    placed already, so that one label stands for its look-alikes; and ``spread`` =
    ``1 / sqrt((1 + n_file) (1 + n_class))``, with ``n_file`` and ``n_class`` the components
    labelled or placed already from its file and of its predicted class, so the first labels
    cover every file and class. After ``first`` placements the rest follow by uncertainty;
    labelled components come last (by uncertainty).

    Parameters
    ----------
    probs : list of (N_f, C) ndarray
        Per file, the probabilities.
    points : list of (N_f, D) ndarray, optional
        Per file, where each component lies (:func:`label_points`); without them only
        uncertainty and spread count.
    labelled : list of (N_f,) bool ndarray, optional
        Per file, the components labelled already.
    first : int
        Components placed greedily.
    seed : int
        Seed of the pairs that set the kernel's width (own generator).

    Returns
    -------
    list of (file, component)
        Every component once.

    Examples
    --------
    >>> import numpy as np
    >>> probs = [np.array([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0.9, 0.1, 0, 0]]),
    ...          np.array([[0.6, 0.4, 0, 0]])]
    >>> label_order(probs)  # the second file comes before the first's twin
    [(0, 0), (1, 0), (0, 1), (0, 2)]
    """
    sizes = [len(p) for p in probs]
    file_of = np.repeat(np.arange(len(probs)), sizes)
    index = np.concatenate([np.arange(n) for n in sizes]) if sizes else np.zeros(0, np.int64)
    p = np.concatenate(probs) if sizes else np.zeros((0, len(CLASSES)))
    n = len(p)
    score = uncertainty(p) if n else np.zeros(0)
    done = np.zeros(n, bool) if labelled is None else np.concatenate(labelled).astype(bool)
    predicted = p.argmax(axis=1) if n else np.zeros(0, np.int64)
    similar = np.zeros(n)
    x = None
    if points is not None and n:
        x = np.concatenate(points).astype(np.float64)
        x = np.nan_to_num((x - x.mean(axis=0)) / np.where(x.std(axis=0) > 1e-9, x.std(axis=0), 1.0))
        rng = np.random.default_rng(seed)
        pairs = rng.integers(0, n, size=(min(2000, n * n), 2))
        width = max(0.25 * float(np.median(((x[pairs[:, 0]] - x[pairs[:, 1]]) ** 2).sum(axis=1))), 1e-9)  # fmt: skip
    per_file = np.bincount(file_of[done], minlength=len(probs)).astype(np.float64)
    per_class = np.bincount(predicted[done], minlength=len(CLASSES)).astype(np.float64)

    def place(i: int) -> None:
        per_file[file_of[i]] += 1
        per_class[predicted[i]] += 1
        if x is not None:
            kernel = np.exp(-((x - x[i]) ** 2).sum(axis=1) / (2 * width))
            np.maximum(similar, kernel, out=similar)

    for i in np.flatnonzero(done):
        place(i)
    order = []
    free = ~done
    for _ in range(min(int(first), int(free.sum()))):
        spread = 1.0 / np.sqrt((1 + per_file[file_of]) * (1 + per_class[predicted]))
        value = np.where(free, (score + 1e-6) * (1 - similar + 1e-6) * spread, -np.inf)
        i = int(np.argmax(value))
        order.append(i)
        free[i] = False
        place(i)
    for group in (free, done):  # the rest by uncertainty, then the labelled ones
        rest = np.flatnonzero(group)
        order.extend(rest[np.lexsort((index[rest], file_of[rest], -score[rest]))].tolist())
    return [(int(file_of[i]), int(index[i])) for i in order]


def contradicts(label: str, predicted: int) -> bool:
    """Whether a label contradicts the predicted class code (1-4).

    ``non_neuron`` (process or noise) contradicts a predicted neuron or doubtful.

    Examples
    --------
    >>> contradicts("neuron", 1), contradicts("noise", 1), contradicts("non_neuron", 3)
    (False, True, False)
    """
    code = int(class_codes([label])[0])
    if code == 0:
        return predicted in (CLASSES.index("neuron") + 1, CLASSES.index("doubtful") + 1)
    return code != predicted
