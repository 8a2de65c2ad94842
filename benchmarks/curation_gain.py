"""What a lab's labels buy: refit accuracy after 10 / 20 labels placed by the page, or 100 / 300.

``--calibrate`` (issue 21): the loop of ``calcomp curate`` on labs the model never saw,
as its training split them: every real test video (its labelled masks in
``../shared/data/real_rois``: its CaImAn batch, CaImAn online and Suite2p results the
lab's files), every held-out hybrid recording (``--hybrid``,
:func:`~calcomp_caiman.research.labelled_results.split_hybrid`) and every held-out
simulated setting (``--sim``, :func:`~calcomp_caiman.research.labelled_results.split`).
Each repeat splits every file's labelled components at random into a pool the labeller
draws from and the other components, on which 4-class set accuracy and accepted-set F1
(accepted by the model's rule vs labelled neuron) are measured before and after; a
hybrid result's unlabelled components (the recording's own cells,
:data:`~calcomp_caiman.research.v3_inputs.UNLABELLED`) are in neither, only
neighbours. Labels are placed

* ``page``: in the page's order (:func:`calcomp_caiman.apps.curate.order.label_order`:
  uncertain and diverse, across files and classes), refitting after every
  :data:`~calcomp_caiman.apps.curate.session.AUTO_REFIT` labels as the page does and
  re-ordering with the new probabilities;
* ``uncertainty``: the page's order before issue 21 (highest entropy first), one refit;
* ``random``: at random, one refit;

and the refit is :func:`calcomp_caiman.refit.refit_inputs` (calibration below 30 labels,
the head from 30 on, none when neither beats the model on labels it did not see).
Reported per lab and budget: mean and spread over the repeats, the levels applied, the
refit time, and the share of the gap closed, ``(after - before) / (in_dist - before)``,
where ``in_dist`` is the model's accuracy on its validation results of the lab's kind
(real videos, hybrid movies or simulated movies). Beside them ``ceiling_bias``
(:func:`bias_ceiling`): the test half's accuracy after three class biases fitted to all
of its labels, which no calibration-level refit can beat.

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

Examples::

    python benchmarks/curation_gain.py --calibrate --budgets 10 20 50 --json gain.json
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
import scipy.optimize

from calcomp_caiman.apps.curate.order import label_order, label_points, uncertainty
from calcomp_caiman.apps.curate.session import AUTO_REFIT
from calcomp_caiman.classify import accept_components, acceptance_rule, classify_evidence
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.model.head import probability_set_nll
from calcomp_caiman.model.ood import ood_score
from calcomp_caiman.refit import concatenate_inputs, labelled_inputs, refit, refit_inputs
from calcomp_caiman.refit_scores import set_accuracy
from calcomp_caiman.research.labelled_results import (
    load_real_masks,
    load_simulated,
    split,
    split_hybrid,
)
from calcomp_caiman.research.metrics import roc_auc
from calcomp_caiman.research.train import held_out_videos
from calcomp_caiman.research.train_branches import load_hybrid_results
from calcomp_caiman.research.v3_inputs import UNLABELLED
from calcomp_caiman.schema import label_masks

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "calcomp"


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


def _rows(model, inputs, labels, masks) -> tuple[np.ndarray, np.ndarray]:
    """The model's probabilities and the labels of the masked rows of every file."""
    parts = [(x.take(m).probs(model), c[m]) for x, c, m in zip(inputs, labels, masks) if m.any()]
    return np.concatenate([p for p, _ in parts]), np.concatenate([c for _, c in parts])


def _metrics(model, inputs, labels, masks) -> dict:
    """Set accuracy and accepted-set F1 (accepted vs labelled neuron) on the masked rows."""
    probs, codes = _rows(model, inputs, labels, masks)
    rule = acceptance_rule(model)
    accepted = accept_components(probs, accept=rule.accept, min_prob=rule.min_prob)
    neuron = codes == 1
    tp, fp, fn = np.sum(accepted & neuron), np.sum(accepted & ~neuron), np.sum(~accepted & neuron)
    f1 = float(2 * tp / max(2 * tp + fp + fn, 1))
    return {"accuracy": set_accuracy(probs, codes), "f1": f1, "n": len(codes)}


