"""What is known about the components of one result: footprints, traces, images, metrics.

An :class:`Evidence` gathers everything a classifier may use about N components, from a
CaImAn ``Estimates`` (:meth:`Evidence.from_estimates`), a CaImAn result file
(:func:`calcomp_caiman.io.caiman_h5.read_evidence`) or other pipelines' outputs. Only the
footprints are required; everything else is optional and may be missing (masks from
another pipeline have no traces, an OnACID result may have no correlation image).

Traces are held as a :class:`Traces` source that hands out row chunks, so that a file
with 50,000 components and 10,000 frames is never read into memory at once.

Evidence is checked for its role when it is built: a ``Cn`` outside [-1, 1] (not a local
correlation image: Suite2p's ``Vcorr`` is on another scale), an image that is all NaN/Inf,
traces with NaN/Inf values are left out, with a warning in the log and the reason in
:attr:`Evidence.dropped`, which the classification's provenance records
(``evidence_dropped``). Readers add what they left out themselves (a NaN neuropil
coefficient).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse

from calcomp_caiman.checks import check_dims, check_footprints, check_gsig
from calcomp_caiman.evidence.footprints import footprint_fingerprint
from calcomp_caiman.evidence.modality import MODALITIES, detect_modality
from calcomp_caiman.evidence.params import params_value
from calcomp_caiman.evidence.traces import Traces

logger = logging.getLogger(__name__)

_CORRELATION_SLACK = 0.01  # a correlation image may pass +-1 by rounding, not more
_SCAN_ELEMENTS = 1 << 23  # trace values checked per chunk (32 MB as float32)

__all__ = [
    "EVIDENCE_KINDS",
    "Evidence",
    "params_value",
]

EVIDENCE_KINDS = ("shape", "neighbours", "image", "traces", "metrics")
"""Kinds of evidence, in the order the provenance lists them.

