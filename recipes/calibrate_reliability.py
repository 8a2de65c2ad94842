"""Recipe: fit a model's reliability map (``reliability.json``) and check it on held-out files.

Every labelled file is classified by the run-time code and scored against its labels
(error = 1 - 4-class accuracy, ``non_neuron`` labels allowing process or noise;
unlabelled hybrid components left out): each simulated movie's CNMF and OnACID result
(``--sim``, from ``recipes/build_caiman_sim_data.py``), each hybrid result (``--hybrid``,
``recipes/build_hybrid_data.py``) and each real-mask archive (``--real``). Every file is
also scored with deliberately wrong evidence (``research.reliability_fit.CORRUPTIONS``).

The map is fitted on the model's own training and validation files only (and their
corrupted copies); held out, as the model's split says: the simulator presets of the
simulated data's ``MANIFEST.json`` ``held_out_presets``, the real test videos of the
model's ``config.json`` (``research.train.held_out_videos``), and the hybrid recordings in
``--hybrid-held-out`` (default ``optinist_mouse2p``) or the model's ``hybrid_test``. On the
held-out files (and theirs corrupted copies) it reports the Spearman rank correlation of
expected and measured error, that of the OOD score alone, and which files are flagged.

Writes to ``--out``: ``files.csv`` (signals and errors per file), ``reliability.json``,
``report.json`` and ``reliability.png`` (expected against measured error). With
``--write`` the map also goes into the model folder, where ``classify`` uses it.

Usage::

    nice -n 10 .venv/bin/python recipes/calibrate_reliability.py --model calcomp_v2 \\
        --sim ~/.cache/calcomp/simdata --hybrid ~/.cache/calcomp/hybrid \\
        --real ../shared/data/real_rois --out /tmp/reliability_v2 [--write]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import scipy.stats

from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.model.ood import find_ood_reference
from calcomp_caiman.model.reliability import SIGNALS, save_reliability
from calcomp_caiman.research.labelled_results import load_real_masks, load_simulated
from calcomp_caiman.research.reliability_fit import (
    CORRUPTIONS,
    MIN_LABELLED,
    corrupt,
    describe,
    fit_reliability,
    held_out_report,
    observe_file,
    plot_reliability,
    signal_table,
)
from calcomp_caiman.research.train import held_out_videos
from calcomp_caiman.research.train_branches import load_hybrid_results

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("calibrate_reliability")


def hybrid_test_groups(model: CalcompModel) -> set[str]:
    """The hybrid results the model's ``config.json`` holds out (``hybrid_test``)."""
    data = model.config.get("training_data")
    return set(data.get("hybrid_test", [])) if isinstance(data, dict) else set()


def observe_items(model, items, held_out, corruptions, reference, rows, observations):
    """Classify every item and its corrupted copies; append rows and observations."""
    for item in items:
        fit = not held_out(item)
        for variant in ("none", *corruptions):
            evidence = item.evidence if variant == "none" else corrupt(item.evidence, variant)
            if evidence is None:
                continue
            observation = observe_file(model, evidence, item.labels, ood_reference=reference)
            if observation.labelled < MIN_LABELLED:
                break
            rows.append(describe(item, variant, fit=fit))
            observations.append(observation)
        log.info("%s/%s (%s): error %.3f", item.group, item.method, "fit" if fit else "held out",
                 observations[-1].error if observations else float("nan"))  # fmt: skip


def write_table(table, path: Path) -> None:
    columns = list(table[0])
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(table)


