"""What a lab's labels buy: refit accuracy after 10 / 20 labels placed by the page, or 100 / 300.

``--calibrate`` (issue 21): the loop of ``calcomp curate`` on real labelled masks of
videos the model never saw (``../shared/data/real_rois``, the model's real test videos:
each video one lab, its CaImAn batch, CaImAn online and Suite2p results its files). Each
repeat splits every file's components at random into a pool the labeller draws from and
the other components, on which 4-class set accuracy and accepted-set F1 (accepted by the
model's rule vs labelled neuron) are measured before and after. Labels are placed

* ``page``: in the page's order (:func:`calcomp_caiman.apps.curate.order.label_order`:
  uncertain and diverse, across files and classes), refitting after every
  :data:`~calcomp_caiman.apps.curate.session.AUTO_REFIT` labels as the page does and
  re-ordering with the new probabilities;
* ``uncertainty``: the page's order before issue 21 (highest entropy first), one refit;
* ``random``: at random, one refit;

and the refit is :func:`calcomp_caiman.refit.refit_inputs` (calibration below 30 labels,
the head from 30 on, none when neither beats the model on labels it did not see).
Reported per lab and budget: mean and spread over the repeats, the levels applied, the
refit time, and the share of the gap to in-distribution accuracy (the model's accuracy
on its real validation videos) that was closed.

``--latency``: the time from a label to new probabilities on the page, for a simulated
1,000-component CaImAn result: the session's own timing (from the fifth new label to the
re-scored files, the debounce included) and, where Playwright and Debian's chromium are
installed, the page's (from the fifth key press to the re-ordered cards).

Without ``--calibrate`` or ``--latency``, the earlier experiment:

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
import os
import time
import warnings
from pathlib import Path

import numpy as np

from calcomp_caiman.apps.curate.order import label_order, label_points, uncertainty
from calcomp_caiman.apps.curate.session import AUTO_REFIT
from calcomp_caiman.classify import accept_components, acceptance_rule, classify_evidence
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.model.ood import ood_score
from calcomp_caiman.refit import concatenate_inputs, labelled_inputs, refit, refit_inputs
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


def _metrics(model, inputs, labels, masks) -> dict:
    """Set accuracy and accepted-set F1 (accepted vs labelled neuron) on the masked rows."""
    rule = acceptance_rule(model)
    hits, n, tp, fp, fn = 0, 0, 0, 0, 0
    for x, code, mask in zip(inputs, labels, masks):
        if not mask.any():
            continue
        probs = x.take(mask).probs(model)
        allowed = label_masks(code[mask]).astype(bool)
        hits += int(allowed[np.arange(mask.sum()), probs.argmax(axis=1)].sum())
        n += int(mask.sum())
        accepted = accept_components(probs, accept=rule.accept, min_prob=rule.min_prob)
        neuron = code[mask] == 1
        tp += int((accepted & neuron).sum())
        fp += int((accepted & ~neuron).sum())
        fn += int((~accepted & neuron).sum())
    return {"accuracy": hits / max(n, 1), "f1": 2 * tp / max(2 * tp + fp + fn, 1), "n": n}


def _refit(model, inputs, labels, chosen):
    """Refit on the chosen (file, component) labels, from ``model``."""
    files = sorted({i for i, _ in chosen})
    rows = {i: np.array([k for j, k in chosen if j == i]) for i in files}
    x = concatenate_inputs([inputs[i].take(rows[i]) for i in files])
    return refit_inputs(
        model,
        x.logits,
        x.features,
        np.concatenate([labels[i][rows[i]] for i in files]),
        profiles=x.profiles,
        presence=x.presence,
        groups=np.concatenate([np.full(len(rows[i]), i) for i in files]),
    )


def place_labels(model, inputs, labels, pools, budget: int, how: str, rng):
    """Label ``budget`` pool components as ``how`` says; the refitted model, its report,
    and the refit times (one per refit)."""
    chosen: list[tuple[int, int]] = []
    current, report, times = model, None, []
    if how == "random":
        candidates = [(i, k) for i, pool in enumerate(pools) for k in np.flatnonzero(pool)]
        picks = rng.choice(len(candidates), size=min(budget, len(candidates)), replace=False)
        chosen = [candidates[c] for c in picks]
    while len(chosen) < budget:
        probs = [x.probs(current) for x in inputs]
        if how == "uncertainty":  # the order before issue 21, labelled at once
            score = [np.where(pool, uncertainty(p), -1.0) for p, pool in zip(probs, pools)]
            flat = [(-s[k], i, k) for i, s in enumerate(score) for k in np.flatnonzero(pools[i])]
            chosen = [(i, k) for _, i, k in sorted(flat)[:budget]]
            break
        # the page: its order over the pool, AUTO_REFIT labels, refit, again
        sub = [np.flatnonzero(pool) for pool in pools]
        points = [label_points(p[s], x.features[s]) for p, x, s in zip(probs, inputs, sub)]
        done = [np.isin(s, [k for j, k in chosen if j == i]) for i, s in enumerate(sub)]
        order = label_order([p[s] for p, s in zip(probs, sub)], points, done)
        fresh = [(i, int(sub[i][k])) for i, k in order if not done[i][k]]
        if not fresh:  # the pool is labelled out
            break
        chosen += fresh[: min(AUTO_REFIT, budget - len(chosen))]
        if len(chosen) < budget:
            start = time.perf_counter()
            current, report = _refit(model, inputs, labels, chosen)
            times.append(time.perf_counter() - start)
    start = time.perf_counter()
    current, report = _refit(model, inputs, labels, chosen)
    times.append(time.perf_counter() - start)
    return current, report, times


def run_calibrate(model, labs: dict, budgets, repeats: int, seed: int, in_dist: dict) -> dict:
    """The page's loop on each lab (see the module docstring)."""
    out = {}
    for lab, items in labs.items():
        inputs = [labelled_inputs(model, i.evidence, np.arange(i.evidence.n)) for i in items]
        labels = [np.asarray(i.labels, np.int64) for i in items]
        runs = {}
        for r in range(repeats):
            rng = np.random.default_rng(seed + r)
            pools = [rng.random(len(code)) < 0.5 for code in labels]
            tests = [~pool for pool in pools]
            before = _metrics(model, inputs, labels, tests)
            runs.setdefault("before", []).append(before)
            for budget in budgets:
                for how in ("page", "uncertainty", "random"):
                    new, report, times = place_labels(
                        model, inputs, labels, pools, budget, how, rng
                    )
                    after = _metrics(new, inputs, labels, tests)
                    runs.setdefault(f"{how}_{budget}", []).append(
                        dict(after, level=report["level"], refit_seconds=float(np.mean(times)))
                    )
        summary = {"components": int(sum(len(c) for c in labels)), "files": [i.method for i in items]}  # fmt: skip
        for key, values in runs.items():
            row = {m: [round(v[m], 4) for v in values] for m in ("accuracy", "f1")}
            row.update({f"{m}_mean": round(float(np.mean(row[m])), 4) for m in ("accuracy", "f1")})
            if key != "before":
                row["levels"] = [v["level"] for v in values]
                row["refit_seconds"] = round(
                    float(np.mean([v["refit_seconds"] for v in values])), 3
                )
                base = summary["before"]["accuracy_mean"]
                gap = in_dist["accuracy"] - base
                row["gap_closed"] = round((row["accuracy_mean"] - base) / gap, 3) if gap > 0 else None  # fmt: skip
            summary[key] = row
        out[lab] = summary
        print(lab, json.dumps({k: v for k, v in summary.items()}, indent=None))
    return out


