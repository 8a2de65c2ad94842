"""Recipe: train and evaluate model v2 (``calcomp_caiman/models/calcomp_v2``).

Inputs: the simulated movies run through real CaImAn by ``recipes/build_caiman_sim_data.py``
(``--sim``, default ``/work/simdata``) and the real labelled masks (``--real``, default
``../shared/data/real_rois``). Steps, all on 2 CPU cores in a few minutes:

1. split: simulator presets marked held out (``HELD_OUT_PRESETS``) are the simulated test
   set; in every training preset the movie with the highest seed is validation; real
   videos as for v1, whose network v2 reuses and whose test videos it must not train on
   (``evaluate.held_out_videos`` of ``calcomp_resnet_v1``: its ``config.json``);
2. the shape network is v1's (``calcomp_resnet_v1``, unchanged); its logits and the
   evidence features of every component are computed by the run-time code
   (``refit.labelled_inputs``), at the footprint-measured crop scale;
3. the fusion head is fitted on the training results with missing-evidence copies
   (``train_v2.training_rows``), the temperature and the acceptance cut ``min_prob`` on
   validation only;
4. the model folder is written, then every method is scored on the test sets and the
   report is written to ``evaluation.json`` (and as tables to ``evaluation.md``) in the
   model folder (test sets are never used before this step).

Usage::

    .venv/bin/python recipes/train_calcomp_v2.py --sim /work/simdata
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import time
from pathlib import Path

import numpy as np

from calcomp_caiman import __version__
from calcomp_caiman.evidence.features import FEATURE_GROUPS, feature_names
from calcomp_caiman.io.atomic import atomic_write_text
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.model.ood import save_ood_reference
from calcomp_caiman.research import evaluate_v2, train_v2
from calcomp_caiman.research.evaluate import held_out_videos

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "calcomp_caiman" / "models" / "calcomp_v2"
log = logging.getLogger("train_calcomp_v2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sim", default="/work/simdata")
    parser.add_argument("--real", default=str(ROOT.parent / "shared" / "data" / "real_rois"))
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--no-cnn-baseline", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started = time.perf_counter()

    v1 = CalcompModel.load("calcomp_resnet_v1")
    validation_videos, test_videos = held_out_videos(v1)  # v2 reuses v1's network
    sim = train_v2.load_simulated(args.sim)
    real = train_v2.load_real_masks(args.real, set(test_videos))
    train, val, test = train_v2.split(sim + real, validation_videos, test_videos)
    log.info("train %d results, validation %d, test %d", len(train), len(val), len(test))
    # the v2 crop rule from the start: a head-less v2 shell over v1's network
    shell = CalcompModel(v1.weights, {**v1.config, "scale_rule": "footprints"}, dict(v1.thresholds))
    inputs = {id(item): train_v2.result_inputs(shell, item) for item in train + val + test}
    log.info("inputs computed after %.0f s", time.perf_counter() - started)

    rows, allowed, weights = train_v2.training_rows(
        [inputs[id(i)].logits for i in train], [inputs[id(i)].features for i in train], train,
        seed=args.seed,
    )  # fmt: skip
    # head size and penalty chosen on validation (set NLL, simulated and real equally)
    val_z = [inputs[id(i)].logits for i in val]
    val_f = [inputs[id(i)].features for i in val]
    best = None
    for hidden, l2 in ((16, 1e-3), (32, 3e-4), (32, 1e-3), (32, 3e-3)):
        candidate = train_v2.fit_v2_head(rows, allowed, weights, hidden=hidden, l2=l2,
                                         seed=args.seed)  # fmt: skip
        trial = shell.with_head(candidate).with_thresholds(temperature=1.0)
        trial = trial.with_thresholds(**train_v2.calibrate(trial, val_z, val_f, val))
        score = train_v2.validation_nll(trial, val_z, val_f, val)
        log.info("head hidden=%d l2=%g: validation set-NLL %.4f", hidden, l2, score)
        if best is None or score < best[0]:
            best = (score, candidate, hidden, l2)
    _, head, hidden, l2 = best
    log.info("chosen: hidden=%d l2=%g", hidden, l2)
    config = {
        **{k: v for k, v in v1.config.items() if k not in ("weights_sha256",)},
        "name": "calcomp_v2",
        "scale_rule": "footprints",
        "shape_network": f"calcomp_resnet_v1 ({v1.sha256[:12]}), unchanged",
        "fusion_head": {"hidden": hidden, "l2": l2, "inputs": ["log_p_" + c for c in v1.config["classes"]] + feature_names()},
        "feature_groups": FEATURE_GROUPS,
        "trained": datetime.date.today().isoformat(),
        "calcomp_version": __version__,
        "seed": args.seed,
        "training_data": {
            "simulated": sorted({i.group for i in train if i.source == "simulated"}),
            "simulated_validation": sorted({i.group for i in val if i.source == "simulated"}),
            "simulated_test_presets": sorted({i.setting for i in test if i.source == "simulated"}),
            "real_train_videos": sorted({i.group for i in train if i.source == "real"}),
            "real_validation_videos": sorted(validation_videos),
            "real_test_videos": sorted(test_videos),
            "components_train": int(sum(i.evidence.n for i in train)),
        },
    }  # fmt: skip
    model = shell.with_head(head, **config).with_thresholds(temperature=1.0)
    temperatures = train_v2.calibrate(
        model, [inputs[id(i)].logits for i in val], [inputs[id(i)].features for i in val], val
    )
    model = model.with_thresholds(**temperatures)
    temperature = temperatures["temperature"]
    val_sim = [i for i in val if i.source == "simulated"]
    val_probs = np.concatenate([model.fuse(*inputs[id(i)]) for i in val_sim])
    val_labels = np.concatenate([i.labels for i in val_sim])
    min_prob, val_f1 = train_v2.fit_min_prob(val_probs, val_labels)
    # the shape network alone (bioimage.io export) keeps v1's calibration
    model = model.with_thresholds(
        accept=["neuron"], min_prob=min_prob, shape_temperature=v1.thresholds["temperature"]
    )
    model.save(args.out)
    log.info("saved %s (T=%.3f, min_prob=%.2f, val accepted-F1 %.3f)", args.out, temperature,
             min_prob, val_f1)  # fmt: skip
    model = CalcompModel.load(args.out)

    # ------------------------------------------------------------------ evaluation
    report = evaluate_v2.run_report(
        model, v1, train, val, test, inputs=inputs, cnn_baseline=not args.no_cnn_baseline,
        seed=args.seed,
    )  # fmt: skip
    # out-of-distribution reference: training patches; threshold from half the validation
    # results; measured on the other half and the real test videos (in distribution)
    # against the held-out simulator settings
    sim_val = [i for i in val if i.source == "simulated"]
    calibration = [i for i in val if i.source == "real"] + sim_val[::2]
    measured_in = sim_val[1::2] + [i for i in test if i.source == "real"]
    reference, ood_report = train_v2.fit_ood(
        model, train, calibration, measured_in, [i for i in test if i.source == "simulated"],
        seed=args.seed,
    )  # fmt: skip
    save_ood_reference(reference, args.out)
    report["ood"] = ood_report
    log.info("OOD: threshold %.3f, ROC-AUC held-out settings vs in distribution %.3f",
             reference.threshold, ood_report["auc_heldout_settings_vs_in_distribution"])  # fmt: skip
    report["seconds"] = time.perf_counter() - started
    atomic_write_text(
        Path(args.out) / "evaluation.json", json.dumps(report, indent=1, default=float) + "\n"
    )
    atomic_write_text(Path(args.out) / "evaluation.md", evaluate_v2.summary_table(report))
    log.info("done after %.0f s", report["seconds"])


if __name__ == "__main__":
    main()
