"""How wrong the classes of one file are likely to be: an expected error per file.

The out-of-distribution score (:mod:`calcomp_caiman.model.ood`) looks only at the shape
network's embedding, so it misses files whose other evidence is off (a correlation image
on another scale, traces of another kind) and files where the model is wrong for reasons
the embedding does not see. This module turns everything one classification pass already
has into a few numbers per file (:data:`SIGNALS`) and a fitted map (``reliability.json``
in the model folder) turns those into an **expected error**: the expected share of
components whose most probable class is not one the label allows (``1 -`` 4-class accuracy,
a ``non_neuron`` label allowing process or noise), as measured on labelled files.

Signals (:func:`file_signals`), over the non-empty components:

=========================== ================================================================
``ood``                     :func:`~calcomp_caiman.model.ood.file_score` of the embedding
                            (``nan`` when the model has no ``ood.npz``)
``shift_<group>``           per :data:`~calcomp_caiman.evidence.features.FEATURE_GROUPS`
                            group: the mean over its columns of the Wasserstein distance
                            between the file's values, mapped through the training data's
                            quantiles, and the uniform distribution (0: like the training
                            data; 0.5: every value beyond the training range)
``absent_evidence``         share of the optional groups the file lacks
``dropped_evidence``        evidence found but left out as unfit (:attr:`Evidence.dropped`)
``branch_disagreement``     mean total-variation distance between the image branch's
                            probabilities and the fused ones (models v2, v3)
``temporal_disagreement``   the same between the image and temporal branches (model v3,
                            components with traces; 0 otherwise)
``entropy``                 mean entropy of the probabilities, over ``log 4``
``uncertainty``             mean ``1 - max(probs)``: the error the model itself expects
``doubtful_share``          share of components whose most probable class is doubtful
=========================== ================================================================

The map (:class:`ReliabilityMap`) is linear in the standardised signals with non-negative
coefficients (more shift, more disagreement: never less expected error), clipped to
[0, 1]; it is fitted by :mod:`calcomp_caiman.research.reliability_fit`
(``recipes/calibrate_reliability.py``), which also records there the reference quantiles
and the expected error of in-distribution files. A file is flagged when its expected error
exceeds that by more than :data:`MARGIN`; :func:`assess` then warns, naming the file, the
expected error and the remedy (label about :func:`~calcomp_caiman.model.ood.advice`
components with ``calcomp curate`` and refit). A warning, never a failure.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from calcomp_caiman.errors import InvalidFileError
from calcomp_caiman.evidence.evidence import Evidence
from calcomp_caiman.evidence.features import FEATURE_GROUPS, OPTIONAL_GROUPS, feature_names
from calcomp_caiman.io.atomic import atomic_write_text
from calcomp_caiman.model.folder import CalcompModel, bundled_models, folder_file
from calcomp_caiman.model.head import softmax
from calcomp_caiman.model.ood import OodReference, advice, component_distances, file_score
from calcomp_caiman.schema import CLASSES

logger = logging.getLogger(__name__)

__all__ = [
    "MARGIN",
    "QUANTILE_LEVELS",
    "RELIABILITY_FILE",
    "SIGNALS",
    "BranchOutputs",
    "Reliability",
    "ReliabilityMap",
    "assess",
    "feature_shifts",
    "file_signals",
    "find_reliability",
    "group_shift",
    "load_reliability",
    "reference_quantiles",
    "save_reliability",
]

RELIABILITY_FILE = "reliability.json"
"""Name of the fitted map inside a model folder."""

MARGIN = 0.15
"""A file is flagged when its expected error exceeds the in-distribution one by more."""

QUANTILE_LEVELS = 21
"""Reference quantiles stored per feature column (0, 5, ..., 100 %)."""

SIGNALS = (
    "ood",
    *(f"shift_{group}" for group in FEATURE_GROUPS),
    "absent_evidence",
    "dropped_evidence",
    "branch_disagreement",
    "temporal_disagreement",
    "entropy",
    "uncertainty",
    "doubtful_share",
)
"""The per-file signals, in the order :class:`ReliabilityMap` reads them."""

_DOUBTFUL = CLASSES.index("doubtful")


class BranchOutputs:
    """What one classification pass leaves for the signals, collected a chunk at a time.

    Pass :meth:`add` as ``observe`` to :func:`~calcomp_caiman.classify.classify_with_embedding`:
    it keeps each chunk's evidence features and (model v3) the temporal branch's logits,
    so that nothing is computed twice.

    Parameters
    ----------
    model : CalcompModel
    n : int
        Number of components of the file.

    Examples
    --------
    >>> outputs = BranchOutputs(CalcompModel.load(), 3)
    >>> outputs.features.shape == (3, len(feature_names())), outputs.has_features
    (True, False)
    """

    def __init__(self, model: CalcompModel, n: int):
        self.model = model
        self.features = np.zeros((int(n), len(feature_names())), np.float32)
        self.temporal_logits = np.zeros((int(n), len(CLASSES)))
        self.has_temporal = np.zeros(int(n), bool)
        self.has_features = False

    def add(self, part) -> None:
        """Keep one chunk (a :class:`~calcomp_caiman.classify.ModelInputs`: ``rows``,
        ``features``, ``profiles``)."""
        rows = part.rows
        n = len(self.features[rows])
        if part.features is not None and part.features.shape[1] == self.features.shape[1]:
            self.features[rows] = part.features
            self.has_features = True
        if part.profiles is not None and self.model.temporal is not None and n:
            self.temporal_logits[rows] = self.model.temporal_logits(part.profiles, n)
            flat = np.asarray(part.profiles).reshape(n, -1)
            self.has_temporal[rows] = np.abs(flat).max(axis=1) > 0


def reference_quantiles(features: np.ndarray, *, levels: int = QUANTILE_LEVELS) -> dict:
    """Quantiles of every feature column over the rows where its group is present.

    Parameters
    ----------
    features : (N, F) ndarray
        Every column of :func:`~calcomp_caiman.evidence.features.feature_names`, e.g. of
        the model's training files.
    levels : int
        Quantiles per column, evenly spaced from 0 to 1.

    Returns
    -------
    dict
        Column name -> list of ``levels`` floats; columns of groups present in fewer than
        two rows are left out.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.zeros((5, len(feature_names()))); x[:, 0] = np.arange(5)
    >>> reference_quantiles(x, levels=3)["log_area"]
    [0.0, 2.0, 4.0]
    """
    features = np.asarray(features, np.float64)
    names = feature_names()
    grid = np.linspace(0.0, 1.0, int(levels))
    out = {}
    for group, members in FEATURE_GROUPS.items():
        present = _present(features, group)
        if present.sum() < 2:
            continue
        for name in members:
            values = features[present, names.index(name)]
            out[name] = [round(float(v), 6) for v in np.quantile(values, grid)]
    return out


def _present(features: np.ndarray, group: str) -> np.ndarray:
    if group not in OPTIONAL_GROUPS:
        return np.ones(len(features), bool)
    return features[:, feature_names().index(f"has_{group}")] > 0


def group_shift(values: np.ndarray, quantiles: np.ndarray) -> float:
    """Wasserstein distance between ``values`` mapped through a reference's quantiles and
    the uniform distribution on [0, 1].

    0 for values distributed as the reference, up to 0.5 when all lie beyond its range;
    ties in the reference (discrete features) map to the middle of their quantile range.

    Examples
    --------
    >>> import numpy as np
    >>> q = np.linspace(0, 1, 21)
    >>> round(group_shift(np.linspace(0, 1, 200), q), 3), group_shift(np.full(9, 5.0), q)
    (0.001, 0.5)
    """
    values = np.asarray(values, np.float64)
    q = np.asarray(quantiles, np.float64)
    if values.size == 0 or q.size < 2:
        return 0.0
    levels = np.linspace(0.0, 1.0, len(q))
    low = np.interp(values, q, levels)  # the lowest level of a block of ties
    high = 1.0 - np.interp(-values, -q[::-1], levels)  # the highest
    mapped = np.sort(0.5 * (low + high))
    target = (np.arange(len(mapped)) + 0.5) / len(mapped)
    return float(np.mean(np.abs(mapped - target)))


def feature_shifts(
    features: np.ndarray | None, quantiles: Mapping[str, list] | None
) -> dict[str, float]:
    """``shift_<group>`` of every group (:func:`group_shift`, mean over its columns) and
    ``absent_evidence``, over the components where each group is present.

    Parameters
    ----------
    features : (N, F) ndarray or None
        Every column of :func:`~calcomp_caiman.evidence.features.feature_names` of one
        file's (non-empty) components; None: not computed (a model without a head), every
        optional group counts as absent.
    quantiles : mapping or None
        :func:`reference_quantiles`; columns it lacks (or None) give no shift (0).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.zeros((4, len(feature_names()))); x[:, 0] = [9, 9, 9, 9]
    >>> shifts = feature_shifts(x, {"log_area": [0.0, 1.0]})
    >>> shifts["shift_shape"], shifts["absent_evidence"]
    (0.5, 1.0)
    """
    out = dict.fromkeys((f"shift_{group}" for group in FEATURE_GROUPS), 0.0)
    if features is None:
        out["absent_evidence"] = 1.0
        return out
    features = np.asarray(features, np.float64)
    names = feature_names()
    absent = 0
    for group, members in FEATURE_GROUPS.items():
        present = _present(features, group)
        if group in OPTIONAL_GROUPS and not present.any():
            absent += 1
        known = [m for m in members if quantiles is not None and m in quantiles]
        if present.any() and known:
            shifts = [group_shift(features[present, names.index(m)], quantiles[m]) for m in known]
            out[f"shift_{group}"] = float(np.mean(shifts))
    out["absent_evidence"] = absent / len(OPTIONAL_GROUPS)
    return out


def _total_variation(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return 0.5 * np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).sum(axis=1)


def file_signals(
    model: CalcompModel,
    evidence: Evidence,
    probs: np.ndarray,
    embedding: np.ndarray | None,
    outputs: BranchOutputs,
    *,
    quantiles: Mapping[str, list] | None = None,
    ood_reference: OodReference | None = None,
) -> dict[str, float]:
    """The :data:`SIGNALS` of one file, from what classifying it computed.

    Parameters
    ----------
    model : CalcompModel
    evidence : Evidence
    probs : (N, 4) ndarray
        The model's probabilities (:func:`~calcomp_caiman.classify.classify_with_embedding`).
    embedding : (N, D) ndarray or None
        The network's embedding of the same pass; None: no ``ood`` signal and no branch
        disagreement.
    outputs : BranchOutputs
        Filled during the same pass.
    quantiles : mapping, optional
        :func:`reference_quantiles` of the training data (``ReliabilityMap.quantiles``);
        without them every ``shift_<group>`` is 0.
    ood_reference : OodReference, optional
        The model's ``ood.npz`` (:func:`~calcomp_caiman.model.ood.find_ood_reference`).

    Returns
    -------
    dict of str to float
        Every name of :data:`SIGNALS`; all ``nan`` for a file without non-empty components.

    Examples
    --------
    >>> import numpy as np
    >>> from calcomp_caiman.classify import classify_with_embedding
    >>> rr, cc = np.mgrid[:64, :64]
    >>> cell = ((rr - 30) ** 2 + (cc - 30) ** 2 <= 25).astype(np.float32)
    >>> ev = Evidence.build(cell.reshape(-1, 1, order="F"), (64, 64), gSig=5)
    >>> model = CalcompModel.load()
    >>> outputs = BranchOutputs(model, ev.n)
    >>> probs, embedding = classify_with_embedding(ev, model, observe=outputs.add)
    >>> signals = file_signals(model, ev, probs, embedding, outputs)
    >>> sorted(signals) == sorted(SIGNALS), signals["dropped_evidence"]
    (True, 0.0)
    """
    nonempty = np.diff(evidence.A.indptr) > 0
    if not nonempty.any():
        return dict.fromkeys(SIGNALS, float("nan"))
    probs = np.asarray(probs, np.float64)[nonempty]
    signals = dict.fromkeys(SIGNALS, 0.0)
    signals["ood"] = float("nan")
    if embedding is not None:
        embedding = np.asarray(embedding)[nonempty]
        if ood_reference is not None:
            signals["ood"] = file_score(component_distances(embedding, ood_reference))
        dense = model.engine.dense
        image = softmax(embedding.astype(np.float64) @ dense[0] + dense[1])
        if model.uses_evidence:
            signals["branch_disagreement"] = float(_total_variation(image, probs).mean())
        traces = outputs.has_temporal[nonempty]
        if traces.any():
            temporal = softmax(outputs.temporal_logits[nonempty][traces])
            signals["temporal_disagreement"] = float(
                _total_variation(image[traces], temporal).mean()
            )
    features = outputs.features[nonempty] if outputs.has_features else None
    signals.update(feature_shifts(features, quantiles))
    signals["dropped_evidence"] = float(len(evidence.dropped))
    entropy = -(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(axis=1) / np.log(len(CLASSES))
    signals["entropy"] = float(entropy.mean())
    signals["uncertainty"] = float(np.mean(1.0 - probs.max(axis=1)))
    signals["doubtful_share"] = float(np.mean(probs.argmax(axis=1) == _DOUBTFUL))
    return signals


@dataclass(frozen=True)
class ReliabilityMap:
    """A fitted map from the signals of a file to its expected error (``reliability.json``).

    ``expected error = clip(intercept + sum_k coefficients_k (s_k - centre_k) / scale_k, 0, 1)``
    over :attr:`signals`; a missing (``nan``) signal counts as its centre.

    Attributes
    ----------
    signals : tuple of str
        Names among :data:`SIGNALS`.
    centre, scale, coefficients : tuple of float
        One per signal.
    intercept : float
    in_distribution_error : float
        Mean expected error of the in-distribution files the map was fitted on.
    quantiles : dict
        :func:`reference_quantiles` of the model's training files.
    model_sha256 : str
        SHA256 of the weights of the model it was fitted for (empty: any).
    margin : float
        Flag above ``in_distribution_error + margin``.
    notes : dict
        What it was fitted on and how well it ranked held-out files (JSON-ready).

    Examples
    --------
    >>> m = ReliabilityMap(("ood", "entropy"), (1.0, 0.3), (0.1, 0.1), (0.0, 0.05), 0.2, 0.2)
    >>> m.expected_error({"ood": 1.0, "entropy": 0.5}), m.expected_error({"ood": float("nan"), "entropy": 0.3})
    (0.3, 0.2)
    """

    signals: tuple[str, ...]
    centre: tuple[float, ...]
    scale: tuple[float, ...]
    coefficients: tuple[float, ...]
    intercept: float
    in_distribution_error: float
    quantiles: dict = field(default_factory=dict)
    model_sha256: str = ""
    margin: float = MARGIN
    notes: dict = field(default_factory=dict)

    def __post_init__(self):
        unknown = [s for s in self.signals if s not in SIGNALS]
        sizes = {len(self.signals), len(self.centre), len(self.scale), len(self.coefficients)}
        if unknown or len(sizes) != 1:
            raise ValueError(
                f"a reliability map needs one centre, scale and coefficient per signal of "
                f"{SIGNALS}; got signals {self.signals} (unknown: {unknown}) and "
                f"{len(self.centre)}, {len(self.scale)}, {len(self.coefficients)} numbers."
            )

    @property
    def warning_level(self) -> float:
        """The expected error above which a file is flagged (:func:`assess`)."""
        return self.in_distribution_error + self.margin

    def expected_error(self, signals: Mapping[str, float]) -> float:
        """Expected error of a file from its :func:`file_signals` (``nan`` if all are)."""
        values = np.array([signals.get(s, np.nan) for s in self.signals], np.float64)
        if values.size and np.isnan(values).all():
            return float("nan")
        centre = np.asarray(self.centre, np.float64)
        values = np.where(np.isfinite(values), values, centre)
        z = (values - centre) / np.maximum(np.asarray(self.scale, np.float64), 1e-12)
        error = self.intercept + float(np.dot(self.coefficients, z))
        return round(float(np.clip(error, 0.0, 1.0)), 6)

    def to_dict(self) -> dict:
        """JSON-ready content of ``reliability.json``."""
        return {
            "error": "1 - 4-class accuracy (non_neuron labels allow process or noise)",
            "signals": list(self.signals),
            "centre": list(self.centre),
            "scale": list(self.scale),
            "coefficients": list(self.coefficients),
            "intercept": self.intercept,
            "in_distribution_error": self.in_distribution_error,
            "margin": self.margin,
            "model_sha256": self.model_sha256,
            "quantiles": self.quantiles,
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, content: Mapping) -> ReliabilityMap:
        """The map of :meth:`to_dict`'s content (``KeyError``/``ValueError`` when malformed)."""
        return cls(
            tuple(str(s) for s in content["signals"]),
            tuple(float(v) for v in content["centre"]),
            tuple(float(v) for v in content["scale"]),
            tuple(float(v) for v in content["coefficients"]),
            float(content["intercept"]),
            float(content["in_distribution_error"]),
            {str(k): [float(x) for x in v] for k, v in dict(content.get("quantiles", {})).items()},
            str(content.get("model_sha256", "")),
            float(content.get("margin", MARGIN)),
            dict(content.get("notes", {})),
        )


