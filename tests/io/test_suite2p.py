"""Suite2p plane folders in, calcomp_iscell.npy / calcomp_probs.npy out."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest
from conftest import REAL_ROIS, require

from calcomp_caiman import CalcompModel, InvalidFileError
from calcomp_caiman.apps.cli import main
from calcomp_caiman.apps.one_file import classify_file
from calcomp_caiman.classify import classify_evidence
from calcomp_caiman.evidence import Evidence
from calcomp_caiman.io.suite2p import read_evidence
from calcomp_caiman.research.datasets import load_roi_archive
from calcomp_caiman.research.simulate import simulate_session


@pytest.fixture(scope="module")
def model():
    return CalcompModel.load()


@pytest.fixture(scope="module")
def session():
    return simulate_session(dims=(48, 72), n_components=(5, 2, 2, 1), n_frames=40, seed=5)


def write_plane(folder, A, dims, *, C=None, seed=0, iscell=True):
    """A Suite2p plane folder as Suite2p writes it (stat/ops pickled, traces ROIs x frames)."""
    folder.mkdir(parents=True, exist_ok=True)
    A = A.tocsc()
    stat = []
    for k in range(A.shape[1]):
        column = A[:, k]
        pixels, lam = column.indices, column.data
        stat.append({"ypix": (pixels % dims[0]).astype(np.int32),
                     "xpix": (pixels // dims[0]).astype(np.int32),
                     "lam": lam.astype(np.float32), "npix": len(pixels)})  # fmt: skip
    np.save(folder / "stat.npy", np.array(stat, dtype=object), allow_pickle=True)
    rng = np.random.default_rng(seed)
    ops = {"Ly": dims[0], "Lx": dims[1], "neucoeff": 0.7, "fs": 30.0,
           "meanImg": rng.random(dims).astype(np.float32)}  # fmt: skip
    np.save(folder / "ops.npy", ops, allow_pickle=True)
    if C is not None:
        fneu = rng.random(C.shape).astype(np.float32)
        np.save(folder / "F.npy", (C + 0.7 * fneu).astype(np.float32))
        np.save(folder / "Fneu.npy", fneu)
        np.save(
            folder / "spks.npy", np.maximum(np.diff(C, axis=1, prepend=0), 0).astype(np.float32)
        )
    if iscell:
        np.save(
            folder / "iscell.npy", np.column_stack([np.ones(A.shape[1]), np.full(A.shape[1], 0.9)])
        )
    return folder


def digests(folder) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_read_footprints_traces_image(tmp_path, session):
    folder = write_plane(tmp_path / "plane0", session.A, session.dims, C=session.C)
    ev = read_evidence(folder, allow_pickle=True)
    assert ev.dims == session.dims  # 48 rows (Ly) x 72 cols (Lx): a transposition would show
    assert abs(ev.A - session.A).max() < 1e-7
    ops = np.load(folder / "ops.npy", allow_pickle=True).item()
    np.testing.assert_array_equal(ev.image, ops["meanImg"])
    F, Fneu = np.load(folder / "F.npy"), np.load(folder / "Fneu.npy")
    (start, chunk), *_ = list(ev.traces.chunks(7))
    assert start == 0 and ev.traces.names == ("C", "S")
    np.testing.assert_allclose(chunk["C"], (F - 0.7 * Fneu)[:7], rtol=1e-6)
    np.testing.assert_allclose(chunk["S"], np.load(folder / "spks.npy")[:7])
    assert "traces" in ev.kinds and "image" in ev.kinds


def test_classify_writes_iscell_layout_and_leaves_suite2p_files(tmp_path, session, model):
    folder = write_plane(tmp_path / "plane0", session.A, session.dims, C=session.C)
    before = digests(folder)
    result, fields = classify_file(folder, model=model, allow_pickle=True)
    assert result.format == "suite2p" and result.output == str(folder)
    after = digests(folder)
    assert {name: after[name] for name in before} == before  # Suite2p's files untouched
    iscell = np.load(folder / "calcomp_iscell.npy")
    probs = np.load(folder / "calcomp_probs.npy")
    n = session.A.shape[1]
    assert iscell.shape == (n, 2) and probs.shape == (n, 4) and probs.dtype == np.float32
    accepted = np.zeros(n, bool)
    accepted[fields["idx_components"]] = True
    np.testing.assert_array_equal(iscell[:, 0], accepted)
    np.testing.assert_allclose(iscell[:, 1], probs[:, 0], rtol=1e-6)
    np.testing.assert_array_equal(probs, fields["class_probs"])
    # the same answer as the engine on the same evidence
    expected = classify_evidence(read_evidence(folder, allow_pickle=True), model)
    np.testing.assert_array_equal(probs, expected)


def test_replace_iscell_keeps_suite2p_copy(tmp_path, session, model):
    folder = write_plane(tmp_path / "plane0", session.A, session.dims)
    original = (folder / "iscell.npy").read_bytes()
    classify_file(folder, model=model, replace_iscell=True, allow_pickle=True)
    assert (folder / "iscell_suite2p.npy").read_bytes() == original
    np.testing.assert_array_equal(
        np.load(folder / "iscell.npy"), np.load(folder / "calcomp_iscell.npy")
    )
    # the backup is Suite2p's, still
    classify_file(folder, model=model, replace_iscell=True, allow_pickle=True)
    assert (folder / "iscell_suite2p.npy").read_bytes() == original


def test_real_suite2p_rois(tmp_path, model):
    archive = load_roi_archive(require(REAL_ROIS / "neurofinder_test_01.00_suite2p.npz"))
    folder = write_plane(tmp_path / "plane0", archive.A, archive.dims, iscell=False)
    ev = read_evidence(folder, allow_pickle=True)
    assert ev.dims == archive.dims and abs(ev.A - archive.A).max() == 0
    # the same footprints and mean image (ops' meanImg, the v3 image channel): the same answer
    reference = classify_evidence(Evidence.build(archive.A, archive.dims, image=ev.image), model)
    np.testing.assert_array_equal(classify_evidence(ev, model), reference)


def test_reprocess_tree_summary_format_and_resume(tmp_path, session, capsys):
    root = tmp_path / "suite2p"
    write_plane(root / "plane0", session.A, session.dims, C=session.C)
    write_plane(root / "plane1", session.A[:, :4], session.dims)
    out = tmp_path / "out"
    argv = ["reprocess", str(tmp_path / "suite2p"), "--out-dir", str(out), "-q", "--allow-pickle"]
    assert main(argv) == 0
    with open(out / "calcomp_summary.csv") as handle:
        rows = {r["file"].split("/")[-1]: r for r in csv.DictReader(handle)}
    assert {r["format"] for r in rows.values()} == {"suite2p"}
    assert rows["plane1"]["components"] == "4" and rows["plane1"]["status"] == "classified"
    assert np.load(out / "plane0" / "calcomp_iscell.npy").shape == (session.A.shape[1], 2)
    assert not (root / "plane0" / "calcomp_iscell.npy").exists()
    assert main(argv) == 0
    with open(out / "calcomp_summary.csv") as handle:
        assert {r["status"] for r in csv.DictReader(handle)} == {"skipped"}
    capsys.readouterr()


def corrupt_outside(folder):
    stat = np.load(folder / "stat.npy", allow_pickle=True)
    stat[0]["ypix"] = stat[0]["ypix"] + 1000
    np.save(folder / "stat.npy", stat, allow_pickle=True)


def corrupt_ragged(folder):
    stat = np.load(folder / "stat.npy", allow_pickle=True)
    stat[1]["xpix"] = stat[1]["xpix"][:-1]
    np.save(folder / "stat.npy", stat, allow_pickle=True)


def corrupt_no_ops(folder):
    (folder / "ops.npy").unlink()


def corrupt_ops(folder):
    np.save(folder / "ops.npy", {"Lx": 10}, allow_pickle=True)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (corrupt_outside, "outside the 48 x 72 image"),
        (corrupt_ragged, "same length"),
        (corrupt_no_ops, "no ops.npy"),
        (corrupt_ops, "Ly"),
    ],
)
def test_bad_folders_one_line_error_untouched(tmp_path, session, model, corrupt, message):
    folder = write_plane(tmp_path / "plane0", session.A, session.dims, C=session.C)
    corrupt(folder)
    before = digests(folder)
    with pytest.raises(InvalidFileError, match=message) as err:
        classify_file(folder, model=model, format="suite2p", allow_pickle=True)
    assert str(folder) in str(err.value) and "\n" not in str(err.value)
    assert digests(folder) == before
