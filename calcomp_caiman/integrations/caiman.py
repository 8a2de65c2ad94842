"""The CaImAn side: classify a CNMF ``Estimates`` object and write the answer back.

Works with CaImAn's ``Estimates`` and with any object that has ``A`` and ``dims``;
CaImAn itself is never imported, and the user's object is only given fields (its class
and methods stay CaImAn's). What keeps our fields with their components through CaImAn's
selections, saving, loading and pickling is ``class_fingerprint``: :func:`align_classes`
matches the stored rows to the footprints ``A`` holds now.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np

from calcomp_caiman.classify import acceptance_rule, classify
from calcomp_caiman.evidence.evidence import Evidence, params_value
from calcomp_caiman.evidence.footprints import footprint_fingerprint, match_fingerprints
from calcomp_caiman.evidence.modality import modality_used
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.schema import SELECTION_FIELDS

logger = logging.getLogger(__name__)

__all__ = ["evaluate_components_4class", "align_classes", "attach_classes", "FOUR_CLASS_FIELDS"]

FOUR_CLASS_FIELDS = SELECTION_FIELDS
"""Per-component fields this package adds (:func:`align_classes` re-aligns them)."""


def _metrics_rule(estimates, params) -> np.ndarray:
    """CaImAn's trace-quality test from stored ``SNR_comp`` and ``r_values``."""
    snr = getattr(estimates, "SNR_comp", None)
    r_values = getattr(estimates, "r_values", None)
    if snr is None or r_values is None:
        raise ValueError(
            "use_metrics=True needs estimates.SNR_comp and estimates.r_values: run CaImAn's "
            "estimates.evaluate_components(images, params) (with use_cnn=False) first."
        )
    snr = np.asarray(snr, dtype=float)
    r_values = np.asarray(r_values, dtype=float)

    def threshold(key: str, default: float) -> float:
        value = params_value(params, "quality", key)
        return default if value is None else float(value)

    passes = (snr >= threshold("min_SNR", 2.5)) | (r_values >= threshold("rval_thr", 0.8))
    passes &= (snr >= threshold("SNR_lowest", 0.5)) & (r_values >= threshold("rval_lowest", -1))
    return passes


def _get(holder, name: str):
    """``holder.name`` or ``holder[name]`` (``load_OnlineCNMF`` leaves some objects dicts)."""
    if isinstance(holder, dict):
        return holder.get(name)
    return getattr(holder, name, None)


def _set(holder, name: str, value) -> None:
    if isinstance(holder, dict):
        holder[name] = value
    else:
        setattr(holder, name, value)


def _is_array(value) -> bool:
    return value is not None and not isinstance(value, (str, bytes))


def _classified_rows(holder) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """The fingerprints and our fields stored on ``holder``, or None when inconsistent."""
    fingerprint = _get(holder, "class_fingerprint")
    if not _is_array(fingerprint):
        return None
    fingerprint = np.asarray(fingerprint, dtype=np.float64).reshape(-1, 3)
    fields = {}
    for name in FOUR_CLASS_FIELDS:
        value = _get(holder, name)
        if _is_array(value) and len(value) == len(fingerprint):
            fields[name] = np.asarray(value)
    return (fingerprint, fields) if "class_probs" in fields else None


def _footprints_of(holder):
    A = _get(holder, "A")
    return A if _is_array(A) and getattr(A, "ndim", 0) == 2 else None


