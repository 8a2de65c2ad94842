"""Recipe of the bundled model ``calcomp_resnet_v1``: re-runs on a CPU in under an hour.

    python recipes/train_calcomp_resnet_v1.py --real-rois ../shared/data/real_rois \
        --out calcomp_caiman/models/calcomp_resnet_v1

Training data: real CaImAn Batch, CaImAn Online, Suite2p and human-drawn masks of the
``real_rois`` data set (provenance and licences in calcomp_caiman/models/README.md), except the held-out
videos, plus simulated footprints of all four classes (``calcomp_caiman.research.simulate``,
``TRAIN_SETTINGS``). Validation (early stopping, calibration): the videos in VALIDATION.
Test (reported in calcomp_caiman/models/README.md, never used for any choice): the videos in TEST.

The split is this recipe's own (it is specific to the ``real_rois`` data set): it is
recorded in the model's ``config.json`` (``training_data``: ``real_validation_videos``,
``real_test_videos``), where ``calcomp evaluate --test-videos``, the v2 recipe and the
benchmarks read it (``calcomp_caiman.research.train.held_out_videos``).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from calcomp_caiman.io.atomic import atomic_write_text
from calcomp_caiman.model.network import DEFAULT_ARCHITECTURE
from calcomp_caiman.research.datasets import (
    TrainingSet,
    archive_paths,
    load_roi_archive,
    make_training_set,
    simulated_training_set,
    video_key,
)
from calcomp_caiman.research.train import train

VALIDATION = frozenset(  # early stopping and temperature calibration
    {"neurofinder_train/02.01", "caiman_paper_yst/YST_part21"}
)
TEST = frozenset(  # reported in calcomp_caiman/models/README.md, never used for any choice
    {
        "neurofinder_test/01.01",
        "neurofinder_test/02.01",
        "neurofinder_test/04.01",
        "caiman_paper_yst/YST_part22",
    }
)
SIMULATED_PER_CLASS = 500  # per simulated field of view (one zoom each)
SIMULATED_FIELDS = 12


def simulated_set(seed: int) -> TrainingSet:
    return simulated_training_set(SIMULATED_PER_CLASS, fields=SIMULATED_FIELDS, seed=seed)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-rois", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("calcomp_caiman/models/calcomp_resnet_v1"))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--widths", type=int, nargs="+", default=DEFAULT_ARCHITECTURE["widths"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    train_sources, val_sources = [], []
    for path in archive_paths(args.real_rois):
        key = video_key(path)
        if key not in TEST:
            (val_sources if key in VALIDATION else train_sources).append(load_roi_archive(path))
    real_train = make_training_set(train_sources)
    real_val = make_training_set(val_sources)
    sim = simulated_set(args.seed)
    sim_val = simulated_set(args.seed + 1).select(
        np.arange(SIMULATED_FIELDS * 4 * SIMULATED_PER_CLASS) % 4 == 0
    )
    data = TrainingSet.concatenate([real_train, sim])
    val = TrainingSet.concatenate([real_val, sim_val])
    logging.info(
        "training on %d patches (%d real), validating on %d",
        len(data.labels),
        len(real_train.labels),
        len(val.labels),
    )
    description = {
        "description": (
            f"real_rois (CaImAn Batch/Online, Suite2p, human masks) of "
            f"{len(set(real_train.groups))} videos, {len(real_train.labels)} components; "
            f"{len(sim.labels)} simulated footprints (TRAIN_SETTINGS); validation videos "
            f"{sorted(VALIDATION)}; held-out test videos {sorted(TEST)}"
        ),
        "real_validation_videos": sorted(VALIDATION),
        "real_test_videos": sorted(TEST),
    }
    model, history = train(
        data,
        val,
        name="calcomp_resnet_v1",
        architecture=dict(DEFAULT_ARCHITECTURE, widths=list(args.widths)),
        epochs=args.epochs,
        batch_size=args.batch_size,
        patience=args.patience,
        seed=args.seed,
        data_description=description,
    )
    model.save(args.out)
    atomic_write_text(args.out / "history.json", json.dumps(history, indent=1))
    logging.info("saved %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