def save_reliability(reliability: ReliabilityMap, folder: str | os.PathLike) -> Path:
    """Write ``reliability.json`` into a model folder atomically; return its path."""
    target = Path(folder) / RELIABILITY_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, json.dumps(reliability.to_dict(), indent=1) + "\n")
    return target


def load_reliability(path: str | os.PathLike) -> ReliabilityMap:
    """Read ``reliability.json`` (a model folder or the file itself).

    Raises
    ------
    FileNotFoundError
        No such file.
    InvalidFileError
        Not a map written by :func:`save_reliability`.
    """
    path = folder_file(path, RELIABILITY_FILE, "reliability map")
    try:
        return ReliabilityMap.from_dict(json.loads(path.read_text()))
    except (KeyError, ValueError, TypeError) as err:
        raise InvalidFileError(path, f"not a reliability map ({err}).") from err


def find_reliability(model: CalcompModel) -> ReliabilityMap | None:
    """The ``reliability.json`` fitted for ``model``: in its folder, else a bundled one.

    A map fits only the weights it was fitted for (its ``model_sha256``; a refitted head
    changes the errors): a model made in memory, or whose folder has none, gets the map
    of a bundled folder with the same weights, else None.
    """
    candidates = [] if model.folder is None else [Path(model.folder)]
    candidates += sorted(set(bundled_models().values()))
    for candidate in candidates:
        if not (candidate / RELIABILITY_FILE).is_file():
            continue
        reliability = load_reliability(candidate)
        if not reliability.model_sha256 or reliability.model_sha256 == model.sha256:
            return reliability
    return None


