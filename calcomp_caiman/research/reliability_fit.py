"""Fit and check a model's reliability map: signals per file against its measured error.

:mod:`calcomp_caiman.model.reliability` turns a file's signals into an expected error with a
map stored in the model folder (``reliability.json``). This module makes that map:

1. :func:`observe_file` classifies one labelled result (the run-time pass, with the
   :class:`~calcomp_caiman.model.reliability.BranchOutputs` hook) and measures its error:
   ``1 -`` the share of labelled components whose most probable class the label allows
   (:func:`measured_error`; unlabelled hybrid components, code :data:`UNLABELLED`, left
   out);
2. :data:`CORRUPTIONS` make files with deliberately wrong evidence from the labelled ones
   (a correlation image on another scale, a mean image read as ``Cn``, traces scaled or
   replaced by noise, blurred footprints), so that the map sees errors the clean files do
   not show;
3. :func:`reference_quantiles` of the clean fitting files' features and
   :func:`~calcomp_caiman.model.reliability.feature_shifts` complete the signals
   (:func:`signal_table`);
4. :func:`fit_reliability` fits the map on the model's own training and validation files
   (non-negative ridge on standardised signals, the penalty chosen by cross-validation
   over groups of files), and :func:`held_out_report` scores it on held-out files only:
   Spearman rank correlation of expected and measured error, and which files are flagged.

``recipes/calibrate_reliability.py`` runs it all on the simulated, hybrid and real-mask
data and writes a plot (:func:`plot_reliability`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import scipy.optimize
import scipy.sparse
import scipy.stats

from calcomp_caiman.classify import classify_with_embedding
from calcomp_caiman.evidence.evidence import Evidence
from calcomp_caiman.evidence.traces import Traces
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.model.ood import OodReference
from calcomp_caiman.model.reliability import (
    MARGIN,
    SIGNALS,
    BranchOutputs,
    ReliabilityMap,
    feature_shifts,
    file_signals,
    reference_quantiles,
)
from calcomp_caiman.research.labelled_results import LabelledResult
from calcomp_caiman.research.v3_inputs import UNLABELLED
from calcomp_caiman.schema import label_masks

logger = logging.getLogger(__name__)

__all__ = [
    "CORRUPTIONS",
    "FileObservation",
    "corrupt",
    "describe",
    "fit_reliability",
    "held_out_report",
    "measured_error",
    "observe_file",
    "plot_reliability",
    "signal_table",
]

MIN_LABELLED = 10
"""Files with fewer labelled components are left out (their error is too noisy)."""

L2_GRID = (0.1, 1.0, 10.0, 100.0)
"""Ridge penalties tried by :func:`fit_reliability`."""


def measured_error(probs: np.ndarray, labels: np.ndarray) -> float:
    """Share of labelled components whose most probable class the label does not allow.

    Labels are codes 1-4, 0 for ``non_neuron`` (process or noise allowed) and
    :data:`UNLABELLED` (left out); ``nan`` without labelled components.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[0.9, 0.1, 0, 0], [0, 0.6, 0.4, 0], [0.5, 0, 0, 0.5]])
    >>> round(measured_error(probs, np.array([1, 0, 3])), 4)
    0.3333
    >>> measured_error(probs, np.array([1, 0, UNLABELLED]))
    0.0
    """
    labels = np.asarray(labels, np.int64)
    known = labels != UNLABELLED
    if not known.any():
        return float("nan")
    top = np.asarray(probs)[known].argmax(axis=1)
    allowed = label_masks(labels[known])[np.arange(int(known.sum())), top]
    return float(1.0 - allowed.astype(np.float64).mean())


def _rebuilt(evidence: Evidence, **changes) -> Evidence:
    """``evidence`` with some arrays replaced, checked again as a reader's would be."""
    fields = {
        "traces": evidence.traces, "g": evidence.g, "neurons_sn": evidence.neurons_sn,
        "Cn": evidence.Cn, "image": evidence.image, "SNR_comp": evidence.SNR_comp,
        "r_values": evidence.r_values, "gSig": evidence.gSig,
        "frame_rate": evidence.frame_rate, "source": evidence.source,
        "dropped": evidence.dropped,
    }  # fmt: skip
    if evidence.caiman_accepted is not None:
        fields["idx_components"] = np.flatnonzero(evidence.caiman_accepted)
    fields.update(changes)
    A = changes.pop("A", evidence.A)
    fields.pop("A", None)
    return Evidence.build(A, evidence.dims, **fields)


