"""Recipe: train and evaluate model v2 (``calcomp_caiman/models/calcomp_v2``).

Inputs: the simulated movies run through real CaImAn by ``recipes/build_caiman_sim_data.py``
(``--sim``, default ``/work/simdata``) and the real labelled masks (``--real``, default
``../shared/data/real_rois``). Steps, all on 2 CPU cores in a few minutes:

1. split: simulator presets marked held out (``HELD_OUT_PRESETS``) are the simulated test
   set; in every training preset the movie with the highest seed is validation; real
   videos as for v1 (``evaluate.VALIDATION_VIDEOS``, ``evaluate.TEST_VIDEOS``);
2. the shape network is v1's (``calcomp_resnet_v1``, unchanged); its logits and the
   evidence features of every component are computed by the run-time code
   (``refit.labelled_inputs``), at the footprint-measured crop scale;
3. the fusion head is fitted on the training results with missing-evidence copies
   (``train_v2.training_rows``), the temperature and the acceptance cut ``min_prob`` on
   validation only;
4. the model folder is written, then every method is scored on the test sets and the
   report is written to ``evaluation.json`` in the model folder (test sets are never
   used before this step).

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
from calcomp_caiman.baselines import ShapeBaseline, shape_features, train_caiman_cnn_baseline
from calcomp_caiman.classify import classify_evidence, crop_scale_of
from calcomp_caiman.evaluate import TEST_VIDEOS, VALIDATION_VIDEOS
from calcomp_caiman.features import FEATURE_GROUPS, feature_names
from calcomp_caiman.model import CalcompModel
from calcomp_caiman.patches import crop_checked, project_checked
from calcomp_caiman.research import evaluate_v2, train_v2

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "calcomp_caiman" / "models" / "calcomp_v2"
log = logging.getLogger("train_calcomp_v2")


def split(items):
    """train / validation / test lists (see the module docstring)."""
    last_seed = {}
    for item in items:
        if item.source == "simulated" and not item.held_out:
            last_seed[item.setting] = max(last_seed.get(item.setting, ""), item.group)
    train, val, test = [], [], []
    for item in items:
        if item.source == "simulated":
            if item.held_out:
                test.append(item)
            elif item.group == last_seed[item.setting]:
                val.append(item)
            else:
                train.append(item)
        elif item.group in TEST_VIDEOS:
            test.append(item)
        elif item.group in VALIDATION_VIDEOS:
            val.append(item)
        else:
            train.append(item)
    return train, val, test


def patches_and_shape(model, item):
    flat, dims = project_checked(item.evidence.A, item.evidence.dims)
    scale = crop_scale_of(item.evidence, model)
    return crop_checked(flat, dims, scale, model.patch_size), shape_features(flat, dims, gSig=scale)


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
    sim = train_v2.load_simulated(args.sim)
    real = train_v2.load_real_masks(args.real, set(TEST_VIDEOS))
    train, val, test = split(sim + real)
    log.info("train %d results, validation %d, test %d", len(train), len(val), len(test))
    # the v2 crop rule from the start: a head-less v2 shell over v1's network
    shell = CalcompModel(v1.weights, {**v1.config, "scale_rule": "footprints"}, dict(v1.thresholds))
    inputs = {id(item): train_v2.result_inputs(shell, item) for item in train + val + test}
    log.info("inputs computed after %.0f s", time.perf_counter() - started)

    rows, allowed, weights = train_v2.training_rows(
        [inputs[id(i)][0] for i in train], [inputs[id(i)][1] for i in train], train,
        seed=args.seed,
    )  # fmt: skip
    head = train_v2.fit_v2_head(rows, allowed, weights, seed=args.seed)
    config = {
        **{k: v for k, v in v1.config.items() if k not in ("weights_sha256",)},
        "name": "calcomp_v2",
        "scale_rule": "footprints",
        "shape_network": f"calcomp_resnet_v1 ({v1.sha256[:12]}), unchanged",
        "fusion_head": {"hidden": int(head.w1.shape[1]), "inputs": ["log_p_" + c for c in v1.config["classes"]] + feature_names()},
        "feature_groups": FEATURE_GROUPS,
        "trained": datetime.date.today().isoformat(),
        "calcomp_version": __version__,
        "seed": args.seed,
        "training_data": {
            "simulated": sorted({i.group for i in train if i.source == "simulated"}),
            "simulated_validation": sorted({i.group for i in val if i.source == "simulated"}),
            "simulated_test_presets": sorted({i.setting for i in test if i.source == "simulated"}),
            "real_train_videos": sorted({i.group for i in train if i.source == "real"}),
            "real_validation_videos": sorted(VALIDATION_VIDEOS),
            "real_test_videos": sorted(TEST_VIDEOS),
            "components_train": int(sum(i.evidence.n for i in train)),
        },
    }  # fmt: skip
    model = shell.with_head(head, **config).with_thresholds(temperature=1.0)
    temperature = train_v2.calibrate(
        model, [inputs[id(i)][0] for i in val], [inputs[id(i)][1] for i in val], val
    )
    model = model.with_thresholds(temperature=temperature)
    val_sim = [i for i in val if i.source == "simulated"]
    val_probs = np.concatenate([model.fuse(*inputs[id(i)]) for i in val_sim])
    val_labels = np.concatenate([i.labels for i in val_sim])
    min_prob, val_f1 = train_v2.fit_min_prob(val_probs, val_labels)
    model = model.with_thresholds(accept=["neuron"], min_prob=min_prob, temperature=temperature)
    model.save(args.out)
    log.info("saved %s (T=%.3f, min_prob=%.2f, val accepted-F1 %.3f)", args.out, temperature,
             min_prob, val_f1)  # fmt: skip
    model = CalcompModel.load(args.out)

    # ------------------------------------------------------------------ evaluation
    sets = {
        "simulated_heldout_cnmf": [i for i in test if i.source == "simulated" and i.method == "cnmf"],
        "simulated_heldout_onacid": [i for i in test if i.source == "simulated" and i.method == "onacid"],
        "simulated_heldout": [i for i in test if i.source == "simulated"],
        "simulated_validation": val_sim,
        "real_test_masks": [i for i in test if i.source == "real"],
    }  # fmt: skip
    shape_train = {id(i): patches_and_shape(shell, i) for i in train + val + test}
    shape_model = ShapeBaseline().fit(
        np.concatenate([shape_train[id(i)][1] for i in train]),
        np.concatenate([i.labels for i in train]),
    )
    cnn = None
    if not args.no_cnn_baseline:
        cnn = train_caiman_cnn_baseline(
            np.concatenate([shape_train[id(i)][0] for i in train]),
            np.concatenate([i.labels for i in train]),
            val_patches=np.concatenate([shape_train[id(i)][0] for i in val]),
            val_labels=np.concatenate([i.labels for i in val]),
            seed=args.seed,
        )
    min_rule = model.thresholds.get("min_prob")
    report = {"model": model.name, "sha256": model.sha256, "min_prob": min_rule,
              "temperature": temperature, "sets": {}}  # fmt: skip
    for name, items in sets.items():
        if not items:
            continue
        logits = [inputs[id(i)][0] for i in items]
        features = [inputs[id(i)][1] for i in items]
        methods = dict(evaluate_v2.ablations(model, logits, features))
        methods["v1"] = [classify_evidence(i.evidence, v1) for i in items]
        methods["shape-features"] = [shape_model.predict_proba(shape_train[id(i)][1]) for i in items]
        if cnn is not None:
            methods["caiman-cnn"] = [cnn.predict(shape_train[id(i)][0]) for i in items]
        rule = [evaluate_v2.caiman_rule_probs(i) for i in items]
        if all(r is not None for r in rule):
            methods["caiman-rule"] = rule
        rows_out = {}
        for method, probs in methods.items():
            if method.startswith("v2") and min_rule is not None:
                accept = lambda p: p[:, 0] >= min_rule  # noqa: E731
            else:
                accept = lambda p: p.argmax(axis=1) == 0  # noqa: E731
            rows_out[method] = evaluate_v2.score_method(probs, items, accept)
        report["sets"][name] = {"results": len(items), "components": int(sum(i.evidence.n for i in items)),
                                "methods": rows_out}  # fmt: skip
        log.info("%s (%d components)", name, report["sets"][name]["components"])
        for method, r in rows_out.items():
            log.info("  %-18s macroF1 %.3f  AUC %.3f  ECE %.3f  noise-rej %s  acc-F1 %.3f", method,
                     r["four_class"]["macro_f1"], r["auc_neuron_vs_rest"] or float("nan"),
                     r["calibration"]["ece"], r["selection"]["noise_rejected"],
                     r["selection"]["accepted_f1"])  # fmt: skip
    report["seconds"] = time.perf_counter() - started
    (Path(args.out) / "evaluation.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    log.info("done after %.0f s", report["seconds"])


if __name__ == "__main__":
    main()
