"""What a lab's labels buy: refit accuracy after 100 / 300 labels, by uncertainty vs at random.

Two "labs": a real one (the labelled masks, ``../shared/data/real_rois``, of the model's
real test videos, as its ``config.json`` records them)
and a simulated one with settings never used in training (the held-out presets of the
CaImAn-processed simulated movies, ``recipes/build_caiman_sim_data.py``). Each lab's
results are split by whole result: half are the pool the labeller draws from, half the
test set. Labels are placed either where the model is least sure (highest entropy, the
order ``calcomp curate`` shows) or at random; the model v2 is refitted
(:func:`calcomp_caiman.refit.refit`) and scored on the test half: 4-class accuracy where
the labels have four classes (simulated), set accuracy where ``non_neuron`` allows
process or noise (real), and neuron-vs-rest ROC-AUC. Also the out-of-distribution score
of every result of both labs next to validation results of training settings.

Example::

    python benchmarks/curation_gain.py --model calcomp_caiman/models/calcomp_v2 --sim /work/simdata
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np

from calcomp_caiman.classify import classify_evidence
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.model.ood import ood_score
from calcomp_caiman.refit import refit
from calcomp_caiman.research.labelled_results import load_real_masks, load_simulated, split
from calcomp_caiman.research.metrics import roc_auc
from calcomp_caiman.research.train import held_out_videos
from calcomp_caiman.schema import label_masks

ROOT = Path(__file__).resolve().parents[1]


def scores(model, items) -> dict:
    probs = np.concatenate([classify_evidence(i.evidence, model) for i in items])
    labels = np.concatenate([i.labels for i in items])
    allowed = label_masks(labels).astype(bool)
    return {
        "accuracy": float(allowed[np.arange(len(labels)), probs.argmax(axis=1)].mean()),
        "auc_neuron_vs_rest": roc_auc(probs[:, 0], labels == 1),
        "n": int(len(labels)),
    }


def entropy(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs, 1e-9, 1)
    return -(p * np.log(p)).sum(axis=1)


def run_lab(model, items, budgets, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items))
    pool = [items[i] for i in order[::2]]
    test = [items[i] for i in order[1::2]]
    out = {"pool_components": int(sum(i.evidence.n for i in pool)), "before": scores(model, test)}
    candidates = [(k, j) for k, item in enumerate(pool) for j in range(item.evidence.n)]
    uncertainty = np.concatenate([entropy(classify_evidence(i.evidence, model)) for i in pool])
    for budget in budgets:
        budget = min(budget, len(candidates))
        for how in ("uncertainty", "random"):
            if how == "uncertainty":
                chosen = np.argsort(-uncertainty, kind="stable")[:budget]
            else:
                chosen = rng.choice(len(candidates), size=budget, replace=False)
            per = {}
            for c in chosen:
                k, j = candidates[c]
                per.setdefault(k, []).append(j)
            keys = sorted(per)
            refitted, report = refit(
                model,
                [pool[k].evidence for k in keys],
                [pool[k].labels[np.array(per[k])] for k in keys],
                [np.array(per[k]) for k in keys],
                seed=seed,
            )
            out[f"{how}_{budget}"] = dict(scores(refitted, test), seconds=report["seconds"])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--sim", default="/work/simdata")
    parser.add_argument("--real", default=str(ROOT.parent / "shared" / "data" / "real_rois"))
    parser.add_argument("--budgets", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    model = CalcompModel.load(args.model)
    validation_videos, test_videos = held_out_videos(model)  # from its config.json
    sim = load_simulated(args.sim)
    real = load_real_masks(args.real, set(test_videos))
    _, val, test = split(sim + real, validation_videos, test_videos)
    labs = {
        "real (test videos' masks)": [i for i in test if i.source == "real"],
        "simulated, held-out settings": [i for i in test if i.source == "simulated"],
    }
    report = {"model": model.name, "labs": {}, "ood": {}}
    for name, items in labs.items():
        report["labs"][name] = run_lab(model, items, args.budgets, args.seed)
        print(name, json.dumps(report["labs"][name], indent=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        groups = {"validation (training settings)": val, **labs}
        for name, items in groups.items():
            report["ood"][name] = [round(ood_score(i.evidence, model).score, 3) for i in items]
    in_dist = report["ood"]["validation (training settings)"]
    shifted = report["ood"]["simulated, held-out settings"]
    report["ood_auc_heldout_vs_validation"] = roc_auc(
        np.r_[in_dist, shifted], np.r_[np.zeros(len(in_dist), bool), np.ones(len(shifted), bool)]
    )
    print("OOD ROC-AUC, held-out settings vs validation:", report["ood_auc_heldout_vs_validation"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