def _trace_arrays(traces: Traces) -> dict[str, np.ndarray]:
    """Every trace of ``traces`` in memory (``C`` and, when present, ``YrA``, ``S``)."""
    parts = [chunk for _, chunk in traces.chunks(max(traces.n, 1))]
    return {name: np.concatenate([p[name] for p in parts]) for name in traces.names}


def _mean_image(evidence: Evidence) -> np.ndarray:
    """A mean image made of the footprints and mean traces, scaled to [0, 1]."""
    weights = np.ones(evidence.n)
    if evidence.traces is not None:
        C = _trace_arrays(evidence.traces)["C"].astype(np.float64)
        weights = np.maximum(C.mean(axis=1), 0.0) + 1e-3
    image = np.asarray(evidence.A @ weights).reshape(evidence.dims, order="F")
    return (image + 0.1 * image.max()) / max(1.1 * image.max(), 1e-12)


def _blur_matrix(size: int, sigma: float) -> scipy.sparse.csr_matrix:
    radius = int(np.ceil(2 * sigma))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    return scipy.sparse.diags(kernel, offsets, shape=(size, size), format="csr")


def _blurred(evidence: Evidence, sigma: float = 1.5) -> Evidence:
    """Footprints blurred by a Gaussian of ``sigma`` px (values below 1 % of a footprint's
    peak cut)."""
    rows, cols = evidence.dims[:2]
    blur = scipy.sparse.kron(_blur_matrix(cols, sigma), _blur_matrix(rows, sigma), "csr")
    if len(evidence.dims) > 2:
        blur = scipy.sparse.kron(scipy.sparse.identity(int(np.prod(evidence.dims[2:]))), blur)
    A = scipy.sparse.csc_matrix(blur @ evidence.A)
    peak = np.asarray(abs(A).max(axis=0).todense()).ravel()
    A.data[np.abs(A.data) < 0.01 * np.repeat(peak, np.diff(A.indptr))] = 0.0
    A.eliminate_zeros()
    return _rebuilt(evidence, A=A)


def _noise_traces(evidence: Evidence, seed: int = 0) -> Evidence:
    """Traces replaced by noise of the residual's size: no transients left."""
    C = _trace_arrays(evidence.traces)["C"].astype(np.float64)
    rng = np.random.default_rng(seed)
    size = np.std(C, axis=1, keepdims=True) + 1e-6
    noise = rng.normal(0.0, 1.0, C.shape) * size
    return _rebuilt(evidence, traces=Traces.from_arrays(np.abs(noise) * 0.1, noise, None))


def _scaled_traces(evidence: Evidence, factor: float = 100.0) -> Evidence:
    arrays = _trace_arrays(evidence.traces)
    scaled = Traces.from_arrays(**{name: value * factor for name, value in arrays.items()})
    return _rebuilt(evidence, traces=scaled)


CORRUPTIONS: dict[str, Callable[[Evidence], Evidence | None]] = {
    "cn_scaled": lambda e: None if e.Cn is None else _rebuilt(e, Cn=0.3 * e.Cn),
    "cn_shifted": lambda e: None if e.Cn is None else _rebuilt(e, Cn=0.5 + 0.5 * e.Cn),
    "cn_times_10": lambda e: None if e.Cn is None else _rebuilt(e, Cn=10.0 * e.Cn),
    "cn_mean_image": lambda e: None if e.Cn is None else _rebuilt(e, Cn=_mean_image(e)),
    "traces_scaled": lambda e: None if e.traces is None else _scaled_traces(e),
    "traces_noise": lambda e: None if e.traces is None else _noise_traces(e),
    "footprints_blurred": _blurred,
}
"""Files with deliberately wrong evidence: name -> function of the evidence (None where
the evidence it changes is absent). ``cn_times_10`` leaves ``[-1, 1]``, so the evidence
check drops it (``dropped_evidence``); the others pass the checks."""


