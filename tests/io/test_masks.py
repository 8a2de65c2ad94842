"""Mask files (label images, stacks of masks) in, CSV + npz record out."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest
import scipy.sparse
from conftest import REAL_ROIS, require

from calcomp_caiman import CLASSES, CalcompModel, InvalidFileError
from calcomp_caiman.apps.cli import main
from calcomp_caiman.apps.one_file import classify_file
from calcomp_caiman.classify import classify_evidence
from calcomp_caiman.evidence import Evidence
from calcomp_caiman.io.masks import masks_to_footprints, output_paths, read_evidence
from calcomp_caiman.research.datasets import load_roi_archive
from calcomp_caiman.research.simulate import simulate_session


@pytest.fixture(scope="module")
def model():
    return CalcompModel.load()


@pytest.fixture(scope="module")
def session():
    return simulate_session(dims=(60, 84), n_components=(5, 2, 2, 1), n_frames=20, seed=3)


def label_image(A, dims) -> np.ndarray:
    """Each pixel to the component with the largest value there (0 where none)."""
    dense = A.toarray()
    labels = np.where(dense.max(axis=1) > 0.3, dense.argmax(axis=1) + 1, 0)
    return labels.reshape(dims, order="F").astype(np.uint16)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pixel_order_is_fortran_rows_then_cols():
    labels = np.zeros((5, 7), np.int32)
    labels[1:3, 4] = 9  # rows 1-2, col 4
    A, dims, values = masks_to_footprints(labels)
    assert dims == (5, 7) and values.tolist() == [9]
    assert sorted(A.indices.tolist()) == [1 + 4 * 5, 2 + 4 * 5]


def test_stack_round_trips_footprints_exactly(tmp_path, session):
    stack = session.A.toarray().T.reshape(-1, *session.dims[::-1]).transpose(0, 2, 1)
    path = tmp_path / "stack.npy"
    np.save(path, stack.astype(np.float32))
    ev = read_evidence(path)
    assert ev.dims == session.dims
    assert abs(ev.A - session.A).max() == 0
    assert ev.traces is None and ev.gSig is None


@pytest.mark.parametrize("suffix", [".npy", ".tif"])
def test_label_image_classified_csv_and_record(tmp_path, session, model, suffix):
    labels = label_image(session.A, session.dims)
    labels[labels == 2] = 40  # labels need not be consecutive
    path = tmp_path / f"labels{suffix}"
    if suffix == ".npy":
        np.save(path, labels)
    else:
        pytest.importorskip("tifffile").imwrite(path, labels)
    before = digest(path)
    result, fields = classify_file(path, model=model, out_path=None)
    assert result.format == "masks" and digest(path) == before
    table, record = output_paths(path)
    assert result.output == str(table)
    values = np.unique(labels[labels > 0])
    expected_A = scipy.sparse.csc_matrix(
        np.stack([(labels == v).ravel(order="F") for v in values], 1).astype(np.float32)
    )
    expected = classify_evidence(Evidence.build(expected_A, session.dims), model)
    np.testing.assert_allclose(fields["class_probs"], expected, atol=1e-6)
    with open(table) as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["roi_value"]) for r in rows] == values.tolist()
    assert [r["label"] for r in rows] == [CLASSES[c - 1] for c in fields["class_labels"]]
    with np.load(record, allow_pickle=False) as data:
        np.testing.assert_array_equal(data["class_probs"], fields["class_probs"])
        np.testing.assert_array_equal(data["idx_components"], fields["idx_components"])
        assert '"model_sha256"' in str(data["provenance"])


def test_real_human_masks_as_stack(tmp_path, model):
    archive = load_roi_archive(require(REAL_ROIS / "yst_part11_human.npz"))
    height, width = archive.dims
    stack = archive.A.toarray().T.reshape(-1, width, height).transpose(0, 2, 1)
    path = tmp_path / "human.npy"
    np.save(path, stack.astype(np.uint8))
    ev = read_evidence(path)
    assert ev.dims == archive.dims and abs(ev.A - archive.A).max() == 0
    probs = classify_evidence(ev, model)
    reference = classify_evidence(Evidence.build(archive.A, archive.dims), model)
    np.testing.assert_array_equal(probs, reference)


def test_cli_classify_masks_and_out(tmp_path, session, capsys):
    path = tmp_path / "labels.npy"
    np.save(path, label_image(session.A, session.dims))
    assert main(["classify", str(path), "--out", str(tmp_path / "res.csv"), "-q"]) == 0
    assert (tmp_path / "res.csv").is_file() and (tmp_path / "res.npz").is_file()
    assert "components" in capsys.readouterr().out
    # a second --out to the same place needs --overwrite
    assert main(["classify", str(path), "--out", str(tmp_path / "res.csv"), "-q"]) == 1
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, message",
    [
        (np.array([np.ones((3, 3)), np.ones((4, 4))], dtype=object), "ragged"),
        (np.arange(10), r"label image \(H, W\) or a stack"),
        (np.full((8, 8), 0.5), "integers"),
        (np.zeros((8, 8), np.int32), "no ROI"),
        (np.array([[-1, 0], [0, 2]]), "negative"),
    ],
)
def test_bad_masks_one_line_error_input_untouched(tmp_path, model, content, message):
    path = tmp_path / "bad.npy"
    np.save(path, content, allow_pickle=True)
    before = digest(path)
    with pytest.raises(InvalidFileError, match=message) as err:
        classify_file(path, model=model)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npy"]