def bias_ceiling(probs: np.ndarray, codes: np.ndarray) -> float:
    """Set accuracy after 3 class-bias offsets on the log-probabilities (neuron's fixed at
    0), fitted by set NLL to these very labels: what no calibration-level refit beats."""
    logp, allowed = np.log(np.clip(probs, 1e-12, 1.0)), label_masks(codes)

    def shifted(bias):
        z = logp + np.r_[0.0, bias]
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    fit = scipy.optimize.minimize(lambda b: probability_set_nll(shifted(b), allowed),
                                  np.zeros(3), method="Nelder-Mead")  # fmt: skip
    return set_accuracy(shifted(fit.x), codes)


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
    """The page's loop on each lab, ``{name: (kind, results)}`` (see the module docstring);
    ``in_dist``: per kind, the model's metrics on its validation results of that kind."""
    out = {}
    for lab, (kind, items) in labs.items():
        inputs = [labelled_inputs(model, i.evidence, np.arange(i.evidence.n)) for i in items]
        labels = [np.asarray(i.labels, np.int64) for i in items]
        runs = {}
        for r in range(repeats):
            rng = np.random.default_rng(seed + r)
            halves = [rng.random(len(code)) < 0.5 for code in labels]
            pools = [half & (code != UNLABELLED) for half, code in zip(halves, labels)]
            tests = [~half & (code != UNLABELLED) for half, code in zip(halves, labels)]
            runs.setdefault("before", []).append(_metrics(model, inputs, labels, tests))
            ceiling = bias_ceiling(*_rows(model, inputs, labels, tests))
            runs.setdefault("ceiling_bias", []).append({"accuracy": ceiling})
            for budget in budgets:
                for how in ("page", "uncertainty", "random"):
                    new, report, times = place_labels(
                        model, inputs, labels, pools, budget, how, rng
                    )
                    after = _metrics(new, inputs, labels, tests)
                    runs.setdefault(f"{how}_{budget}", []).append(
                        dict(after, level=report["level"], refit_seconds=float(np.mean(times)))
                    )
        summary = {"kind": kind, "components": int(sum(len(c) for c in labels)),
                   "labelled": int(sum(np.sum(c != UNLABELLED) for c in labels)),
                   "files": [f"{i.group}:{i.method}" for i in items]}  # fmt: skip
        for key, values in runs.items():
            row = {m: [round(v[m], 4) for v in values] for m in ("accuracy", "f1") if m in values[0]}  # fmt: skip
            row.update({f"{m}_mean": round(float(np.mean(row[m])), 4) for m in list(row)})
            if "level" in values[0]:
                row["levels"] = [v["level"] for v in values]
                row["refit_seconds"] = round(float(np.mean([v["refit_seconds"] for v in values])), 3)  # fmt: skip
            if key != "before":
                base = summary["before"]["accuracy_mean"]
                gap = in_dist[kind]["accuracy"] - base
                row["gap_closed"] = round((row["accuracy_mean"] - base) / gap, 3) if gap > 0 else None  # fmt: skip
            summary[key] = row
        out[lab] = summary
        print(lab, json.dumps(summary), flush=True)
    return out