def corrupt(evidence: Evidence, name: str) -> Evidence | None:
    """:data:`CORRUPTIONS` ``name`` applied to ``evidence`` (None: not applicable).

    Examples
    --------
    >>> import numpy as np
    >>> A = np.zeros((20 * 20, 2)); A[:30, 0] = 1; A[200:230, 1] = 1
    >>> ev = Evidence.build(A, (20, 20), Cn=np.full((20, 20), 0.5))
    >>> corrupt(ev, "cn_times_10").dropped["Cn"][:18], corrupt(ev, "traces_noise")
    ('outside [-1, 1] (m', None)
    """
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {sorted(CORRUPTIONS)}.")
    return CORRUPTIONS[name](evidence)


class FileObservation(NamedTuple):
    """One classified file: its signals (shifts not yet set), features and error."""

    signals: dict
    """:func:`~calcomp_caiman.model.reliability.file_signals` without reference quantiles."""
    features: np.ndarray | None
    """(n, F) features of the non-empty components (None: the model reads none)."""
    error: float
    """:func:`measured_error`."""
    labelled: int
    """Components with a label."""


def observe_file(
    model: CalcompModel,
    evidence: Evidence,
    labels: np.ndarray,
    *,
    ood_reference: OodReference | None = None,
) -> FileObservation:
    """Classify one labelled file as :func:`~calcomp_caiman.classify.classify` does and
    measure its error."""
    outputs = BranchOutputs(model, evidence.n)
    probs, embedding = classify_with_embedding(evidence, model, observe=outputs.add)
    signals = file_signals(model, evidence, probs, embedding, outputs, ood_reference=ood_reference)  # fmt: skip
    nonempty = np.diff(evidence.A.indptr) > 0
    features = outputs.features[nonempty] if outputs.has_features else None
    labels = np.asarray(labels, np.int64)
    labelled = int(np.sum(labels != UNLABELLED))
    return FileObservation(signals, features, measured_error(probs, labels), labelled)


def signal_table(
    rows: Sequence[Mapping], observations: Sequence[FileObservation], *, reference: Iterable[bool]
) -> tuple[list[dict], dict]:
    """Complete the signals with the feature shifts against the reference files' quantiles.

    Parameters
    ----------
    rows : sequence of dict
        One description per file (``file``, ``kind``, ``variant``, ``fit``, ...).
    observations : sequence of FileObservation
        :func:`observe_file` of the same files.
    reference : iterable of bool
        Which files' features make the reference quantiles (clean fitting files).

    Returns
    -------
    table : list of dict
        Each row with ``error``, ``labelled`` and every signal of :data:`SIGNALS`.
    quantiles : dict
        :func:`~calcomp_caiman.model.reliability.reference_quantiles`.
    """
    reference = list(reference)
    pooled = [o.features for o, r in zip(observations, reference) if r and o.features is not None]
    quantiles = reference_quantiles(np.concatenate(pooled)) if pooled else {}
    table = []
    for row, observation in zip(rows, observations):
        signals = dict(observation.signals)
        signals.update(feature_shifts(observation.features, quantiles))
        table.append({**row, "error": observation.error, "labelled": observation.labelled, **signals})  # fmt: skip
    return table, quantiles


def _matrix(table: Sequence[Mapping], signals: Sequence[str]) -> np.ndarray:
    return np.array([[float(row.get(s, np.nan)) for s in signals] for row in table], np.float64)


