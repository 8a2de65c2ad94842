"""Refit a model v2 to a lab's own labels in seconds: its fusion head, not its network.

The shape network stays as it is; the fusion head (:mod:`calcomp_caiman.model.head`) is refitted
on the labelled components' network outputs and evidence features, pulled towards the
head it started from so that a few hundred labels adapt it without forgetting. Labels
held out (whole files when there are several) choose how strong that pull is, and measure
the accuracy before and after; a refit that does not help them is not applied.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from calcomp_caiman.errors import CalcompError
from calcomp_caiman.evidence.evidence import Evidence
from calcomp_caiman.evidence.features import evidence_features
from calcomp_caiman.evidence.patches import crop_checked, footprints_for
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.model.head import fit_head, probability_set_nll
from calcomp_caiman.schema import class_codes, label_masks

logger = logging.getLogger(__name__)

__all__ = ["refit", "read_label_table", "labelled_inputs", "LabelledInputs"]

MIN_LABELS = 8
"""Fewest labels a refit accepts."""

ANCHORS = (1e-3, 1e-2, 1e-1, 1.0)
"""Pulls towards the starting head tried by :func:`refit`; the held-out labels choose."""


class LabelledInputs(NamedTuple):
    """What the fusion head sees of some components: network logits and evidence features."""

    logits: np.ndarray
    """(K, 4) float32: the shape network's logits (:meth:`CalcompModel.shape_logits`)."""
    features: np.ndarray
    """(K, F) float32: the evidence features (:func:`evidence_features`)."""


def labelled_inputs(
    model: CalcompModel, evidence: Evidence, components: np.ndarray
) -> LabelledInputs:
    """Shape-network logits and evidence features of some components of one result.

    Features are computed with all the file's components present (neighbours), at the
    crop scale of the whole file, exactly as :func:`~calcomp_caiman.classify.classify_evidence`
    computes them.

    Returns
    -------
    LabelledInputs
        ``logits`` (K, 4) and ``features`` (K, F), float32.
    """
    components = np.asarray(components, dtype=np.int64)
    if components.size and (components.min() < 0 or components.max() >= evidence.n):
        raise ValueError(
            f"{evidence.source or 'evidence'}: component indices must be in 0..{evidence.n - 1}."
        )
    flat, dims, scale = footprints_for(evidence, model.scale_rule)
    features = evidence_features(evidence, flat, dims, scale)[components]
    patches = crop_checked(flat[:, components], dims, scale, model.patch_size)
    return LabelledInputs(model.shape_logits(patches), features)


