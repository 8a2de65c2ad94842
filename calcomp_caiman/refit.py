"""Adapt a model with a fusion head (v2, v3) to a lab's own labels, as far as the labels
can carry it.

The shape network stays as it is. What changes depends on the labels (:func:`refit`):

* **calibration**, what a few labels can carry: one bias per class added to the fusion
  head's logits, one factor on the calibration temperatures
  (:func:`~calcomp_caiman.model.head.fit_calibration`) and the acceptance cut ``min_prob``
  (:func:`~calcomp_caiman.refit_calibration.fit_cut`), each fitted by penalised likelihood
  on the labels with a prior that pulls towards no change. The only level tried with fewer
  than :data:`HEAD_LABELS` labels.
* **head**, from :data:`HEAD_LABELS` labels on: the fusion head itself
  (:mod:`calcomp_caiman.model.head`), refitted on what it reads of the labelled components
  (:func:`labelled_inputs`: the network's outputs and the evidence features; for a model
  v3 also its temporal branch's output and the channels' presence) and pulled towards the
  head it started from, so that a few hundred labels adapt it without forgetting. The
  networks (image and temporal branches) stay as they are.
* **none**: the model is kept as it is, and the report says why.

Labels the fit did not see choose the level: calibration is applied when it beats the model
as it is in cross-validation over every label; from :data:`HEAD_LABELS` labels on, the head
replaces it only when it is clearly better on held-out labels (whole files when there are
several), so that more labels never lose what fewer would have carried. When no level
beats the model as it is, the model returned is the model given, unchanged, and the
report's ``level`` is ``"none"``.

The calibration level and the acceptance cut live in :mod:`calcomp_caiman.refit_calibration`,
how a level is judged on labels it did not see in :mod:`calcomp_caiman.refit_scores`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from calcomp_caiman.classify import accept_components, acceptance_rule
from calcomp_caiman.errors import CalcompError
from calcomp_caiman.evidence.evidence import Evidence
from calcomp_caiman.evidence.patches import footprints_for
from calcomp_caiman.io.label_table import labels_file_record
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.model.head import calibrated_log_probs, fit_calibration, fit_head
from calcomp_caiman.model.inputs import model_inputs
from calcomp_caiman.refit_calibration import (
    CV_FOLDS,
    calibrated_model,
    cross_validate_calibration,
    row_temperatures,
    with_fitted_cut,
)
from calcomp_caiman.refit_scores import (
    clearly_worse,
    held_out_split,
    robust_losses,
    set_accuracy,
)
from calcomp_caiman.schema import CLASSES, class_codes, label_masks

logger = logging.getLogger(__name__)

__all__ = [
    "LEVELS",
    "LabelledInputs",
    "changes",
    "concatenate_inputs",
    "head_l2",
    "labelled_inputs",
    "refit",
    "refit_inputs",
]

MIN_LABELS = 5
"""Fewest labels a refit accepts."""

HEAD_LABELS = 30
"""From this many labels on, the head is refitted too (fewer: calibration only)."""

HEAD_L2 = 1e-3
"""L2 penalty of a refitted head whose model records none (``config.json``
``fusion_head.l2``: the one it was trained with)."""

ANCHORS = (1e-3, 1e-2, 1e-1, 1.0)
"""Pulls towards the starting head tried by :func:`refit`; the held-out labels choose."""

LEVELS = {
    "calibration": "calibration: class biases + temperature + cut",
    "head": "head",
    "none": "none",
}
"""The levels of a refit and how the report names them (``none`` adds why: ``none (kept:
...)``)."""


class LabelledInputs(NamedTuple):
    """What the fusion head reads about some components (:func:`labelled_inputs`).

    Models v2 read the first two; a model v3 reads all four.

    Examples
    --------
    >>> import numpy as np
    >>> x = LabelledInputs(np.zeros((3, 4)), np.zeros((3, 2)))
    >>> x.take([2, 0]).logits.shape, x.profiles is None
    ((2, 4), True)
    """

    logits: np.ndarray
    """(K, 4) float32: the (image) network's logits (:meth:`CalcompModel.shape_logits`)."""
    features: np.ndarray
    """(K, F) float32: every evidence feature
    (:func:`~calcomp_caiman.evidence.features.evidence_features`)."""
    profiles: np.ndarray | None = None
    """(K, 2, S) float32: model v3's transient profiles (all zero without traces); None for
    other models."""
    presence: np.ndarray | None = None
    """(K, C - 1) float: model v3's optional channels' presence
    (:meth:`CalcompModel.channel_presence`); None for other models."""

    def take(self, rows) -> LabelledInputs:
        """These rows (indices or a boolean mask) of every part."""
        return LabelledInputs(*(None if part is None else part[rows] for part in self))

    def head_inputs(self, model: CalcompModel) -> np.ndarray:
        """The fusion head's input columns (:meth:`CalcompModel.head_inputs`)."""
        return model.head_inputs(
            self.logits, self.features, profiles=self.profiles, presence=self.presence
        )

    def probs(self, model: CalcompModel) -> np.ndarray:
        """The model's probabilities (:meth:`CalcompModel.fuse`): those
        :func:`~calcomp_caiman.classify.classify_evidence` gives."""
        return model.fuse(
            self.logits, self.features, profiles=self.profiles, presence=self.presence
        )