def read_table(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["fit"] = row["fit"] == "True"
        for key in ("error", "labelled", *SIGNALS):
            row[key] = float(row[key]) if row[key] not in ("", "nan") else float("nan")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="calcomp_v2", help="bundled name or model folder")
    parser.add_argument("--sim", default=str(Path.home() / ".cache/calcomp/simdata"))
    parser.add_argument("--hybrid", default=str(Path.home() / ".cache/calcomp/hybrid"))
    parser.add_argument("--real", default=str(ROOT.parent / "shared" / "data" / "real_rois"))
    parser.add_argument("--out", required=True)
    parser.add_argument("--hybrid-held-out", nargs="*", default=["optinist_mouse2p"])
    parser.add_argument("--corruptions", nargs="*", default=list(CORRUPTIONS))
    parser.add_argument("--reuse", action="store_true", help="refit from OUT/files.csv")
    parser.add_argument("--write", action="store_true", help="write into the model folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("calcomp_caiman.evidence").setLevel(logging.ERROR)
    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = CalcompModel.load(args.model)
    reference = find_ood_reference(model)

    if args.reuse:
        table = read_table(out / "files.csv")
        quantiles = json.loads((out / "quantiles.json").read_text())
    else:
        _, test_videos = held_out_videos(model)
        hybrid_test = hybrid_test_groups(model)
        rows, observations = [], []
        sources = []
        if args.sim and Path(args.sim, "MANIFEST.json").is_file():
            sources.append(("simulated", lambda: load_simulated(args.sim), lambda i: i.held_out))
        if args.hybrid and Path(args.hybrid).is_dir():
            sources.append(("hybrid", lambda: load_hybrid_results(args.hybrid),
                            lambda i: i.held_out or i.group in hybrid_test
                            or i.setting in args.hybrid_held_out))  # fmt: skip
        if args.real and Path(args.real).exists():
            sources.append(("real", lambda: load_real_masks(args.real, set(test_videos)),
                            lambda i: i.held_out))  # fmt: skip
        for name, load, held_out in sources:
            items = load()
            log.info("%s: %d labelled results", name, len(items))
            observe_items(model, items, held_out, args.corruptions, reference, rows, observations)
            del items
        clean_fit = [r["fit"] and r["variant"] == "none" for r in rows]
        table, quantiles = signal_table(rows, observations, reference=clean_fit)
        write_table(table, out / "files.csv")
        (out / "quantiles.json").write_text(json.dumps(quantiles) + "\n")

    fit_rows = [r for r in table if r["fit"]]
    held_rows = [r for r in table if not r["fit"]]
    reliability = fit_reliability(fit_rows, quantiles=quantiles, model_sha256=model.sha256)
    report = held_out_report(held_rows, reliability)
    finite = [r for r in held_rows if np.isfinite(r["ood"]) and np.isfinite(r["error"])]
    if len(finite) > 2:
        rho = scipy.stats.spearmanr([r["ood"] for r in finite], [r["error"] for r in finite])[0]
        report["spearman_ood_score_alone"] = round(float(rho), 4)
        # the warning without a map: the OOD score above its threshold, on the same files
        if reference is not None and np.isfinite(reference.threshold):
            cut = reliability.warning_level
            ood_flag = [r["ood"] > reference.threshold for r in finite]
            report["ood_warning"] = {
                "high_error_flagged": sum(f for f, r in zip(ood_flag, finite) if r["error"] > cut),
                "in_distribution_flagged": sum(
                    f for f, r in zip(ood_flag, finite)
                    if r["error"] <= reliability.in_distribution_error
                ),
            }  # fmt: skip
    report["fit_report"] = held_out_report(fit_rows, reliability)
    report["fit_report"].pop("flagged")
    report["by_kind"] = {
        kind: held_out_report([r for r in held_rows if r["kind"] == kind], reliability)
        for kind in sorted({r["kind"] for r in held_rows})
    }
    for part in report["by_kind"].values():
        part.pop("flagged")
    reliability = dataclasses.replace(reliability, notes={
        **reliability.notes, "model": model.name, "held_out_files": report["files"],
        "held_out_spearman": report["spearman"], "recipe": "recipes/calibrate_reliability.py",
    })  # fmt: skip
    save_reliability(reliability, out)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    plot_reliability(table, reliability, out / "reliability.png",
                     title=f"{model.name}: Spearman {report['spearman']} on "
                           f"{report['files']} held-out files")  # fmt: skip
    if args.write:
        if model.folder is None:
            raise SystemExit("the model has no folder to write into")
        log.info("wrote %s", save_reliability(reliability, model.folder))
    coefficients = dict(zip(reliability.signals, reliability.coefficients))
    log.info("coefficients %s, intercept %.3f, in-distribution %.3f", coefficients,
             reliability.intercept, reliability.in_distribution_error)  # fmt: skip
    log.info("held out: %d files, Spearman %s (OOD alone %s); flagged: %d of %d high-error "
             "files, %d of %d in-distribution files (the OOD warning: %s) (%.0f s)",
             report["files"], report["spearman"], report.get("spearman_ood_score_alone"),
             report["high_error_flagged"], report["high_error_files"],
             report["in_distribution_flagged"], report["in_distribution_files"],
             report.get("ood_warning"), time.perf_counter() - started)  # fmt: skip


if __name__ == "__main__":
    main()
