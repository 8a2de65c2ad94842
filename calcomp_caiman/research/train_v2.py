"""Training data and fitting of model v2: the shape network plus a fusion head over evidence.

Labelled results come from two sources:

* simulated movies run through real CaImAn (``recipes/build_caiman_sim_data.py``): every
  component of every CNMF / OnACID result, with its traces, ``Cn`` and CaImAn's metrics,
  labelled by :func:`calcomp_caiman.research.gt_labels.label_components`;
* the real labelled masks of ``../shared/data/real_rois`` (shape and neighbours only;
  labels neuron / doubtful / non_neuron).

The shape network's logits and the evidence features are computed once per result
(:func:`result_inputs`), exactly as :func:`calcomp_caiman.classify.classify_evidence`
computes them at run time. Missing-evidence training duplicates the simulated results
with optional groups removed, so that every subset of evidence is a trained condition.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calcomp_caiman.evidence import Evidence
from calcomp_caiman.evidence.features import OPTIONAL_GROUPS, group_columns
from calcomp_caiman.io.caiman_h5 import read_evidence
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.model.head import FusionHead, fit_head, fit_temperature, head_inputs
from calcomp_caiman.refit import LabelledInputs, labelled_inputs
from calcomp_caiman.research.datasets import load_roi_archive
from calcomp_caiman.schema import CLASSES, label_masks

logger = logging.getLogger(__name__)

__all__ = [
    "LabelledResult",
    "load_simulated",
    "load_real_masks",
    "result_inputs",
    "drop_groups",
    "training_rows",
    "fit_v2_head",
    "fit_min_prob",
    "split",
    "validation_nll",
    "fit_ood",
    "result_patches",
]

METHODS = ("cnmf", "onacid")


@dataclass
class LabelledResult:
    """One result (file) with a label per component.

    Attributes
    ----------
    evidence : Evidence
    labels : (N,) int64 ndarray
        Codes 1-4, or 0 for ``non_neuron``.
    group : str
        The movie / video (whole groups are held out together).
    source : str
        ``"simulated"`` or ``"real"``.
    setting : str
        The simulator preset, or the real dataset.
    held_out : bool
        Whether the setting is one never used for training or tuning.
    method : str
        ``"cnmf"``, ``"onacid"``, or the real archive's method.
    caiman_accepted : (N,) bool ndarray, optional
        CaImAn's own ``idx_components`` (its SNR / r-value rule), when stored.
    """

    evidence: Evidence
    labels: np.ndarray
    group: str
    source: str
    setting: str
    held_out: bool
    method: str
    caiman_accepted: np.ndarray | None = None


def load_simulated(folder: str | Path, *, methods: Sequence[str] = METHODS) -> list[LabelledResult]:
    """Every labelled CaImAn result of a ``build_caiman_sim_data.py`` output folder."""
    folder = Path(folder)
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    held_out = set(manifest.get("held_out_presets", []))
    items = []
    for labels_path in sorted(folder.glob("*/*_labels.npz")):
        preset = labels_path.parent.name
        movie = labels_path.name[: -len("_labels.npz")]
        with np.load(labels_path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        for method in methods:
            path = labels_path.parent / f"{movie}_{method}.hdf5"
            if f"{method}_labels" not in arrays or not path.exists():
                continue
            try:
                evidence = read_evidence(path)
            except Exception as err:  # a result CaImAn could not finish: report, go on
                logger.warning("skipping %s: %s", path, err)
                continue
            labels = arrays[f"{method}_labels"].astype(np.int64)
            if len(labels) != evidence.n:
                logger.warning(
                    "skipping %s: %d labels, %d components", path, len(labels), evidence.n
                )
                continue
            accepted = arrays.get(f"{method}_caiman_accepted")
            items.append(
                LabelledResult(
                    evidence,
                    labels,
                    f"{preset}/{movie}",
                    "simulated",
                    preset,
                    preset in held_out,
                    method,
                    accepted,
                )  # fmt: skip
            )
    logger.info("loaded %d simulated results from %s", len(items), folder)
    return items


def load_real_masks(folder: str | Path, held_out_videos: set[str]) -> list[LabelledResult]:
    """The real labelled masks (one result per archive; shape and neighbours only)."""
    items = []
    for path in sorted(Path(folder).glob("*.npz")):
        with np.load(path, allow_pickle=False) as data:
            dataset = str(data["dataset"]) if "dataset" in data.files else ""
        source = load_roi_archive(path)
        video = f"{dataset}/{source.video}" if dataset else source.video
        evidence = Evidence.build(source.A, source.dims, source=str(path))
        items.append(
            LabelledResult(
                evidence,
                source.labels.astype(np.int64),
                video,
                "real",
                dataset or "real",
                video in held_out_videos,
                source.method or path.stem,
            )  # fmt: skip
        )
    return items


def result_inputs(model: CalcompModel, item: LabelledResult) -> LabelledInputs:
    """Shape logits and features of every component of one result (run-time pipeline)."""
    return labelled_inputs(model, item.evidence, np.arange(item.evidence.n))


def drop_groups(features: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """``features`` as if the optional ``groups`` were absent (their columns zeroed)."""
    out = np.array(features, copy=True)
    columns = group_columns()
    for group in groups:
        out[:, columns[group]] = 0.0
    return out


def training_rows(
    logits: Sequence[np.ndarray],
    features: Sequence[np.ndarray],
    items: Sequence[LabelledResult],
    *,
    copies: int = 3,
    p_drop: float = 0.5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Head inputs, allowed classes and weights, with missing-evidence copies.

    Every result appears once with all its evidence; results with optional evidence
    appear ``copies`` more times, each time with every present optional group dropped
    with probability ``p_drop`` (independently per copy and component). Classes are
    balanced within each source, and the two sources (simulated, real) get equal weight.
    """
    rng = np.random.default_rng(seed)
    columns = group_columns()
    rows, allowed, weights, sources = [], [], [], []
    for z, f, item in zip(logits, features, items):
        variants = [f]
        present = [g for g in OPTIONAL_GROUPS if f.shape[0] and f[0, columns[g][-1]] > 0]
        if present:
            for _ in range(copies):
                g = f.copy()
                for group in present:
                    drop = rng.random(len(g)) < p_drop
                    g[np.ix_(drop, columns[group])] = 0.0
                variants.append(g)
        for g in variants:
            rows.append(head_inputs(z, g))
            allowed.append(label_masks(item.labels).astype(bool))
            weights.append(np.full(len(g), 1.0 / len(variants)))
            sources.append(np.full(len(g), item.source, dtype=object))
    rows, allowed = np.concatenate(rows), np.concatenate(allowed)
    weights, sources = np.concatenate(weights), np.concatenate(sources)
    label_key = allowed.astype(np.int64) @ (1 << np.arange(allowed.shape[1]))  # a code per label
    balanced = np.zeros(len(rows))
    for source in np.unique(sources):
        in_source = sources == source
        keys = np.unique(label_key[in_source])
        for key in keys:
            members = in_source & (label_key == key)
            balanced[members] = weights[members] / weights[members].sum() / len(keys)
    return rows, allowed, balanced / balanced.mean()