def concatenate_inputs(parts: Sequence[LabelledInputs]) -> LabelledInputs:
    """One :class:`LabelledInputs` of the rows of ``parts`` (all of one model), in order."""
    if not parts:
        raise ValueError("no inputs to concatenate.")
    return LabelledInputs(*(None if pieces[0] is None else np.concatenate(pieces)
                            for pieces in zip(*parts)))  # fmt: skip


def labelled_inputs(
    model: CalcompModel, evidence: Evidence, components: np.ndarray
) -> LabelledInputs:
    """What the fusion head reads about some components of one result.

    Made by :func:`~calcomp_caiman.model.inputs.model_inputs`, as
    :func:`~calcomp_caiman.classify.classify_evidence` makes them: with all the file's
    components present (neighbours), at the crop scale of the whole file, so that
    ``labelled_inputs(...).probs(model)`` is what classifying gives (but for all-zero
    footprints, which classifying calls noise).

    Returns
    -------
    LabelledInputs
        ``logits`` (K, 4) and ``features`` (K, F), float32; for a model v3 also
        ``profiles`` (K, 2, S) and ``presence`` (K, C - 1).

    Examples
    --------
    >>> import numpy as np
    >>> rr, cc = np.mgrid[:64, :64]
    >>> cell = ((rr - 30) ** 2 + (cc - 30) ** 2 <= 25).astype(np.float32)
    >>> ev = Evidence.build(cell.reshape(-1, 1, order="F"), (64, 64), gSig=5)
    >>> x = labelled_inputs(CalcompModel.load(), ev, np.arange(1))  # the default, a v3
    >>> x.logits.shape, x.profiles.shape, x.presence.shape
    ((1, 4), (1, 2, 32), (1, 3))
    >>> labelled_inputs(CalcompModel.load("calcomp_v2"), ev, np.arange(1)).profiles is None
    True
    """
    components = np.asarray(components, dtype=np.int64)
    if components.size and (components.min() < 0 or components.max() >= evidence.n):
        raise ValueError(
            f"{evidence.source or 'evidence'}: component indices must be in 0..{evidence.n - 1}."
        )
    v3 = model.version >= 3
    parts = []
    found = footprints_for(evidence, model.scale_rule)
    for part in model_inputs(evidence, model, found, features=True):
        n = len(part.patches)
        profiles = presence = None
        if v3:  # no traces: all-zero profiles, which the temporal branch reads as none
            width = model.temporal.n_inputs // 2
            profiles = part.profiles if part.profiles is not None else np.zeros((n, 2, width), np.float32)  # fmt: skip
            presence = model.channel_presence(part.patches)
        parts.append(LabelledInputs(model.shape_logits(part.patches), part.features, profiles,
                                    presence))  # fmt: skip
    return concatenate_inputs(parts).take(components)


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


def _log_probs(model: CalcompModel, x: LabelledInputs) -> np.ndarray:
    return np.log(np.maximum(x.probs(model).astype(np.float64), 1e-40))


def head_l2(model: CalcompModel) -> float:
    """The L2 penalty a refit of ``model``'s head uses: the one it was trained with
    (``config.json`` ``fusion_head.l2``), else :data:`HEAD_L2`.

    Examples
    --------
    >>> head_l2(CalcompModel.load("calcomp_v2"))
    0.0003
    """
    recorded = model.config.get("fusion_head")
    if isinstance(recorded, dict) and recorded.get("l2") is not None:
        return float(recorded["l2"])
    return HEAD_L2


