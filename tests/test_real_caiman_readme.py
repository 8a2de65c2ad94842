"""README.md's blocks marked ``# needs CaImAn``, run with real CaImAn 1.12.1 (issue 22).

Each block runs alone, with what it says comes from the user's script (``cnm``, ``images``,
``dview``; ``opts``) made here from a small simulated movie, and its ``/abs/path/`` files
in a temporary folder (a shipped CaImAn result classified by ``calcomp classify`` where it
reads one). Marked ``caiman``: ``.ci/run`` runs it in its CaImAn environment.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

import h5py
import numpy as np
import pytest
import test_real_caiman as real
from readme_blocks import readme_blocks

pytestmark = pytest.mark.caiman
BLOCKS = [b for b in readme_blocks() if b.needs == "CaImAn"]
DEMO = Path(str(resources.files("calcomp_caiman.data") / "demo_caiman_sim.hdf5"))


def _cnmf_inputs(caiman, folder: Path) -> dict:
    """``cnm`` (a CNMF object, not fitted), ``images`` (memory-mapped) and ``dview``."""
    from caiman.source_extraction.cnmf import cnmf, params

    movie = str(real.write_movie(folder / "movie.tif"))
    opts = params.CNMFParams(
        params_dict={
            "data": {"fnames": [movie], "fr": 30.0, "decay_time": 0.4},
            "init": {"gSig": (3, 3), "K": 4, "nb": 2, "method_init": "greedy_roi"},
            "patch": {"rf": 16, "stride": 8, "only_init": True},
            "temporal": {"p": 1},
            "quality": {"min_SNR": 2.0, "rval_thr": 0.85, "use_cnn": False},
        }
    )
    memmap = caiman.save_memmap([movie], base_name="calcomp_readme_", order="C")
    Yr, dims, T = caiman.load_memmap(memmap)
    images = np.reshape(Yr.T, [T] + list(dims), order="F")
    cnm = cnmf.CNMF(1, params=opts, dview=None)
    return {"cnm": cnm, "images": images, "dview": None, "_memmap": Path(memmap)}


def _onacid_inputs(caiman, folder: Path) -> dict:
    """``opts``: CNMFParams for OnACID on a small simulated movie."""
    from caiman.source_extraction.cnmf import params

    movie = str(real.write_movie(folder / "online.tif", seed=1, frames=300))
    opts = params.CNMFParams(
        params_dict={
            "data": {"fnames": [movie], "fr": 30, "decay_time": 0.4},
            "init": {"gSig": (3, 3), "K": 2, "nb": 1},
            "online": {"init_batch": 100, "init_method": "bare", "epochs": 1,
                       "motion_correct": False, "show_movie": False, "min_num_trial": 5,
                       "save_online_movie": False},
        }
    )  # fmt: skip
    return {"opts": opts}


def _classified_result(folder: Path) -> dict:
    """``/abs/path/results_4class.hdf5``: the shipped demo result, classified."""
    from calcomp_caiman.apps.cli import main

    assert main(["classify", str(DEMO), "--out", str(folder / "results_4class.hdf5")]) == 0
    return {}


def _aligned(estimates) -> None:
    n = estimates.A.shape[1]
    assert n >= 1 and estimates.class_probs.shape == (n, 4)
    assert len(estimates.class_labels) == n and len(estimates.class_flags) == n


def test_every_caiman_block_has_its_inputs():
    assert BLOCKS and all(
        any(word in b.code for word in ("cnm.fit(", "load_CNMF(", "OnACID(")) for b in BLOCKS
    )


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_caiman_block_runs(block, caiman, tmp_path, monkeypatch):
    logging.getLogger("caiman").setLevel(logging.WARNING)
    monkeypatch.chdir(tmp_path)
    names: dict = {"__name__": "__readme__"}
    if "cnm.fit(" in block.code:
        names.update(_cnmf_inputs(caiman, tmp_path))
    elif "OnACID(" in block.code:
        names.update(_onacid_inputs(caiman, tmp_path))
    elif "load_CNMF(" in block.code:
        names.update(_classified_result(tmp_path))
    code = block.code.replace("/abs/path/", f"{tmp_path}/")
    try:
        exec(compile(code, block.id, "exec"), names)
    finally:
        if "_memmap" in names:  # CaImAn writes it under CAIMAN_DATA/temp
            names["_memmap"].unlink(missing_ok=True)
    if "cnm.fit(" in block.code:
        from caiman.source_extraction.cnmf.cnmf import load_CNMF

        _aligned(names["cnm"].estimates)
        _aligned(load_CNMF(str(tmp_path / "results.hdf5")).estimates)
    elif "OnACID(" in block.code:
        from caiman.source_extraction.cnmf.online_cnmf import load_OnlineCNMF

        from calcomp_caiman import align_classes

        assert names["onacid"].params.online["sniper_mode"]  # our screen was on
        _aligned(align_classes(load_OnlineCNMF(str(tmp_path / "online_4class.hdf5")).estimates))
    else:
        estimates = names["cnm"].estimates
        _aligned(estimates)
        with h5py.File(tmp_path / "results_4class.hdf5", "r") as handle:  # what calcomp accepted
            assert estimates.A.shape[1] == handle["estimates/idx_components"].size