def fit_v2_head(
    rows: np.ndarray, allowed: np.ndarray, weights: np.ndarray, *, hidden: int = 32, l2: float = 3e-4,
    seed: int = 0, max_iter: int = 600,
) -> FusionHead:  # fmt: skip
    """The fusion head of model v2 (see :func:`calcomp_caiman.model.head.fit_head`)."""
    return fit_head(rows, allowed, sample_weight=weights, hidden=hidden, l2=l2, seed=seed,
                    max_iter=max_iter)  # fmt: skip


def calibrate(model: CalcompModel, logits, features, items) -> dict[str, float]:
    """Temperatures of the head's logits on validation results (set NLL).

    ``temperature`` from the results with traces, ``temperature_without_traces`` from
    those without (masks; the real videos), as :meth:`CalcompModel.fuse` applies them.
    """
    from calcomp_caiman.evidence.features import feature_names

    column = feature_names().index("has_traces")
    z = np.concatenate([model.head.logits(head_inputs(a, b)) for a, b in zip(logits, features)])
    has = np.concatenate([b[:, column] > 0 for b in features])
    allowed = np.concatenate([label_masks(item.labels).astype(bool) for item in items])
    out = {}
    for key, rows in (("temperature", has), ("temperature_without_traces", ~has)):
        if rows.any():
            out[key] = fit_temperature(z[rows], allowed[rows])
    return out