def calibration_labs(model, args) -> tuple[dict, dict]:
    """The labs, ``{name: (kind, results)}``: every real test video, held-out hybrid
    recording and held-out simulated setting (as the model's training split them); and
    per kind the validation results of that split (the in-distribution reference)."""
    validation_videos, test_videos = held_out_videos(model)
    real = [i for i in load_real_masks(args.real, set(test_videos)) if i.method != "human"]
    sim = load_simulated(args.sim) if (Path(args.sim) / "MANIFEST.json").exists() else []
    hybrid = load_hybrid_results(args.hybrid) if Path(args.hybrid).is_dir() else []
    _, val, test = split(real + sim, validation_videos, test_videos)
    _, hybrid_val, hybrid_test = split_hybrid(hybrid)
    labs, reference = {}, {}
    for item in sorted(test + hybrid_test, key=lambda i: i.source):  # stable: files in order
        name = item.group if item.source == "real" else item.setting
        labs.setdefault(name, (item.source, []))[1].append(item)
    for item in val + hybrid_val:
        reference.setdefault(item.source, []).append(item)
    return labs, reference


def calibration_table(report: dict) -> str:
    """Mean set accuracy per lab: before, each way and budget (gap closed), the ceiling."""
    lines = []
    for lab, row in report["labs"].items():
        ways = [f"{k}={row[k]['accuracy_mean']:.3f} ({row[k]['gap_closed']})"
                for k in row if k.split("_")[0] in ("page", "uncertainty", "random", "ceiling")]  # fmt: skip
        in_dist = report["in_distribution"][row["kind"]]["accuracy"]
        lines.append(f"{lab} [{row['kind']}, in-dist {in_dist:.3f}] before={row['before']['accuracy_mean']:.3f} "  # fmt: skip
                     + " ".join(ways))  # fmt: skip
    return "\n".join(lines)


def main_calibrate(args) -> int:
    model = CalcompModel.load(args.model)
    labs, reference = calibration_labs(model, args)
    in_dist = {}
    for kind, items in sorted(reference.items()):
        inputs = [labelled_inputs(model, i.evidence, np.arange(i.evidence.n)) for i in items]
        labels = [np.asarray(i.labels, np.int64) for i in items]
        in_dist[kind] = _metrics(model, inputs, labels, [c != UNLABELLED for c in labels])
        print(f"in distribution ({kind} validation results):", json.dumps(in_dist[kind]), flush=True)  # fmt: skip
    labs = {name: lab for name, lab in labs.items() if lab[0] in in_dist}
    report = {"model": model.name, "in_distribution": in_dist, "budgets": args.budgets,
              "repeats": args.repeats, "labs": run_calibrate(model, labs, args.budgets,
                                                             args.repeats, args.seed, in_dist)}  # fmt: skip
    print(calibration_table(report))
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
                for round_ in range(1, args.rounds + 1):
                    version = page.evaluate("curate.version()")
                    for _ in range(5):
                        k = int(page.evaluate("curate.focused()").split(":")[1])
                        page.keyboard.press(keys[name[k]])
                    start = time.perf_counter()
                    # this round's refit has ended, applied (new cards) or not
                    done = f"(on {5 * round_} labels|\\({5 * round_} labels\\))"
                    page.wait_for_function(
                        "([done, version]) => { const s = document.getElementById('refit-status');"
                        " return s.hasAttribute('data-applied') && new RegExp(done).test(s.textContent)"
                        " && (s.dataset.applied === '0' || curate.version() > version); }",
                        arg=[done, version], timeout=120_000,
                    )  # fmt: skip
                    page.wait_for_function("() => curate.order().length > 0")
                    page_rounds.append({
                        "seconds": round(time.perf_counter() - start, 2),
                        "applied": page.get_attribute("#refit-status", "data-applied") == "1",
                    })  # fmt: skip
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
    parser.add_argument("--sim", default=str(CACHE / "simdata"))
    parser.add_argument(
        "--hybrid", default=str(CACHE / "hybrid"), help="--calibrate: hybrid results"
    )
    parser.add_argument("--real", default=str(ROOT.parent / "shared" / "data" / "real_rois"))
    parser.add_argument("--budgets", type=int, nargs="+",
                        help="labels per lab (default: 10 20 with --calibrate, else 100 300)")  # fmt: skip
    parser.add_argument("--calibrate", action="store_true",
                        help="the page's loop on held-out real videos, hybrid recordings and simulated settings (issue 21)")  # fmt: skip
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