class Reliability(NamedTuple):
    """One file's expected error and whether it is flagged (:func:`assess`)."""

    expected_error: float
    """Expected share of misclassified components (``nan`` without components)."""
    in_distribution_error: float
    """The map's expected error of in-distribution files."""
    flag: bool
    """``expected_error > in_distribution_error + margin``."""
    signals: dict
    """:func:`file_signals`."""


def assess(
    signals: Mapping[str, float],
    reliability: ReliabilityMap,
    *,
    source: str = "",
    n_components: int = 0,
    model_name: str = "the model",
) -> Reliability:
    """A file's expected error, flagged (with a ``UserWarning`` and advice) when high.

    Parameters
    ----------
    signals : mapping
        :func:`file_signals` of the file.
    reliability : ReliabilityMap
    source : str
        The file, for the message.
    n_components : int
        Its number of components (how many to label: :func:`~calcomp_caiman.model.ood.advice`).
    model_name : str

    Returns
    -------
    Reliability

    Examples
    --------
    >>> import warnings
    >>> m = ReliabilityMap(("entropy",), (0.3,), (0.1,), (0.05,), 0.2, 0.2)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     result = assess({"entropy": 0.9}, m, source="a.hdf5", n_components=400)
    >>> result.flag, result.expected_error
    (True, 0.5)
    >>> print(caught[0].message)  # doctest: +NORMALIZE_WHITESPACE
    a.hdf5: the classes may be unreliable here: expected error 0.50 (0.20 on the training
    data of the model); label ~40 components with `calcomp curate a.hdf5` and refit.
    """
    error = reliability.expected_error(signals)
    baseline = reliability.in_distribution_error
    flag = bool(np.isfinite(error) and error > reliability.warning_level)
    if flag:
        name = source or "estimates"
        warnings.warn(
            f"{name}: the classes may be unreliable here: expected error {error:.2f} "
            f"({baseline:.2f} on the training data of {model_name}); label "
            f"~{advice(n_components)} components with `calcomp curate {name}` and refit.",
            UserWarning,
            stacklevel=3,
        )
    return Reliability(error, baseline, flag, dict(signals))