def align_classes(estimates):
    """Bring the four-class fields in line with the components ``estimates`` holds now.

    CaImAn's own ``select_components``, ``restore_discarded_components``,
    ``remove_duplicates``, ``cnm.save`` / ``load_CNMF`` and pickling move CaImAn's fields
    and leave ours as they were; nothing of this package rides on the object. This
    function puts them right afterwards: each column of ``A`` (and of
    ``discarded_components.A``) gets the row classified for that footprint, found by
    ``class_fingerprint`` among the rows held by ``estimates`` and by
    ``estimates.discarded_components``. It can be called any number of times.

    Parameters
    ----------
    estimates : caiman ``Estimates`` (CNMF or OnACID)
        Classified by :func:`evaluate_components_4class` or ``calcomp classify`` (and
        loaded with ``load_CNMF`` / ``load_OnlineCNMF``), then selected or restored any
        number of times.

    Returns
    -------
    estimates
        The same object: ``class_probs``, ``class_labels``, ``class_flags`` and
        ``class_fingerprint`` with one row per column of ``A``, in ``A``'s order; the same
        on ``discarded_components`` for the components set aside (fields of discarded
        components that were never classified are removed).

    Raises
    ------
    ValueError
        The object holds no classification, or a column of ``A`` has no classified row:
        ``A`` changed since the classification (``refit``, a merge, new components).
        Classify it again with :func:`evaluate_components_4class`. Nothing is changed.

    Examples
    --------
    ::

        from calcomp_caiman import align_classes, evaluate_components_4class
        evaluate_components_4class(cnm.estimates, cnm.params)
        cnm.estimates.select_components(use_object=True)   # CaImAn's own method
        align_classes(cnm.estimates)  # class_probs: one row per remaining component

    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> A = np.zeros((400, 3), np.float32)
    >>> A[[21, 22, 41], 0] = 1; A[[200, 201], 1] = 1; A[[300, 320, 340], 2] = 1
    >>> est = evaluate_components_4class(SimpleNamespace(A=A, dims=(20, 20)))
    >>> probs = est.class_probs.copy()
    >>> est.A = est.A[:, [2, 0]]                     # a selection made elsewhere
    >>> bool(np.array_equal(align_classes(est).class_probs, probs[[2, 0]]))
    True
    """
    A = _footprints_of(estimates)
    if A is None:
        raise ValueError("these estimates have no footprints A: nothing to align.")
    discarded = _get(estimates, "discarded_components")
    held = [rows for rows in (_classified_rows(estimates), _classified_rows(discarded)) if rows]
    if not held:
        probs = _get(estimates, "class_probs")
        if _is_array(probs) and len(probs) == A.shape[-1]:
            logger.warning(
                "class_probs has no class_fingerprint (classified by calcomp 0.1.0 before "
                "fingerprints): its rows cannot be checked against A and are left as they are"
            )
            return estimates
        raise ValueError(
            "these estimates hold no four-class classification (class_probs with "
            "class_fingerprint): run evaluate_components_4class(estimates, params) or "
            "`calcomp classify FILE` first."
        )
    names = [name for name in FOUR_CLASS_FIELDS if all(name in fields for _, fields in held)]
    stored = np.concatenate([fingerprint for fingerprint, _ in held])
    pool = {name: np.concatenate([fields[name] for _, fields in held]) for name in names}
    rows = match_fingerprints(stored, footprint_fingerprint(A))
    if rows is None:
        raise ValueError(
            f"{A.shape[-1]} components but some of them were never classified (A changed "
            "since the classification, e.g. by refit or a merge): run "
            "evaluate_components_4class(estimates, params) again."
        )
    set_aside = _footprints_of(discarded)
    set_aside_rows = None
    if set_aside is not None:  # from the rows the kept components did not take
        free = np.delete(np.arange(len(stored)), rows)
        matched = match_fingerprints(stored[free], footprint_fingerprint(set_aside))
        if matched is not None:
            set_aside_rows = free[matched]
        else:
            logger.warning(
                "discarded_components hold components that were never classified; their "
                "class fields are removed (run evaluate_components_4class to classify them)"
            )
    for name, values in pool.items():
        _set(estimates, name, values[rows])
        if discarded is not None:
            _set(discarded, name, None if set_aside_rows is None else values[set_aside_rows])
    return estimates


def attach_classes(estimates):
    """Deprecated name of :func:`align_classes` (it no longer changes the object's class)."""
    warnings.warn(
        "attach_classes is deprecated: call align_classes(estimates) after CaImAn's "
        "select_components / restore_discarded_components / load_CNMF",
        DeprecationWarning,
        stacklevel=2,
    )
    return align_classes(estimates)