def _split(codes: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Held-out mask: whole groups when there are two or more, else stratified."""
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


def _set_accuracy(probs: np.ndarray, codes: np.ndarray) -> float:
    if not len(codes):
        return float("nan")
    allowed = label_masks(codes).astype(bool)
    return float(allowed[np.arange(len(codes)), probs.argmax(axis=1)].mean())


def _label_codes(labels, result: int) -> np.ndarray:
    """Labels of one result as codes 0-4: integer codes as they are, names (or codes
    written as text) through :func:`~calcomp_caiman.schema.class_codes`."""
    values = np.asarray(labels)
    try:
        if values.size and not np.issubdtype(values.dtype, np.integer):
            values = class_codes(values.ravel().tolist())
        codes = values.astype(np.int64).ravel()
        label_masks(codes)  # checks the codes
    except (ValueError, TypeError) as err:
        raise ValueError(f"result {result}: {err}") from None
    return codes


def refit(
    model: CalcompModel,
    evidences: Sequence[Evidence],
    labels: Sequence[np.ndarray],
    components: Sequence[np.ndarray],
    *,
    validation_fraction: float = 0.25,
    anchor: float | None = None,
    seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
    name: str | None = None,
) -> tuple[CalcompModel, dict]:
    """Adapt a model v2 to labelled components of one or more results.

    Parameters
    ----------
    model : CalcompModel
        A model with a fusion head (:attr:`CalcompModel.uses_evidence`), e.g. the default.
    evidences : sequence of Evidence
        One per labelled result (file).
    labels : sequence of (K_i,) arrays or lists
        Per result, one label per component: a class name (``"neuron"``, ``"process"``,
        ``"noise"``, ``"doubtful"``) or ``"non_neuron"`` (process or noise), or its code
        (1-4, 0 for ``non_neuron``), as the labels CSV allows.
    components : sequence of (K_i,) int arrays
        The labelled components' indices (columns of ``A``), per result.
    validation_fraction : float
        Share of labels held out (whole results when there are several) to measure
        accuracy before and after; the final head is then refitted on all labels.
    anchor : float, optional
        Pull towards the starting head (larger: closer to the original model). Default:
        each of :data:`ANCHORS` is fitted on the labels not held out and the one with the
        lowest held-out NLL wins; if none beats the model as it is, the head is kept.
    seed : int
        Seed of the split (own generator).
    progress : callable, optional
        ``progress(fraction_done, message)``, called a few times.
    name : str, optional
        The new model's name (default ``<name>-refit``).

    Returns
    -------
    model : CalcompModel
        Not saved; :meth:`CalcompModel.save` writes it.
    report : dict
        ``labels``, ``held_out``, ``before`` and ``after`` (held-out accuracy: the top class
        is one the label allows), ``anchor`` (the pull chosen; None: head kept),
        ``seconds``.

    Raises
    ------
    CalcompError
        The model has no fusion head (refit with ``calcomp finetune`` instead).
    ValueError
        Fewer than :data:`MIN_LABELS` labels, mismatched lengths, bad indices or codes.
    """
    import time

    started = time.perf_counter()
    if not model.uses_evidence:
        raise CalcompError(
            f"model {model.name!r} has no fusion head to refit; use a model v2 (the default) "
            f"or fine-tune the network with `calcomp finetune`."
        )
    if model.version >= 3:
        raise CalcompError(
            f"model {model.name!r} is a model v3: refitting its head is not supported yet; "
            f"refit a model v2 (calcomp_v2)."
        )
    if not (len(evidences) == len(labels) == len(components)):
        raise ValueError("evidences, labels and components must have the same length.")
    report_progress = progress or (lambda fraction, message: None)
    logits, features, codes, groups = [], [], [], []
    for i, (evidence, label, index) in enumerate(zip(evidences, labels, components)):
        index = np.asarray(index, dtype=np.int64)
        code = _label_codes(label, i)
        if len(code) != len(index):
            raise ValueError(f"result {i}: {len(index)} components but {len(code)} labels.")
        if not len(index):
            continue
        z, f = labelled_inputs(model, evidence, index)
        logits.append(z)
        features.append(f)
        codes.append(code)
        groups.append(np.full(len(code), i))
        report_progress(0.6 * (i + 1) / len(evidences), f"read {evidence.source or i}")
    n = sum(len(c) for c in codes)
    if n < MIN_LABELS:
        raise ValueError(f"a refit needs at least {MIN_LABELS} labelled components, got {n}.")
    z, f = np.concatenate(logits), np.concatenate(features)
    code, group = np.concatenate(codes), np.concatenate(groups)
    inputs = model.head_inputs(z, f)  # the feature columns the head reads
    allowed = label_masks(code).astype(bool)
    held = _split(code, group, validation_fraction, seed)
    before_probs = model.fuse(z[held], f[held])
    before = _set_accuracy(before_probs, code[held])
    best = (probability_set_nll(before_probs, allowed[held]), None, before)  # the head as it is
    for pull in ANCHORS if anchor is None else (anchor,):
        trial = fit_head(inputs[~held], allowed[~held], start=model.head, anchor=pull)
        probs = model.with_head(trial).fuse(z[held], f[held])
        nll = probability_set_nll(probs, allowed[held])
        logger.debug("refit anchor %g: held-out NLL %.4f", pull, nll)
        if nll < best[0]:
            best = (nll, pull, _set_accuracy(probs, code[held]))
    _, chosen, after = best
    report_progress(0.8, "validated")
    if chosen is None:  # no refit beat the model on the held-out labels: keep it
        logger.info("refit: no anchor improved on the held-out labels; the head is kept")
        final = model.head
    else:
        final = fit_head(inputs, allowed, start=model.head, anchor=chosen)
    # the text only: the base's lists of held-out videos may be among the labels now
    trained_on = model.training_description or f"that of {model.name}"
    new = model.with_head(
        final,
        name=name or f"{model.name}-refit",
        refit_from=f"{model.name} ({model.sha256[:12]})",
        refit_labels=int(n),
        training_data=f"{trained_on}; head refitted on {int(n)} labels",
    )
    report = {
        "labels": int(n),
        "held_out": int(held.sum()),
        "before": before,
        "after": after,
        "anchor": chosen,
        "seconds": time.perf_counter() - started,
    }
    logger.info("refit on %d labels: held-out accuracy %.3f -> %.3f", n, before, after)
    report_progress(1.0, "done")
    return new, report


def read_label_table(path: str | os.PathLike) -> dict[Path, tuple[np.ndarray, np.ndarray]]:
    """A labels CSV (columns ``file``, ``component``, ``label``) grouped by file.

    ``file`` paths are relative to the CSV's folder; ``label`` is a class name
    (``neuron``, ``process``, ``noise``, ``doubtful``), ``non_neuron`` or a code 1-4.
    When a component is labelled twice, the last row wins.

    Returns
    -------
    dict
        ``{file: (components, codes)}``.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file or column, unknown label (the message names the row).
    """
    path = Path(path)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = {"file", "component", "label"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(
            f"{path}: needs columns file, component, label; missing {sorted(missing)}."
        )
    by_file: dict[Path, dict[int, int]] = {}
    for line, row in enumerate(rows, start=2):
        try:
            code = int(class_codes([row["label"]])[0])
            index = int(row["component"])
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}, line {line}: {err}") from None
        file = (path.parent / row["file"]).resolve()
        by_file.setdefault(file, {})[index] = code
    return {
        file: (np.array(list(d), np.int64), np.array(list(d.values()), np.int64))
        for file, d in by_file.items()
    }
