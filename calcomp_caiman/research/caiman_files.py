"""Write arrays as a small CaImAn result file, in the layout of CaImAn 1.12's ``cnm.save``.

For tests, benchmarks and documentation that need a CaImAn result file without running
CaImAn (simulated footprints, edge cases). Such a file reads like a real one
(:func:`calcomp_caiman.io.caiman_h5.read_estimates`, CaImAn's ``load_CNMF``), but a file
written here is not evidence of CaImAn's behaviour: tests of that use real CaImAn.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np
import scipy.sparse

from calcomp_caiman.checks import check_dims
from calcomp_caiman.errors import InvalidFileError
from calcomp_caiman.io.atomic import atomic_replace
from calcomp_caiman.io.caiman_h5_layout import STORED_NONE

logger = logging.getLogger(__name__)

__all__ = ["write_caiman_file"]

_ESTIMATES_NONE_FIELDS = (
    "A_thr", "Ab", "Ab_dense", "AtA", "AtY_buf", "CC", "CY", "C_on", "Cf", "Cn", "F_dff",
    "OASISinstances", "R", "S", "SNR_comp", "W", "YrA", "Yr_buf", "b", "b0", "bl", "c1",
    "center", "cnn_preds", "discarded_components", "ecc", "f", "g", "idx_components",
    "idx_components_bad", "ind_new", "lam", "mn", "neurons_sn", "noisyC", "psx", "r_values",
    "rho_buf", "shifts", "sn", "sv", "vr",
)  # fmt: skip
"""The fields of CaImAn's ``Estimates`` that a fresh fit stores as ``None``."""

_COMPRESS_MIN_SIZE = 4096


def write_caiman_file(
    path: str | os.PathLike,
    *,
    A: scipy.sparse.spmatrix | np.ndarray,
    C: np.ndarray | None,
    dims: Sequence[int],
    gSig: Sequence[float] | None = None,
    b: np.ndarray | None = None,
    f: np.ndarray | None = None,
    YrA: np.ndarray | None = None,
    extra_estimates: Mapping[str, Any] | None = None,
    caiman_version: str = "1.12.1",
    overwrite: bool = False,
) -> str:
    """Write arrays as a small CaImAn result file (the ``cnm.save`` layout of CaImAn 1.12).

    Parameters
    ----------
    path : path-like
        Output ``.hdf5`` file (written atomically).
    A : (pixels, N) scipy sparse matrix or ndarray
        Footprints, pixels in Fortran order; stored as CSC (float dtype kept, others as
        float64). Values are not checked (NaN and zero columns are written as given).
    C : (N, T) ndarray or None
        Traces.
    dims : tuple of int
        Field of view, 2 or 3 values; ``prod(dims)`` must equal the pixel rows of ``A``.
    gSig : sequence of numbers, optional
        Stored as ``params/init/gSig``.
    b : (pixels, nb) ndarray, optional
        Background footprints (1-D means nb = 1).
    f : (nb, T) ndarray, optional
        Background traces (1-D means nb = 1).
    YrA : (N, T) ndarray, optional
        Residual traces.
    extra_estimates : dict, optional
        More ``estimates`` fields (override the defaults): arrays and numbers become
        datasets, sparse matrices CSC groups, str an attribute of ``estimates`` (as CaImAn
        stores strings), None ``'NoneType'``.
    caiman_version : str
        Attribute ``caiman_version`` of ``params/data``.
    overwrite : bool
        Allow replacing an existing file.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    TypeError, ValueError
        Wrong kind or shape of an input.
    InvalidFileError
        ``path`` exists and ``overwrite`` is False, or writing failed (nothing is left
        behind).

    Notes
    -----
    Layout: ``/estimates/A/{data,indices,indptr,shape}``, ``/estimates/{C,b,f,YrA,dims,nr}``,
    CaImAn's other ``Estimates`` fields as ``'NoneType'`` (``idx_components``,
    ``cnn_preds``, ``SNR_comp``, ``S``, ...), top-level ``dims``, ``dview``,
    ``remove_very_bad_comps``, ``skip_refinement``, ``params/data/dims`` and
    ``params/init/gSig``. ``load_CNMF`` reads such a file.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> A = np.zeros((10 * 12, 1))
    >>> A[[13, 14, 23], 0] = 1.0
    >>> from calcomp_caiman.io.caiman_h5 import read_estimates
    >>> path = write_caiman_file(os.path.join(tempfile.mkdtemp(), "sim.hdf5"), A=A,
    ...                          C=np.zeros((1, 50)), dims=(10, 12), gSig=(2, 2))
    >>> read_estimates(path).A.nnz
    3
    """
    destination = os.fspath(path)
    dims = check_dims(dims)
    A = _as_csc(A, "A")
    n_pixels, n = int(np.prod(dims)), A.shape[1]
    if A.shape[0] != n_pixels:
        raise ValueError(
            f"A has {A.shape[0]} pixel rows but dims={dims} gives {n_pixels}; pass the FOV "
            "shape, with pixels in Fortran order."
        )
    estimates: dict[str, Any] = {name: None for name in _ESTIMATES_NONE_FIELDS}
    estimates.update(A=A, dims=np.asarray(dims, np.int64), nr=np.int64(n))
    estimates["C"] = _trace_array(C, "C", n)
    estimates["YrA"] = _trace_array(YrA, "YrA", n)
    if b is not None:
        b = np.asarray(b)
        b = b[:, None] if b.ndim == 1 else b
        if b.ndim != 2 or b.shape[0] != n_pixels:
            raise ValueError(f"b must be (pixels={n_pixels}, nb), got shape {b.shape}.")
        estimates["b"] = b
    if f is not None:
        f = np.asarray(f)
        f = f[None, :] if f.ndim == 1 else f
        if f.ndim != 2 or (b is not None and f.shape[0] != estimates["b"].shape[1]):
            raise ValueError(f"f must be (nb, T) matching b, got shape {f.shape}.")
        estimates["f"] = f
    estimates.update(extra_estimates or {})
    if gSig is not None:
        gSig = np.asarray(gSig)
        if gSig.ndim > 1 or not np.issubdtype(gSig.dtype, np.number):
            raise ValueError(f"gSig must be numbers (half-size of a neuron, px), got {gSig!r}.")
    if os.path.lexists(destination) and not overwrite:
        raise InvalidFileError(destination, "already exists; pass overwrite=True to replace it.")
    folder = os.path.dirname(os.path.abspath(destination))
    if not os.path.isdir(folder):
        raise InvalidFileError(destination, f"cannot be written: no folder {folder}.")

    def build(tmp: str) -> None:
        with h5py.File(tmp, "w") as handle:
            handle["dims"] = np.asarray(dims, np.int64)
            handle["dview"] = STORED_NONE
            handle["remove_very_bad_comps"] = np.bool_(False)
            handle["skip_refinement"] = np.bool_(False)
            group = handle.create_group("estimates")
            for name, value in estimates.items():
                _write_value(group, name, value)
            data = handle.create_group("params/data")
            data["dims"] = np.asarray(dims, np.int64)
            data.attrs["caiman_version"] = str(caiman_version)
            init = handle.create_group("params/init")
            init["gSig"] = STORED_NONE if gSig is None else gSig

    atomic_replace(destination, build, mode=None, original=None)
    logger.info("wrote %d components in CaImAn's layout to %s", n, destination)
    return destination