def _nonnegative_ridge(z: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """``min |z w + b - y|^2 + l2 |w|^2`` with ``w >= 0`` (and ``b >= 0``)."""
    m, k = z.shape
    design = np.block([[z, np.ones((m, 1))], [np.sqrt(l2) * np.eye(k), np.zeros((k, 1))]])
    solution, _ = scipy.optimize.nnls(design, np.concatenate([y, np.zeros(k)]))
    return solution[:k], float(solution[k])


def _standardise(x: np.ndarray, centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    z = (x - centre) / scale
    return np.where(np.isfinite(z), z, 0.0)


def fit_reliability(
    table: Sequence[Mapping],
    *,
    quantiles: Mapping | None = None,
    signals: Sequence[str] = SIGNALS,
    l2_grid: Sequence[float] = L2_GRID,
    model_sha256: str = "",
    margin: float = MARGIN,
) -> ReliabilityMap:
    """Fit the map from signals to measured error on the fitting files.

    Parameters
    ----------
    table : sequence of dict
        Rows of :func:`signal_table` to fit on (``error``, the signals, ``group``: files
        that must be held out together in the cross-validation, ``variant``: ``"none"``
        for a clean file).
    quantiles : mapping, optional
        Stored in the map (the reference of the shifts).
    signals : sequence of str
        Signals to use; those constant over the table get coefficient 0.
    l2_grid : sequence of float
        Penalties tried; the one with the lowest grouped cross-validated squared error wins.
    model_sha256 : str
    margin : float

    Returns
    -------
    ReliabilityMap
        ``in_distribution_error``: the mean expected error of the clean fitting files.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> table = [{"entropy": e, "ood": 1.0, "error": 0.5 * e, "group": str(i % 4),
    ...           "variant": "none"} for i, e in enumerate(rng.random(40))]
    >>> m = fit_reliability(table, signals=("ood", "entropy"))
    >>> m.coefficients[0], round(m.expected_error({"ood": 1.0, "entropy": 0.8}), 2)
    (0.0, 0.4)
    """
    rows = [r for r in table if np.isfinite(float(r["error"]))]
    if len(rows) < 3:
        raise ValueError(f"fit_reliability needs at least 3 files with an error, got {len(rows)}.")  # fmt: skip
    signals = tuple(signals)
    x = _matrix(rows, signals)
    y = np.array([float(r["error"]) for r in rows])
    finite = np.isfinite(x)
    count = np.maximum(finite.sum(axis=0), 1)
    centre = np.where(finite, x, 0.0).sum(axis=0) / count
    spread = np.sqrt(np.where(finite, (x - centre) ** 2, 0.0).sum(axis=0) / count)
    scale = np.where(spread > 1e-9, spread, 1.0)
    z = _standardise(x, centre, scale)
    groups = np.array([str(r.get("group", i)) for i, r in enumerate(rows)])
    l2 = _choose_l2(z, y, groups, l2_grid)
    weights, intercept = _nonnegative_ridge(z, y, l2)
    fitted = np.clip(z @ weights + intercept, 0.0, 1.0)
    clean = np.array([r.get("variant", "none") == "none" for r in rows])
    baseline = float(fitted[clean].mean() if clean.any() else fitted.mean())
    return ReliabilityMap(
        signals,
        tuple(round(float(v), 6) for v in centre),
        tuple(round(float(v), 6) for v in scale),
        tuple(round(float(v), 6) for v in weights),
        round(intercept, 6),
        round(baseline, 6),
        dict(quantiles or {}),
        model_sha256,
        margin,
        {"l2": l2, "fit_files": len(rows), "fit_clean_files": int(clean.sum())},
    )


def _choose_l2(z: np.ndarray, y: np.ndarray, groups: np.ndarray, grid: Sequence[float]) -> float:
    unique = np.unique(groups)
    if len(grid) == 1 or len(unique) < 3:
        return float(grid[len(grid) // 2])
    folds = np.arange(len(unique)) % min(5, len(unique))
    fold_of = dict(zip(unique, folds))
    fold = np.array([fold_of[g] for g in groups])
    errors = []
    for l2 in grid:
        residual = 0.0
        for k in np.unique(fold):
            train = fold != k
            w, b = _nonnegative_ridge(z[train], y[train], l2)
            residual += float(np.sum((np.clip(z[~train] @ w + b, 0, 1) - y[~train]) ** 2))
        errors.append(residual)
    return float(grid[int(np.argmin(errors))])


def held_out_report(table: Sequence[Mapping], reliability: ReliabilityMap) -> dict:
    """How well the map ranks and flags held-out files.

    Parameters
    ----------
    table : sequence of dict
        Rows of :func:`signal_table` of held-out files (``file``, ``variant``, ``error``).
    reliability : ReliabilityMap

    Returns
    -------
    dict
        ``files``; ``spearman`` (and its ``p_value``) of expected against measured error;
        ``in_distribution_error`` and ``flag_above`` (expected-error cut);
        ``high_error_files``: measured error above ``in_distribution_error + margin``;
        ``high_error_flagged``; ``in_distribution_flagged`` / ``in_distribution_files``
        (measured error at most ``in_distribution_error``: the files no flag should touch);
        ``clean_flagged`` / ``clean_files`` (unaltered files, whatever their error);
        ``flagged``: the flagged files (``file``, ``variant``, ``expected``, ``measured``);
        ``by_variant``: mean measured and expected error and flags per variant.

    Examples
    --------
    >>> m = ReliabilityMap(("entropy",), (0.3,), (0.1,), (0.5,), 0.2, 0.2)
    >>> rows = [{"file": f"f{i}", "variant": "none", "entropy": 0.3 + 0.05 * i,
    ...          "error": 0.2 + 0.1 * i} for i in range(5)]
    >>> report = held_out_report(rows, m)
    >>> report["spearman"], report["high_error_files"], report["high_error_flagged"]
    (1.0, 3, 3)
    """
    rows = [r for r in table if np.isfinite(float(r["error"]))]
    expected = np.array([reliability.expected_error(r) for r in rows])
    measured = np.array([float(r["error"]) for r in rows])
    cut = reliability.warning_level
    flagged = expected > cut
    high = measured > cut
    in_distribution = measured <= reliability.in_distribution_error
    clean = np.array([r.get("variant", "none") == "none" for r in rows])
    rho, p_value = (scipy.stats.spearmanr(expected, measured) if len(rows) > 2 else (np.nan, np.nan))  # fmt: skip
    by_variant = {}
    for variant in sorted({r.get("variant", "none") for r in rows}):
        mask = np.array([r.get("variant", "none") == variant for r in rows])
        by_variant[variant] = {
            "files": int(mask.sum()),
            "measured": round(float(measured[mask].mean()), 4),
            "expected": round(float(expected[mask].mean()), 4),
            "flagged": int(flagged[mask].sum()),
        }
    return {
        "files": len(rows),
        "spearman": None if not np.isfinite(rho) else round(float(rho), 4),
        "p_value": None if not np.isfinite(p_value) else float(p_value),
        "in_distribution_error": reliability.in_distribution_error,
        "flag_above": round(cut, 4),
        "high_error_files": int(high.sum()),
        "high_error_flagged": int((high & flagged).sum()),
        "in_distribution_files": int(in_distribution.sum()),
        "in_distribution_flagged": int((in_distribution & flagged).sum()),
        "clean_files": int(clean.sum()),
        "clean_flagged": int((clean & flagged).sum()),
        "flagged": [
            {
                "file": r.get("file", ""),
                "variant": r.get("variant", "none"),
                "expected": round(float(e), 4),
                "measured": round(float(m), 4),
            }
            for r, e, m, f in zip(rows, expected, measured, flagged)
            if f
        ],  # fmt: skip
        "by_variant": by_variant,
    }


def plot_reliability(
    table: Sequence[Mapping], reliability: ReliabilityMap, path, *, title: str = ""
) -> None:
    """Scatter of expected against measured error (held-out files marked), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table if np.isfinite(float(r["error"]))]
    expected = np.array([reliability.expected_error(r) for r in rows])
    measured = np.array([float(r["error"]) for r in rows])
    held = np.array([not r.get("fit", False) for r in rows])
    variants = sorted({r.get("variant", "none") for r in rows})
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for k, variant in enumerate(variants):
        mask = np.array([r.get("variant", "none") == variant for r in rows])
        ax.scatter(expected[mask & ~held], measured[mask & ~held], s=10, alpha=0.25,
                   color=colours(k % 10))  # fmt: skip
        ax.scatter(expected[mask & held], measured[mask & held], s=28, marker="o",
                   edgecolors="black", linewidths=0.5, color=colours(k % 10), label=variant)  # fmt: skip
    cut = reliability.in_distribution_error + reliability.margin
    ax.axvline(cut, color="red", linestyle="--", linewidth=1, label=f"flag above {cut:.2f}")
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("expected error (reliability map)")
    ax.set_ylabel("measured error (1 - 4-class accuracy)")
    ax.set_title(title or "held-out files (outlined) and fitting files (faint)")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def describe(item: LabelledResult, variant: str, *, fit: bool) -> dict:
    """The table row describing one (possibly corrupted) labelled result."""
    return {
        "file": f"{item.source}/{item.group}/{item.method}",
        "kind": item.source,
        "setting": item.setting,
        "method": item.method,
        "group": item.group,
        "variant": variant,
        "fit": bool(fit),
    }