def evaluate_components_4class(
    estimates,
    params=None,
    *,
    model: CalcompModel | None = None,
    accept: Sequence[str] | None = None,
    min_prob: float | str | None = None,
    use_metrics: bool = False,
    image=None,
    modality: str = "auto",
    batch_size: int = 128,
):
    """Classify every component of a CNMF result as neuron, process, noise or doubtful.

    Parameters
    ----------
    estimates : caiman ``Estimates`` or any object with ``A`` and ``dims``
        ``A`` is the (pixels x N) footprint matrix, Fortran pixel order; ``dims`` the FOV
        shape (2-D, or 3-D for volumetric data, classified from the max projection).
    params : CaImAn ``CNMFParams`` or dict, optional
        ``gSig`` is read from ``params.init``; ``dims`` from ``params.data`` if
        ``estimates.dims`` is missing; with ``use_metrics``, the thresholds from
        ``params.quality``. Without it, ``gSig`` is estimated from the footprints.
    model : CalcompModel, optional
        Default: the default model of the result's modality (see ``modality``): the lab's
        default model (``calcomp lab``, :mod:`calcomp_caiman.model.defaults`), else the
        bundled one; for one-photon results the bundled one-photon model when installed.
    accept : sequence of str, optional
        Classes that count as accepted (``idx_components``), e.g. ``("neuron",)`` or
        ``("neuron", "doubtful")``; default: the model folder's ``thresholds.json``.
    min_prob : float or "argmax", optional
        Accept when the summed probability of the ``accept`` classes is at least this;
        ``"argmax"``: when the most probable class is in ``accept``; default: the model
        folder's ``thresholds.json`` (fitted on validation data).
    use_metrics : bool
        Also require CaImAn's trace-quality test on the stored ``SNR_comp`` and
        ``r_values`` (``SNR >= min_SNR or r >= rval_thr``, and neither below
        ``SNR_lowest`` / ``rval_lowest``, thresholds from ``params.quality``).
    image : (H, W) ndarray, optional
        A mean or max image of the movie (the correlation image ``estimates.Cn`` is
        used when present).
    modality : {"auto", "1p", "2p"}
        One-photon (CNMF-E) or two-photon data; ``"auto"``: from ``params``
        (``init.center_psf`` or ``init.method_init == 'corr_pnr'``: one-photon;
        :mod:`calcomp_caiman.evidence.modality`), two-photon without them. A model trained
        for the other modality still classifies, with one warning in the log.
    batch_size : int
        Patches per forward pass.

    Returns
    -------
    estimates
        The same object, updated in place:

        * ``class_probs`` (N, 4) float32: P(neuron, process, noise, doubtful);
        * ``class_labels`` (N,) int8: most probable class, codes 1-4;
        * ``class_flags`` (N,) uint8: 1 = empty footprint, 2 = negative values clipped;
        * ``cnn_preds`` (N,) float32: P(neuron), where CaImAn keeps its CNN score;
        * ``idx_components`` / ``idx_components_bad``: accepted / rejected indices.

        * ``class_fingerprint`` (N, 3) float64: what identifies each footprint.

        Components an earlier ``select_components`` set aside
        (``discarded_components``) are classified too. The object keeps its class:
        CaImAn's ``select_components`` moves ``cnn_preds`` and ``idx_components`` but
        not our fields; call :func:`align_classes` after it (or after
        ``restore_discarded_components``, ``load_CNMF``) to bring them in line.

    Raises
    ------
    ValueError, TypeError
        Missing or inconsistent ``A`` / ``dims``, NaN or Inf in ``A``, unknown classes in
        ``accept``. The estimates are left unchanged.

    Notes
    -----
    CaImAn's ``estimates.evaluate_components`` recomputes ``cnn_preds`` (running
    CaImAn's own CNN when ``use_cnn=True``) and overwrites ``idx_components``: call it
    *before* this function, not after. ``filter_components`` re-applies CaImAn's rule to
    the stored ``SNR_comp``, ``r_values`` and ``cnn_preds`` -- with ``use_cnn=True`` and
    ``min_cnn_thr`` it then uses our P(neuron) in CaImAn's OR rule. To combine with the
    trace metrics under an AND rule (a component must look like a neuron *and* have
    good traces), pass ``use_metrics=True`` instead.

    Examples
    --------
    Inside a CaImAn script, after ``cnm.fit`` (and optionally ``evaluate_components``)::

        from calcomp_caiman import evaluate_components_4class
        evaluate_components_4class(cnm.estimates, cnm.params)
        cnm.estimates.select_components(use_object=True)
        align_classes(cnm.estimates)

    >>> from types import SimpleNamespace
    >>> from calcomp_caiman.research.simulate import simulate_session
    >>> session = simulate_session(seed=0)
    >>> est = evaluate_components_4class(SimpleNamespace(A=session.A, dims=session.dims))
    >>> est.class_probs.shape == (session.A.shape[1], 4)
    True
    """
    evidence = Evidence.from_estimates(estimates, params, image=image)
    used_modality = modality_used(modality, evidence.modality)
    model = CalcompModel.load(modality=used_modality) if model is None else model
    acceptance_rule(model, accept, min_prob)  # a bad rule fails before any work
    keep = _metrics_rule(estimates, params) if use_metrics else None
    if keep is not None and len(keep) != evidence.n:
        raise ValueError(
            f"SNR_comp/r_values have {len(keep)} entries but A has {evidence.n} components."
        )
    # the record fingerprints A as the caller holds it (Evidence keeps that fingerprint)
    record = classify(
        evidence, model, accept=accept, min_prob=min_prob, keep=keep,
        modality=used_modality, batch_size=batch_size,
    )  # fmt: skip
    scale = float(record.provenance["crop_scale"])
    discarded = _classify_discarded(estimates, params, evidence.dims, model, scale, batch_size)
    for name, value in record.fields.items():
        setattr(estimates, name, value)
    for name, value in discarded.items():
        _set(estimates.discarded_components, name, value)
    logger.info(
        "%d components: %d accepted (%s; evidence: %s; %s, model %s)", record.n,
        len(record.fields["idx_components"]), record.provenance["accept"],
        record.provenance["evidence"], used_modality, model.name,
    )  # fmt: skip
    return estimates


def _classify_discarded(estimates, params, dims, model, scale, batch_size) -> dict:
    """Our fields for components an earlier ``select_components`` set aside.

    So that ``restore_discarded_components`` brings back one row per restored column.
    """
    discarded = getattr(estimates, "discarded_components", None)
    A = getattr(discarded, "A", None)
    if A is None or isinstance(A, (str, bytes)) or A.shape[-1] == 0:
        return {}
    evidence = Evidence.from_estimates(discarded, params, dims=dims)
    # cropped at the scale of the kept components: they are the same cells' file; a
    # modality mismatch was warned of for those (only the fields are kept from this record)
    record = classify(
        evidence, model, scale=scale, ood=False, modality=model.modality, batch_size=batch_size
    )
    return {name: record.fields[name] for name in FOUR_CLASS_FIELDS}
