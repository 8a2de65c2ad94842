"""One classification as one record: the output schema, and evidence -> record.

:func:`classify` is the single path from evidence to what every writer stores
(``Estimates``, CaImAn HDF5, CSV, NWB, Suite2p): probabilities, labels, flags, the
accepted set under a stated rule, a fingerprint of ``A`` and the provenance. The names,
dtypes and shapes of the stored arrays are defined once, in :data:`FIELDS` (kept in
:mod:`calcomp_caiman.classify`, beside the function that builds them).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ._checks import CLASSES
from ._version import __version__
from .classify import (
    FIELDS,
    acceptance_rule,
    classification_fields,
    classify_with_embedding,
    evidence_used,
    flags_of_checked,
    footprint_fingerprint,
    footprints_for,
)
from .evidence import Evidence
from .model import CalcompModel
from .ood import find_ood_reference, ood_score

__all__ = ["FIELDS", "SELECTION_FIELDS", "Classification", "classify", "provenance"]

SELECTION_FIELDS = tuple(
    name
    for name, (_, shape, _) in FIELDS.items()
    if shape is not None and name.startswith("class_")
)
"""Our per-component fields, which must follow CaImAn's ``select_components``
(``cnn_preds`` is CaImAn's own field, which CaImAn slices itself)."""


def provenance(
    model: CalcompModel, accept: Sequence[str], min_prob: float | None, evidence: Sequence[str]
) -> dict[str, str | float]:
    """What produced a classification (stored with it; strings and numbers only)."""
    return {
        "model": model.name,
        "model_sha256": model.sha256,
        "version": __version__,
        "classes": json.dumps(list(CLASSES)),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "accept": json.dumps(list(accept)),
        "min_prob": "none" if min_prob is None else float(min_prob),
        "evidence": json.dumps(list(evidence)),
    }


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
        :func:`~calcomp_caiman.classify.footprints_for`) and the out-of-distribution
        score when there is one.
    ood_score, ood : float and bool, or None
        How unlike the model's training data these components are, and whether that is
        above the model's calibrated threshold (:mod:`calcomp_caiman.ood`); None when the
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


def classify(
    evidence: Evidence,
    model: CalcompModel | None = None,
    *,
    accept: Sequence[str] | None = None,
    min_prob=None,
    keep: np.ndarray | None = None,
    scale: float | None = None,
    ood: bool = True,
    batch_size: int = 128,
) -> Classification:
    """Classify every component of ``evidence`` into one record.

    Parameters
    ----------
    evidence : Evidence
    model : CalcompModel, optional
        Default: the bundled default model.
    accept, min_prob
        The acceptance rule (:func:`~calcomp_caiman.classify.acceptance_rule`; default:
        the model folder's ``thresholds.json``).
    keep : (N,) bool ndarray, optional
        An extra condition ANDed with the class rule (CaImAn's SNR / r-value test).
    scale : float, optional
        Crop scale (default: measured from the footprints).
    ood : bool
        Also score how unlike the training data the components are, when the model has an
        out-of-distribution reference (one pass through the network serves both); a file
        above the threshold gets a ``UserWarning`` with advice, never an error.
    batch_size : int

    Returns
    -------
    Classification

    Examples
    --------
    >>> import numpy as np
    >>> rr, cc = np.mgrid[:64, :64]
    >>> cell = ((rr - 30) ** 2 + (cc - 30) ** 2 <= 25).astype(np.float32)
    >>> record = classify(Evidence.build(cell.reshape(-1, 1, order="F"), (64, 64), gSig=5))
    >>> record.n, sorted(record.fields) == sorted(FIELDS)
    (1, True)
    """
    model = CalcompModel.load() if model is None else model
    accept, min_prob = acceptance_rule(model, accept, min_prob)
    reference = find_ood_reference(model) if ood else None
    footprints = footprints_for(evidence, model, scale)
    probs, embedding = classify_with_embedding(
        evidence, model, batch_size=batch_size, embed=reference is not None, footprints=footprints
    )
    if keep is not None and len(keep) != len(probs):
        raise ValueError(f"keep has {len(keep)} entries but A has {len(probs)} components.")
    fields = classification_fields(
        probs,
        flags=flags_of_checked(evidence.A),  # checked once, when the evidence was built
        accept=accept,
        min_prob=min_prob,
        keep=keep,
        fingerprint=_fingerprint(evidence),
    )
    used = evidence_used(evidence, model)
    facts = provenance(model, accept, min_prob, used)
    facts["crop_scale"] = float(footprints[2])
    score = is_ood = None
    if reference is not None:
        score, is_ood = ood_score(evidence, model, reference=reference, embedding=embedding)
        facts["ood_score"] = round(score, 4) if np.isfinite(score) else "nan"
    return Classification(fields, facts, score, is_ood)


def _fingerprint(evidence: Evidence) -> np.ndarray:
    if evidence.fingerprint is not None:
        return evidence.fingerprint
    return footprint_fingerprint(evidence.A)
