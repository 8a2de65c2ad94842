"""Recipe: train and evaluate model v3 (``calcomp_caiman/models/calcomp_v3``).

Inputs (data folders, given as arguments):

* ``--sim``: simulated movies run through real CaImAn (CNMF and OnACID) by
  ``recipes/build_caiman_sim_data.py`` (``research.labelled_results.load_simulated``);
* ``--hybrid``: simulated sources injected into real recordings and run through real
  CaImAn by ``recipes/build_hybrid_data.py`` (``research.train_branches.load_hybrid_results``:
  the recordings' own cells are unlabelled neighbours); optional;
* ``--real``: the real labelled masks (``../shared/data/real_rois``): image branch and
  head without traces, ``Cn`` or mean image.

Steps:

1. split, always by whole movie, recording or video: simulator presets marked held out
   and hybrid results marked held out (``optinist_mouse2p``, the movie behind the shared
   ``real_mouse2p_*`` results) are test sets; in every other preset and recording the
   movie with the last name is validation, the rest training; real videos as for v1 and v2
   (``train.held_out_videos`` of ``calcomp_v2``: validation and test videos never trained on);
2. ``train.train(..., v3_settings=V3Settings())`` (``research.train_branches.train_v3``):
   inputs by the run-time functions (channels, transient profiles, features), the image
   branch with channel dropout, the temporal branch, the fusion head with missing-evidence
   copies, temperatures and the acceptance cut on the validation set, every source
   weighing the same and the cut keeping >= 95 % of the true neurons of every source;
3. the model folder is written (``--out``), loaded back, and scored on every test set with
   ``classify_evidence`` (what ``calcomp classify`` computes), beside model v2 and CaImAn's
   own selection: per-class F1, macro-F1, neuron-vs-rest AUC, accepted-set F1, recall of
   true neurons at the default rule, noise rejected, calibration error, and the best cut
   against the default one; written to ``evaluation.json`` in the model folder.

Usage (``--quick``: tiny network, 2 epochs, to check the data and the pipeline;
``--evaluate-only``: no training, step 3 for the model already in ``--out``, e.g. after
more held-out results were built)::

    .venv/bin/python recipes/train_calcomp_v3.py --sim ~/.cache/calcomp/simdata \\
        --hybrid ~/.cache/calcomp/hybrid --real ../shared/data/real_rois
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from pathlib import Path

# TensorFlow 2.21's oneDNN kernels crashed Keras training here (double free, segfault) in
# most runs of a plain build_resnet fit on random data; without them, none did. Set before
# Keras is first imported; TensorFlow remains the backend the environment chose.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np

from calcomp_caiman.classify import classify_evidence
from calcomp_caiman.evidence.patches import footprints_for
from calcomp_caiman.io.atomic import atomic_write_text
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.model.ood import (
    calibrate_ood_threshold,
    evidence_distances,
    file_score,
    fit_evidence_reference,
    save_ood_reference,
)
from calcomp_caiman.research.baselines import caiman_rule_probs, fit_baselines, shape_features
from calcomp_caiman.research.labelled_results import (
    load_real_masks,
    load_simulated,
    result_patches,
    split,
    split_hybrid,
)
from calcomp_caiman.research.metrics import report_row
from calcomp_caiman.research.train import held_out_videos, train
from calcomp_caiman.research.train_branches import load_hybrid_results
from calcomp_caiman.research.v3_inputs import UNLABELLED, V3Settings

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "calcomp_caiman" / "models" / "calcomp_v3"
CACHE = Path.home() / ".cache" / "calcomp"
QUICK = {"widths": (4, 8), "blocks": (1, 1), "epochs": 2, "head_grid": ((8, 1e-3),)}
log = logging.getLogger("train_calcomp_v3")


ABLATIONS = {  # evidence removed at inference: the model's own missing-evidence path
    "v3-no-traces": ("traces",),
    "v3-no-image": ("image",),
    "v3-no-metrics": ("metrics",),
    "v3-footprints-only": ("traces", "image", "metrics"),
}


def _labelled(item) -> np.ndarray:
    return item.labels != UNLABELLED


def method_probs(model: CalcompModel, v2: CalcompModel, items, baselines: dict) -> dict:
    """Per method, the probabilities of the labelled components of every result of a set."""

    def run(m, evidence, keep):
        return classify_evidence(evidence, m)[keep]

    out: dict[str, list] = {"v3": [], "v2": [], **{name: [] for name in ABLATIONS}}
    rule, cnn, shape = [], [], []
    for item in items:
        keep = _labelled(item)
        out["v3"].append(run(model, item.evidence, keep))
        out["v2"].append(run(v2, item.evidence, keep))
        for name, kinds in ABLATIONS.items():
            present = [k for k in kinds if k in item.evidence.kinds]
            out[name].append(run(model, item.evidence.without(*present), keep))
        stored = caiman_rule_probs(item.caiman_accepted)
        rule.append(None if stored is None else stored[keep])
        patches, features = baseline_inputs(v2, item)
        shape.append(baselines["shape_baseline"].predict_proba(features))
        if "caiman_cnn" in baselines:
            cnn.append(baselines["caiman_cnn"].predict(patches))
    if all(r is not None for r in rule):
        out["caiman-rule"] = rule
    out["shape-features"] = shape
    if cnn:
        out["caiman-cnn"] = cnn
    return out


def baseline_inputs(v2: CalcompModel, item) -> tuple[np.ndarray, np.ndarray]:
    """The baselines' inputs of the labelled components: v2's 50 x 50 crops, shape features."""
    keep = _labelled(item)
    flat, dims, scale = footprints_for(item.evidence, v2.scale_rule)
    return result_patches(v2, item)[keep], shape_features(flat, dims, gSig=scale)[keep]


def fit_shape_baselines(v2: CalcompModel, train_items, val_items, *, cnn: bool, seed: int) -> dict:
    """The shape-feature baseline and CaImAn's CNN architecture, trained on the same results."""
    inputs = [baseline_inputs(v2, i) for i in train_items]
    val_patches = np.concatenate([baseline_inputs(v2, i)[0] for i in val_items])
    fitted, seconds = fit_baselines(
        np.concatenate([p for p, _ in inputs]), np.concatenate([f for _, f in inputs]),
        np.concatenate([i.labels[_labelled(i)] for i in train_items]),
        val_patches=val_patches, val_labels=np.concatenate([i.labels[_labelled(i)] for i in val_items]),
        cnn=cnn, seed=seed,
    )  # fmt: skip
    log.info("baselines trained: %s", {k: round(v) for k, v in seconds.items()})
    return fitted


