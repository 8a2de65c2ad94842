"""Out-of-distribution reference of a model: fit, calibrate, measure, write ``ood.npz``.

Reference: the model's embedding of a sample of its own training patches (the real
``real_rois`` training videos, i.e. neither the validation nor the test videos its
``config.json`` records (``calcomp_caiman.research.train.held_out_videos``), and
simulated ``TRAIN_SETTINGS`` fields), as ``recipes/train_calcomp_resnet_v1.py`` builds them,
one group per class and kind (real / simulated).
Threshold: 1.02 x the largest file score of the held-out in-distribution calibration files
(the real validation videos' archives and simulated ``TRAIN_SETTINGS`` fields with unseen
seeds). Measured afterwards on files used for neither: the real test videos' archives and
new ``TRAIN_SETTINGS`` fields (in distribution) against ``SHIFTED_SETTINGS`` fields (out of
distribution): ROC-AUC of the file score, and the fraction flagged; plus the shared CaImAn
result files.

Examples
--------
    python benchmarks/ood_calibration.py --real-rois ../shared/data/real_rois \
        --caiman-results ../shared/data/caiman_results \
        --model default --write calcomp_caiman/models/calcomp_resnet_v1 --json ood.json
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

from calcomp_caiman.evidence import Evidence
from calcomp_caiman.evidence.patches import extract_patches
from calcomp_caiman.io.caiman_h5 import read_evidence
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.model.ood import (
    calibrate_ood_threshold,
    evidence_distances,
    file_score,
    fit_ood_reference,
    save_ood_reference,
)
from calcomp_caiman.research.datasets import load_roi_archive, video_key
from calcomp_caiman.research.simulate import SHIFTED_SETTINGS, TRAIN_SETTINGS, simulate_footprints
from calcomp_caiman.research.train import held_out_videos


def roc_auc(negatives, positives) -> float:
    """P(score of a positive > score of a negative), ties counted half."""
    neg, pos = np.asarray(negatives, float), np.asarray(positives, float)
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def simulated_fields(settings, seeds, per_class):
    for seed in seeds:
        A, dims, _, gsig = simulate_footprints(per_class, settings=settings, seed=seed)
        yield f"sim{seed}", Evidence.build(A, dims, gSig=gsig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-rois", type=Path, required=True)
    parser.add_argument("--caiman-results", type=Path)
    parser.add_argument("--model", default="default")
    parser.add_argument("--real-per-video", type=int, default=400, help="reference patches")
    parser.add_argument("--sim-fields", type=int, default=12, help="reference fields")
    parser.add_argument("--sim-per-class", type=int, default=100, help="per reference field")
    parser.add_argument("--files", type=int, default=20, help="simulated files per test set")
    parser.add_argument(
        "--margin", type=float, default=1.02, help="threshold / max calibration score"
    )
    parser.add_argument("--write", type=Path, help="model folder to write ood.npz into")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    model = CalcompModel.load(args.model)
    validation_videos, test_videos = held_out_videos(model)
    rng = np.random.default_rng(0)

    reference_patches, reference_groups, calibration, real_test = [], [], {}, {}
    for path in sorted(args.real_rois.glob("*.npz")):
        key = video_key(path)
        source = load_roi_archive(path)
        evidence = Evidence.build(source.A, source.dims, source=str(path))
        if key in test_videos:
            real_test[path.stem] = evidence
        elif key in validation_videos:
            calibration[path.stem] = evidence
        else:
            patches = extract_patches(source.A, source.dims)
            take = rng.choice(len(patches), min(args.real_per_video, len(patches)), replace=False)
            reference_patches.append(patches[take])
            reference_groups.append(np.char.add("real", source.labels[take].astype(str)))
    for seed in range(args.sim_fields):  # the recipe's own training seeds
        A, dims, labels, gsig = simulate_footprints(
            args.sim_per_class, settings=TRAIN_SETTINGS, seed=seed
        )
        reference_patches.append(extract_patches(A, dims, gSig=gsig))
        reference_groups.append(np.char.add("sim", labels.astype(str)))
    patches = np.concatenate(reference_patches)
    reference = fit_ood_reference(model, patches, np.concatenate(reference_groups))

    def scores(files: dict) -> dict:
        return {name: file_score(evidence_distances(ev, model, reference)) for name, ev in files.items()}  # fmt: skip

    calibration.update(simulated_fields(TRAIN_SETTINGS, range(5000, 5000 + args.files), 25))
    calibration_scores = scores(calibration)
    reference = calibrate_ood_threshold(
        reference, list(calibration_scores.values()), margin=args.margin
    )
    sim_train = scores(dict(simulated_fields(TRAIN_SETTINGS, range(7000, 7000 + args.files), 25)))
    sim_shifted = scores(dict(simulated_fields(SHIFTED_SETTINGS, range(9000, 9000 + args.files), 25)))  # fmt: skip
    real_test_scores = scores(real_test)
    in_distribution = list(sim_train.values()) + list(real_test_scores.values())
    caiman = {}
    if args.caiman_results:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            caiman = scores({p.name: read_evidence(p) for p in sorted(args.caiman_results.glob("*.hdf5"))})  # fmt: skip
    threshold = reference.threshold
    report = {
        "model": model.name,
        "network_sha256": reference.network_sha256,
        "reference_patches": int(len(patches)),
        "threshold": threshold,
        "calibration_files": {k: round(v, 4) for k, v in calibration_scores.items()},
        "roc_auc_shifted_vs_train_sim": roc_auc(
            list(sim_train.values()), list(sim_shifted.values())
        ),  # fmt: skip
        "roc_auc_shifted_vs_all_in_distribution": roc_auc(
            in_distribution, list(sim_shifted.values())
        ),  # fmt: skip
        "flagged_shifted_sim": float(np.mean(np.array(list(sim_shifted.values())) > threshold)),
        "flagged_train_sim": float(np.mean(np.array(list(sim_train.values())) > threshold)),
        "flagged_real_test": float(np.mean(np.array(list(real_test_scores.values())) > threshold)),
        "real_test_files": {k: round(v, 4) for k, v in real_test_scores.items()},
        "sim_train_scores": sorted(round(v, 4) for v in sim_train.values()),
        "sim_shifted_scores": sorted(round(v, 4) for v in sim_shifted.values()),
        "caiman_results": {k: round(v, 4) for k, v in caiman.items()},
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.write:
        print(f"wrote {save_ood_reference(reference, args.write)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