def main_calibrate(args) -> int:
    model = CalcompModel.load(args.model)
    validation_videos, test_videos = held_out_videos(model)
    real = [i for i in load_real_masks(args.real, set(test_videos)) if i.method != "human"]
    labs = {video: [i for i in real if i.group == video] for video in sorted(test_videos)}
    reference = [i for i in real if i.group in validation_videos]
    ref_inputs = [labelled_inputs(model, i.evidence, np.arange(i.evidence.n)) for i in reference]
    ref_labels = [np.asarray(i.labels, np.int64) for i in reference]
    in_dist = _metrics(model, ref_inputs, ref_labels, [np.ones(len(c), bool) for c in ref_labels])
    print("in distribution (real validation videos):", json.dumps(in_dist))
    report = {"model": model.name, "in_distribution": in_dist, "budgets": args.budgets,
              "repeats": args.repeats, "labs": run_calibrate(model, labs, args.budgets,
                                                             args.repeats, args.seed, in_dist)}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


def main_latency(args) -> int:
    """Label -> new probabilities, in the session and on the page (see the docstring)."""
    import shutil
    import tempfile

    from calcomp_caiman.apps.curate import CurationSession, serve
    from calcomp_caiman.research.caiman_files import write_caiman_file
    from calcomp_caiman.research.simulate import simulate_session
    from calcomp_caiman.schema import CLASSES

    folder = Path(tempfile.mkdtemp(prefix="calcomp_latency_"))
    sim = simulate_session(dims=(400, 400), n_components=(600, 150, 200, 50), n_frames=500, seed=2)
    path = write_caiman_file(folder / "big.hdf5", A=sim.A, C=sim.C, dims=sim.dims,
                             gSig=(sim.gSig, sim.gSig))  # fmt: skip
    name = {k: CLASSES[int(c) - 1] if c else "non_neuron" for k, c in enumerate(sim.labels)}
    report = {"components": int(sim.A.shape[1]), "cpus": os.cpu_count()}
    start = time.perf_counter()
    session = CurationSession([path], labels=folder / "session.csv")
    report["session_open_seconds"] = round(time.perf_counter() - start, 2)
    rounds = []
    try:
        for _ in range(args.rounds):
            version = session.version
            cards = [key for key in session.order() if (str(path), key[1]) not in session.store.labels()][:5]  # fmt: skip
            for i, k in cards:
                session.set_label(i, k, name[k])
            start = time.perf_counter()
            while session.refit_status()["state"] in ("scheduled", "starting", "running"):
                time.sleep(0.01)
            status = session.refit_status()
            rounds.append({"labels": status["report"]["labels"], "level": status["report"]["level"],
                           "seconds": round(time.perf_counter() - start, 2),
                           "refit_seconds": status["report"]["seconds"],
                           "new_probabilities": session.version != version})  # fmt: skip
    finally:
        session.close()
    report["session"] = rounds
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if chromium and sync_playwright:
        keys = {"neuron": "1", "process": "2", "noise": "3", "doubtful": "4", "non_neuron": "n"}
        server = serve([path], labels=folder / "page.csv", port=0)
        page_rounds = []
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium, headless=True)
                page = browser.new_page()
                page.goto(server.url)
                page.wait_for_selector("body[data-ready='1']", timeout=120_000)
                for _ in range(args.rounds):
                    version = page.evaluate("curate.version()")
                    for _ in range(5):
                        k = int(page.evaluate("curate.focused()").split(":")[1])
                        page.keyboard.press(keys[name[k]])
                    start = time.perf_counter()
                    page.wait_for_function(f"() => curate.version() > {version}", timeout=120_000)
                    page.wait_for_function("() => curate.order().length > 0")
                    page_rounds.append(round(time.perf_counter() - start, 2))
                browser.close()
        finally:
            server.stop()
        report["page_seconds"] = page_rounds
    shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--sim", default="/work/simdata")
    parser.add_argument("--real", default=str(ROOT.parent / "shared" / "data" / "real_rois"))
    parser.add_argument("--budgets", type=int, nargs="+",
                        help="labels per lab (default: 10 20 with --calibrate, else 100 300)")  # fmt: skip
    parser.add_argument("--calibrate", action="store_true",
                        help="the page's loop on the real test videos' masks (issue 21)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5, help="--calibrate: repeats")
    parser.add_argument("--latency", action="store_true",
                        help="label -> new probabilities for a 1,000-component session")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="--latency: rounds of 5 labels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.latency:
        return main_latency(args)
    if args.calibrate:
        args.budgets = args.budgets or [10, 20]
        return main_calibrate(args)
    args.budgets = args.budgets or [100, 300]
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
