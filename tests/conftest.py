"""Shared fixtures: data beside the project, a tiny model, disk footprints."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from calcomp_caiman import CLASSES

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CAIMAN_RESULTS = SHARED / "caiman_results"
REAL_ROIS = SHARED / "real_rois"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not available (the shared data lives beside the project)")
    return path


@pytest.fixture(scope="session")
def caiman_files() -> list[Path]:
    return sorted(require(CAIMAN_RESULTS).glob("*.hdf5"))


@pytest.fixture
def caiman_copy(tmp_path):
    """Copy a shared CaImAn result file into tmp_path: ``caiman_copy("synthetic_cnmf.hdf5")``."""

    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copyfile(require(CAIMAN_RESULTS / name), target)
        return target

    return copy


@pytest.fixture(scope="session")
def tiny_model():
    """A 2-stage model with random weights (fast; not the bundled one)."""
    import keras

    from calcomp_caiman.model import CalcompModel, build_resnet

    keras.utils.set_random_seed(0)
    architecture = {"widths": [4, 8], "blocks": [1, 1], "dropout": 0.0}
    net = build_resnet(widths=architecture["widths"], blocks=architecture["blocks"], dropout=0.0)
    config = {"classes": list(CLASSES), "patch_size": 50, "architecture": architecture}
    return CalcompModel.from_keras(net, config=dict(config, name="tiny"))


def disk_footprints(dims=(64, 80), centres=((30, 40),), radius=5.0, dtype=np.float32):
    """Dense (pixels x N) Fortran-order footprints of filled disks."""
    rows, cols = np.mgrid[: dims[0], : dims[1]]
    columns = [
        ((rows - r) ** 2 + (cols - c) ** 2 <= radius**2).astype(dtype).ravel(order="F")
        for r, c in centres
    ]
    return np.stack(columns, axis=1) if columns else np.zeros((dims[0] * dims[1], 0), dtype)
