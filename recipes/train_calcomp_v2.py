"""Recipe: train and evaluate model v2 (``calcomp_caiman/models/calcomp_v2``).

Inputs: the simulated movies run through real CaImAn by ``recipes/build_caiman_sim_data.py``
(``--sim``, default ``/work/simdata``) and the real labelled masks (``--real``, default
``../shared/data/real_rois``). Steps, all on 2 CPU cores in a few minutes:

1. split: simulator presets marked held out (``HELD_OUT_PRESETS``) are the simulated test
   set; in every training preset the movie with the highest seed is validation; real
   videos as for v1, whose network v2 reuses and whose test videos it must not train on
   (``train.held_out_videos`` of ``calcomp_resnet_v1``: its ``config.json``);
2. the shape network is v1's (``calcomp_resnet_v1``, unchanged); its logits and the
   evidence features of every component are computed by the run-time code
   (``refit.labelled_inputs``), at the footprint-measured crop scale;
3. the fusion head is fitted on the training results with missing-evidence copies
   (``train.train(..., fusion_head=True)``: ``train_head.training_rows``), its size, the
   temperatures and the acceptance cut ``min_prob`` on validation only;
4. the model folder is written, then every method is scored on the test sets and the
   report is written to ``evaluation.json`` (and as tables to ``evaluation.md``) in the
   model folder (test sets are never used before this step).

Usage::

    .venv/bin/python recipes/train_calcomp_v2.py --sim /work/simdata
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.model.ood import save_ood_reference
from calcomp_caiman.research.evaluate import evaluate_results
from calcomp_caiman.research.labelled_results import (
    load_real_masks,
    load_simulated,
    result_inputs,
    split,
)
from calcomp_caiman.research.report import write_report
from calcomp_caiman.research.train import held_out_videos, train
from calcomp_caiman.research.train_head import fit_ood, head_shell

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
    sim = load_simulated(args.sim)
    real = load_real_masks(args.real, set(test_videos))
    train_items, val, test = split(sim + real, validation_videos, test_videos)
    log.info("train %d results, validation %d, test %d", len(train_items), len(val), len(test))
    # the v2 crop rule from the start: a head-less v2 shell over v1's network
    shell = head_shell(v1)
    inputs = {id(item): result_inputs(shell, item) for item in train_items + val + test}
    log.info("inputs computed after %.0f s", time.perf_counter() - started)

    description = {
        "simulated": sorted({i.group for i in train_items if i.source == "simulated"}),
        "simulated_validation": sorted({i.group for i in val if i.source == "simulated"}),
        "simulated_test_presets": sorted({i.setting for i in test if i.source == "simulated"}),
        "real_train_videos": sorted({i.group for i in train_items if i.source == "real"}),
        "real_validation_videos": sorted(validation_videos),
        "real_test_videos": sorted(test_videos),
        "components_train": int(sum(i.evidence.n for i in train_items)),
    }
    model, _ = train(
        train_items, val, base=v1, fusion_head=True, inputs=inputs, name="calcomp_v2",
        seed=args.seed, data_description=description,
    )  # fmt: skip
    model.save(args.out)
    log.info("saved %s", args.out)
    model = CalcompModel.load(args.out)

    # ------------------------------------------------------------------ evaluation
    report = evaluate_results(
        model, v1, train_items, val, test, inputs=inputs, cnn_baseline=not args.no_cnn_baseline,
        seed=args.seed,
    )  # fmt: skip
    # out-of-distribution reference: training patches; threshold from half the validation
    # results; measured on the other half and the real test videos (in distribution)
    # against the held-out simulator settings
    sim_val = [i for i in val if i.source == "simulated"]
    calibration = [i for i in val if i.source == "real"] + sim_val[::2]
    measured_in = sim_val[1::2] + [i for i in test if i.source == "real"]
    reference, ood_report = fit_ood(
        model, train_items, calibration, measured_in, [i for i in test if i.source == "simulated"],
        seed=args.seed,
    )  # fmt: skip
    save_ood_reference(reference, args.out)
    report["ood"] = ood_report
    log.info("OOD: threshold %.3f, ROC-AUC held-out settings vs in distribution %.3f",
             reference.threshold, ood_report["auc_heldout_settings_vs_in_distribution"])  # fmt: skip
    report["seconds"] = time.perf_counter() - started
    write_report(report, Path(args.out) / "evaluation")
    log.info("done after %.0f s", report["seconds"])


if __name__ == "__main__":
    main()
