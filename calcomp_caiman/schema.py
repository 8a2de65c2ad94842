"""The one place of the output's facts: class order and codes, flags, stored fields, the record.

Everything downstream (the CaImAn hook, every file writer, the CLI, the page) reads the
names, dtypes and meanings here; :func:`check_result` is the one validator of what a
writer is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ARGMAX",
    "CLASSES",
    "FIELDS",
    "FLAG_EMPTY",
    "FLAG_NEGATIVE",
    "PATCH_SIZE",
    "REQUIRED_FIELDS",
    "SELECTION_FIELDS",
    "Classification",
    "check_result",
    "class_codes",
    "label_masks",
]

CLASSES = ("neuron", "process", "noise", "doubtful")
"""Class names, in the column order of every probability array. Integer codes are 1-4 in this order."""

PATCH_SIZE = 50
"""Side length of the square patches the classifier sees."""


def class_codes(labels: Sequence) -> np.ndarray:
    """Map class names or codes 1-4 to int codes 1-4; ``non_neuron`` maps to 0 (process or noise)."""
    out = np.empty(len(labels), dtype=np.int64)
    names = {name: i + 1 for i, name in enumerate(CLASSES)}
    names["non_neuron"] = 0
    for i, label in enumerate(labels):
        key = label.decode() if isinstance(label, bytes) else label
        if isinstance(key, str):
            key = key.strip().lower()
            if key.isdigit():
                key = int(key)
            elif key not in names:
                raise ValueError(
                    f"unknown label {label!r} at position {i}; use one of "
                    f"{', '.join(names)} or a code 1-4."
                )
            else:
                out[i] = names[key]
                continue
        if int(key) not in (1, 2, 3, 4):
            raise ValueError(f"label code {label!r} at position {i} is not in 1-4.")
        out[i] = int(key)
    return out


def label_masks(labels: Sequence) -> np.ndarray:
    """Allowed classes of each label, as (N, 4) float32 rows of 0/1.

    Codes 1-4 allow their class; 0 (``non_neuron``) allows process and noise.

    Examples
    --------
    >>> label_masks([1, 0]).tolist()
    [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]]
    """
    codes = (
        class_codes(labels)
        if len(labels) and not np.issubdtype(np.asarray(labels).dtype, np.integer)
        else np.asarray(labels, dtype=np.int64)
    )
    table = np.zeros((5, len(CLASSES)), dtype=np.float32)
    table[0, [1, 2]] = 1.0
    table[1:, :] = np.eye(len(CLASSES), dtype=np.float32)
    if codes.size and (codes.min() < 0 or codes.max() > len(CLASSES)):
        raise ValueError(f"label codes must be 0-4, got values in [{codes.min()}, {codes.max()}].")
    return table[codes]


FLAG_EMPTY = 1
"""Bit of ``class_flags``: the footprint is all zeros (classified as noise)."""

FLAG_NEGATIVE = 2
"""Bit of ``class_flags``: the footprint had negative values (clipped to 0 before cropping)."""

ARGMAX = "argmax"
"""``min_prob`` value that accepts a component when its most probable class is accepted."""

FIELDS: dict[str, tuple[type, tuple[int, ...] | None, str]] = {
    "class_probs": (np.float32, (len(CLASSES),), "P(neuron), P(process), P(noise), P(doubtful)"),
    "class_labels": (np.int8, (), "most probable class: 1 neuron, 2 process, 3 noise, 4 doubtful"),
    "class_flags": (np.uint8, (), "bit 1: empty footprint (noise); bit 2: negative values clipped"),
    "cnn_preds": (np.float32, (), "P(neuron), where CaImAn keeps its CNN score"),
    "idx_components": (np.int64, None, "accepted components, sorted"),
    "idx_components_bad": (np.int64, None, "the other components, sorted"),
    "class_fingerprint": (np.float64, (3,), "per column of A: nnz, sum, sum of value x (row+1)"),
}
"""Stored arrays: name -> (dtype, shape per component or None for an index list, meaning)."""

SELECTION_FIELDS = tuple(
    name
    for name, (_, shape, _) in FIELDS.items()
    if shape is not None and name.startswith("class_")
)
"""Our per-component fields, which must follow CaImAn's ``select_components``
(``cnn_preds`` is CaImAn's own field, which CaImAn slices itself)."""


@dataclass(frozen=True, eq=False)
class Classification:
    """The classification of N components.

    Attributes
    ----------
    fields : dict of str to ndarray
        The stored arrays (:data:`FIELDS`).
    provenance : dict
        :func:`provenance`: model, its SHA256, version, date, rule, evidence used, the
        crop scale in px (``crop_scale``; the patches the model saw, see
        :func:`~calcomp_caiman.evidence.patches.footprints_for`) and the out-of-distribution
        score when there is one.
    ood_score, ood : float and bool, or None
        How unlike the model's training data these components are, and whether that is
        above the model's calibrated threshold (:mod:`calcomp_caiman.model.ood`); None when the
        model has no reference.
    expected_error, unreliable : float and bool, or None
        The share of misclassified components the model's reliability map expects for
        these components, and whether that is high enough to warn
        (:mod:`calcomp_caiman.model.reliability`; it then warns in place of the OOD
        score); None when the model has no map.
    """

    fields: dict[str, np.ndarray]
    provenance: dict = field(default_factory=dict)
    ood_score: float | None = None
    ood: bool | None = None
    expected_error: float | None = None
    unreliable: bool | None = None

    @property
    def n(self) -> int:
        """Number of components."""
        return int(len(self.fields["class_probs"]))

    @property
    def probs(self) -> np.ndarray:
        """(N, 4) class probabilities."""
        return self.fields["class_probs"]

    @property
    def accepted(self) -> np.ndarray:
        """(N,) bool: accepted under the rule in the provenance."""
        mask = np.zeros(self.n, dtype=bool)
        mask[self.fields["idx_components"]] = True
        return mask

    def counts(self) -> dict[str, int]:
        """Components per predicted class."""
        labels = self.fields["class_labels"].astype(np.int64)
        counts = np.bincount(labels, minlength=len(CLASSES) + 1)
        return {name: int(counts[i + 1]) for i, name in enumerate(CLASSES)}

    def as_result(self) -> dict:
        """The arrays plus ``provenance``: what the file writers take."""
        return dict(self.fields, provenance=dict(self.provenance))


REQUIRED_FIELDS = (
    "class_probs",
    "class_labels",
    "cnn_preds",
    "idx_components",
    "idx_components_bad",
)
"""The arrays every result given to a writer must hold (``class_flags`` defaults to zeros and
``class_fingerprint`` is optional)."""

_PROVENANCE_TYPES = (str, bool, int, float, np.integer, np.floating, np.bool_)


def check_result(
    result: Mapping[str, Any] | Classification, n: int | None = None, *, label: str | None = None
) -> Classification:
    """Check what a file writer is given against :data:`FIELDS`; return it as a record.

    The one validator of every writer (CaImAn HDF5, NWB, Suite2p, masks): the same result is
    accepted or refused, with the same message, whatever the format.

    Parameters
    ----------
    result : Classification or mapping
        A :class:`Classification`, or its :meth:`~Classification.as_result` dict: the
        arrays of :data:`REQUIRED_FIELDS`, optionally ``class_flags`` (or ``flags``) and
        ``class_fingerprint``, and optionally ``provenance`` (a dict of str to str or number).
    n : int, optional
        Number of components of the file to write; None checks the result on its own.
    label : str, optional
        The file, for messages.

    Returns
    -------
    Classification
        ``fields``: the arrays with the dtypes of :data:`FIELDS`, in its order
        (``class_flags`` zeros when not given; ``class_fingerprint`` only when given);
        ``provenance``: a plain dict (empty when not given).

    Raises
    ------
    TypeError
        ``result`` is not a mapping; labels, flags or indices are not integers; a
        provenance value is not a str or a number (lists and dicts go in as JSON text).
    ValueError
        A required array is missing; an array has the wrong shape or length (``N`` rows of
        ``class_probs`` differ from ``n``); a label is not a code 1-4, a flag not 0-255, an
        index outside ``[0, N)``.

    Examples
    --------
    >>> probs = np.array([[0.7, 0.1, 0.1, 0.1]], np.float32)
    >>> result = {"class_probs": probs, "class_labels": np.array([1], np.int8),
    ...           "cnn_preds": probs[:, 0], "idx_components": np.array([0]),
    ...           "idx_components_bad": np.array([], np.int64), "provenance": {"model": "m"}}
    >>> record = check_result(result, 1, label="x.npy")
    >>> list(record.fields)[:3], record.provenance
    (['class_probs', 'class_labels', 'class_flags'], {'model': 'm'})
    >>> check_result(result, 2, label="x.npy")
    Traceback (most recent call last):
    ...
    ValueError: result has 1 components but x.npy has 2; classify this file's components.
    """
    if isinstance(result, Classification):
        result = result.as_result()
    if not isinstance(result, Mapping):
        raise TypeError(
            "result must be a Classification or a dict of arrays (classification_fields), got "
            f"{type(result).__name__}."
        )
    missing = [name for name in REQUIRED_FIELDS if name not in result]
    if missing:
        raise ValueError(
            f"result lacks {missing}; build it with calcomp_caiman.classify.classification_fields."
        )
    probs = np.asarray(result["class_probs"], dtype=np.float32)
    if probs.ndim != 2 or probs.shape[1] != len(CLASSES):
        raise ValueError(
            f"result['class_probs'] must be (N, {len(CLASSES)}) (one column per class in "
            f"{CLASSES}), got shape {probs.shape}."
        )
    count = probs.shape[0]
    if n is not None and count != n:
        raise ValueError(
            f"result has {count} components but {label or 'the file'} has {n}; classify this "
            "file's components."
        )
    labels = _integers(result["class_labels"], "class_labels")
    if labels.shape != (count,) or (labels.size and (labels.min() < 1 or labels.max() > 4)):
        raise ValueError(
            f"result['class_labels'] must be {count} codes 1-4, got shape {labels.shape} "
            f"with values {np.unique(labels)[:8].tolist()}."
        )
    cnn_preds = np.asarray(result["cnn_preds"], dtype=np.float32)
    if cnn_preds.shape != (count,):
        raise ValueError(f"result['cnn_preds'] must have shape ({count},), got {cnn_preds.shape}.")
    given = result.get("class_flags", result.get("flags"))
    flags = np.zeros(count, np.int64) if given is None else _integers(given, "class_flags")
    if flags.shape != (count,) or (flags.size and (flags.min() < 0 or flags.max() > 255)):
        raise ValueError(
            f"result['class_flags'] must be ({count},) values 0-255, got shape {flags.shape}."
        )
    arrays = {"class_probs": probs, "class_labels": labels, "class_flags": flags,
              "cnn_preds": cnn_preds}  # fmt: skip
    for name in ("idx_components", "idx_components_bad"):
        index = _integers(result[name], name)
        if index.ndim != 1 or (index.size and (index.min() < 0 or index.max() >= count)):
            raise ValueError(
                f"result[{name!r}] must be 1-D column indices in [0, {count}) (the result has "
                f"{count} components)."
            )
        arrays[name] = index
    if result.get("class_fingerprint") is not None:
        fingerprint = np.asarray(result["class_fingerprint"], dtype=np.float64)
        if fingerprint.shape != (count, 3):
            raise ValueError(
                f"result['class_fingerprint'] must have shape ({count}, 3), got "
                f"{fingerprint.shape}."
            )
        arrays["class_fingerprint"] = fingerprint
    fields = {name: arrays[name].astype(FIELDS[name][0], copy=False)
              for name in FIELDS if name in arrays}  # fmt: skip
    return Classification(fields, _check_provenance(result.get("provenance")))


def _integers(value: Any, name: str) -> np.ndarray:
    array = np.asarray(value)
    if array.size == 0:
        return np.zeros(array.shape, np.int64)
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise TypeError(f"result[{name!r}] must hold integers, got dtype {array.dtype}.")
    return array.astype(np.int64)


def _check_provenance(provenance: Any) -> dict[str, Any]:
    if provenance is None:
        return {}
    if not isinstance(provenance, Mapping):
        raise TypeError(f"result['provenance'] must be a dict, got {type(provenance).__name__}.")
    for key, value in provenance.items():
        if not isinstance(value, _PROVENANCE_TYPES):
            raise TypeError(
                f"result['provenance'][{key!r}] must be a str or a number, got "
                f"{type(value).__name__}; encode lists and dicts as JSON text."
            )
    return dict(provenance)