def evaluation_sets(base_val, base_test, hybrid_val, hybrid_test) -> dict:
    """The report's sets: held-out simulated settings, held-out hybrid recording, real test
    masks (per method of the archive), each by method, and the validation sets."""
    sim = [i for i in base_test if i.source == "simulated"]
    real = [i for i in base_test if i.source == "real"]
    sets = {
        "simulated_heldout_cnmf": [i for i in sim if i.method == "cnmf"],
        "simulated_heldout_onacid": [i for i in sim if i.method == "onacid"],
        "hybrid_heldout_cnmf": [i for i in hybrid_test if i.method == "cnmf"],
        "hybrid_heldout_onacid": [i for i in hybrid_test if i.method == "onacid"],
        "real_test_masks": real,
        **{f"real_test_masks_{m}": [i for i in real if i.method == m]
           for m in sorted({i.method for i in real})},
        "validation_simulated": [i for i in base_val if i.source == "simulated"],
        "validation_hybrid": list(hybrid_val),
        "validation_real": [i for i in base_val if i.source == "real"],
    }  # fmt: skip
    return {name: items for name, items in sets.items() if items}


COLUMNS = ("v3", "v2", "v3-no-traces", "v3-no-image", "v3-no-metrics", "v3-footprints-only",
           "caiman-rule", "caiman-cnn", "shape-features")  # fmt: skip


