"""The model v2 report: v2, v2 without each kind of evidence, v1 and three baselines.

On each test set (held-out simulator settings through real CaImAn, CNMF and OnACID; the
real test masks), every method's probabilities are scored with
:func:`calcomp_caiman.research.metrics.evaluation_metrics` plus the two numbers a CaImAn user
selects by: the share of noise rejected and the F1 of the accepted set (accepted =
the method's acceptance rule; true = neuron).

Methods: ``v2`` (its thresholds.json rule), ``v2-<group>`` (that evidence removed),
``v2-shape-only``, ``v1`` (the bundled shape model, as it classified before v2),
``caiman-rule`` (CaImAn's own SNR / r-value selection stored in the file, as
``evaluate_components`` applied it), ``caiman-cnn`` (CaImAn's CNN architecture trained
on the same data) and ``shape-features`` (shape features + logistic regression).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.research.metrics import evaluation_metrics
from calcomp_caiman.research.train_v2 import LabelledResult, drop_groups
from calcomp_caiman.schema import CLASSES

logger = logging.getLogger(__name__)

__all__ = [
    "ablations",
    "caiman_rule_probs",
    "run_report",
    "score_method",
    "selection_scores",
    "summary_table",
    "test_sets",
]

_NEURON = CLASSES.index("neuron")


def selection_scores(accepted: np.ndarray, labels: np.ndarray) -> dict:
    """Share of noise rejected and F1 of the accepted set against the true neurons."""
    accepted = np.asarray(accepted, bool)
    labels = np.asarray(labels)
    noise = labels == CLASSES.index("noise") + 1
    positive = labels == 1
    tp = int(np.sum(accepted & positive))
    precision = tp / max(int(accepted.sum()), 1)
    recall = tp / max(int(positive.sum()), 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    non_neuron = (labels == 0) | (labels == 2) | (labels == 3)
    return {
        "noise_rejected": float(1 - accepted[noise].mean()) if noise.any() else None,
        "non_neuron_rejected": float(1 - accepted[non_neuron].mean()) if non_neuron.any() else None,
        "accepted_precision": precision,
        "accepted_recall": recall,
        "accepted_f1": f1,
        "accepted": int(accepted.sum()),
    }


def score_method(
    probs: Sequence[np.ndarray],
    items: Sequence[LabelledResult],
    accept: Callable[[np.ndarray], np.ndarray],
) -> dict:
    """Pooled metrics of one method's probabilities over the results of a test set."""
    p = np.concatenate(probs)
    labels = np.concatenate([item.labels for item in items])
    report = evaluation_metrics(p, labels)
    report["selection"] = selection_scores(accept(p), labels)
    return report


def ablations(
    model: CalcompModel, logits: Sequence[np.ndarray], features: Sequence[np.ndarray]
) -> Mapping[str, list[np.ndarray]]:
    """v2's probabilities with all evidence, without each optional group, shape only."""
    from calcomp_caiman.evidence.features import OPTIONAL_GROUPS

    out = {"v2": [model.fuse(z, f) for z, f in zip(logits, features)]}
    for group in OPTIONAL_GROUPS:
        out[f"v2-no-{group}"] = [
            model.fuse(z, drop_groups(f, [group])) for z, f in zip(logits, features)
        ]
    out["v2-shape-only"] = [
        model.fuse(z, drop_groups(f, OPTIONAL_GROUPS)) for z, f in zip(logits, features)
    ]
    return out


def caiman_rule_probs(item: LabelledResult) -> np.ndarray | None:
    """CaImAn's stored selection as probabilities: accepted -> neuron, rejected -> noise."""
    if item.caiman_accepted is None:
        return None
    accepted = np.asarray(item.caiman_accepted, bool)
    probs = np.zeros((len(accepted), len(CLASSES)), np.float32)
    probs[accepted, _NEURON] = 1.0
    probs[~accepted, CLASSES.index("noise")] = 1.0
    return probs


def _patches_and_shape(model: CalcompModel, item: LabelledResult):
    """Patches at the model's crop scale, and the shape features of the baseline."""
    from calcomp_caiman.evidence.patches import crop_checked, footprints_for
    from calcomp_caiman.research.baselines import shape_features

    flat, dims, scale = footprints_for(item.evidence, model.scale_rule)
    return crop_checked(flat, dims, scale, model.patch_size), shape_features(flat, dims, gSig=scale)


def test_sets(val, test) -> dict[str, list[LabelledResult]]:
    """The report's test sets (and the validation set, for reference)."""
    simulated = [i for i in test if i.source == "simulated"]
    return {
        "simulated_heldout_cnmf": [i for i in simulated if i.method == "cnmf"],
        "simulated_heldout_onacid": [i for i in simulated if i.method == "onacid"],
        "simulated_heldout": simulated,
        "simulated_validation": [i for i in val if i.source == "simulated"],
        "real_test_masks": [i for i in test if i.source == "real"],
    }


