"""Adapt a model to a lab's own labels: ``calcomp finetune`` without the printing.

Labels come from a labels CSV (:func:`calcomp_caiman.io.label_table.read_label_table`) and
from CaImAn's manual curation stored in result files (:func:`curation_table`). A model with a
fusion head (v2, v3) is refitted in seconds (:func:`calcomp_caiman.refit.refit`); an older model
without a head (v1) has its network fine-tuned with Keras
(:func:`calcomp_caiman.research.train.fine_tune`, imported only then).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from calcomp_caiman.errors import CalcompError
from calcomp_caiman.model.folder import CalcompModel

__all__ = ["FinetuneReport", "LabelledComponents", "curation_table", "finetune"]


class LabelledComponents(NamedTuple):
    """The labelled components of one result file."""

    components: np.ndarray
    """(K,) int64: columns of ``A``."""
    codes: np.ndarray
    """(K,) int64: class codes 1-4, or 0 (``non_neuron``: process or noise)."""


@dataclass(frozen=True)
class FinetuneReport:
    """What :func:`finetune` did.

    Attributes
    ----------
    model : CalcompModel
        The adapted model (not saved yet).
    method : str
        ``"refit"`` (models v2, v3: the fusion head) or ``"fine_tune"`` (v1: the network).
    labels : int
        Labels used.
    files : int
        Result files they come from.
    before, after : float
        ``refit``: held-out accuracy before and after; ``fine_tune``: validation accuracy
        after the first epoch and the best one.
    held_out : int
        ``refit`` only: labels held out to measure ``before`` and ``after`` (0 otherwise).
    seconds : float
        ``refit`` only: time taken (0 otherwise).
    applied : bool
        Whether the model changed (``refit``: False when no level beat the model on labels
        it did not see; ``model`` is then the base model itself).
    summary : str
        ``refit`` only: the level applied in words (:data:`calcomp_caiman.refit.LEVELS`),
        ``none (kept: why)`` when none was.
    validation : str
        ``refit`` only: how ``before`` and ``after`` were measured.
    """

    model: CalcompModel
    method: str
    labels: int
    files: int
    before: float
    after: float
    held_out: int = 0
    seconds: float = 0.0
    applied: bool = True
    summary: str = ""
    validation: str = ""


def curation_table(paths: Sequence[str | os.PathLike]) -> dict[Path, LabelledComponents]:
    """Labels from CaImAn's manual curation (``accepted_list`` / ``rejected_list``).

    An accepted component is labelled ``neuron`` (code 1), a rejected one ``non_neuron``
    (code 0: process or noise), in the layout of
    :func:`calcomp_caiman.io.label_table.read_label_table`.

    Parameters
    ----------
    paths : sequence of path-like
        CaImAn result files (``.hdf5``).

    Returns
    -------
    dict
        ``{resolved path: LabelledComponents}``.

    Raises
    ------
    CalcompError
        A file has neither list (no manual curation).
    InvalidFileError, FileNotFoundError
        A file cannot be read.
    """
    from calcomp_caiman.io.caiman_h5 import read_estimates

    table = {}
    for path in paths:
        source = read_estimates(path)
        accepted = np.asarray([] if source.accepted_list is None else source.accepted_list, int)
        rejected = np.asarray([] if source.rejected_list is None else source.rejected_list, int)
        if accepted.size + rejected.size == 0:
            raise CalcompError(f"{path}: no accepted_list / rejected_list (no manual curation).")
        table[Path(path).resolve()] = LabelledComponents(
            np.concatenate([accepted, rejected]),
            np.r_[np.ones(accepted.size, int), np.zeros(rejected.size, int)],
        )
    return table


def finetune(
    base: CalcompModel,
    *,
    labels: str | os.PathLike | None = None,
    curation: Sequence[str | os.PathLike] | None = None,
    epochs: int = 15,
    seed: int = 0,
    name: str | None = None,
) -> FinetuneReport:
    """Adapt ``base`` to the labels of a CSV and/or of CaImAn's manual curation.

    Parameters
    ----------
    base : CalcompModel
        The model to adapt.
    labels : path-like, optional
        A labels CSV (columns ``file``, ``component``, ``label``).
    curation : sequence of path-like, optional
        CaImAn result files holding ``accepted_list`` / ``rejected_list``.
    epochs : int
        Epochs of network fine-tuning (models without a head only).
    seed : int
    name : str, optional
        Name of the new model.

    Returns
    -------
    FinetuneReport

    Raises
    ------
    CalcompError
        Neither ``labels`` nor ``curation``, or a curation file without curation.
    ImportError
        ``base`` has no head and Keras 3 is not installed.
    """
    if not labels and not curation:
        raise CalcompError(
            "give labels (a labels CSV) and/or curation (CaImAn files with accepted_list / "
            "rejected_list)."
        )
    if not base.uses_evidence:
        return _fine_tune_network(
            base, labels=labels, curation=curation, epochs=epochs, seed=seed, name=name
        )
    from calcomp_caiman.io.caiman_h5 import read_evidence
    from calcomp_caiman.io.label_table import read_label_table
    from calcomp_caiman.refit import refit

    table = {}
    if labels:
        table.update(read_label_table(labels))
    if curation:
        table.update(curation_table(curation))
    evidences = [read_evidence(path) for path in table]
    components = [index for index, _ in table.values()]
    codes = [code for _, code in table.values()]
    model, report = refit(base, evidences, codes, components, seed=seed, name=name,
                          labels_file=labels if labels and not curation else None)  # fmt: skip
    return FinetuneReport(
        model,
        "refit",
        labels=report["labels"],
        files=len(table),
        before=report["before"],
        after=report["after"],
        held_out=report["held_out"],
        seconds=report["seconds"],
        applied=report["applied"],
        summary=report["summary"],
        validation=report["validation"],
    )


def _fine_tune_network(
    base: CalcompModel,
    *,
    labels: str | os.PathLike | None,
    curation: Sequence[str | os.PathLike] | None,
    epochs: int,
    seed: int,
    name: str | None,
) -> FinetuneReport:
    """Models without a fusion head (v1): fine-tune the network itself (Keras)."""
    from calcomp_caiman.research.datasets import TrainingSet, curation_labels, labels_from_csv
    from calcomp_caiman.research.train import fine_tune

    parts = []
    if labels:
        parts.append(labels_from_csv(labels))
    if curation:
        parts.append(curation_labels(curation))
    data = TrainingSet.concatenate(parts)
    model, history = fine_tune(
        base, data.patches, data.labels, groups=data.groups, epochs=epochs, seed=seed, name=name
    )
    return FinetuneReport(
        model,
        "fine_tune",
        labels=len(data.labels),
        files=len(set(data.groups)),
        before=history["val_accuracy"][0],
        after=max(history["val_accuracy"]),
    )