def fit_min_prob(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The P(neuron) cut that maximises the F1 of the accepted set (neurons vs the rest).

    Returns the cut and its F1 on these (validation) components.
    """
    p = probs[:, CLASSES.index("neuron")]
    positive = labels == 1
    best = (0.5, -1.0)
    for cut in np.linspace(0.05, 0.95, 91):
        accepted = p >= cut
        tp = np.sum(accepted & positive)
        precision = tp / max(accepted.sum(), 1)
        recall = tp / max(positive.sum(), 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        if f1 > best[1] + 1e-9:
            best = (float(round(cut, 2)), float(f1))
    return best


def split(items: Sequence[LabelledResult], validation_videos, test_videos):
    """Train, validation and test results: whole movies and videos, never components.

    Simulated: presets marked held out are the test set; in every other preset the movie
    with the highest seed is validation, the rest training. Real: ``test_videos`` and
    ``validation_videos`` (as for v1), the rest training.
    """
    last = {}
    for item in items:
        if item.source == "simulated" and not item.held_out:
            last[item.setting] = max(last.get(item.setting, ""), item.group)
    train, val, test = [], [], []
    for item in items:
        if item.source == "simulated":
            target = test if item.held_out else val if item.group == last[item.setting] else train
        elif item.group in test_videos:
            target = test
        elif item.group in validation_videos:
            target = val
        else:
            target = train
        target.append(item)
    return train, val, test


def validation_nll(model: CalcompModel, logits, features, items) -> float:
    """Mean set NLL of ``model`` on validation results, simulated and real weighted equally."""
    from calcomp_caiman.model.head import probability_set_nll

    by_source: dict[str, list[float]] = {}
    for z, f, item in zip(logits, features, items):
        value = probability_set_nll(model.fuse(z, f), label_masks(item.labels))
        by_source.setdefault(item.source, []).extend([value] * len(item.labels))
    return float(np.mean([np.mean(values) for values in by_source.values()]))


def result_patches(model: CalcompModel, item: LabelledResult) -> np.ndarray:
    """Patches of every component of one result, cropped as the model crops them."""
    from calcomp_caiman.evidence.patches import crop_checked, footprints_for

    flat, dims, scale = footprints_for(item.evidence, model.scale_rule)
    return crop_checked(flat, dims, scale, model.patch_size)


def fit_ood(model: CalcompModel, train, calibration, measured_in, measured_out, *, seed: int = 0):
    """The out-of-distribution reference of a model v2, its threshold, and its ROC.

    Reference: a sample of the training results' patches (groups: class x source);
    threshold: 1.02 x the largest file score of the ``calibration`` results (validation);
    measured on ``measured_in`` (in-distribution results used for nothing else) against
    ``measured_out`` (the held-out simulator settings): ROC-AUC of the file scores and the
    share of each side flagged.
    """
    from calcomp_caiman.model.ood import calibrate_ood_threshold, fit_ood_reference, ood_score
    from calcomp_caiman.research.metrics import roc_auc

    rng = np.random.default_rng(seed)
    patches, groups = [], []
    for item in train:
        p = result_patches(model, item)
        keep = rng.permutation(len(p))[: max(1, min(len(p), 400))]
        patches.append(p[keep])
        groups.append(np.array([f"{item.source}-{c}" for c in item.labels[keep]]))
    reference = fit_ood_reference(model, np.concatenate(patches), np.concatenate(groups))

    def scores(items):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.array(
                [ood_score(i.evidence, model, reference=reference).score for i in items]
            )

    reference = calibrate_ood_threshold(reference, scores(calibration))
    inside, outside = scores(measured_in), scores(measured_out)
    labels = np.r_[np.zeros(len(inside), bool), np.ones(len(outside), bool)]
    report = {
        "threshold": reference.threshold,
        "auc_heldout_settings_vs_in_distribution": roc_auc(np.r_[inside, outside], labels),
        "flagged_in_distribution": float(np.mean(inside > reference.threshold)) if len(inside) else None,
        "flagged_heldout_settings": float(np.mean(outside > reference.threshold)) if len(outside) else None,
        "n_in_distribution": int(len(inside)),
        "n_heldout_settings": int(len(outside)),
        "scores_in_distribution": inside.round(4).tolist(),
        "scores_heldout_settings": outside.round(4).tolist(),
    }  # fmt: skip
    return reference, report
