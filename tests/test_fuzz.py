"""Property-based tests: extract_patches, classify_footprints and the HDF5 reader on random input.

Whatever the shapes, sparsity, dtypes, memory orders and values, the functions either return
output that keeps its invariants or raise one of their documented errors.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.sparse
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from calcomp_caiman import CLASSES, InvalidFileError, classify_footprints, extract_patches
from calcomp_caiman.io.caiman_h5 import ResultFile, read_estimates
from calcomp_caiman.io.caiman_h5_write import write_classification

PATCH = 50
FLOAT_MAGNITUDES = {
    "float32": (1e-30, 1e-8, 1.0, 1e8, 1e30),
    "float64": (1e-200, 1e-30, 1.0, 1e30, 1e200),
}
INT_DTYPES = ("int16", "int32", "int64", "uint8", "uint16")
LAYOUTS = ("dense_c", "dense_f", "csc", "csr", "coo", "csc_unsorted")
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def unsort_rows(A: scipy.sparse.csc_matrix) -> scipy.sparse.csc_matrix:
    """The same matrix with the row indices of every column reversed (as in CaImAn files)."""
    A = A.copy()
    for lo, hi in zip(A.indptr[:-1], A.indptr[1:]):
        A.indices[lo:hi] = A.indices[lo:hi][::-1].copy()
        A.data[lo:hi] = A.data[lo:hi][::-1].copy()
    A.has_sorted_indices = False
    return A


def as_layout(dense: np.ndarray, layout: str):
    if layout == "dense_c":
        return np.ascontiguousarray(dense)
    if layout == "dense_f":
        return np.asfortranarray(dense)
    if layout == "csc":
        return scipy.sparse.csc_matrix(dense)
    if layout == "csr":
        return scipy.sparse.csr_matrix(dense)
    if layout == "coo":
        return scipy.sparse.coo_matrix(dense)
    return unsort_rows(scipy.sparse.csc_matrix(dense))


@st.composite
def footprints(draw, max_side: int = 40, max_n: int = 6):
    """(A in some layout, dims, gSig, the same A as a dense array)."""
    dims = (draw(st.integers(1, max_side)), draw(st.integers(1, max_side)))
    if draw(st.integers(0, 4)) == 0:
        dims += (draw(st.integers(1, 3)),)
    n = draw(st.integers(0, max_n))
    density = draw(st.sampled_from([0.0, 0.005, 0.05, 0.3, 1.0]))
    dtype = draw(st.sampled_from(("float32", "float64") + INT_DTYPES))
    negative = draw(st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (int(np.prod(dims)), n)
    mask = rng.random(shape) < density
    if dtype in FLOAT_MAGNITUDES:
        magnitude = draw(st.sampled_from(FLOAT_MAGNITUDES[dtype]))
        values = rng.random(shape) * magnitude
    else:
        values = rng.integers(1, 100, shape).astype(np.float64)
    if not dtype.startswith("uint"):
        values = np.where(rng.random(shape) < negative, -values, values)
    dense = np.where(mask, values, 0).astype(dtype)
    A = as_layout(dense, draw(st.sampled_from(LAYOUTS)))
    size = st.floats(0.2, 30.0, allow_nan=False)
    gsig = draw(st.one_of(st.none(), size, st.tuples(size, size)))
    return A, dims, gsig, dense


def snapshot(A) -> str:
    """A hash of everything an input holds, to check it is not modified."""
    if isinstance(A, scipy.sparse.coo_matrix):
        parts = [A.data, A.row, A.col]
    else:
        parts = [A.data, A.indices, A.indptr] if scipy.sparse.issparse(A) else [A]
    return hashlib.sha256(b"".join(np.ascontiguousarray(p).tobytes() for p in parts)).hexdigest()


# --------------------------------------------------------------------------- extract_patches


@FAST
@given(footprints())
def test_extract_patches_keeps_its_invariants(case):
    A, dims, gsig, dense = case
    before = snapshot(A)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow, no invalid value on the way
        patches = extract_patches(A, dims, gSig=gsig)
    n = dense.shape[1]
    assert patches.shape == (n, PATCH, PATCH) and patches.dtype == np.float32
    assert np.isfinite(patches).all()
    norms = np.sqrt(np.einsum("nij,nij->n", patches.astype(np.float64), patches))
    for k in range(n):
        assert np.isclose(norms[k], 1.0, atol=1e-4) or not patches[k].any(), norms[k]
    empty = ~(dense > 0).any(axis=0)  # nothing positive: negative values are clipped
    assert not patches[empty].any()
    assert snapshot(A) == before  # inputs are never modified
    # any layout, same patches
    reference = extract_patches(np.asfortranarray(dense), dims, gSig=gsig)
    np.testing.assert_allclose(patches, reference, atol=2e-5)


BREAKAGES = ("nan", "inf", "-inf", "rows", "gsig", "dims", "kind", "complex")


@FAST
@given(footprints(max_n=4), st.sampled_from(BREAKAGES), st.data())
def test_extract_patches_raises_only_documented_errors(case, breakage, data):
    A, dims, gsig, dense = case
    dense = dense.astype(np.float64)
    expected, match = ValueError, None
    if breakage in ("nan", "inf", "-inf"):
        if dense.size == 0:
            return
        flat = dense.reshape(-1)
        flat[data.draw(st.integers(0, flat.size - 1))] = float(breakage)
        A, match = as_layout(dense, data.draw(st.sampled_from(LAYOUTS))), "NaN or Inf"
    elif breakage == "rows":
        extra = np.zeros((data.draw(st.integers(1, 3)), dense.shape[1]))
        A, match = np.concatenate([dense, extra]), "pixel rows"
    elif breakage == "gsig":
        gsig = data.draw(st.sampled_from([0, -1.5, float("nan"), float("inf"), (), (2.0, -1.0),
                                          "wide"]))  # fmt: skip
        match = "gSig"
    elif breakage == "dims":
        dims = data.draw(st.sampled_from([(0, 5), (5,), (2, 2, 2, 2), (float("nan"), 3),
                                          (float("inf"), 3), "64x64", (-4, 4)]))  # fmt: skip
        match = "dims"
    elif breakage == "kind":
        A, expected = data.draw(st.sampled_from([None, "A", {"A": 1}, [[1.0]] * 3, 3.0])), TypeError
    else:
        A, expected, match = dense.astype(np.complex128), TypeError, "real"
    with pytest.raises(expected, match=match):
        extract_patches(A, dims, gSig=gsig)


# --------------------------------------------------------------------------- classify_footprints


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(footprints(max_side=30, max_n=5))
def test_classify_footprints_rows_sum_to_one(tiny_model, case):
    A, dims, gsig, dense = case
    probs = classify_footprints(A, dims, model=tiny_model, gSig=gsig)
    n = dense.shape[1]
    assert probs.shape == (n, len(CLASSES)) and probs.dtype == np.float32
    assert np.isfinite(probs).all() and (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    empty = ~(dense > 0).any(axis=0)
    assert (probs[empty] == np.eye(len(CLASSES))[CLASSES.index("noise")]).all()


# --------------------------------------------------------------------------- the HDF5 reader


@st.composite
def caiman_like_files(draw) -> dict:
    """A recipe for a small CaImAn-like file, sometimes broken in one or more ways."""
    dims = draw(
        st.one_of(
            st.tuples(st.integers(1, 30), st.integers(1, 30)),
            st.tuples(st.integers(1, 10), st.integers(1, 10), st.integers(1, 3)),
        )
    )
    recipe = {
        "dims": dims,
        "n": draw(st.integers(0, 5)),
        "density": draw(st.sampled_from([0.0, 0.05, 0.5, 1.0])),
        "dtype": draw(
            st.sampled_from(
                [
                    "float32",
                    "float32",
                    "float64",
                    "float64",
                    "float16",
                    "int32",
                    "uint8",
                    "bool",
                    "complex64",
                    "S4",
                ]
            )
        ),  # fmt: skip
        "layout": draw(
            st.sampled_from(
                ["csc", "csc", "csc", "dense", "none", "missing", "missing part", "scalar"]
            )
        ),  # fmt: skip
        "unsorted": draw(st.booleans()),
        "index_dtype": draw(st.sampled_from(["int32", "int64", "uint32", "float64"])),
        "shape": draw(
            st.sampled_from(
                ["ok", "ok", "ok", "swapped", "float", "text", "none", "3 values", "n + 1", "nan"]
            )
        ),  # fmt: skip
        "dims_where": draw(
            st.sampled_from(
                [
                    "estimates/dims",
                    "dims",
                    "params/data/dims",
                    "none",
                    "missing",
                    "text",
                    "inf",
                    "many",
                    "fraction",
                ]
            )
        ),  # fmt: skip
        "dims_off": draw(st.sampled_from([0, 0, 0, 1, -1])),
        "gsig": draw(
            st.sampled_from(
                [
                    "missing",
                    "none",
                    "ok",
                    "fraction",
                    "negative",
                    "nan",
                    "text",
                    "empty",
                    "2d",
                    "zero",
                ]
            )
        ),  # fmt: skip
        "optional": draw(st.sampled_from(["none", "arrays", "missing", "group", "text"])),
        "bad_value": draw(st.sampled_from([None, None, None, "nan", "inf"])),
        "provenance": draw(st.booleans()),
        "damage": draw(
            st.sampled_from(
                ["none", "none", "none", "append", "truncate", "garbage in A", "empty file", "text"]
            )
        ),  # fmt: skip
        "damage_at": draw(st.floats(0.0, 1.0)),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }
    if draw(st.booleans()):  # half of them valid, in the ways CaImAn files differ
        recipe.update(
            n=draw(st.integers(1, 5)),
            dtype=draw(st.sampled_from(["float32", "float64", "float16", "int32", "uint8"])),
            layout=draw(st.sampled_from(["csc", "csc", "dense"])),
            shape=draw(st.sampled_from(["ok", "float"])),
            dims_where=draw(st.sampled_from(["estimates/dims", "dims", "params/data/dims"])),
            dims_off=0,
            bad_value=None,
            damage=draw(st.sampled_from(["none", "append"])),
        )
    return recipe


def build_file(path: Path, recipe: dict) -> None:
    rng = np.random.default_rng(recipe["seed"])
    dims, n = recipe["dims"], recipe["n"]
    n_pixels = int(np.prod(dims)) + recipe["dims_off"]
    dense = (rng.random((max(n_pixels, 0), n)) < recipe["density"]) * rng.random(
        (max(n_pixels, 0), n)
    )
    if recipe["bad_value"] and dense.size:
        dense.reshape(-1)[rng.integers(dense.size)] = float(recipe["bad_value"])
    dtype = np.dtype(recipe["dtype"])
    with h5py.File(path, "w") as handle, np.errstate(invalid="ignore", over="ignore"):
        estimates = handle.create_group("estimates")
        layout = recipe["layout"]
        if layout in ("csc", "missing part"):
            A = scipy.sparse.csc_matrix(dense)
            if recipe["unsorted"]:
                A = unsort_rows(A)
            group = estimates.create_group("A")
            group["data"] = A.data.astype(dtype)
            group["indices"] = A.indices.astype(recipe["index_dtype"])
            group["indptr"] = A.indptr.astype(recipe["index_dtype"])
            shape = {
                "ok": np.array(A.shape, np.int64),
                "swapped": np.array(A.shape[::-1], np.int64),
                "float": np.array(A.shape, np.float64),
                "text": np.array([b"rows", b"cols"]),
                "none": "NoneType",
                "3 values": np.array([*A.shape, 1]),
                "n + 1": np.array([A.shape[0], A.shape[1] + 1]),
                "nan": np.array([np.nan, A.shape[1]]),
            }[recipe["shape"]]
            group["shape"] = shape
            if layout == "missing part":
                del group[["data", "indices", "indptr", "shape"][recipe["seed"] % 4]]
        elif layout == "dense":
            estimates["A"] = dense.astype(dtype)
        elif layout == "none":
            estimates["A"] = "NoneType"
        elif layout == "scalar":
            estimates["A"] = 3.0
        value = {
            "estimates/dims": np.array(dims),
            "dims": np.array(dims),
            "params/data/dims": np.array(dims),
            "none": "NoneType",
            "text": np.array([b"FOV"]),
            "inf": np.array([np.inf, 4.0]),
            "many": np.arange(1, 40),
            "fraction": np.array(dims) + 0.5,
        }.get(recipe["dims_where"])
        if value is not None:
            where = recipe["dims_where"]
            handle[
                where
                if where in ("estimates/dims", "dims", "params/data/dims")
                else "estimates/dims"
            ] = value
        gsig = {
            "none": "NoneType",
            "ok": np.array([4, 4]),
            "fraction": np.array([3.7, 4.2]),
            "negative": np.array([-2.0, 3.0]),
            "nan": np.array([np.nan, np.nan]),
            "text": np.array([b"big"]),
            "empty": np.zeros(0),
            "2d": np.full((2, 2), 2.5),
            "zero": np.array([0, 0]),
        }.get(recipe["gsig"])
        if gsig is not None:
            handle["params/init/gSig"] = gsig
        for name in ("idx_components", "idx_components_bad", "cnn_preds", "SNR_comp", "r_values"):
            if recipe["optional"] == "none":
                estimates[name] = "NoneType"
            elif recipe["optional"] == "arrays":
                estimates[name] = rng.random(n)
            elif recipe["optional"] == "group":
                estimates.create_group(name)
            elif recipe["optional"] == "text":
                estimates[name] = b"accepted"
        if recipe["provenance"]:
            probs = estimates.create_dataset("class_probs", data=np.full((n, 4), 0.25))
            probs.attrs["calcomp_model"] = "tiny"
            probs.attrs["calcomp_min_prob"] = 0.5
            probs.attrs["calcomp_shape"] = np.arange(4)
    damage, at = recipe["damage"], recipe["damage_at"]
    if damage == "append":
        with open(path, "ab") as handle:
            handle.write(rng.bytes(int(at * 4096) + 1))
    elif damage == "truncate":
        os.truncate(path, int(at * path.stat().st_size))
    elif damage == "empty file":
        os.truncate(path, 0)
    elif damage == "text":
        path.write_text("estimates/A = neurons\n")
    elif damage == "garbage in A":  # the raw bytes of a stored array of estimates/A
        with h5py.File(path, "r") as handle:
            node = handle.get("estimates/A")
            nodes = [node[k] for k in node] if isinstance(node, h5py.Group) else [node]
            nodes = [x for x in nodes if isinstance(x, h5py.Dataset) and x.id.get_offset()]
            target = nodes[int(at * len(nodes)) % len(nodes)] if nodes else None
            if target is not None:
                offset, size = target.id.get_offset(), target.id.get_storage_size()
        if target is not None and size:
            with open(path, "r+b") as handle:
                handle.seek(offset)
                handle.write(rng.bytes(size))


def check_result(source: ResultFile, path: Path) -> None:
    """The invariants of what read_estimates returns."""
    assert source.path == str(path)
    assert isinstance(source.dims, tuple) and len(source.dims) in (2, 3)
    assert all(isinstance(d, int) and d > 0 for d in source.dims)
    A = source.A
    assert isinstance(A, scipy.sparse.csc_matrix)
    A.check_format(full_check=True)
    assert A.shape == (int(np.prod(source.dims)), source.n_components) and source.n_components > 0
    assert A.has_sorted_indices and A.dtype.kind in "biuf"
    assert np.isfinite(A.data).all()
    if source.gSig is not None:
        assert len(source.gSig) > 0
        assert all(isinstance(g, float) and np.isfinite(g) and g > 0 for g in source.gSig)
    for name in ("cnn_preds", "idx_components", "idx_components_bad", "SNR_comp", "r_values"):
        assert getattr(source, name) is None or isinstance(getattr(source, name), np.ndarray)


def fake_result(n: int) -> dict:
    probs = np.full((n, 4), 0.25, np.float32)
    return {
        "class_probs": probs,
        "class_labels": np.ones(n, np.int8),
        "cnn_preds": probs[:, 0],
        "idx_components": np.arange(n),
        "idx_components_bad": np.zeros(0, np.int64),
        "provenance": {"model": "fuzz"},
    }


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(caiman_like_files())
def test_read_estimates_returns_valid_content_or_documented_error(recipe):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cnm.hdf5"
        build_file(path, recipe)
        before = hashlib.sha256(path.read_bytes()).hexdigest()
        try:
            source = read_estimates(path)
        except InvalidFileError as err:
            assert err.path == str(path) and str(err).startswith(f"{path}: ")
            assert "\n" not in str(err)
            event(f"InvalidFileError: {err.problem[:30]}")
            source = None
        if source is not None:
            check_result(source, path)
            out = Path(folder) / "out.hdf5"
            try:  # what was read can be written back (to a copy)
                write_classification(path, fake_result(source.n_components), out_path=out)
            except InvalidFileError as err:
                assert str(err).startswith(f"{out}: ") and not out.exists()
            else:
                assert read_estimates(out).classification["model"] == "fuzz"
            event("read and written back")
        assert hashlib.sha256(path.read_bytes()).hexdigest() == before
        assert [p.name for p in Path(folder).iterdir() if ".calcomp-tmp-" in p.name] == []


def test_read_estimates_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.hdf5"):
        read_estimates(tmp_path / "missing.hdf5")