def run_report(
    model: CalcompModel,
    v1: CalcompModel,
    train: Sequence[LabelledResult],
    val: Sequence[LabelledResult],
    test: Sequence[LabelledResult],
    *,
    inputs: Mapping[int, tuple] | None = None,
    cnn_baseline: bool = True,
    seed: int = 0,
) -> dict:
    """Score v2, its ablations, v1 and the baselines on every test set (a JSON-ready dict).

    The shape-feature baseline and CaImAn's CNN architecture are trained here on ``train``
    (the CNN early-stopped on ``val``), at the same crops as v2.
    """
    from calcomp_caiman.classify import classify_evidence
    from calcomp_caiman.research.baselines import ShapeBaseline, train_caiman_cnn_baseline
    from calcomp_caiman.research.train_v2 import result_inputs

    everything = [*train, *val, *test]
    inputs = dict(inputs or {})
    for item in everything:
        if id(item) not in inputs:
            inputs[id(item)] = result_inputs(model, item)
    shape = {id(i): _patches_and_shape(model, i) for i in everything}
    shape_model = ShapeBaseline().fit(
        np.concatenate([shape[id(i)][1] for i in train]), np.concatenate([i.labels for i in train])
    )
    cnn = None
    if cnn_baseline:
        cnn = train_caiman_cnn_baseline(
            np.concatenate([shape[id(i)][0] for i in train]),
            np.concatenate([i.labels for i in train]),
            val_patches=np.concatenate([shape[id(i)][0] for i in val]),
            val_labels=np.concatenate([i.labels for i in val]),
            seed=seed,
        )
    min_prob = model.thresholds.get("min_prob")
    report = {"model": model.name, "sha256": model.sha256, "min_prob": min_prob,
              "temperature": model.thresholds.get("temperature"), "sets": {}}  # fmt: skip
    for name, items in test_sets(val, test).items():
        if not items:
            continue
        logits = [inputs[id(i)].logits for i in items]
        features = [inputs[id(i)].features for i in items]
        methods = dict(ablations(model, logits, features))
        methods["v1"] = [classify_evidence(i.evidence, v1) for i in items]
        methods["shape-features"] = [shape_model.predict_proba(shape[id(i)][1]) for i in items]
        if cnn is not None:
            methods["caiman-cnn"] = [cnn.predict(shape[id(i)][0]) for i in items]
        rule = [caiman_rule_probs(i) for i in items]
        if all(r is not None for r in rule):
            methods["caiman-rule"] = rule
        rows = {}
        for method, probs in methods.items():
            if method.startswith("v2") and min_prob is not None:
                cut = float(min_prob)
                accept = lambda p, cut=cut: p[:, _NEURON] >= cut  # noqa: E731
            else:
                accept = lambda p: p.argmax(axis=1) == _NEURON  # noqa: E731
            rows[method] = score_method(probs, items, accept)
        report["sets"][name] = {
            "results": len(items),
            "components": int(sum(i.evidence.n for i in items)),
            "settings": sorted({i.setting for i in items}),
            "methods": rows,
        }
        logger.info("%s (%d components)", name, report["sets"][name]["components"])
        for method, r in rows.items():
            logger.info(
                "  %-18s macro-F1 %.3f  AUC %.3f  ECE %.3f  noise rejected %s  accepted-F1 %.3f",
                method, r["four_class"]["macro_f1"], r["auc_neuron_vs_rest"] or float("nan"),
                r["calibration"]["ece"], r["selection"]["noise_rejected"],
                r["selection"]["accepted_f1"],
            )  # fmt: skip
    return report


def summary_table(report: dict) -> str:
    """The report as a Markdown table per test set (for the model card)."""
    lines = []
    for name, entry in report["sets"].items():
        lines += [
            f"**{name}** ({entry['components']} components, {entry['results']} results)",
            "",
            "| method | 4-class macro-F1 | neuron-vs-rest AUC | ECE | noise rejected "
            "| accepted-set F1 |",
            "|---|---|---|---|---|---|",
        ]
        for method, r in entry["methods"].items():
            noise = r["selection"]["noise_rejected"]
            auc = r["auc_neuron_vs_rest"]
            lines.append(
                f"| {method} | {r['four_class']['macro_f1']:.3f} | "
                f"{'n/a' if auc is None else f'{auc:.3f}'} | {r['calibration']['ece']:.3f} | "
                f"{'n/a' if noise is None else f'{noise:.3f}'} | "
                f"{r['selection']['accepted_f1']:.3f} |"
            )
        lines.append("")
    return "\n".join(lines)
