"""Every ```python block of README.md runs, as a new user would paste it (issue 22).

Each block runs alone (a fresh namespace), in a folder holding the files it names: the
demo result shipped with the package (and the shared real CaImAn file when present) under
the names the README uses, and a real writer's NWB file as ``session.nwb``. Blocks marked
``# needs CaImAn`` run in ``tests/test_real_caiman_readme.py`` (real CaImAn); the block
marked ``# needs a SLURM cluster`` runs here up to what only SLURM can do.
"""

from __future__ import annotations

import ast
import inspect
import shutil
from importlib import resources
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import CAIMAN_RESULTS
from readme_blocks import NEEDS, readme_blocks

ROOT = Path(__file__).resolve().parents[1]
DEMO = Path(str(resources.files("calcomp_caiman.data") / "demo_caiman_sim.hdf5"))
NWB = ROOT / "tests" / "data" / "real_writers" / "lab_pixel_mask.nwb"
SOURCES = [DEMO] + [p for p in [CAIMAN_RESULTS / "real_mouse2p_cnmf.hdf5"] if p.is_file()]

PLAIN = [b for b in readme_blocks() if b.needs is None]
SLURM = [b for b in readme_blocks() if b.needs == "a SLURM cluster"]


def _user_folder(folder: Path, source: Path) -> Path:
    """``folder`` holding the files the README's blocks name, copies of shipped ones."""
    for name in ("results.hdf5", "session1.hdf5", "session1/cnm.hdf5", "cnm.hdf5"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / name)
    shutil.copyfile(NWB, folder / "session.nwb")
    return folder


def _classified(folder: Path) -> None:
    """``results_4class.hdf5``: ``results.hdf5`` after ``calcomp classify``."""
    from calcomp_caiman.apps.cli import main

    assert main(["classify", str(folder / "results.hdf5"), "--out", str(folder / "results_4class.hdf5"), "-q"]) == 0  # fmt: skip


def _check(code: str, names: dict) -> None:
    """What some blocks claim, beyond running."""
    if "evidence_features(" in code:  # the consistent way: predict == classify_footprints
        from calcomp_caiman import classify_footprints

        expected = classify_footprints(names["A"], names["dims"], model=names["model"], gSig=4)
        np.testing.assert_allclose(names["probs"], expected, atol=1e-5)
        assert not np.allclose(names["shape_only"], expected, atol=1e-3)  # the README says why
    if "refit(" in code:
        assert names["report"]["labels"] == len(names["labels"])
        assert names["model"].name.endswith("-refit") == names["report"]["applied"]
    if "ood_score(" in code:
        assert np.isfinite(names["score"]) and isinstance(names["is_ood"], bool)
    if "calcomp_crop_scale" in code:  # the recorded scale is the one measured
        with h5py.File("results_4class.hdf5", "r") as handle:
            recorded = handle["estimates/class_probs"].attrs["calcomp_crop_scale"]
        assert names["scale"] == pytest.approx(recorded)
    if "screenshot(" in code:  # taken once the cards were drawn
        from PIL import Image

        shot = np.asarray(Image.open("curate.png").convert("RGB")).astype(int)
        assert shot.shape == (900, 1400, 3)
        r, g, b = shot[..., 0], shot[..., 1], shot[..., 2]
        outline = (r > 200) & (g > 150) & (g < 230) & (b < 90)  # footprint outlines (#fc3)
        assert outline.sum() > 500, "no card was drawn when the screenshot was taken"
    if "serve(" in code:
        assert names["server"].url.startswith("http://127.0.0.1:")


def test_every_block_runs_somewhere():
    blocks = readme_blocks()
    assert blocks and all(b.needs in (None, *NEEDS) for b in blocks)
    assert any(b.needs == "CaImAn" for b in blocks)
    assert (ROOT / "tests" / "test_real_caiman_readme.py").is_file()


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
@pytest.mark.parametrize("block", PLAIN, ids=[b.id for b in PLAIN])
def test_block_runs(block, source, tmp_path, monkeypatch):
    if "curate" in block.code:
        pytest.importorskip("flask")
    if "playwright" in block.code:
        pytest.importorskip("playwright.sync_api")
        if shutil.which("chromium") is None:
            pytest.skip("needs Debian's chromium (apt-get install chromium)")
    if ".nwb" in block.code:
        pytest.importorskip("pynwb")
    monkeypatch.chdir(_user_folder(tmp_path, source))
    if "results_4class.hdf5" in block.code:
        _classified(tmp_path)
    names: dict = {"__name__": "__readme__"}
    exec(compile(block.code, block.id, "exec"), names)
    _check(block.code, names)


@pytest.mark.parametrize("block", SLURM, ids=[b.id for b in SLURM])
def test_slurm_block(block, monkeypatch, tmp_path):
    """The cluster is made by dask-jobqueue as the block says; its jobs (``cluster.scale``)
    need SLURM's ``sbatch``, which is not here: that call is checked, not made."""
    pytest.importorskip("dask_jobqueue")
    monkeypatch.chdir(tmp_path)
    names: dict = {"__name__": "__readme__"}
    scaled = []
    for statement in ast.parse(block.code).body:
        call = statement.value if isinstance(statement, ast.Expr) else None
        if isinstance(call, ast.Call) and ast.unparse(call.func) == "cluster.scale":
            scaled.append({k.arg: ast.literal_eval(k.value) for k in call.keywords})
            continue
        exec(compile(ast.Module([statement], []), block.id, "exec"), names)
    cluster = names["cluster"]
    try:
        assert scaled and all(set(s) <= set(inspect.signature(cluster.scale).parameters) for s in scaled)  # fmt: skip
        script = cluster.job_script()
        for line in ("#SBATCH -p cpu", "#SBATCH -A mylab", "#SBATCH -t 02:00:00", "/path/to/caiman-env/bin/python"):  # fmt: skip
            assert line in script, script
        assert cluster.scheduler_address.startswith("tcp://")
    finally:
        cluster.close()