``shape``: the footprint; ``neighbours``: the other footprints of the same result;
``image``: a local image (``Cn`` or a mean/max image); ``traces``: ``C`` with ``YrA`` (and
``S``, ``g``, ``neurons_sn`` when present); ``metrics``: CaImAn's ``SNR_comp`` and ``r_values``.
"""


def _fitting(value, n: int | None, name: str):
    """``value`` when it has one row per component (or is absent); else None, with a warning.

    An ``Estimates`` may carry fields that no longer fit ``A`` (OnACID's buffers, a
    partial selection); the classifier uses what fits and never requires the rest.
    """
    if value is None or isinstance(value, (str, bytes)) or n is None:
        return None if isinstance(value, (str, bytes)) else value
    try:
        shape = np.shape(value)
        size = np.size(value)
    except ValueError:  # a ragged list
        return None
    if not shape or shape[0] != n or size == 0:
        if size:  # OnACID keeps g and neurons_sn of its first components only
            logger.info("ignoring estimates.%s of shape %s (A has %d components)", name, shape, n)
        return None
    return value


def _optional_vector(value, n: int, name: str) -> np.ndarray | None:
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        value = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):  # e.g. CaImAn's g as a ragged list of arrays
        logger.info("ignoring %s: not a numeric array", name)
        return None
    if value.size == 0:
        return None
    value = value.reshape(len(value), -1) if value.ndim > 1 else value
    if len(value) != n:
        raise ValueError(f"{name} has {len(value)} entries but A has {n} components.")
    return value


def _optional_image(value, dims: tuple[int, ...], name: str) -> np.ndarray | None:
    if value is None or isinstance(value, (str, bytes)):
        return None
    image = np.asarray(value, dtype=np.float64)
    if image.size == 0:
        return None
    plane = tuple(dims[:2])
    if image.ndim == 3 and image.shape[:2] == plane:  # a volume: max projection over z
        image = image.max(axis=2)
    if image.shape != plane:
        raise ValueError(
            f"{name} has shape {image.shape} but the field of view is {plane}; pass the image "
            f"of the same movie."
        )
    return image


def _selection_mask(index, n: int, source: str) -> np.ndarray | None:
    """``index`` (column indices, e.g. CaImAn's ``idx_components``) as an (n,) bool mask."""
    if index is None or isinstance(index, (str, bytes)):
        return None
    index = np.asarray(index).ravel()
    integral = index.dtype.kind in "iu" or (
        index.dtype.kind == "f" and bool(np.all(np.isfinite(index) & (index == np.round(index))))
    )
    if not integral or (index.size and (index.min() < 0 or index.max() >= n)):
        logger.info("%s: ignoring idx_components that are not columns of A", source or "evidence")
        return None
    mask = np.zeros(n, bool)
    mask[index.astype(np.int64)] = True
    return mask


def _frame_rate(value, source: str) -> float | None:
    """``value`` as frames per second when it is one positive finite number; else None."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        rate = float(np.asarray(value, dtype=np.float64).reshape(()))
    except (TypeError, ValueError):
        rate = float("nan")
    if not (np.isfinite(rate) and rate > 0):
        logger.info(
            "%s: ignoring frame rate %r (not a positive number)", source or "evidence", value
        )
        return None
    return rate


def _check_detected(modality: str) -> str:
    if modality not in MODALITIES:  # what the result is, not a request ("auto")
        raise ValueError(f"modality must be one of {MODALITIES} or None, got {modality!r}.")
    return modality


def _leave_out(name: str, reason: str, source: str, dropped: dict[str, str]) -> None:
    logger.warning("%s: leaving out %s: %s", source or "evidence", name, reason)
    dropped[name] = reason


def _image_for_role(
    image: np.ndarray | None, name: str, source: str, dropped: dict[str, str]
) -> np.ndarray | None:
    """``image`` (NaN/Inf pixels set to 0) when it can serve as ``name``; else None, with the
    reason in ``dropped``: all NaN/Inf, or, for ``Cn``, values outside [-1, 1]."""
    if image is None:
        return None
    finite = np.isfinite(image)
    if not finite.any():
        _leave_out(name, "all NaN/Inf", source, dropped)
        return None
    if name == "Cn":
        low, high = float(image[finite].min()), float(image[finite].max())
        if low < -1 - _CORRELATION_SLACK or high > 1 + _CORRELATION_SLACK:
            reason = f"outside [-1, 1] (min {low:.4g}, max {high:.4g}): not a correlation image"
            _leave_out(name, reason, source, dropped)
            return None
    return np.where(finite, image, 0.0)


def _finite_traces(traces: Traces | None, source: str, dropped: dict[str, str]) -> Traces | None:
    """``traces`` when every value is finite (read once, in row chunks); else None, with the
    reason in ``dropped``."""
    if traces is None:
        return None
    bad: dict[str, int] = {}
    for _, chunk in traces.chunks(_SCAN_ELEMENTS // max(traces.frames, 1)):
        for name, values in chunk.items():
            count = int(np.count_nonzero(~np.isfinite(values).all(axis=1)))
            if count:
                bad[name] = bad.get(name, 0) + count
    if not bad:
        return traces
    reason = ", ".join(f"{name} has NaN/Inf in {count} of {traces.n} components"
                       for name, count in bad.items())  # fmt: skip
    _leave_out("traces", reason, source, dropped)
    return None


@dataclass(frozen=True, eq=False)
class Evidence:
    """Everything known about N components of one result; only ``A`` and ``dims`` required.

    Build it with :meth:`from_estimates` (a CaImAn ``Estimates``),
    :func:`calcomp_caiman.io.caiman_h5.read_evidence` (a result file) or directly.

    Attributes
    ----------
    A : (pixels, N) scipy.sparse.csc_matrix
        Footprints, pixels in Fortran order, checked (:func:`~calcomp_caiman.checks.check_footprints`).
    dims : tuple of int
        Field of view (2 or 3 values).
    traces : Traces, optional
        ``C`` (denoised), ``YrA`` (residual: the raw trace is ``C + YrA``) and ``S``.
    g : (N, p) ndarray, optional
        Autoregressive coefficients (``estimates.g``).
    neurons_sn : (N,) ndarray, optional
        Noise level of each component's trace.
    Cn : (H, W) ndarray, optional
        Local correlation image (``estimates.Cn``).
    image : (H, W) ndarray, optional
        A mean or max image of the movie, when the user passes one.
    SNR_comp, r_values : (N,) ndarray, optional
        CaImAn's trace SNR and spatial correlation with the movie (``evaluate_components``).
    caiman_accepted : (N,) bool ndarray, optional
        Whether CaImAn's own selection (``idx_components`` stored with the result) kept
        each component; shown beside calcomp's for comparison, never used to classify.
    gSig : float, optional
        The user's ``gSig`` (``params.init``), if known.
    frame_rate : float, optional
        Frames per second of the traces (``params.data['fr']``, an NWB series' rate,
        Suite2p's ``fs``), if known.
    modality : {"1p", "2p"}, optional
        What the result's CaImAn params say (:func:`~calcomp_caiman.evidence.modality.detect_modality`:
        ``"1p"`` for CNMF-E); None when nothing says (no params, other pipelines).
    source : str
        Where it came from (a file path, ``"estimates"``), for messages and provenance.
    fingerprint : (N, 3) ndarray
        :func:`footprint_fingerprint` of ``A`` as given (before any conversion), which the
        record stores so that it can be matched to ``A`` after a selection.
    dropped : dict of str to str
        Evidence that was found but left out as unfit for its role, with the reason, e.g.
        ``{"Cn": "outside [-1, 1] (min 1.585, max 21.77): not a correlation image"}``; the
        classification's provenance records it as ``evidence_dropped``.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.zeros((20 * 20, 2)); A[:30, 0] = 1; A[200:230, 1] = 1
    >>> ev = Evidence.build(A, (20, 20), C=np.random.default_rng(0).random((2, 100)))
    >>> ev.n, ev.kinds
    (2, ('shape', 'neighbours', 'traces'))
    >>> ev.without("traces").kinds
    ('shape', 'neighbours')
    """

    A: scipy.sparse.csc_matrix
    dims: tuple[int, ...]
    traces: Traces | None = None
    g: np.ndarray | None = None
    neurons_sn: np.ndarray | None = None
    Cn: np.ndarray | None = None
    image: np.ndarray | None = None
    SNR_comp: np.ndarray | None = None
    r_values: np.ndarray | None = None
    caiman_accepted: np.ndarray | None = None
    gSig: float | None = None
    frame_rate: float | None = None
    modality: str | None = None
    source: str = ""
    fingerprint: np.ndarray | None = None
    dropped: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of components."""
        return int(self.A.shape[1])

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds of evidence present (:data:`EVIDENCE_KINDS` order)."""
        present = {
            "shape": True,
            "neighbours": self.n > 1,
            "image": self.Cn is not None or self.image is not None,
            "traces": self.traces is not None,
            "metrics": self.SNR_comp is not None or self.r_values is not None,
        }
        return tuple(kind for kind in EVIDENCE_KINDS if present[kind])

    @classmethod
    def build(
        cls,
        A,
        dims,
        *,
        C=None,
        YrA=None,
        S=None,
        traces: Traces | None = None,
        g=None,
        neurons_sn=None,
        Cn=None,
        image=None,
        SNR_comp=None,
        r_values=None,
        idx_components=None,
        gSig=None,
        frame_rate=None,
        modality: str | None = None,
        source: str = "",
        dropped: dict[str, str] | None = None,
    ) -> Evidence:
        """Check and assemble evidence from arrays (``None`` or ``'NoneType'``: absent).

        ``Cn``, ``image`` and the traces are checked for their role (see the module's
        notes); what is left out is added to ``dropped`` (what the reader left out already).
        ``idx_components`` (CaImAn's own selection: column indices) becomes
        ``caiman_accepted``; indices outside ``A`` leave it out (logged).

        Raises
        ------
        ValueError, TypeError
            ``A`` does not fit ``dims``; a per-component array has the wrong length; an image
            has the wrong shape; traces do not have one row per component.
        """
        fingerprint = footprint_fingerprint(A)  # of A as the caller holds it
        A, dims = check_footprints(A, dims)
        n = A.shape[1]
        if traces is None and C is not None and not isinstance(C, (str, bytes)):
            C = np.asarray(C)
            if C.size and C.ndim == 2:
                YrA = None if isinstance(YrA, (str, bytes)) else YrA
                S = None if isinstance(S, (str, bytes)) else S
                traces = Traces.from_arrays(C, YrA, S)
        if traces is not None and traces.n != n:
            raise ValueError(f"the traces have {traces.n} rows but A has {n} components.")
        source = str(source)
        dropped = dict(dropped or {})
        return cls(
            A=A,
            dims=dims,
            traces=_finite_traces(traces, source, dropped),
            g=_optional_vector(g, n, "g"),
            neurons_sn=_optional_vector(neurons_sn, n, "neurons_sn"),
            Cn=_image_for_role(_optional_image(Cn, dims, "Cn"), "Cn", source, dropped),
            image=_image_for_role(_optional_image(image, dims, "image"), "image", source, dropped),
            SNR_comp=_optional_vector(SNR_comp, n, "SNR_comp"),
            r_values=_optional_vector(r_values, n, "r_values"),
            caiman_accepted=_selection_mask(idx_components, n, source),
            gSig=check_gsig(gSig, len(dims)),
            frame_rate=_frame_rate(frame_rate, source),
            modality=None if modality is None else _check_detected(modality),
            source=source,
            fingerprint=fingerprint,
            dropped=dropped,
        )

    @classmethod
    def from_estimates(cls, estimates, params=None, *, image=None, dims=None) -> Evidence:
        """The evidence a CaImAn ``Estimates`` (CNMF or OnACID) holds.

        Parameters
        ----------
        estimates : caiman ``Estimates`` or any object with ``A`` and ``dims``
        params : CaImAn ``CNMFParams`` or dict, optional
            ``gSig`` from ``params.init``; the frame rate from ``params.data['fr']``;
            ``dims`` from ``params.data`` when ``estimates.dims`` is missing; the
            modality from ``params.init`` (:func:`~calcomp_caiman.evidence.modality.detect_modality`).
        image : (H, W) ndarray, optional
            A mean or max image of the movie.
        dims : tuple of int, optional
            The field of view, when ``estimates`` lacks ``dims`` (e.g. the
            ``discarded_components`` of a selection).
        """
        A = getattr(estimates, "A", None)
        if A is None:
            raise TypeError(
                f"estimates must have the footprint matrix A (pixels x components); "
                f"{type(estimates).__name__} has none. Pass cnm.estimates after cnm.fit."
            )
        dims = getattr(estimates, "dims", None) if dims is None else dims
        if dims is None:
            dims = params_value(params, "data", "dims")
        if dims is None:
            raise ValueError("estimates.dims is missing; set it or pass params with data.dims.")
        n = int(A.shape[1]) if hasattr(A, "shape") and len(A.shape) == 2 else None
        fields = {
            name: _fitting(getattr(estimates, name, None), n, name)
            for name in ("C", "YrA", "S", "g", "neurons_sn", "SNR_comp", "r_values")
        }
        fields["Cn"] = getattr(estimates, "Cn", None)
        if fields["C"] is None:
            fields.update(YrA=None, S=None)
        for name in ("YrA", "S"):
            value = fields[name]
            if value is not None and np.shape(value) != np.shape(fields["C"]):
                logger.warning("ignoring estimates.%s: its shape differs from C's", name)
                fields[name] = None
        try:
            _optional_image(fields["Cn"], check_dims(dims), "Cn")
        except ValueError as err:
            logger.warning("ignoring estimates.Cn: %s", err)
            fields["Cn"] = None
        return cls.build(
            A,
            dims,
            image=image,
            gSig=params_value(params, "init", "gSig"),
            frame_rate=params_value(params, "data", "fr"),
            modality=detect_modality(params),
            source="estimates",
            **fields,
        )

    def without(self, *kinds: str) -> Evidence:
        """The same evidence with the named kinds removed (``"traces"``, ``"image"``, ...).

        ``"shape"`` cannot be removed; removing ``"neighbours"`` is done by the feature
        step, which is told through ``kinds``.
        """
        unknown = set(kinds) - set(EVIDENCE_KINDS)
        if unknown or "shape" in kinds:
            raise ValueError(f"kinds must be among {EVIDENCE_KINDS[1:]}, got {sorted(set(kinds))}.")
        changes: dict = {}
        if "traces" in kinds:
            changes.update(traces=None, g=None, neurons_sn=None)
        if "image" in kinds:
            changes.update(Cn=None, image=None)
        if "metrics" in kinds:
            changes.update(SNR_comp=None, r_values=None)
        return dataclasses.replace(self, **changes)

    def take(self, index) -> Evidence:
        """The evidence of the components ``index`` only (neighbours are the others kept)."""
        index = np.asarray(index, dtype=np.int64)

        def pick(value):
            return None if value is None else value[index]

        return dataclasses.replace(
            self,
            A=self.A[:, index],
            traces=None if self.traces is None else self.traces.take(index),
            g=pick(self.g),
            neurons_sn=pick(self.neurons_sn),
            SNR_comp=pick(self.SNR_comp),
            r_values=pick(self.r_values),
            caiman_accepted=pick(self.caiman_accepted),
            fingerprint=pick(self.fingerprint),
        )