def _as_csc(A, name: str) -> scipy.sparse.csc_matrix:
    if scipy.sparse.issparse(A):
        A = scipy.sparse.csc_matrix(A)
    elif isinstance(A, np.ndarray) or hasattr(A, "__array__"):
        dense = np.asarray(A)
        dense = dense[:, None] if dense.ndim == 1 else dense
        if dense.ndim != 2:
            raise ValueError(f"{name} must be 2-D (pixels x components), got shape {dense.shape}.")
        A = scipy.sparse.csc_matrix(dense)
    else:
        raise TypeError(
            f"{name} must be a scipy sparse matrix or a numpy array, got {type(A).__name__}."
        )
    if not np.issubdtype(A.dtype, np.floating):
        if not (np.issubdtype(A.dtype, np.number) or A.dtype == bool):
            raise TypeError(f"{name} must hold numbers, got dtype {A.dtype}.")
        A = A.astype(np.float64)
    A.sort_indices()
    return A


def _trace_array(value, name: str, n: int) -> np.ndarray | None:
    if value is None:
        return None
    array = np.asarray(value)
    array = array[None, :] if array.ndim == 1 and n == 1 else array
    if array.ndim != 2 or array.shape[0] != n:
        raise ValueError(f"{name} must be (N={n}, T), got shape {array.shape}.")
    return array


def _write_value(group: h5py.Group, name: str, value: Any) -> None:
    if value is None:
        group[name] = STORED_NONE
    elif isinstance(value, str):
        group.attrs[name] = value
    elif scipy.sparse.issparse(value):
        csc = scipy.sparse.csc_matrix(value)
        sub = group.create_group(name)
        sub["data"] = csc.data
        sub["indices"] = csc.indices.astype(np.int32, copy=False)
        sub["indptr"] = csc.indptr.astype(np.int32, copy=False)
        sub["shape"] = np.asarray(csc.shape, np.int64)
    else:
        array = np.asarray(value)
        if array.dtype.kind == "U":
            array = array.astype("S")
        if array.ndim and array.size >= _COMPRESS_MIN_SIZE and array.dtype.kind in "biuf":
            group.create_dataset(name, data=array, compression="gzip", compression_opts=4)
        else:
            group.create_dataset(name, data=array)
