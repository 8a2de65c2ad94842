"""The one place of the output's facts: class order and codes, flags, stored fields, the record.

Everything downstream (the CaImAn hook, every file writer, the CLI, the page) reads the
names, dtypes and meanings here; :func:`check_result` is the one validator of what a
writer is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ARGMAX",
    "CLASSES",
    "FIELDS",
    "FLAG_EMPTY",
    "FLAG_NEGATIVE",
    "PATCH_SIZE",
    "SELECTION_FIELDS",
    "Classification",
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
    """

    fields: dict[str, np.ndarray]
    provenance: dict = field(default_factory=dict)
    ood_score: float | None = None
    ood: bool | None = None

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
