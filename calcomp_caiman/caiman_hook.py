"""The CaImAn side: classify a CNMF ``Estimates`` object and write the answer back.

Works with CaImAn's ``Estimates`` and with any object that has ``A`` and ``dims``;
CaImAn itself is never imported.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Sequence

import numpy as np

from .classify import (
    acceptance_rule,
    crop_scale_of,
    footprint_fingerprint,
)
from .evidence import Evidence, params_value
from .model import CalcompModel
from .record import SELECTION_FIELDS, classify

logger = logging.getLogger(__name__)

__all__ = ["evaluate_components_4class", "attach_classes", "FOUR_CLASS_FIELDS"]

FOUR_CLASS_FIELDS = SELECTION_FIELDS
"""Per-component fields this package adds; they follow ``select_components``."""


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


@functools.cache
def _selection_aware(base: type) -> type:
    """A subclass of ``base`` whose component selection also slices our fields."""

    # the name must stay "Estimates": CaImAn's save() recognises the object by class name
    class Estimates(base):
        _calcomp_selection_aware = True

        def select_components(
            self, idx_components=None, use_object=False, save_discarded_components=True
        ):
            n = self.A.shape[-1]
            keep = self.idx_components if use_object else idx_components
            ours = _own_fields(self, n)
            result = super().select_components(
                idx_components, use_object, save_discarded_components=save_discarded_components
            )
            if keep is None:
                return result
            keep = np.asarray(keep, dtype=np.int64)
            dropped = np.setdiff1d(np.arange(n), keep)
            discarded = getattr(self, "discarded_components", None)
            for name, values in ours.items():
                setattr(self, name, values[keep])
                if save_discarded_components and discarded is not None:
                    # like CaImAn (1.12), append to what earlier selections discarded
                    before = getattr(discarded, name, None)
                    rows = values[dropped]
                    setattr(
                        discarded, name, rows if before is None else np.concatenate([before, rows])
                    )
            return result

        def restore_discarded_components(self):
            discarded = getattr(self, "discarded_components", None)
            saved = {
                name: (getattr(self, name, None), getattr(discarded, name, None))
                for name in FOUR_CLASS_FIELDS
            }
            result = super().restore_discarded_components()
            for name, (kept, dropped) in saved.items():
                if kept is not None and dropped is not None:
                    setattr(self, name, np.concatenate([kept, dropped]))
                    setattr(discarded, name, None)
            return result

        def __reduce_ex__(self, protocol):
            # pickles as CaImAn's own class: loads where this package is not installed
            return object.__new__, (base,), self.__dict__

        def __deepcopy__(self, memo):
            clone = base.__new__(type(self))
            memo[id(self)] = clone
            clone.__dict__.update(copy.deepcopy(self.__dict__, memo))
            return clone

    Estimates.__qualname__ = f"{base.__qualname__}[calcomp]"
    Estimates.__doc__ = base.__doc__
    return Estimates


def _own_fields(estimates, n: int) -> dict[str, np.ndarray]:
    """Our per-component fields that have one row per column of ``A``."""
    values = {name: getattr(estimates, name, None) for name in FOUR_CLASS_FIELDS}
    return {
        name: np.asarray(value)
        for name, value in values.items()
        if value is not None and not isinstance(value, (str, bytes)) and len(value) == n
    }


def _make_selection_aware(estimates) -> None:
    base = type(estimates)
    if not callable(getattr(base, "select_components", None)) or getattr(
        base, "_calcomp_selection_aware", False
    ):
        return
    try:
        estimates.__class__ = _selection_aware(base)
    except TypeError:
        logger.warning(
            "cannot extend %s.select_components; slice class_probs yourself after selecting",
            base.__name__,
        )


def _match_rows(stored: np.ndarray, current: np.ndarray) -> np.ndarray | None:
    """Row of ``stored`` for each row of ``current`` (equal fingerprints), or None."""
    scale = np.maximum(np.abs(stored).max(axis=0), 1.0)
    free: dict[tuple, list[int]] = {}
    for row, key in enumerate(map(tuple, np.round(stored / scale, 9))):
        free.setdefault(key, []).append(row)
    rows = []
    for key in map(tuple, np.round(current / scale, 9)):
        candidates = free.get(key)
        if not candidates:
            return None
        rows.append(candidates.pop(0))
    return np.asarray(rows, dtype=np.int64)


def attach_classes(estimates):
    """Make a classified ``Estimates`` keep its four-class fields aligned under selection.

    Call it on an ``Estimates`` that was classified elsewhere: one loaded with CaImAn's
    ``load_CNMF`` / ``load_OnlineCNMF`` from a file that ``calcomp classify`` (or
    ``cnm.save`` after :func:`evaluate_components_4class`) wrote, or one unpickled.
    Afterwards ``select_components`` and ``restore_discarded_components`` slice
    ``class_probs``, ``class_labels``, ``class_flags`` and ``class_fingerprint`` with ``A``.
    If ``A`` was already subset (a selection made before this call), the rows are matched
    to ``A``'s columns by their ``class_fingerprint`` and re-ordered.

    Parameters
    ----------
    estimates : caiman ``Estimates``
        With ``A`` and the fields written by this package.

    Returns
    -------
    estimates
        The same object.

    Raises
    ------
    ValueError
        The object holds no classification, or its rows cannot be matched to ``A``
        (``A`` changed since it was classified, e.g. by ``refit``): classify it again.

    Examples
    --------
    ::

        from caiman.source_extraction.cnmf.cnmf import load_CNMF
        from calcomp_caiman import attach_classes
        cnm = load_CNMF("results_4class.hdf5")
        attach_classes(cnm.estimates)
        cnm.estimates.select_components(use_object=True)  # class_probs follows
    """
    A = getattr(estimates, "A", None)
    probs = getattr(estimates, "class_probs", None)
    if A is None or probs is None or isinstance(probs, (str, bytes)):
        raise ValueError(
            "these estimates hold no four-class classification (class_probs): run "
            "evaluate_components_4class(estimates, params) or `calcomp classify FILE` first."
        )
    n = A.shape[-1]
    fingerprint = getattr(estimates, "class_fingerprint", None)
    if len(probs) != n or fingerprint is not None:
        current = footprint_fingerprint(A)
        stored = None if fingerprint is None else np.asarray(fingerprint, dtype=np.float64)
        rows = None if stored is None or len(stored) != len(probs) else _match_rows(stored, current)
        if rows is None:
            raise ValueError(
                f"class_probs has {len(probs)} rows that cannot be matched to the {n} "
                "columns of A (A changed since it was classified): run "
                "evaluate_components_4class(estimates, params) again."
            )
        for name in FOUR_CLASS_FIELDS:
            value = getattr(estimates, name, None)
            if value is not None and not isinstance(value, (str, bytes)):
                setattr(estimates, name, np.asarray(value)[rows])
    _make_selection_aware(estimates)
    return estimates


def evaluate_components_4class(
    estimates,
    params=None,
    model: CalcompModel | None = None,
    accept: Sequence[str] | None = None,
    min_prob: float | str | None = None,
    *,
    use_metrics: bool = False,
    image=None,
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
        Default: the bundled model.
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

        CaImAn's ``select_components`` on this object (a CaImAn ``Estimates``) keeps
        the three ``class_*`` fields aligned with the remaining components, and
        ``restore_discarded_components`` restores them.

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

    >>> from types import SimpleNamespace
    >>> from calcomp_caiman.research.simulate import simulate_session
    >>> session = simulate_session(seed=0)
    >>> est = evaluate_components_4class(SimpleNamespace(A=session.A, dims=session.dims))
    >>> est.class_probs.shape == (session.A.shape[1], 4)
    True
    """
    evidence = Evidence.from_estimates(estimates, params, image=image)
    model = CalcompModel.load() if model is None else model
    acceptance_rule(model, accept, min_prob)  # a bad rule fails before any work
    keep = _metrics_rule(estimates, params) if use_metrics else None
    if keep is not None and len(keep) != evidence.n:
        raise ValueError(
            f"SNR_comp/r_values have {len(keep)} entries but A has {evidence.n} components."
        )
    scale = crop_scale_of(evidence, model)
    record = classify(
        evidence, model, accept=accept, min_prob=min_prob, keep=keep, scale=scale,
        fingerprint=footprint_fingerprint(estimates.A), batch_size=batch_size,
    )  # fmt: skip
    discarded = _classify_discarded(estimates, params, evidence.dims, model, scale, batch_size)
    for name, value in record.fields.items():
        setattr(estimates, name, value)
    for name, value in discarded.items():
        setattr(estimates.discarded_components, name, value)
    _make_selection_aware(estimates)
    logger.info(
        "%d components: %d accepted (%s; evidence: %s)", record.n,
        len(record.fields["idx_components"]), record.provenance["accept"],
        record.provenance["evidence"],
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
    # cropped at the scale of the kept components: they are the same cells' file
    record = classify(evidence, model, scale=scale, fingerprint=footprint_fingerprint(A), ood=False,
                      batch_size=batch_size)  # fmt: skip
    return {name: record.fields[name] for name in FOUR_CLASS_FIELDS}
