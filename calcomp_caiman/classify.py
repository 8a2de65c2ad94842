"""Evidence and a model -> one :class:`~calcomp_caiman.schema.Classification`.

:func:`classify` is the single path from evidence to what every writer stores
(``Estimates``, CaImAn HDF5, CSV, NWB, Suite2p): probabilities, labels, flags, the
accepted set under a stated rule, a fingerprint of ``A`` and the provenance.
:func:`classify_footprints` is the one-line use for footprints alone; the acceptance rule
(:func:`acceptance_rule`, :func:`accept_components`) turns probabilities into a selection.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from calcomp_caiman._version import __version__
from calcomp_caiman.evidence.evidence import Evidence
from calcomp_caiman.evidence.footprints import flags_of_checked, footprint_fingerprint
from calcomp_caiman.evidence.modality import modality_used
from calcomp_caiman.evidence.patches import Footprints, footprints_for
from calcomp_caiman.model.defaults import BUNDLED_ONE_PHOTON
from calcomp_caiman.model.folder import CalcompModel, bundled_models
from calcomp_caiman.model.inputs import ModelInputs, model_inputs
from calcomp_caiman.model.ood import find_ood_reference, ood_score
from calcomp_caiman.model.reliability import BranchOutputs, assess, file_signals, find_reliability
from calcomp_caiman.schema import ARGMAX, CLASSES, FIELDS, Classification

logger = logging.getLogger(__name__)

__all__ = [
    "AcceptanceRule",
    "ModelInputs",
    "accept_components",
    "acceptance_rule",
    "classification_fields",
    "classify",
    "classify_evidence",
    "classify_footprints",
    "classify_with_embedding",
    "evidence_used",
    "modality_mismatch",
    "model_inputs",
    "provenance",
]


def classify_footprints(
    A,
    dims,
    *,
    model: CalcompModel | None = None,
    gSig=None,
    batch_size: int = 128,
) -> np.ndarray:
    """Class probabilities of every spatial component.

    Parameters
    ----------
    A : (prod(dims), N) scipy sparse matrix or ndarray
        Footprints, pixels in Fortran order (``estimates.A``).
    dims : tuple of 2 or 3 ints
        Field of view shape (``estimates.dims``).
    model : CalcompModel, optional
        Default: the lab's default model, else the bundled one (``CalcompModel.load()``,
        :mod:`calcomp_caiman.model.defaults`), loaded here once per call:
        pass a loaded model when classifying many arrays.
    gSig : float or sequence, optional
        Typical neuron half-size in px (``params.init['gSig']``); estimated from the
        footprints when omitted.
    batch_size : int
        Patches per forward pass.

    Returns
    -------
    probs : (N, 4) float32 ndarray
        Probabilities in ``CLASSES`` order (neuron, process, noise, doubtful); rows sum
        to 1. An all-zero footprint gets probability 1 for noise. ``N == 0`` gives (0, 4).

    Notes
    -----
    Components are processed in chunks of a few thousand, so memory stays bounded
    whatever N and the FOV size.

    Examples
    --------
    >>> import numpy as np
    >>> rr, cc = np.mgrid[:64, :64]
    >>> cell = ((rr - 30) ** 2 + (cc - 30) ** 2 <= 25).astype(np.float32)
    >>> probs = classify_footprints(cell.reshape(-1, 1, order="F"), (64, 64), gSig=5)
    >>> probs.shape, bool(np.isclose(probs.sum(), 1))
    ((1, 4), True)
    """
    model = CalcompModel.load() if model is None else model
    evidence = Evidence.build(A, dims, gSig=gSig)
    return classify_evidence(evidence, model, batch_size=batch_size)


def classify_evidence(
    evidence: Evidence,
    model: CalcompModel,
    *,
    use: Sequence[str] | None = None,
    scale: float | None = None,
    batch_size: int = 128,
) -> np.ndarray:
    """Class probabilities of every component, from all the evidence the model can use.

    Parameters
    ----------
    evidence : Evidence
        From :meth:`Evidence.from_estimates <calcomp_caiman.evidence.evidence.Evidence.from_estimates>`,
        :func:`calcomp_caiman.io.caiman_h5.read_evidence` or another reader.
    model : CalcompModel
        Loaded by the caller (``CalcompModel.load()`` for the bundled default), once.
    use : sequence of str, optional
        The optional kinds of evidence to use (``"neighbours"``, ``"image"``, ``"traces"``,
        ``"metrics"``); default all that are present. For ablations and checks.
    scale : float, optional
        Crop scale in px (default: measured, :func:`~calcomp_caiman.evidence.patches.footprints_for`), e.g. that of another set of
        components of the same field of view.
    batch_size : int
        Patches per forward pass.

    Returns
    -------
    (N, 4) float32 ndarray
        Probabilities in ``CLASSES`` order; an all-zero footprint is noise with probability 1.

    Notes
    -----
    A model v3 reads, besides the features, a stack of channels at each component
    (:mod:`~calcomp_caiman.evidence.channels`) and the transient profiles of its traces
    (:mod:`~calcomp_caiman.evidence.transients`, at the evidence's frame rate), made
    here in chunks. The crop window of models v2 and v3 is sized by the footprints themselves
    (:func:`~calcomp_caiman.evidence.patches.crop_scale`), so a component gets the same class
    whether ``gSig`` is known or not; ``gSig`` only matters for fewer than 20 components.

    Examples
    --------
    >>> import numpy as np
    >>> from calcomp_caiman.evidence.evidence import Evidence
    >>> rr, cc = np.mgrid[:64, :64]
    >>> cell = ((rr - 30) ** 2 + (cc - 30) ** 2 <= 25).astype(np.float32)
    >>> ev = Evidence.build(cell.reshape(-1, 1, order="F"), (64, 64), gSig=5)
    >>> classify_evidence(ev, CalcompModel.load()).shape
    (1, 4)
    """
    probs, _ = classify_with_embedding(
        evidence, model, use=use, scale=scale, batch_size=batch_size, embed=False
    )
    return probs


def classify_with_embedding(
    evidence: Evidence,
    model: CalcompModel,
    *,
    use: Sequence[str] | None = None,
    scale: float | None = None,
    batch_size: int = 128,
    embed: bool = True,
    footprints: Footprints | None = None,
    observe: Callable[[ModelInputs], None] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`classify_evidence`, plus the network's embedding of every component.

    The embedding (:meth:`CalcompModel.embed`) comes from the same pass through the
    network (it feeds the out-of-distribution score). Returns ``(probs, embedding)``;
    ``embedding`` is None with ``embed=False``. ``footprints``: what
    :func:`footprints_for` returned for this evidence and model, when the caller has it
    already (``scale`` is then ignored). ``observe``: called with each chunk's
    :class:`ModelInputs` (e.g. :meth:`BranchOutputs.add
    <calcomp_caiman.model.reliability.BranchOutputs.add>`, for the reliability signals).
    """
    if footprints is None:
        footprints = footprints_for(evidence, model.scale_rule, scale=scale)
    flat = footprints.A
    n = flat.shape[1]
    probs = np.empty((n, len(CLASSES)), dtype=np.float32)
    embedding = np.empty((n, model.engine.dense[0].shape[0]), np.float32) if embed else None
    for part in model_inputs(evidence, model, footprints, use=use):
        if observe is not None:
            observe(part)
        if embed:
            probs[part.rows], embedding[part.rows] = model.predict_with_embedding(
                part.patches, part.features, profiles=part.profiles, batch_size=batch_size
            )
        else:
            probs[part.rows] = model.predict(
                part.patches, part.features, profiles=part.profiles, batch_size=batch_size
            )
    empty = np.diff(flat.indptr) == 0
    probs[empty] = np.eye(len(CLASSES), dtype=np.float32)[CLASSES.index("noise")]
    if empty.any():
        logger.warning("%d all-zero footprint(s) classified as noise", int(empty.sum()))
    return probs, embedding


def evidence_used(evidence: Evidence, model: CalcompModel, use=None) -> tuple[str, ...]:
    """The kinds of evidence :func:`classify_evidence` used (for the provenance)."""
    if not model.uses_evidence:
        return ("shape",)
    kinds = evidence.kinds
    return tuple(k for k in kinds if k == "shape" or use is None or k in use)


def _check_accept(accept: Sequence[str]) -> list[int]:
    names = [accept] if isinstance(accept, str) else list(accept)
    unknown = [name for name in names if name not in CLASSES]
    if unknown or not names:
        raise ValueError(f"accept must name classes from {CLASSES}, got {accept!r}.")
    return [CLASSES.index(name) for name in names]


class AcceptanceRule(NamedTuple):
    """Which classes count as accepted, and the cut on their summed probability."""

    accept: tuple[str, ...]
    """Accepted classes, in ``CLASSES`` names."""
    min_prob: float | None
    """Cut on the summed probability of ``accept``; ``None``: the most-probable-class rule."""


def acceptance_rule(
    model: CalcompModel, accept: Sequence[str] | None = None, min_prob=None
) -> AcceptanceRule:
    """The acceptance rule to apply: the values given, else the model folder's defaults.

    Parameters
    ----------
    model : CalcompModel
        Its ``thresholds.json`` holds ``accept`` and ``min_prob``, fitted on validation
        data when the model was trained (or refitted from a lab's labels).
    accept : sequence of str, optional
        Classes to accept; default ``thresholds.json``'s ``accept`` (else ``neuron``).
    min_prob : float or "argmax", optional
        Cut on the summed probability of the ``accept`` classes; ``"argmax"``: accept when
        the most probable class is accepted; default ``thresholds.json``'s ``min_prob``.

    Returns
    -------
    AcceptanceRule
        ``(accept, min_prob)``; ``min_prob`` None means the most-probable-class rule.

    Examples
    --------
    >>> from calcomp_caiman import CalcompModel
    >>> acceptance_rule(CalcompModel.load("calcomp_resnet_v1"), min_prob="argmax")
    AcceptanceRule(accept=('neuron',), min_prob=None)
    """
    defaults = model.thresholds
    if accept is None:
        accept = defaults.get("accept") or ("neuron",)
    accept = (accept,) if isinstance(accept, str) else tuple(accept)
    _check_accept(accept)
    if min_prob is None:
        min_prob = defaults.get("min_prob")
    if isinstance(min_prob, str):
        if min_prob != ARGMAX:
            raise ValueError(f"min_prob must be a probability or {ARGMAX!r}, got {min_prob!r}.")
        min_prob = None
    if min_prob is not None:
        min_prob = float(min_prob)
        if not 0.0 <= min_prob <= 1.0:
            raise ValueError(f"min_prob must be in [0, 1], got {min_prob!r}.")
    return AcceptanceRule(accept, min_prob)


def accept_components(
    probs: np.ndarray, *, accept: Sequence[str] = ("neuron",), min_prob: float | None = None
) -> np.ndarray:
    """Which components to keep, from their class probabilities.

    Parameters
    ----------
    probs : (N, 4) ndarray
        From :func:`classify_footprints`.
    accept : sequence of str
        Classes to keep, e.g. ``("neuron",)`` or ``("neuron", "doubtful")``.
    min_prob : float, optional
        Keep a component when the summed probability of the ``accept`` classes is at least
        ``min_prob``. Default: keep it when its most probable class is in ``accept``.

    Returns
    -------
    (N,) bool ndarray

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[0.7, 0.1, 0.1, 0.1], [0.3, 0.0, 0.2, 0.5]])
    >>> accept_components(probs).tolist()
    [True, False]
    >>> accept_components(probs, accept=("neuron", "doubtful"), min_prob=0.75).tolist()
    [True, True]
    """
    columns = _check_accept(accept)
    probs = np.asarray(probs)
    if min_prob is None:
        return np.isin(probs.argmax(axis=1), columns) if len(probs) else np.zeros(0, bool)
    if not 0.0 <= float(min_prob) <= 1.0:
        raise ValueError(f"min_prob must be in [0, 1], got {min_prob!r}.")
    return probs[:, columns].sum(axis=1) >= float(min_prob)


def classification_fields(
    probs: np.ndarray,
    *,
    flags: np.ndarray | None = None,
    accept: Sequence[str] = ("neuron",),
    min_prob: float | None = None,
    keep: np.ndarray | None = None,
    fingerprint: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The arrays written back to estimates and result files.

    Parameters
    ----------
    probs : (N, 4) ndarray
    flags : (N,) uint8 ndarray, optional
        From :func:`footprint_flags`.
    accept, min_prob
        As in :func:`accept_components`.
    keep : (N,) bool ndarray, optional
        An extra condition ANDed with the class rule (e.g. CaImAn's SNR / r-value test).
    fingerprint : (N, 3) ndarray, optional
        From :func:`footprint_fingerprint`; stored as ``class_fingerprint`` so that the
        classification can be matched to ``A`` after a selection.

    Returns
    -------
    dict
        ``class_probs`` (N, 4) float32, ``class_labels`` (N,) int8 codes 1-4,
        ``class_flags`` (N,) uint8, ``cnn_preds`` (N,) float32 = P(neuron),
        ``idx_components`` and ``idx_components_bad`` (int64, complementary, sorted),
        and ``class_fingerprint`` (N, 3) float64 when ``fingerprint`` is given.
    """
    probs = np.asarray(probs, dtype=np.float32)
    accepted = accept_components(probs, accept=accept, min_prob=min_prob)
    if keep is not None:
        accepted &= np.asarray(keep, dtype=bool)
    n = len(probs)
    fields = {
        "class_probs": probs,
        "class_labels": probs.argmax(axis=1) + 1 if n else np.zeros(0),
        "class_flags": np.zeros(n) if flags is None else flags,
        "cnn_preds": probs[:, CLASSES.index("neuron")].copy(),
        "idx_components": np.flatnonzero(accepted),
        "idx_components_bad": np.flatnonzero(~accepted),
    }
    if fingerprint is not None:
        fields["class_fingerprint"] = np.asarray(fingerprint).reshape(n, 3)
    return {name: np.asarray(value, dtype=FIELDS[name][0]) for name, value in fields.items()}


def provenance(
    model: CalcompModel,
    accept: Sequence[str],
    min_prob: float | None,
    evidence: Sequence[str],
    *,
    modality: str | None = None,
) -> dict[str, str | float]:
    """What produced a classification (stored with it; strings and numbers only).

    ``modality`` (``"1p"``, ``"2p"``: what the components were classified as, beside the
    model) is recorded when given. A model refitted on a lab's labels adds ``labels_file``
    (its ``config.json``'s: the labels CSV's path, SHA256 and count) and ``refit_level``.
    """
    facts = {
        "model": model.name,
        "model_sha256": model.sha256,
        "version": __version__,
        "classes": json.dumps(list(CLASSES)),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "accept": json.dumps(list(accept)),
        "min_prob": "none" if min_prob is None else float(min_prob),
        "evidence": json.dumps(list(evidence)),
    }
    if modality is not None:
        facts["modality"] = modality
    if model.config.get("labels_file") is not None:
        facts["labels_file"] = json.dumps(model.config["labels_file"], sort_keys=True)
    if model.config.get("refit_level") is not None:
        facts["refit_level"] = str(model.config["refit_level"])
    return facts


def classify(
    evidence: Evidence,
    model: CalcompModel,
    *,
    accept: Sequence[str] | None = None,
    min_prob=None,
    keep: np.ndarray | None = None,
    scale: float | None = None,
    ood: bool = True,
    modality: str = "auto",
    batch_size: int = 128,
) -> Classification:
    """Classify every component of ``evidence`` into one record.

    Parameters
    ----------
    evidence : Evidence
    model : CalcompModel
        Loaded by the caller (``CalcompModel.load()`` for the bundled default), once.
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
        above the threshold gets a ``UserWarning`` with advice, never an error. When the
        model folder has a ``reliability.json``, the file's expected error
        (:mod:`calcomp_caiman.model.reliability`, provenance ``expected_error``) decides
        the warning instead.
    modality : {"auto", "1p", "2p"}
        The imaging of the result: ``"auto"`` takes what its CaImAn params say
        (``evidence.modality``; CNMF-E: one-photon), else two-photon
        (:func:`~calcomp_caiman.evidence.modality.modality_used`). Recorded in the
        provenance as ``modality``; when ``model`` was trained for the other modality
        (``model.modality``) the components are still classified, and one warning is
        logged saying which model to use. The model itself is the caller's choice
        (``CalcompModel.load(modality=...)`` picks the default model of a modality).
    batch_size : int

    Returns
    -------
    Classification

    Examples
    --------
    >>> import numpy as np
    >>> rr, cc = np.mgrid[:64, :64]
    >>> cell = ((rr - 30) ** 2 + (cc - 30) ** 2 <= 25).astype(np.float32)
    >>> evidence = Evidence.build(cell.reshape(-1, 1, order="F"), (64, 64), gSig=5)
    >>> record = classify(evidence, CalcompModel.load())
    >>> record.n, sorted(record.fields) == sorted(FIELDS)
    (1, True)
    """
    accept, min_prob = acceptance_rule(model, accept, min_prob)
    used_modality = modality_used(modality, evidence.modality)
    if model.modality != used_modality:
        logger.warning(modality_mismatch(model, used_modality, evidence.source))
    reference = find_ood_reference(model) if ood else None
    reliability = find_reliability(model) if ood else None
    outputs = None if reliability is None else BranchOutputs(model, evidence.n)
    footprints = footprints_for(evidence, model.scale_rule, scale=scale)
    probs, embedding = classify_with_embedding(
        evidence, model, batch_size=batch_size, footprints=footprints,
        embed=reference is not None or reliability is not None,
        observe=None if outputs is None else outputs.add,
    )  # fmt: skip
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
    facts = provenance(model, accept, min_prob, used, modality=used_modality)
    facts["crop_scale"] = float(footprints.scale)
    if evidence.dropped:  # evidence found but unfit for its role: said, never silently used
        facts["evidence_dropped"] = json.dumps(dict(evidence.dropped), sort_keys=True)
    score = is_ood = error = unreliable = None
    if reliability is not None:  # the expected error warns, in place of the OOD score
        signals = file_signals(model, evidence, probs, embedding, outputs,
                               quantiles=reliability.quantiles, ood_reference=reference)  # fmt: skip
        error, _, unreliable, _ = assess(signals, reliability, source=evidence.source,
                                         n_components=evidence.n, model_name=model.name)  # fmt: skip
        facts["expected_error"] = round(error, 4) if np.isfinite(error) else "nan"
        if reference is not None:
            score = signals["ood"]
            is_ood = bool(np.isfinite(score) and score > reference.threshold)
    elif reference is not None:
        score, is_ood = ood_score(evidence, model, reference=reference, embedding=embedding)
    if score is not None:
        facts["ood_score"] = round(score, 4) if np.isfinite(score) else "nan"
    return Classification(fields, facts, score, is_ood, error, unreliable)


_IMAGING = {"1p": "one-photon", "2p": "two-photon"}


def modality_mismatch(model: CalcompModel, modality: str, source: str = "") -> str:
    """The warning for classifying ``modality`` components with a model trained for the
    other modality: what is wrong, and what to do.

    Examples
    --------
    >>> print(modality_mismatch(CalcompModel.load("calcomp_resnet_v1"), "1p", "a.hdf5"))
    ... # doctest: +ELLIPSIS
    a.hdf5: one-photon components classified by calcomp_resnet_v1, trained on two-photon ...
    """
    where = f"{source}: " if source else ""
    text = (
        f"{where}{_IMAGING[modality]} components classified by {model.name}, trained on "
        f"{_IMAGING[model.modality]} data: its classes may be wrong. "
    )
    if modality == "2p":
        return text + (
            "Classify two-photon results with the default model (no --model / model=) or "
            "--modality 1p if the data is one-photon."
        )
    if BUNDLED_ONE_PHOTON in bundled_models():
        return text + (
            f"Use the one-photon model: leave out --model / model= (or --model "
            f"{BUNDLED_ONE_PHOTON}); --modality 2p if the data is two-photon."
        )
    return text + (
        "This version bundles no one-photon model: check the classes with `calcomp curate` "
        "and refit on your labels (calcomp finetune), or pass --model with a one-photon model "
        "folder; --modality 2p if the data is two-photon."
    )


def _fingerprint(evidence: Evidence) -> np.ndarray:
    if evidence.fingerprint is not None:
        return evidence.fingerprint
    return footprint_fingerprint(evidence.A)
