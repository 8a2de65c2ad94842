"""How a CaImAn result file stores values in HDF5, and where our classification sits in it.

CaImAn 1.12's ``cnm.save`` writes ``None`` as the scalar string ``'NoneType'``, a sparse
matrix as a group of its CSC parts (``data``, ``indices``, ``indptr``, ``shape``) and strings
as attributes. The reader (:mod:`calcomp_caiman.io.caiman_h5`) decodes values with the
functions here; the writer (:mod:`calcomp_caiman.io.caiman_h5_write`) adds our fields under
the names fixed here.
"""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np
import scipy.sparse

from calcomp_caiman.errors import InvalidFileError
from calcomp_caiman.io.atomic import reason
from calcomp_caiman.io.limits import check_hdf5_dataset

__all__ = [
    "ATTR_PREFIX",
    "BACKUP_FIELDS",
    "SPARSE_PARTS",
    "STORED_NONE",
    "attribute_value",
    "footprints_from_parts",
    "is_none",
    "optional_array",
    "read_footprint_parts",
]

STORED_NONE = "NoneType"
"""How ``cnm.save`` stores ``None``: this scalar string."""

SPARSE_PARTS = ("data", "indices", "indptr", "shape")
"""The datasets of a group that stores a sparse (CSC) matrix, such as ``estimates/A``."""

ATTR_PREFIX = "calcomp_"
"""Prefix of the provenance attributes stored on ``estimates/class_probs``."""

BACKUP_FIELDS = {name: "caiman_" + name for name in ("cnn_preds", "idx_components",
                                                     "idx_components_bad")}  # fmt: skip
"""CaImAn's own fields that a classification rewrites, and the ``/estimates`` names their
first-seen values are kept under."""


def is_none(value: Any) -> bool:
    """Whether a stored value is CaImAn's ``None`` (:data:`STORED_NONE`, str or bytes).

    Examples
    --------
    >>> is_none(b"NoneType"), is_none(np.array("NoneType")), is_none(np.zeros(2))
    (True, True, False)
    """
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "OSU":
        value = value.item()
    if isinstance(value, bytes):
        return value == STORED_NONE.encode()
    return isinstance(value, str) and value == STORED_NONE


def optional_array(group: h5py.Group, name: str) -> np.ndarray | None:
    """The dataset ``name`` of ``group`` as an array; None when absent, not a dataset, or
    CaImAn's ``None``.

    Raises
    ------
    InvalidFileError
        It declares more than the file can hold (:mod:`calcomp_caiman.io.limits`).
    """
    node = group.get(name)
    if not isinstance(node, h5py.Dataset):
        return None
    check_hdf5_dataset(node)
    value = node[()]
    return None if is_none(value) else np.asarray(value)


def attribute_value(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value (bytes decoded, numpy scalars and arrays
    converted).

    Examples
    --------
    >>> attribute_value(b"demo"), attribute_value(np.float32(0.5)), attribute_value(np.arange(2))
    ('demo', 0.5, [0, 1])
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def read_footprint_parts(estimates: h5py.Group, path: str) -> Any:
    """``estimates/A`` as stored: the sparse parts as a dict, or a dense array.

    Only structure is checked here (:func:`footprints_from_parts` checks the values), so
    the file can be closed before the matrix is built.

    Raises
    ------
    InvalidFileError
        No ``estimates/A``, or a group without every part of :data:`SPARSE_PARTS`; a part
        that declares more than the file can hold (:mod:`calcomp_caiman.io.limits`).
    """
    node = estimates.get("A")
    if node is None:
        raise InvalidFileError(
            path,
            "has no estimates/A (the spatial footprints); expected a CaImAn result file "
            "saved with cnm.save() after fitting.",
        )
    if isinstance(node, h5py.Group):
        missing = [part for part in SPARSE_PARTS if not isinstance(node.get(part), h5py.Dataset)]
        if missing:
            raise InvalidFileError(
                path,
                f"estimates/A lacks {', '.join(missing)}; expected CaImAn's sparse layout "
                "(data, indices, indptr, shape).",
            )
        for part in SPARSE_PARTS:
            check_hdf5_dataset(node[part])
        return {part: node[part][()] for part in SPARSE_PARTS}
    check_hdf5_dataset(node)
    return node[()]


def _whole_numbers(value: Any) -> np.ndarray | None:
    """Integer indices as int64 (integral, finite floats too); None when they are not."""
    array = np.asarray(value)
    if np.issubdtype(array.dtype, np.integer):
        return array
    if not np.issubdtype(array.dtype, np.floating):
        return None
    if array.size and not (np.all(np.isfinite(array)) and np.all(array == np.round(array))
                           and np.abs(array).max() < 2.0**62):  # fmt: skip
        return None
    return array.astype(np.int64)


def footprints_from_parts(value: Any, path: str) -> scipy.sparse.csc_matrix:
    """:func:`read_footprint_parts`' value as a checked CSC matrix (sorted row indices).

    Float16 data becomes float32 (scipy.sparse needs it); other real dtypes are kept.

    Raises
    ------
    InvalidFileError
        Not real numbers, not 2-D, not a valid CSC matrix, or CaImAn's ``None`` (saved
        before fitting); the message names ``path``.
    """
    if isinstance(value, dict):
        data = _real_numbers(np.asarray(value["data"]))
        try:
            shape = tuple(int(s) for s in np.ravel(value["shape"]))
        except (TypeError, ValueError, OverflowError):  # text, 'NoneType', NaN
            shape = ()
        if data is None or len(shape) != 2:
            raise InvalidFileError(
                path,
                f"estimates/A holds {np.asarray(value['data']).dtype} data with shape "
                f"{np.ravel(value['shape']).tolist()}; expected real numbers, pixels x "
                "components.",
            )
        indices = _whole_numbers(value["indices"])
        indptr = _whole_numbers(value["indptr"])
        if indices is None or indptr is None:
            raise InvalidFileError(
                path,
                f"estimates/A has {np.asarray(value['indices']).dtype} indices and "
                f"{np.asarray(value['indptr']).dtype} indptr that are not whole numbers; "
                "expected integers (CaImAn writes int32).",
            )
        try:
            A = scipy.sparse.csc_matrix((data, indices, indptr), shape=shape)
            A.check_format(full_check=True)
            if not A.has_sorted_indices:  # some CaImAn files store unsorted row indices
                A.sort_indices()
        except (ValueError, TypeError, OverflowError, RuntimeError, MemoryError) as err:
            raise InvalidFileError(
                path, f"estimates/A is not a valid sparse (CSC) matrix: {reason(err)}"
            ) from None
        return A
    if is_none(value):
        raise InvalidFileError(
            path,
            "estimates/A is None (the object was saved before fitting): there is nothing to "
            "classify.",
        )
    dense = np.asarray(value)
    real = _real_numbers(dense)
    if dense.ndim != 2 or real is None:
        raise InvalidFileError(
            path,
            f"estimates/A is a {dense.dtype} dataset of shape {dense.shape}; expected a "
            "pixels x components matrix of real numbers.",
        )
    return scipy.sparse.csc_matrix(real)


def _real_numbers(array: np.ndarray) -> np.ndarray | None:
    """``array`` if it holds real numbers (float16 as float32, which scipy.sparse needs)."""
    if array.dtype.kind not in "biuf":
        return None
    return array.astype(np.float32) if array.dtype == np.float16 else array
