"""Evidence to per-component features: neighbourhood, correlation image, traces, metrics.

The shape of a footprint reaches the classifier as a patch (:mod:`calcomp_caiman.evidence.patches`);
everything else an :class:`~calcomp_caiman.evidence.evidence.Evidence` holds is summarised here as
a few numbers per component, each group computed only when its evidence is present:

========== ====================================================================
group      features
========== ====================================================================
shape      log effective area / scale^2 (always present)
neighbours largest and summed footprint overlap (cosine) with the others, number
           of overlapping footprints, nearest centre distance / scale, number of
           centres within 3 scales
image      ``Cn`` inside the footprint, contrast against its surroundings, ``Cn``
           at the peak pixel, correlation of footprint and ``Cn`` over its support
traces     SNR of ``C`` against the residual noise, skewness of the raw trace
           (``C + YrA``) and of ``C``, share of the raw variance ``C`` explains,
           correlation of ``C`` and the raw trace, share of active frames,
           skewness of ``diff(C)`` (fast rise, slow decay), lag-1
           autocorrelation of the residual
metrics    CaImAn's ``log(1 + SNR_comp)`` and ``r_values``
relative   within-file percentile ranks (0..1) of the log area, the trace SNR,
           CaImAn's SNR, ``Cn`` inside the footprint and the footprint's peak
           value: comparable across labs whatever a file's units (a rank whose
           evidence is absent is 0; the group needs two components)
========== ====================================================================

Traces are read in row chunks (:meth:`~calcomp_caiman.evidence.traces.Traces.chunks`); images
are read at the footprint pixels only; nothing is densified per component. With
``profiles=True``, :func:`evidence_inputs` also makes the transient profiles of model v3
(:func:`~calcomp_caiman.evidence.transients.transient_profiles`) in the same pass over the
traces.

A model records the names of the columns it reads (``config.json``) and selects them by
name, so adding a group never changes what an older model computes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import scipy.ndimage
import scipy.sparse
import scipy.spatial
import scipy.stats

from calcomp_caiman.evidence.evidence import Evidence
from calcomp_caiman.evidence.order_stats import mad_noise, sorted_percentile
from calcomp_caiman.evidence.patches import component_centres
from calcomp_caiman.evidence.transients import SAMPLES, transient_profiles

logger = logging.getLogger(__name__)

__all__ = [
    "FEATURE_GROUPS",
    "OPTIONAL_GROUPS",
    "EvidenceInputs",
    "absent_features",
    "evidence_features",
    "evidence_inputs",
    "feature_names",
    "group_columns",
]

FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "shape": ("log_area",),
    "neighbours": ("max_overlap", "sum_overlap", "n_overlapping", "nearest", "n_near"),
    "image": ("cn_inside", "cn_contrast", "cn_peak", "cn_footprint_corr"),
    "traces": (
        "trace_snr",
        "raw_skew",
        "c_skew",
        "c_share",
        "c_raw_corr",
        "active_share",
        "diff_skew",
        "residual_autocorr",
    ),
    "metrics": ("caiman_log_snr", "caiman_r_value"),
    "relative": ("rank_log_area", "rank_trace_snr", "rank_caiman_log_snr", "rank_cn_inside",
                 "rank_peak"),
}  # fmt: skip
"""Feature names by evidence group, in column order."""

OPTIONAL_GROUPS = ("neighbours", "image", "traces", "metrics", "relative")
"""Groups that may be missing; each gets a presence column."""

_TRACE_ELEMENTS = 1 << 23  # trace values held per chunk (32 MB per float32 array)
_OVERLAP = 0.1  # cosine above which two footprints count as overlapping
_ORDER_FRAMES = 1000  # frames the medians and percentiles of a trace are taken over


def feature_names(groups: Sequence[str] | None = None) -> list[str]:
    """All feature columns of :func:`evidence_features`, presence columns last.

    ``groups``: only those of these groups (in :data:`FEATURE_GROUPS` order), e.g. the
    groups of a model trained before a group was added.

    Examples
    --------
    >>> feature_names(("shape", "metrics"))
    ['log_area', 'caiman_log_snr', 'caiman_r_value', 'has_metrics']
    """
    chosen = [group for group in FEATURE_GROUPS if groups is None or group in groups]
    names = [name for group in chosen for name in FEATURE_GROUPS[group]]
    return names + [f"has_{group}" for group in OPTIONAL_GROUPS if group in chosen]


def group_columns() -> dict[str, np.ndarray]:
    """Column indices of each group's features, its ``has_<group>`` column included.

    Examples
    --------
    >>> group_columns()["metrics"].tolist()
    [18, 19, 28]
    """
    names = feature_names()
    columns = {}
    for group, members in FEATURE_GROUPS.items():
        index = [names.index(m) for m in members]
        if group in OPTIONAL_GROUPS:
            index.append(names.index(f"has_{group}"))
        columns[group] = np.array(index)
    return columns


def absent_features(n: int) -> np.ndarray:
    """Features of ``n`` components known by their patch alone (all groups absent)."""
    return np.zeros((int(n), len(feature_names())), dtype=np.float32)


class EvidenceInputs(NamedTuple):
    """What a model reads beside the images: features and transient profiles."""

    features: np.ndarray
    """(N, F) float32: :func:`feature_names` columns."""
    profiles: np.ndarray | None
    """(N, 2, S) float32 transient profiles, or None (not asked, or no traces)."""


def evidence_inputs(
    evidence: Evidence,
    A: scipy.sparse.csc_matrix,
    dims: tuple[int, int],
    scale: float,
    *,
    use: Sequence[str] | None = None,
    profiles: bool = False,
    profile_options: Mapping | None = None,
    threads: int = 1,
) -> EvidenceInputs:
    """:func:`evidence_features`, and the transient profiles from the same pass over the traces.

    Parameters
    ----------
    evidence, A, dims, scale, use
        As :func:`evidence_features`.
    profiles : bool
        Also make :func:`~calcomp_caiman.evidence.transients.transient_profiles` of every
        component with traces, at the evidence's frame rate.
    profile_options : mapping, optional
        ``window``, ``samples``, ``peaks`` of the profiles (a model v3's ``config.json``
        ``temporal``); default those of :func:`~calcomp_caiman.evidence.transients.transient_profiles`.
    threads : int
        Chunks of traces computed at once (each component's numbers do not depend on it):
        the caller's share of the CPUs.

    Returns
    -------
    EvidenceInputs
        ``profiles`` is None without traces (or when the traces are not used).

    Examples
    --------
    >>> import numpy as np
    >>> from calcomp_caiman.evidence.evidence import Evidence
    >>> from calcomp_caiman.evidence.patches import project_footprints
    >>> A = np.zeros((20 * 20, 2)); A[:30, 0] = 1; A[200:230, 1] = 1
    >>> ev = Evidence.build(A, (20, 20), C=np.random.default_rng(0).random((2, 100)))
    >>> found = evidence_inputs(ev, *project_footprints(ev.A, ev.dims), 3.0, profiles=True)
    >>> found.features.shape == (2, len(feature_names())), found.profiles.shape
    (True, (2, 2, 32))
    """
    n = A.shape[1]
    use = OPTIONAL_GROUPS if use is None else tuple(use)
    scale = max(float(scale), 0.5)
    options = dict(profile_options or {})
    made = None
    if profiles and evidence.traces is not None and "traces" in use:
        made = np.zeros((n, 2, int(options.get("samples", SAMPLES))), np.float32)
    columns: list[np.ndarray] = [_log_area(A, scale)]
    present: dict[str, bool] = {}
    for group, compute, available in (
        ("neighbours", _neighbour_features, n > 1),
        ("image", _image_features, evidence.Cn is not None),
        ("traces", _trace_features, evidence.traces is not None),
        ("metrics", _metric_features, "metrics" in evidence.kinds),
    ):
        present[group] = available and group in use
        width = len(FEATURE_GROUPS[group])
        if group == "traces" and present[group]:
            values = _trace_features(evidence, A, dims, scale, made, options, threads)
        elif present[group]:
            values = compute(evidence, A, dims, scale)
        else:
            values = np.zeros((n, width))
        columns.append(values.reshape(n, width))
    present["relative"] = n > 1  # derived: its ranks of unused groups are 0
    if present["relative"]:
        columns.append(_relative_features(A, columns, present))
    else:
        columns.append(np.zeros((n, len(FEATURE_GROUPS["relative"]))))
    columns.append(np.tile(np.array([present[g] for g in OPTIONAL_GROUPS], np.float64), (n, 1)))
    out = np.concatenate(columns, axis=1).astype(np.float32)
    return EvidenceInputs(np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0), made)


def evidence_features(
    evidence: Evidence,
    A: scipy.sparse.csc_matrix,
    dims: tuple[int, int],
    scale: float,
    *,
    use: Sequence[str] | None = None,
) -> np.ndarray:
    """Per-component features of the evidence (:func:`feature_names` columns).

    Parameters
    ----------
    evidence : Evidence
        Traces, ``Cn`` and metrics are read from it.
    A : (H * W, N) csc_matrix
        The footprints, checked, projected to 2-D and non-negative
        (:func:`~calcomp_caiman.evidence.patches.project_footprints` of ``evidence.A``).
    dims : (int, int)
        The 2-D field of view.
    scale : float
        The crop scale (:func:`~calcomp_caiman.evidence.patches.crop_scale`), in px.
    use : sequence of str, optional
        Optional groups to use (default: all present); the others are reported absent.
        The ``relative`` group is present with two components or more; its ranks of
        groups not used are 0.

    Returns
    -------
    (N, F) float32 ndarray
        Features of absent groups are 0 and their ``has_<group>`` column is 0.

    Examples
    --------
    >>> import numpy as np
    >>> from calcomp_caiman.evidence.evidence import Evidence
    >>> from calcomp_caiman.evidence.patches import project_footprints
    >>> A = np.zeros((20 * 20, 2)); A[:30, 0] = 1; A[200:230, 1] = 1
    >>> ev = Evidence.build(A, (20, 20), C=np.random.default_rng(0).random((2, 100)))
    >>> flat, dims2 = project_footprints(ev.A, ev.dims)
    >>> evidence_features(ev, flat, dims2, 3.0).shape == (2, len(feature_names()))
    True
    """
    return evidence_inputs(evidence, A, dims, scale, use=use).features


_RANKED = (  # the relative group's columns: (group, column within the group)
    ("shape", 0), ("traces", 0), ("metrics", 0), ("image", 0), (None, None),
)  # fmt: skip


def _percentile_rank(values: np.ndarray) -> np.ndarray:
    """Rank of each value among the others, 0 (lowest) to 1 (highest); ties share the
    mean rank; a NaN or infinite value ranks 0.5."""
    out = np.full(len(values), 0.5)
    finite = np.isfinite(values)
    count = int(finite.sum())
    if count > 1:
        out[finite] = (scipy.stats.rankdata(values[finite]) - 1.0) / (count - 1)
    return out


def _relative_features(A, columns: list[np.ndarray], present: dict[str, bool]) -> np.ndarray:
    """Within-file percentile ranks of the features named in :data:`_RANKED`."""
    n = A.shape[1]
    groups = ["shape", "neighbours", "image", "traces", "metrics"]  # the order of `columns`
    out = np.zeros((n, len(_RANKED)))
    for k, (group, index) in enumerate(_RANKED):
        if group is None:  # the footprint's peak value
            counts = np.diff(A.indptr)
            values = np.zeros(n)
            if A.nnz:
                nonempty = counts > 0
                values[nonempty] = np.maximum.reduceat(A.data, A.indptr[:-1][nonempty])
        elif group == "shape" or present[group]:
            values = columns[groups.index(group)][:, index]
        else:
            continue
        out[:, k] = _percentile_rank(np.asarray(values, np.float64))
    return out


def _column_sums(A: scipy.sparse.csc_matrix, values: np.ndarray) -> np.ndarray:
    """Per-column sum of ``values`` (one per stored entry of ``A``)."""
    column = np.repeat(np.arange(A.shape[1]), np.diff(A.indptr))
    return np.bincount(column, weights=values, minlength=A.shape[1])


def _log_area(A: scipy.sparse.csc_matrix, scale: float) -> np.ndarray:
    """log of the effective area (sum a)^2 / sum a^2 over scale^2 (0 for empty columns)."""
    data = A.data.astype(np.float64)
    total = _column_sums(A, data)
    squares = _column_sums(A, data * data)
    area = np.where(squares > 0, total**2 / np.where(squares > 0, squares, 1.0), 0.0)
    return np.where(area > 0, np.log(np.maximum(area, 1e-6) / scale**2), 0.0)[:, None]


def _neighbour_features(evidence, A, dims, scale) -> np.ndarray:
    n = A.shape[1]
    norms = np.sqrt(_column_sums(A, A.data.astype(np.float64) ** 2))
    unit = A @ scipy.sparse.diags(1.0 / np.where(norms > 0, norms, 1.0))
    gram = (unit.T @ unit).tocsr()
    gram.setdiag(0)
    gram.eliminate_zeros()
    max_overlap = np.zeros(n)
    if gram.nnz:
        max_overlap = np.asarray(gram.max(axis=1).todense()).ravel()
    sum_overlap = np.asarray(gram.sum(axis=1)).ravel()
    n_overlapping = np.diff((gram > _OVERLAP).astype(np.int8).tocsr().indptr)
    centre_r, centre_c, total = component_centres(A, dims[0])
    points = np.column_stack([centre_r, centre_c])
    tree = scipy.spatial.cKDTree(points)
    distance, _ = tree.query(points, k=2)
    nearest = np.minimum(distance[:, 1] / scale, 20.0)
    n_near = tree.query_ball_point(points, 3.0 * scale, return_length=True) - 1
    empty = total <= 0
    out = np.column_stack(
        [max_overlap, sum_overlap, np.log1p(n_overlapping), nearest, np.log1p(n_near)]
    )
    out[empty] = 0.0
    return out


def _image_features(evidence, A, dims, scale) -> np.ndarray:
    image = np.asarray(evidence.Cn, dtype=np.float64)
    flat = image.ravel(order="F")
    size = max(3, int(round(6 * scale)) | 1)
    around = scipy.ndimage.uniform_filter(image, size=size, mode="nearest").ravel(order="F")
    data = A.data.astype(np.float64)
    at = flat[A.indices]
    total = _column_sums(A, data)
    safe = np.where(total > 0, total, 1.0)
    inside = _column_sums(A, data * at) / safe
    contrast = inside - _column_sums(A, data * around[A.indices]) / safe
    peak = np.zeros(A.shape[1])
    counts = np.diff(A.indptr)
    nonempty = counts > 0
    if A.nnz:  # at the stored entry with the largest value of each column (the last tied)
        starts = A.indptr[:-1][nonempty]
        largest = np.repeat(np.maximum.reduceat(data, starts), counts[nonempty])
        entry = np.where(data == largest, np.arange(A.nnz), -1)
        peak[nonempty] = at[np.maximum.reduceat(entry, starts)]
    count = np.maximum(counts, 1).astype(np.float64)
    sa, sb = _column_sums(A, data), _column_sums(A, at)
    saa, sbb, sab = (_column_sums(A, v) for v in (data * data, at * at, data * at))
    cov = sab / count - sa * sb / count**2
    var_a = np.maximum(saa / count - (sa / count) ** 2, 0)
    var_b = np.maximum(sbb / count - (sb / count) ** 2, 0)
    denom = np.sqrt(var_a * var_b)
    corr = np.where(denom > 1e-12, cov / np.where(denom > 1e-12, denom, 1.0), 0.0)
    return np.column_stack([inside, contrast, peak, corr])


def _row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b, dtype=np.float64)


def _skew(centred: np.ndarray) -> np.ndarray:
    """Skewness of each row from its deviations from the row mean (products, not ``**``:
    float32 powers are slow in NumPy)."""
    squared = centred * centred
    frames = centred.shape[1]
    var = squared.sum(axis=1, dtype=np.float64) / frames
    third = _row_dot(squared, centred) / frames
    return np.where(var > 1e-20, third / np.maximum(var, 1e-20) ** 1.5, 0.0)


def _centred(x: np.ndarray) -> np.ndarray:
    return x - x.mean(axis=1, keepdims=True)


def _robust_sd(x: np.ndarray, step: int = 1) -> np.ndarray:
    """Noise level of each row: MAD of its first differences / (0.6745 sqrt 2).

    With ``step > 1``, from every ``step``-th difference (consecutive frames still).
    """
    return mad_noise(x[:, 1::step] - x[:, :-1:step])  # every step-th difference, no more


def _correlation(ab: np.ndarray, aa: np.ndarray, bb: np.ndarray) -> np.ndarray:
    """Correlation of rows from their centred products: ``a.b``, ``a.a`` and ``b.b``."""
    denom = np.sqrt(aa * bb)
    return np.where(denom > 0, ab / np.where(denom > 0, denom, 1.0), 0.0)


def _trace_features(
    evidence, A, dims, scale, profiles=None, options=None, threads: int = 1
) -> np.ndarray:
    """Trace features; with ``profiles`` (an (N, 2, S) array) also the transient profiles.

    With ``threads > 1``, chunks (of ``1 / threads`` the usual rows, so that the memory
    held stays the same) are computed that many at a time while the next is read; every
    component's numbers are computed from its own row alone, whatever the chunk.
    """
    traces = evidence.traces
    threads = max(1, int(threads))
    rows = max(1, _TRACE_ELEMENTS // max(traces.frames, 1) // threads)
    out = np.zeros((traces.n, len(FEATURE_GROUPS["traces"])))

    def work(start: int, chunk: dict) -> None:
        _trace_chunk(evidence, start, chunk, out, profiles, options)

    if threads == 1:
        for start, chunk in traces.chunks(rows):
            work(start, chunk)
        return out
    with ThreadPoolExecutor(max_workers=threads) as pool:  # NumPy releases the GIL
        pending: list = []
        for start, chunk in traces.chunks(rows):
            pending.append(pool.submit(work, start, chunk))
            if len(pending) > threads:
                pending.pop(0).result()
        for future in pending:
            future.result()
    return out


def _trace_chunk(evidence, start: int, chunk: dict, out, profiles, options) -> None:
    """Trace features (and profiles) of the rows ``start:start + len(chunk)``, into ``out``.

    Each centred trace and each product of two is computed once and shared by the
    features that read it.
    """
    C = chunk["C"]
    has_residual = chunk.get("YrA") is not None
    residual = chunk["YrA"] if has_residual else np.zeros_like(C)
    raw = C + residual
    if profiles is not None:
        profiles[start : start + len(C)] = transient_profiles(
            C, chunk.get("YrA"), frame_rate=evidence.frame_rate, **dict(options or {})
        )
    # order statistics from at most _ORDER_FRAMES frames (evenly spaced): the same
    # numbers to within noise, several times faster on long recordings
    step = max(1, C.shape[1] // _ORDER_FRAMES)
    base, top = sorted_percentile(np.sort(C[:, ::step], axis=1), [50, 99])
    amplitude = top - base
    noise = _robust_sd((raw if has_residual else C)[:, : step * _ORDER_FRAMES], step)
    noise = np.maximum(noise, 1e-6 * np.maximum(np.abs(amplitude), 1e-12))
    c_dev, raw_dev, r_dev = _centred(C), _centred(raw), _centred(residual)
    c_c, raw_raw = _row_dot(c_dev, c_dev), _row_dot(raw_dev, raw_dev)
    share = c_c / np.where(raw_raw > 0, raw_raw, 1.0)
    active = ((C - base[:, None]) > 0.2 * np.maximum(amplitude, 1e-12)[:, None]).mean(axis=1)
    later, earlier = r_dev[:, 1:], r_dev[:, :-1]
    out[start : start + len(C)] = np.column_stack(
        [
            np.log1p(np.maximum(amplitude, 0) / noise),
            np.clip(_skew(raw_dev), -20, 20),
            np.clip(_skew(c_dev), -20, 20),
            np.clip(share, 0, 2),
            _correlation(_row_dot(c_dev, raw_dev), c_c, raw_raw),
            active,
            np.clip(_skew(_centred(np.diff(C, axis=1))), -20, 20),
            _correlation(
                _row_dot(later, earlier), _row_dot(later, later), _row_dot(earlier, earlier)
            ),
        ]
    )


def _metric_features(evidence, A, dims, scale) -> np.ndarray:
    n = A.shape[1]
    snr = np.zeros(n) if evidence.SNR_comp is None else np.ravel(evidence.SNR_comp)
    r_values = np.zeros(n) if evidence.r_values is None else np.ravel(evidence.r_values)
    snr = np.log1p(np.clip(np.nan_to_num(snr, nan=0.0), 0, 1e6))
    return np.column_stack([snr, np.clip(np.nan_to_num(r_values, nan=0.0), -1, 1)])
