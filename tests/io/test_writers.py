"""Every writer checks what it is given with the one validator, schema.check_result: the same
result is written by all four formats or refused by all four with the same error, and a
refused result leaves the input as it was."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from conftest import disk_footprints, write_caiman_nwb

from calcomp_caiman.io.registry import REGISTRY
from calcomp_caiman.research.caiman_files import write_caiman_file
from calcomp_caiman.schema import FIELDS, Classification, check_result

DIMS = (32, 40)
N = 3


def footprints() -> np.ndarray:
    return disk_footprints(DIMS, centres=((8, 10), (16, 25), (25, 12)), radius=4.0)


def result(n: int = N) -> dict:
    probs = np.tile(np.float32([0.7, 0.1, 0.1, 0.1]), (n, 1))
    return {
        "class_probs": probs,
        "class_labels": np.ones(n, np.int8),
        "class_flags": np.zeros(n, np.uint8),
        "cnn_preds": probs[:, 0].copy(),
        "idx_components": np.arange(n, dtype=np.int64),
        "idx_components_bad": np.zeros(0, np.int64),
        "provenance": {"model": "test", "model_sha256": "ab" * 32, "min_prob": 0.5},
    }


def make_input(kind: str, folder: Path) -> Path:
    A = footprints()
    if kind == "caiman":
        return Path(write_caiman_file(folder / "cnm.hdf5", A=A, C=np.ones((N, 20)), dims=DIMS))
    if kind == "nwb":
        pytest.importorskip("pynwb")
        rng = np.random.default_rng(0)
        return Path(write_caiman_nwb(folder / "cnm.nwb", A, DIMS, C=rng.random((N, 20)),
                                     b=np.ones((A.shape[0], 1)), f=np.ones((1, 20)),
                                     YrA=rng.random((N, 20))))  # fmt: skip
    if kind == "suite2p":
        plane = folder / "plane0"
        plane.mkdir()
        stat = []
        for k in range(N):
            pixels = np.flatnonzero(A[:, k])
            stat.append({"ypix": pixels % DIMS[0], "xpix": pixels // DIMS[0],
                         "lam": np.ones(len(pixels), np.float32), "npix": len(pixels)})  # fmt: skip
        np.save(plane / "stat.npy", np.array(stat, dtype=object), allow_pickle=True)
        np.save(plane / "ops.npy", {"Ly": DIMS[0], "Lx": DIMS[1]}, allow_pickle=True)
        return plane
    path = folder / "rois.npy"
    np.save(path, A.T.reshape((N, DIMS[1], DIMS[0])).transpose(0, 2, 1))  # (N, H, W) stack
    return path


def digest(path: Path) -> str:
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    return hashlib.sha256(b"".join(f.name.encode() + f.read_bytes() for f in files)).hexdigest()


def broken(change: str) -> object:
    bad = result()
    if change == "not a mapping":
        return list(bad.values())
    if change == "no cnn_preds":
        del bad["cnn_preds"]
    elif change == "one component too many":
        bad = result(N + 1)
    elif change == "three classes":
        bad["class_probs"] = bad["class_probs"][:, :3]
    elif change == "float labels":
        bad["class_labels"] = bad["class_labels"].astype(np.float32)
    elif change == "label 5":
        bad["class_labels"][0] = 5
    elif change == "flag 256":
        bad["class_flags"] = np.array([0, 256, 0])
    elif change == "index out of range":
        bad["idx_components"] = np.array([0, N])
    elif change == "2-D indices":
        bad["idx_components_bad"] = np.zeros((1, 1), np.int64)
    elif change == "fingerprint shape":
        bad["class_fingerprint"] = np.zeros((N, 2))
    elif change == "provenance list":
        bad["provenance"]["accept"] = ["neuron"]
    return bad


CHANGES = ("not a mapping", "no cnn_preds", "one component too many", "three classes",
           "float labels", "label 5", "flag 256", "index out of range", "2-D indices",
           "fingerprint shape", "provenance list")  # fmt: skip


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_every_writer_refuses_what_check_result_refuses(kind, tmp_path):
    source = make_input(kind, tmp_path)
    before = digest(source)
    for change in CHANGES:
        with pytest.raises((TypeError, ValueError)) as expected:
            check_result(broken(change), N, label=str(source))
        with pytest.raises(type(expected.value)) as err:
            REGISTRY[kind].write_classification(source, broken(change))
        assert str(expected.value) in str(err.value), change
        assert digest(source) == before, change
    outputs = [p.name for p in tmp_path.rglob("*calcomp*")]
    assert outputs == [], outputs


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_every_writer_takes_the_record_or_its_dict(kind, tmp_path):
    source = make_input(kind, tmp_path)
    fmt = REGISTRY[kind]
    record = Classification(
        {name: value for name, value in result().items() if name in FIELDS},
        provenance=result()["provenance"],
    )
    out = tmp_path / "out"
    out.mkdir()
    target = out / ("plane0" if kind == "suite2p" else source.name)
    fmt.write_classification(source, record, out_path=target)
    assert fmt.is_classified_by(target, "ab" * 32)
    fmt.write_classification(source, record.as_result(), out_path=target, overwrite=True)
    assert fmt.is_classified_by(target, "ab" * 32) and not fmt.is_classified_by(target, "cd" * 32)


def test_check_result_fills_and_casts():
    given = result()
    del given["class_flags"], given["provenance"]
    given["class_labels"] = [1, 2, 4]
    given["idx_components"] = np.array([2, 0], np.int32)
    record = check_result(given, N, label="x")
    assert list(record.fields) == [name for name in FIELDS if name != "class_fingerprint"]
    assert all(record.fields[name].dtype == FIELDS[name][0] for name in record.fields)
    assert record.fields["class_flags"].tolist() == [0, 0, 0] and record.provenance == {}
    assert record.accepted.tolist() == [True, False, True]
    assert check_result(given).n == N  # without n: the result on its own
    given["class_fingerprint"] = None  # absent, as classify leaves it without a fingerprint
    assert "class_fingerprint" not in check_result(given).fields


def test_check_result_messages_name_the_file():
    with pytest.raises(ValueError, match=r"result has 4 components but data/x\.hdf5 has 3"):
        check_result(result(4), N, label="data/x.hdf5")
    with pytest.raises(TypeError, match="must be a Classification or a dict"):
        check_result([1, 2, 3])
    with pytest.raises(TypeError, match=r"result\['class_labels'\] must hold integers"):
        check_result(broken("float labels"))
    with pytest.raises(TypeError, match="encode lists and dicts as JSON text"):
        check_result(broken("provenance list"))
