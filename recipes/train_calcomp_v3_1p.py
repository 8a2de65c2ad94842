"""Recipe: the one-photon model ``calcomp_v3_1p`` (issue 23).

Model v3's image and temporal branches (``--base``, the two-photon ``calcomp_v3``) are kept;
its fusion head and calibration (temperatures, the acceptance cut) are fitted again on
CaImAn CNMF-E results of simulated one-photon movies (``recipes/build_cnmfe_data.py``,
``README_cnmfe.md``) by :func:`calcomp_caiman.research.train_v3_head.fit_fusion_head`.
The one-photon evidence differs from the two-photon one where the head reads it (large
blurred footprints that overlap, a strong fluctuating background, CaImAn's ``corr_pnr``
initialisation): the branches see the same kinds of input, the head learns how much to
trust each.

Split, by whole movie: presets marked held out are the test set; in every other preset the
movie with the last name is validation, the rest training. The folder is written to
``--out`` with ``"modality": "1p"`` in ``config.json`` (``classify`` picks it for
CNMF-E results), its OOD reference fitted on the training results, and ``evaluation.json``:
on every held-out preset, the one-photon model, the two-photon model as it is and CaImAn's
own selection (its ``min_corr`` / ``min_pnr`` / ``evaluate_components`` run as the demo
runs it).

Usage (minutes on 2 CPU cores; no Keras training)::

    .venv/bin/python recipes/train_calcomp_v3_1p.py --cnmfe ~/.cache/calcomp/cnmfe \\
        --out calcomp_caiman/models/calcomp_v3_1p
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from calcomp_caiman.classify import classify_evidence
from calcomp_caiman.io.atomic import atomic_write_text
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.model.ood import (
    calibrate_ood_threshold,
    evidence_distances,
    file_score,
    fit_evidence_reference,
    save_ood_reference,
)
from calcomp_caiman.research.baselines import caiman_rule_probs
from calcomp_caiman.research.labelled_results import load_simulated, split
from calcomp_caiman.research.metrics import report_row
from calcomp_caiman.research.train_v3_head import fit_fusion_head
from calcomp_caiman.research.v3_inputs import V3Settings, branch_inputs

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("train_calcomp_v3_1p")


def inputs_of(model: CalcompModel, items) -> list:
    """:func:`branch_inputs` of every result, as the base model's branches read them."""
    return [
        branch_inputs(i.evidence, patch_size=model.patch_size, channels=model.channel_names,
                      temporal_options=model.temporal_options)
        for i in items
    ]  # fmt: skip


def evaluate(models: dict[str, CalcompModel], items) -> dict:
    """Each model at its own default rule, and CaImAn's own selection, on ``items``."""
    labels = np.concatenate([i.labels for i in items])
    rows = {}
    for name, model in models.items():
        probs = np.concatenate([classify_evidence(i.evidence, model) for i in items])
        rows[name] = report_row(probs, labels, model.thresholds["min_prob"])
    rule = [caiman_rule_probs(i.caiman_accepted) for i in items]
    if all(r is not None for r in rule):
        rows["caiman-rule"] = report_row(np.concatenate(rule), labels, None)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="calcomp_v3", help="the two-photon model v3")
    parser.add_argument("--cnmfe", type=Path, default=Path.home() / ".cache/calcomp/cnmfe")
    parser.add_argument("--out", type=Path, default=ROOT / "calcomp_caiman/models/calcomp_v3_1p")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started = time.perf_counter()

    base = CalcompModel.load(args.base)
    items = load_simulated(args.cnmfe, methods=("cnmfe",))
    train_items, val, test = split(items, set(), set())
    log.info("train %d results, validation %d, test %d", len(train_items), len(val), len(test))
    settings = dataclasses.replace(V3Settings(), seed=args.seed)
    model, history = fit_fusion_head(base, train_items, inputs_of(base, train_items), val,
                                     inputs_of(base, val), settings=settings)  # fmt: skip
    training = {
        "base": base.name,
        "base_sha256": base.sha256,
        "cnmfe_train": sorted(i.group for i in train_items),
        "cnmfe_validation": sorted(i.group for i in val),
        "cnmfe_test": sorted(i.group for i in test),
        "components_train": int(sum(i.evidence.n for i in train_items)),
        "recipe": "recipes/train_calcomp_v3_1p.py",
    }
    model = model.with_head(model.head, name="calcomp_v3_1p", modality="1p",
                            one_photon=training).with_thresholds(**model.thresholds)  # fmt: skip
    model.save(args.out)
    model = CalcompModel.load(args.out)
    reference = fit_evidence_reference(model, [i.evidence for i in train_items],
                                       [i.labels for i in train_items])  # fmt: skip
    scores = [file_score(evidence_distances(i.evidence, model, reference)) for i in val]
    save_ood_reference(calibrate_ood_threshold(reference, scores), args.out)

    report = {"history": history, "training": training, "sets": {}}
    for preset in sorted({i.setting for i in test}):
        chosen = [i for i in test if i.setting == preset]
        report["sets"][preset] = evaluate({"v3_1p": model, "v3_2p": base}, chosen)
    report["sets"]["heldout_all"] = evaluate({"v3_1p": model, "v3_2p": base}, test)
    report["sets"]["validation"] = evaluate({"v3_1p": model, "v3_2p": base}, val)
    for name, rows in report["sets"].items():
        log.info("%s: %s", name, "; ".join(
            f"{m} macro-F1 {r['macro_f1']:.3f} AUC {r['auc_neuron_vs_rest'] or 0:.3f} "
            f"kept {r['at_default_rule']['accepted']} recall "
            f"{r['at_default_rule']['accepted_recall']:.3f} F1 {r['at_default_rule']['accepted_f1']:.3f}"
            for m, r in rows.items()))  # fmt: skip
    report["seconds"] = time.perf_counter() - started
    atomic_write_text(
        args.out / "evaluation.json", json.dumps(report, indent=2, default=str) + "\n"
    )
    log.info("done after %.0f s", report["seconds"])


if __name__ == "__main__":
    main()