def changes(
    before: CalcompModel, after: CalcompModel, inputs: Sequence[LabelledInputs]
) -> dict[str, int]:
    """How many components change class (most probable) and acceptance (each model's own
    rule, :func:`~calcomp_caiman.classify.acceptance_rule`) from ``before`` to ``after``.

    ``inputs``: :func:`labelled_inputs` of every component of each file.
    """
    rule_before, rule_after = acceptance_rule(before), acceptance_rule(after)
    total = {"components": 0, "class": 0, "acceptance": 0}
    for x in inputs:
        if not len(x.logits):
            continue
        p0, p1 = x.probs(before), x.probs(after)
        a0 = accept_components(p0, accept=rule_before.accept, min_prob=rule_before.min_prob)
        a1 = accept_components(p1, accept=rule_after.accept, min_prob=rule_after.min_prob)
        total["components"] += len(p0)
        total["class"] += int((p0.argmax(axis=1) != p1.argmax(axis=1)).sum())
        total["acceptance"] += int((a0 != a1).sum())
    return total


def refit_inputs(
    model: CalcompModel,
    logits: np.ndarray,
    features: np.ndarray,
    labels: np.ndarray,
    *,
    profiles: np.ndarray | None = None,
    presence: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    level: str = "auto",
    validation_fraction: float = 0.25,
    anchor: float | None = None,
    seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
    name: str | None = None,
    labels_file: str | os.PathLike | None = None,
) -> tuple[CalcompModel, dict]:
    """:func:`refit` on what the fusion head reads of the labelled components.

    Parameters
    ----------
    model : CalcompModel
        A model with a fusion head (v2, v3).
    logits, features : ndarray
        :func:`labelled_inputs` of the labelled components, (K, 4) and (K, F).
    labels : (K,) int ndarray
        Class codes 1-4, 0 for ``non_neuron``.
    profiles, presence : ndarray, optional
        Model v3 (required there): :func:`labelled_inputs`' ``profiles`` (K, 2, S) and
        ``presence`` (K, C - 1) of the same components.
    groups : (K,) ndarray, optional
        The file each label comes from (held out whole when there are several).
    level, validation_fraction, anchor, seed, progress, name, labels_file
        As :func:`refit`.

    Returns
    -------
    model, report
        As :func:`refit`, without ``changed``.
    """
    started = time.perf_counter()
    if not model.uses_evidence:
        raise CalcompError(
            f"model {model.name!r} has no fusion head to refit; use a model v2 or v3 (the "
            f"default) or fine-tune the network with `calcomp finetune`."
        )
    if model.version >= 3 and (profiles is None or presence is None):
        raise ValueError(
            f"model {model.name!r} is a model v3: pass the profiles and presence of "
            f"labelled_inputs with the logits and features."
        )
    if level not in ("auto", "calibration", "head"):
        raise ValueError(f"level must be 'auto', 'calibration' or 'head', got {level!r}.")
    report_progress = progress or (lambda fraction, message: None)
    x = LabelledInputs(*(None if part is None else np.asarray(part)
                         for part in (logits, features, profiles, presence)))  # fmt: skip
    code = _label_codes(labels, 0)
    n = len(code)
    if n < MIN_LABELS:
        raise ValueError(f"a refit needs at least {MIN_LABELS} labelled components, got {n}.")
    rows = {len(part) for part in x if part is not None}
    if rows != {n}:
        raise ValueError(f"{n} labels but {len(x.logits)} logits and {len(x.features)} feature "
                         f"rows{'' if profiles is None else ' (and profiles, presence)'}.")  # fmt: skip
    group = np.zeros(n, np.int64) if groups is None else np.asarray(groups)
    allowed = label_masks(code).astype(bool)
    log_p = _log_probs(model, x)
    temperature = row_temperatures(model, x)
    l2 = head_l2(model)
    use_head = level == "head" or (level == "auto" and n >= HEAD_LABELS)
    use_calibration = level in ("auto", "calibration")
    calibration = None
    before = set_accuracy(np.exp(log_p), code)
    # calibration against the model as it is, always by cross-validation over every label,
    # so that more labels never lose what fewer would have carried
    cv_nll, cv_after, kept_nll = (
        cross_validate_calibration(model, log_p, temperature, allowed, code, seed)
        if use_calibration
        else (np.inf, before, 0.0)
    )
    base = "calibration" if cv_nll < kept_nll else "none"
    chosen, after, held, pull = base, (cv_after if base == "calibration" else before), None, None
    validation = f"cross-validated ({min(CV_FOLDS, n)} folds)"
    why = "calibration did not improve the cross-validated likelihood of the labels"
    if use_head:  # the head must beat that level on held-out labels (whole files if several)
        inputs = x.head_inputs(model)  # the columns the head reads
        held = held_out_split(code, group, validation_fraction, seed)
        base_probs = np.exp(log_p[held])
        if base == "calibration":
            cal = fit_calibration(log_p[~held], temperature[~held], allowed[~held])
            base_probs = np.exp(calibrated_log_probs(log_p[held], temperature[held], cal))
        base_losses = robust_losses(base_probs, allowed[held])
        # (held-out losses per label, head's pull, held-out accuracy)
        heads = []
        for trial_anchor in ANCHORS if anchor is None else (anchor,):
            trial = fit_head(inputs[~held], allowed[~held], start=model.head, anchor=trial_anchor,
                             l2=l2)  # fmt: skip
            probs = x.take(held).probs(model.with_head(trial))
            heads.append((robust_losses(probs, allowed[held]), trial_anchor,
                          set_accuracy(probs, code[held])))  # fmt: skip
            logger.debug("refit anchor %g: held-out NLL %.4f", trial_anchor, heads[-1][0].mean())
        losses, best_anchor, head_after = min(heads, key=lambda trial: trial[0].mean())
        # the simpler level is kept unless the head is clearly better than it
        if losses.mean() < base_losses.mean() and (
            base == "none" or clearly_worse(base_losses, losses)
        ):
            chosen, pull, after = "head", best_anchor, head_after
            before = set_accuracy(np.exp(log_p[held]), code[held])
            validation = f"held out: {int(held.sum())} labels"
        elif base == "none":
            why = "neither calibration nor the head beat the model on labels they did not see"
        else:
            validation += f"; the head was not clearly better on {int(held.sum())} held-out labels"
    held = np.zeros(n, bool) if held is None else held
    report_progress(0.8, "validated")
    config = {}
    if chosen == "none":
        logger.info("refit on %d labels: not applied (%s)", n, why)
        new = model
    else:
        trained_on = model.training_description or f"that of {model.name}"  # the text only
        config = {
            "name": name or f"{model.name}-refit",
            "refit_from": f"{model.name} ({model.sha256[:12]})",
            "refit_labels": int(n),
            "refit_level": chosen,
            "training_data": f"{trained_on}; {LEVELS[chosen]} refitted on {int(n)} labels",
        }
        if labels_file is not None:
            config["labels_file"] = labels_file_record(labels_file, n)
        if chosen == "calibration":
            calibration = fit_calibration(log_p, temperature, allowed)
            new = calibrated_model(model, calibration, **config)
        else:
            final = fit_head(inputs, allowed, start=model.head, anchor=pull, l2=l2)
            new = model.with_head(final, **config)
        new = with_fitted_cut(model, new, x, code)
    probs_after = x.probs(new)
    report = {
        "labels": int(n),
        "held_out": int(held.sum()),
        "validation": validation,
        "before": before,
        "after": after,
        "anchor": pull,
        "level": chosen,
        "applied": chosen != "none",
        "summary": LEVELS[chosen] if chosen != "none" else f"none (kept: {why})",
        "agreement": {
            "before": set_accuracy(np.exp(log_p), code),
            "after": set_accuracy(probs_after, code),
        },  # fmt: skip
        "calibration": None
        if calibration is None
        else {
            "biases": {c: round(float(b), 4) for c, b in zip(CLASSES, calibration.biases)},
            "temperature_factor": round(calibration.factor, 4),
        },  # fmt: skip
        "min_prob": {
            "before": acceptance_rule(model).min_prob,
            "after": acceptance_rule(new).min_prob,
        },  # fmt: skip
        "seconds": time.perf_counter() - started,
    }
    logger.info("refit on %d labels: %s; %s accuracy %.3f -> %.3f", n, report["summary"],
                validation, before, after)  # fmt: skip
    report_progress(1.0, "done")
    return new, report