def markdown(report: dict) -> str:
    """``evaluation.md``: one table per set, a row per number, a column per method."""

    def fmt(value) -> str:
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = [
        f"# calcomp_v3 evaluation (default rule P(neuron) >= {report['default_rule']['min_prob']})",
        "",
    ]
    numbers = (
        ("4-class macro-F1", lambda r: r["macro_f1"]),
        ("neuron-vs-rest ROC-AUC", lambda r: r["auc_neuron_vs_rest"]),
        (
            "true neurons kept at the default rule",
            lambda r: r["at_default_rule"]["accepted_recall"],
        ),
        ("accepted-set F1 at the default rule", lambda r: r["at_default_rule"]["accepted_f1"]),
        ("noise rejected at the default rule", lambda r: r["at_default_rule"]["noise_rejected"]),
        ("calibration error (ECE)", lambda r: r["ece"]),
        ("best cut", lambda r: r["best_cut"]),
        ("accepted-set F1 at the best cut", lambda r: r["at_best_cut"]["accepted_f1"]),
    )
    for name, rows in report["rows"].items():
        methods = [m for m in COLUMNS if m in rows]
        n = next(iter(rows.values()))["components"]
        lines += [f"## {name} ({n} labelled components)", "",
                  "| | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]  # fmt: skip
        for label, get in numbers:
            lines.append(f"| {label} | " + " | ".join(fmt(get(rows[m])) for m in methods) + " |")
        lines.append("")
    return "\n".join(lines)


def train_and_save(args, train_items, val, base_test, hybrid_test, videos, started) -> tuple:
    """Train model v3, save it to ``args.out`` with its OOD reference; the model as loaded
    back, and what the report says of its training. ``videos``: the real validation and
    test videos."""
    validation_videos, test_videos = videos
    settings = V3Settings(**{"epochs": args.epochs, **(QUICK if args.quick else {})})
    description = {
        "simulated": sorted({i.group for i in train_items if i.source == "simulated"}),
        "simulated_validation": sorted({i.group for i in val if i.source == "simulated"}),
        "simulated_test_presets": sorted({i.setting for i in base_test if i.source == "simulated"}),
        "hybrid": sorted({i.group for i in train_items if i.source == "hybrid"}),
        "hybrid_validation": sorted({i.group for i in val if i.source == "hybrid"}),
        "hybrid_test": sorted({i.group for i in hybrid_test}),
        "real_train_videos": sorted({i.group for i in train_items if i.source == "real"}),
        "real_validation_videos": sorted(validation_videos),
        "real_test_videos": sorted(test_videos),
        "components_train": int(sum(int(np.sum(i.labels != UNLABELLED)) for i in train_items)),
    }  # fmt: skip
    model, history = train(train_items, val, v3_settings=settings, name="calcomp_v3",
                           seed=args.seed, data_description=description)  # fmt: skip
    model.save(args.out)
    model = CalcompModel.load(args.out)
    log.info("saved %s after %.0f s", args.out, time.perf_counter() - started)
    # the OOD reference: every training component (the recordings' own unlabelled cells
    # are a group of their own), the threshold from the validation results' scores
    reference = fit_evidence_reference(model, [i.evidence for i in train_items],
                                       [i.labels for i in train_items],
                                       sources=[i.source for i in train_items])  # fmt: skip
    scores = [file_score(evidence_distances(i.evidence, model, reference)) for i in val]
    save_ood_reference(calibrate_ood_threshold(reference, scores), args.out)
    return model, {"settings": dataclasses.asdict(settings), "history": history}


def held_out_recorded(folder: Path, hybrid_test) -> tuple:
    """The model in ``folder`` (no training) and what its last report said of its training;
    its ``config.json`` records the held-out hybrid results scored now (every result of a
    held-out recording is held out by the split, so the list only grows with the data)."""
    previous = json.loads((folder / "evaluation.json").read_text())
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["training_data"]["hybrid_test"] = sorted({i.group for i in hybrid_test})
    atomic_write_text(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return CalcompModel.load(folder), {k: previous[k] for k in ("settings", "history")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sim", type=Path, default=CACHE / "simdata")
    parser.add_argument("--hybrid", type=Path, default=CACHE / "hybrid")
    parser.add_argument("--real", type=Path, default=ROOT.parent / "shared" / "data" / "real_rois")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--epochs", type=int, default=V3Settings.epochs)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny network, 2 epochs")
    parser.add_argument("--no-cnn-baseline", action="store_true",
                        help="skip training CaImAn's CNN architecture for the report")  # fmt: skip
    parser.add_argument("--evaluate-only", action="store_true",
                        help="no training: score the model in --out again (e.g. after more "
                             "held-out results were built) and record the held-out hybrid "
                             "results in its config.json")  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started = time.perf_counter()

    v2 = CalcompModel.load("calcomp_v2")
    validation_videos, test_videos = held_out_videos(v2)
    sim = load_simulated(args.sim)
    real = load_real_masks(args.real, set(test_videos))
    base_train, base_val, base_test = split(sim + real, validation_videos, test_videos)
    hybrid = load_hybrid_results(args.hybrid) if args.hybrid.is_dir() else []
    if not hybrid:
        log.warning("no hybrid results in %s: training on simulated results and masks only", args.hybrid)  # fmt: skip
    hybrid_train, hybrid_val, hybrid_test = split_hybrid(hybrid)
    train_items, val = base_train + hybrid_train, base_val + hybrid_val
    log.info("train %d results, validation %d, test %d",
             len(train_items), len(val), len(base_test) + len(hybrid_test))  # fmt: skip

    if args.evaluate_only:
        model, trained = held_out_recorded(args.out, hybrid_test)
    else:
        videos = (validation_videos, test_videos)
        model, trained = train_and_save(
            args, train_items, val, base_test, hybrid_test, videos, started
        )

    # ------------------------------------------------------------------ evaluation
    baselines = fit_shape_baselines(
        v2, train_items, val, cnn=not args.no_cnn_baseline, seed=args.seed
    )
    sets = evaluation_sets(base_val, base_test, hybrid_val, hybrid_test)
    min_prob = model.thresholds.get("min_prob")
    report = {
        **trained,
        "default_rule": {"accept": list(model.thresholds.get("accept") or ["neuron"]),
                         "min_prob": min_prob},
        "v2_default_rule": {"min_prob": v2.thresholds.get("min_prob")},
        "sets": {name: sorted({i.group for i in items}) for name, items in sets.items()},
        "rows": {},
    }  # fmt: skip
    cuts = {"v2": v2.thresholds.get("min_prob"), "caiman-rule": None, "caiman-cnn": None,
            "shape-features": None}  # fmt: skip
    for name, items in sets.items():
        labels = np.concatenate([i.labels[_labelled(i)] for i in items])
        rows = {}
        for method, probs in method_probs(model, v2, items, baselines).items():
            rows[method] = report_row(np.concatenate(probs), labels, cuts.get(method, min_prob))
        report["rows"][name] = rows
        log.info("%s (%d components): %s", name, len(labels), "; ".join(
            f"{m} recall {r['at_default_rule']['accepted_recall']:.3f} F1 "
            f"{r['at_default_rule']['accepted_f1']:.3f} AUC {r['auc_neuron_vs_rest'] or 0:.3f}"
            for m, r in rows.items()))  # fmt: skip
    report["seconds"] = time.perf_counter() - started
    atomic_write_text(
        args.out / "evaluation.json", json.dumps(report, indent=2, default=str) + "\n"
    )
    atomic_write_text(args.out / "evaluation.md", markdown(report))
    log.info("done after %.0f s", report["seconds"])


if __name__ == "__main__":
    main()