def refit(
    model: CalcompModel,
    evidences: Sequence[Evidence],
    labels: Sequence[np.ndarray],
    components: Sequence[np.ndarray],
    *,
    level: str = "auto",
    validation_fraction: float = 0.25,
    anchor: float | None = None,
    seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
    name: str | None = None,
    labels_file: str | os.PathLike | None = None,
) -> tuple[CalcompModel, dict]:
    """Adapt a model with a fusion head (v2, v3) to labelled components of one or more results.

    A calibration (class biases, temperature and acceptance cut) is applied when it
    beats the model as it is in cross-validation over the labels; from
    :data:`HEAD_LABELS` labels on, the head is refitted too and replaces the calibration
    only when it is clearly better on held-out labels. When neither beats the model on
    labels it did not see, nothing is applied (the model is returned unchanged).

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
    level : str
        ``"auto"`` (default: by the number of labels), ``"calibration"`` or ``"head"``
        (tried even with few labels; still applied only when it beats the model).
    validation_fraction : float
        With :data:`HEAD_LABELS` labels or more: share of labels held out (whole results
        when there are several) to judge the head and measure its accuracy before and
        after; the chosen level is then refitted on all labels.
    anchor : float, optional
        Pull of a refitted head towards the starting one (larger: closer to the original
        model). Default: each of :data:`ANCHORS` is tried on the held-out labels.
    seed : int
        Seed of the split and folds (own generator).
    progress : callable, optional
        ``progress(fraction_done, message)``, called a few times.
    name : str, optional
        The new model's name (default ``<name>-refit``).
    labels_file : path-like, optional
        The labels CSV the labels come from: recorded in the new model's ``config.json``
        (``labels_file``: path, SHA256, count) and from there in every output it makes.

    Returns
    -------
    model : CalcompModel
        Not saved (:meth:`CalcompModel.save` writes it); ``model`` itself when no refit
        was applied.
    report : dict
        ``level`` (``calibration``, ``head`` or ``none``), ``applied``, ``summary`` (the
        level in words; ``none (kept: why)``), ``labels``, ``validation`` (how the level
        was chosen), ``held_out``, ``before`` and ``after`` (accuracy on labels the fit
        did not see: the top class is one the label allows), ``agreement`` (``before``
        and ``after`` on all labels), ``calibration`` (biases and temperature factor, or
        None), ``min_prob`` (``before``, ``after``), ``anchor`` (the head's pull, or
        None), ``changed`` (components of these results whose class and acceptance
        change: ``components``, ``class``, ``acceptance``), ``seconds``.

    Raises
    ------
    CalcompError
        The model has no fusion head (refit with ``calcomp finetune`` instead).
    ValueError
        Fewer than :data:`MIN_LABELS` labels, mismatched lengths, bad indices or codes.
    """
    started = time.perf_counter()
    if not model.uses_evidence:
        raise CalcompError(
            f"model {model.name!r} has no fusion head to refit; use a model v2 or v3 (the "
            f"default) or fine-tune the network with `calcomp finetune`."
        )
    if not (len(evidences) == len(labels) == len(components)):
        raise ValueError("evidences, labels and components must have the same length.")
    report_progress = progress or (lambda fraction, message: None)
    every, rows, codes, groups = [], [], [], []
    for i, (evidence, label, index) in enumerate(zip(evidences, labels, components)):
        index = np.asarray(index, dtype=np.int64)
        code = _label_codes(label, i)
        if len(code) != len(index):
            raise ValueError(f"result {i}: {len(index)} components but {len(code)} labels.")
        if not len(index):
            continue
        if index.min() < 0 or index.max() >= evidence.n:
            raise ValueError(
                f"{evidence.source or f'result {i}'}: component indices must be in "
                f"0..{evidence.n - 1}."
            )
        x = labelled_inputs(model, evidence, np.arange(evidence.n))  # all: what changes
        every.append(x)
        rows.append(x.take(index))
        codes.append(code)
        groups.append(np.full(len(code), i))
        report_progress(0.6 * (i + 1) / len(evidences), f"read {evidence.source or i}")
    n = sum(len(c) for c in codes)
    if n < MIN_LABELS:
        raise ValueError(f"a refit needs at least {MIN_LABELS} labelled components, got {n}.")
    x = concatenate_inputs(rows)
    new, report = refit_inputs(
        model, x.logits, x.features, np.concatenate(codes), profiles=x.profiles,
        presence=x.presence, groups=np.concatenate(groups), level=level,
        validation_fraction=validation_fraction,
        anchor=anchor, seed=seed, name=name, labels_file=labels_file,
        progress=lambda fraction, message: report_progress(0.6 + 0.4 * fraction, message),
    )  # fmt: skip
    report["changed"] = changes(model, new, every)
    report["seconds"] = time.perf_counter() - started
    return new, report
