"""Read CaImAn result files (``cnm.save`` HDF5) and write the classification into them.

CaImAn 1.12 stores a ``CNMF`` / ``OnACID`` object as one HDF5 file: groups ``estimates`` and
``params``, the sparse footprints ``estimates/A`` as a group (``data``, ``indices``, ``indptr``,
``shape``; CSC, pixels in Fortran order) and ``None`` as the scalar string ``'NoneType'``.
:func:`read_estimates` reads only what the classifier needs; :func:`write_classification`
adds our fields atomically (a repacked temporary file replaces the original in one step);
:func:`write_caiman_file` writes a small file in the same layout from arrays.

Only numpy, scipy and h5py are used here; neither keras nor caiman is imported.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
import scipy.sparse

from calcomp_caiman.checks import check_dims
from calcomp_caiman.errors import CalcompError, FileBusyError, InvalidFileError
from calcomp_caiman.evidence.evidence import Evidence
from calcomp_caiman.evidence.footprints import footprint_fingerprint, match_fingerprints
from calcomp_caiman.evidence.traces import Traces
from calcomp_caiman.io.atomic import atomic_replace, exclusive_lock, reason
from calcomp_caiman.schema import CLASSES, FIELDS

logger = logging.getLogger(__name__)

__all__ = [
    "ResultFile",
    "read_estimates",
    "read_evidence",
    "check_hdf5_path",
    "write_classification",
    "is_classified_by",
    "write_caiman_file",
    "CLASSIFICATION_FIELDS",
    "BACKUP_FIELDS",
    "ATTR_PREFIX",
    "exclusive_lock",
]

CLASSIFICATION_FIELDS = tuple(FIELDS)
"""Datasets that :func:`write_classification` writes under ``/estimates``."""

BACKUP_FIELDS = {name: "caiman_" + name for name in ("cnn_preds", "idx_components",
                                                     "idx_components_bad")}  # fmt: skip
"""CaImAn's own fields and the ``/estimates`` names their first-seen values are kept under."""

ATTR_PREFIX = "calcomp_"
"""Prefix of the provenance attributes stored on ``estimates/class_probs``."""

_NONE = "NoneType"
_SPARSE_PARTS = ("data", "indices", "indptr", "shape")
_ESTIMATES_NONE_FIELDS = (
    "A_thr", "Ab", "Ab_dense", "AtA", "AtY_buf", "CC", "CY", "C_on", "Cf", "Cn", "F_dff",
    "OASISinstances", "R", "S", "SNR_comp", "W", "YrA", "Yr_buf", "b", "b0", "bl", "c1",
    "center", "cnn_preds", "discarded_components", "ecc", "f", "g", "idx_components",
    "idx_components_bad", "ind_new", "lam", "mn", "neurons_sn", "noisyC", "psx", "r_values",
    "rho_buf", "shifts", "sn", "sv", "vr",
)  # fmt: skip
_COMPRESS_MIN_SIZE = 4096


@dataclass(frozen=True, eq=False)
class ResultFile:
    """What :func:`read_estimates` found in a CaImAn result file.

    Attributes
    ----------
    path : str
        The file read.
    A : scipy.sparse.csc_matrix, (pixels, N)
        Spatial footprints ``estimates.A``, dtype as stored (float64 for CNMF, float32 for
        OnACID; float16 is read as float32), pixels in Fortran order, row indices sorted.
    dims : tuple of int
        Field of view, 2 or 3 values (``estimates.dims``, else ``/dims``).
    gSig : tuple of float or None
        ``params/init/gSig`` (half-size of a neuron, px); None when absent or not positive
        numbers (the classifier then estimates it).
    cnn_preds, idx_components, idx_components_bad, SNR_comp, r_values : ndarray or None
        CaImAn's fields as stored; None where CaImAn stored ``None`` or nothing.
    accepted_list, rejected_list : ndarray or None
        Manual curation (CaImAn's GUI), when present.
    classification : dict or None
        Provenance of an earlier classification by this package (attributes of
        ``estimates/class_probs`` without their ``calcomp_`` prefix, e.g. ``model``,
        ``model_sha256``, ``version``); None if the file was not classified by us.
    class_probs : (N, 4) ndarray or None
        Probabilities stored by an earlier classification (``estimates/class_probs``), one
        row per column of ``A``: after a CaImAn selection saved with ``cnm.save`` the rows
        are matched to ``A`` by ``class_fingerprint`` (also those kept under
        ``estimates/discarded_components``); None when some column was never classified.
    """

    path: str
    A: scipy.sparse.csc_matrix
    dims: tuple[int, ...]
    gSig: tuple[float, ...] | None = None
    cnn_preds: np.ndarray | None = None
    idx_components: np.ndarray | None = None
    idx_components_bad: np.ndarray | None = None
    SNR_comp: np.ndarray | None = None
    r_values: np.ndarray | None = None
    accepted_list: np.ndarray | None = None
    rejected_list: np.ndarray | None = None
    classification: dict[str, Any] | None = None
    class_probs: np.ndarray | None = None

    @property
    def n_components(self) -> int:
        """Number of components (columns of ``A``)."""
        return int(self.A.shape[1])


# --------------------------------------------------------------------------- reading


def read_estimates(path: str | os.PathLike) -> ResultFile:
    """Read the footprints and quality fields of a CaImAn result file.

    Only ``estimates/A``, ``dims``, ``params/init/gSig`` and a few per-component fields are
    read; large fields (traces, OnACID's online state) are left on disk.

    Parameters
    ----------
    path : path-like
        A ``.hdf5`` file written by CaImAn's ``cnm.save`` (CNMF or OnACID), or by
        :func:`write_caiman_file`.

    Returns
    -------
    ResultFile
        ``A`` as CSC (dtype as stored, indices sorted), ``dims``, ``gSig`` and the optional
        per-component arrays (``None`` where CaImAn stored ``'NoneType'``).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    InvalidFileError
        Not an HDF5 file; truncated or corrupt; no ``estimates/A``; ``A``'s pixel count does
        not match ``dims``; zero components (nothing to classify); NaN or Inf in ``A``.
        The message names the file.
    FileBusyError
        Another process holds the file locked for writing.

    Notes
    -----
    Same reading rules as CaImAn's ``load_CNMF``: ``estimates/A`` is a CSC group,
    ``'NoneType'`` means None, ``estimates.dims`` falls back to the top-level ``dims``.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> folder = tempfile.mkdtemp()
    >>> A = np.zeros((20 * 30, 2), np.float32)
    >>> A[[5, 6, 25], 0] = 1.0
    >>> A[[300, 301], 1] = 0.5
    >>> path = write_caiman_file(os.path.join(folder, "cnm.hdf5"), A=A,
    ...                          C=np.ones((2, 10)), dims=(20, 30), gSig=(3, 3))
    >>> source = read_estimates(path)
    >>> source.A.shape, source.dims, source.gSig, source.idx_components
    ((600, 2), (20, 30), (3.0, 3.0), None)
    """
    return _read(os.fspath(path), locking=True, stored_probs=True)


def read_evidence(path: str | os.PathLike, *, image=None) -> Evidence:
    """Everything a CaImAn result file holds about its components, traces read lazily.

    Parameters
    ----------
    path : path-like
        A CaImAn ``.hdf5`` result file (CNMF or OnACID).
    image : (H, W) ndarray, optional
        A mean or max image of the movie, to use beside the stored ``Cn``.

    Returns
    -------
    Evidence
        Footprints as :func:`read_estimates` reads them; ``C``/``YrA``/``S`` as a
        :class:`~calcomp_caiman.evidence.traces.Traces` that reads row chunks from the file when
        asked; ``g``, ``neurons_sn``, ``Cn``, ``SNR_comp``, ``r_values`` and ``gSig`` where
        stored. Traces or images that do not fit ``A`` are left out with a warning (the
        footprints are still classified).

    Raises
    ------
    FileNotFoundError, InvalidFileError, FileBusyError
        As :func:`read_estimates`.
    """
    path = os.fspath(path)
    source = _read(path, locking=True)
    n = source.n_components
    extra: dict[str, Any] = {}
    with _reading(path) as handle:
        estimates = handle["estimates"]
        for name in ("g", "neurons_sn", "Cn"):
            try:
                value = _optional_array(estimates, name)
            except (OSError, ValueError, TypeError) as err:
                logger.warning("%s: ignoring estimates/%s (%s)", path, name, reason(err))
                value = None
            if value is not None and value.dtype.kind in "biuf":
                extra[name] = value
        names, frames = _trace_layout(estimates, n, path)
    traces = None
    if names:

        def read(start: int, stop: int) -> dict[str, np.ndarray]:
            with _reading(path) as handle:
                group = handle["estimates"]
                return {name: group[name][start:stop] for name in names}

        traces = Traces(n, frames, read, names)
    for name in ("g", "neurons_sn", "Cn"):
        value = extra.get(name)
        if value is None:
            continue
        ok = (len(value) == n) if name != "Cn" else value.shape[:2] == tuple(source.dims[:2])
        if not ok:
            logger.debug("%s: ignoring estimates/%s of shape %s", path, name, value.shape)
            extra.pop(name)
    return Evidence.build(
        source.A,
        source.dims,
        traces=traces,
        image=image,
        SNR_comp=_fits(source.SNR_comp, n),
        r_values=_fits(source.r_values, n),
        gSig=source.gSig,
        source=path,
        **extra,
    )


def _fits(value: np.ndarray | None, n: int) -> np.ndarray | None:
    if value is None or value.dtype.kind not in "biuf" or value.size != n:
        return None
    return value.ravel()


def _trace_layout(estimates: h5py.Group, n: int, path: str) -> tuple[tuple[str, ...], int]:
    """Which of C, YrA, S are stored as (N, T) real datasets; traces need at least C."""
    names: list[str] = []
    frames = 0
    for name in ("C", "YrA", "S"):
        node = estimates.get(name)
        if not isinstance(node, h5py.Dataset) or node.ndim != 2 or node.dtype.kind not in "biuf":
            continue
        if node.shape[0] != n or (frames and node.shape[1] != frames) or node.shape[1] < 2:
            logger.warning(
                "%s: ignoring estimates/%s of shape %s (A has %d components)",
                path, name, node.shape, n,
            )  # fmt: skip
            continue
        if name == "C" or names:
            names.append(name)
            frames = int(node.shape[1])
    return tuple(names), frames


def _read(path: str, *, locking: bool, stored_probs: bool = False) -> ResultFile:
    """The file's :class:`ResultFile`; ``class_probs`` matched to ``A`` only if ``stored_probs``
    (classifying and writing never use them)."""
    _check_hdf5(path)
    with _reading(path, locking=locking) as handle:
        raw = _read_raw(handle, path)
    A = _footprints(raw["A"], path)
    dims = _dims(raw, path)
    n_pixels = math.prod(dims)  # Python ints: no overflow whatever dims says
    if A.shape[0] != n_pixels:
        raise InvalidFileError(
            path,
            f"estimates/A has {A.shape[0]} pixel rows but {raw['dims_where']} = {dims} gives "
            f"{n_pixels} pixels; the file is inconsistent (A and dims must come from the same "
            "fit).",
        )
    if A.shape[1] == 0:
        raise InvalidFileError(path, "estimates/A has 0 components: there is nothing to classify.")
    if A.nnz and not np.all(np.isfinite(A.data)):
        column = np.repeat(np.arange(A.shape[1]), np.diff(A.indptr))
        bad = np.unique(column[~np.isfinite(A.data)])
        raise InvalidFileError(
            path,
            f"estimates/A has NaN or Inf values in {bad.size} component(s) (first: "
            f"{bad[:5].tolist()}); fix or drop those components in CaImAn before classifying.",
        )
    fields = dict(raw["fields"], class_probs=_stored_probs(raw, A, path) if stored_probs else None)
    return ResultFile(path=path, A=A, dims=dims, **fields)


def check_hdf5_path(path: str | os.PathLike, kind: str, expected: str) -> None:
    """Raise unless ``path`` is an existing HDF5 file (CaImAn results and NWB files are).

    ``kind`` names what a folder is not (``"a CaImAn result file (.hdf5)"``), ``expected``
    what a non-HDF5 file should have been; the messages name the file.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InvalidFileError(path, f"is a folder, not {kind}.")
    try:
        is_hdf5 = h5py.is_hdf5(path)
    except OSError as err:
        raise InvalidFileError(path, f"cannot be opened ({reason(err)}).") from err
    if not is_hdf5:
        raise InvalidFileError(path, f"is not an HDF5 file; expected {expected}.")


def _check_hdf5(path: str) -> None:
    check_hdf5_path(
        path,
        "a CaImAn result file (.hdf5)",
        "a CaImAn result file saved with cnm.save() (.hdf5)",
    )


@contextlib.contextmanager
def _reading(path: str, *, locking: bool = True) -> Iterator[h5py.File]:
    """The file open for reading; HDF5's errors become one-line errors naming the file."""
    try:
        with _open_hdf5(path, locking=locking) as handle:
            yield handle
    except CalcompError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as err:
        if "unable to lock file" in str(err):
            raise FileBusyError(
                path,
                "is locked: another calcomp process is writing it (or a program has it open "
                "for writing); try again when it has finished.",
            ) from err
        raise InvalidFileError(
            path,
            f"cannot be read as HDF5 ({reason(err)}); the file may be truncated or corrupt. "
            "Re-save it from CaImAn (cnm.save) or restore a copy.",
        ) from err


def _open_hdf5(path: str, *, locking: bool) -> h5py.File:
    if locking:
        return h5py.File(path, "r")
    return h5py.File(path, "r", locking=False)


def _raw_footprints(estimates: h5py.Group, path: str) -> Any:
    """``estimates/A`` as stored: the sparse parts as a dict, or a dense array."""
    node = estimates.get("A")
    if node is None:
        raise InvalidFileError(
            path,
            "has no estimates/A (the spatial footprints); expected a CaImAn result file "
            "saved with cnm.save() after fitting.",
        )
    if isinstance(node, h5py.Group):
        missing = [part for part in _SPARSE_PARTS if not isinstance(node.get(part), h5py.Dataset)]
        if missing:
            raise InvalidFileError(
                path,
                f"estimates/A lacks {', '.join(missing)}; expected CaImAn's sparse layout "
                "(data, indices, indptr, shape).",
            )
        return {part: node[part][()] for part in _SPARSE_PARTS}
    return node[()]


def _read_raw(handle: h5py.File, path: str) -> dict[str, Any]:
    """Everything needed from an open file, as plain arrays; structural checks only."""
    estimates = handle.get("estimates")
    if not isinstance(estimates, h5py.Group):
        raise InvalidFileError(
            path,
            "has no 'estimates' group; expected a CaImAn result file saved with cnm.save() "
            "(CNMF or OnACID).",
        )
    A_raw = _raw_footprints(estimates, path)
    dims_where, dims_value = None, None
    for where in ("estimates/dims", "dims", "params/data/dims"):
        candidate = handle.get(where)
        if isinstance(candidate, h5py.Dataset):
            value = candidate[()]
            if not _is_none(value):
                dims_where, dims_value = where, value
                break
    fields: dict[str, Any] = {
        name: _optional_array(estimates, name)
        for name in ("cnn_preds", "idx_components", "idx_components_bad", "SNR_comp",
                     "r_values", "accepted_list", "rejected_list", "class_probs")
    }  # fmt: skip
    fields["gSig"] = _gsig(handle)
    fields["classification"] = _provenance_of(estimates)
    # every classified row the file holds, with its footprint's fingerprint: CaImAn's own
    # selection before cnm.save leaves our rows as they were (kept and discarded ones)
    stored = []
    for group in (estimates, estimates.get("discarded_components")):
        if isinstance(group, h5py.Group):
            probs, fingerprint = (_optional_array(group, name) for name in _STORED_ROWS)
            if probs is not None and fingerprint is not None and len(probs) == len(fingerprint):
                stored.append((probs, fingerprint))
    return {"A": A_raw, "dims_where": dims_where, "dims": dims_value, "fields": fields,
            "stored": stored}  # fmt: skip


_STORED_ROWS = ("class_probs", "class_fingerprint")


def _stored_probs(raw: dict, A: scipy.sparse.csc_matrix, path: str) -> np.ndarray | None:
    """The stored ``class_probs`` row of each column of ``A`` now, or None."""
    probs = raw["fields"]["class_probs"]
    if not raw["stored"]:  # no fingerprints (calcomp 0.1.0): trusted when the count fits
        return probs if probs is not None and len(probs) == A.shape[1] else None
    rows = match_fingerprints(
        np.concatenate([fingerprint for _, fingerprint in raw["stored"]]),
        footprint_fingerprint(A),
    )
    if rows is None:
        logger.info("%s: the stored class_probs do not match estimates/A (A changed since)", path)
        return None
    return np.concatenate([probs for probs, _ in raw["stored"]])[rows]


def _footprints(value: Any, path: str) -> scipy.sparse.csc_matrix:
    """:func:`_raw_footprints`' value as a checked CSC matrix (sorted row indices)."""
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
        try:
            A = scipy.sparse.csc_matrix(
                (data, np.asarray(value["indices"]), np.asarray(value["indptr"])), shape=shape
            )
            A.check_format(full_check=True)
        except (ValueError, TypeError, OverflowError) as err:
            raise InvalidFileError(
                path, f"estimates/A is not a valid sparse (CSC) matrix: {reason(err)}"
            ) from None
        if not A.has_sorted_indices:  # some CaImAn files store unsorted row indices
            A.sort_indices()
        return A
    if _is_none(value):
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


def _dims(raw: dict, path: str) -> tuple[int, ...]:
    if raw["dims"] is None:
        raise InvalidFileError(
            path,
            "has no dims (estimates/dims, /dims or params/data/dims); cannot map the pixel "
            "rows of estimates/A to the image.",
        )
    try:
        return check_dims(raw["dims"])
    except ValueError:
        raise InvalidFileError(
            path,
            f"{raw['dims_where']} = {_one_line(raw['dims'])} is not 2 or 3 positive integers (the "
            "field-of-view shape).",
        ) from None


def _one_line(value: Any, limit: int = 60) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _optional_array(group: h5py.Group, name: str) -> np.ndarray | None:
    node = group.get(name)
    if not isinstance(node, h5py.Dataset):
        return None
    value = node[()]
    return None if _is_none(value) else np.asarray(value)


def _gsig(handle: h5py.File) -> tuple[float, ...] | None:
    node = handle.get("params/init/gSig")
    if not isinstance(node, h5py.Dataset):
        return None
    value = node[()]
    if _is_none(value):
        return None
    try:
        gsig = tuple(float(v) for v in np.ravel(np.asarray(value)))
    except (TypeError, ValueError):
        logger.info("ignoring params/init/gSig = %r (not numbers)", value)
        return None
    if not gsig or not all(np.isfinite(g) and g > 0 for g in gsig):
        logger.info("ignoring params/init/gSig = %r (not positive numbers)", value)
        return None
    return gsig


def _provenance_of(estimates: h5py.Group) -> dict[str, Any] | None:
    node = estimates.get("class_probs")
    if not isinstance(node, h5py.Dataset):
        return None
    found = {
        key[len(ATTR_PREFIX) :]: _plain(value)
        for key, value in node.attrs.items()
        if key.startswith(ATTR_PREFIX)
    }
    return found or None


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _is_none(value: Any) -> bool:
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "OSU":
        value = value.item()
    if isinstance(value, bytes):
        return value == _NONE.encode()
    return isinstance(value, str) and value == _NONE


def is_classified_by(path: str | os.PathLike, model_sha256: str) -> bool:
    """Whether ``path`` already holds a classification made by the model ``model_sha256``.

    Parameters
    ----------
    path : path-like
        A CaImAn result file.
    model_sha256 : str
        SHA256 of the model (``CalcompModel.sha256``).

    Returns
    -------
    bool
        True if ``estimates/class_probs`` records this model's SHA256 and has one row per
        column of ``estimates/A``, in ``A``'s order (checked by ``class_fingerprint``, so a
        file saved after CaImAn's own selection or restore counts as not classified and is
        classified again). False otherwise, also for a missing, unreadable or
        locked file (classifying it will then report the problem).

    Examples
    --------
    >>> is_classified_by("no/such/file.hdf5", "0" * 64)
    False
    """
    path = os.fspath(path)
    try:
        if not h5py.is_hdf5(path):
            return False
        with h5py.File(path, "r") as handle:
            probs = handle.get("estimates/class_probs")
            A = handle.get("estimates/A")
            if not isinstance(probs, h5py.Dataset) or A is None:
                return False
            recorded = _plain(probs.attrs.get(ATTR_PREFIX + "model_sha256"))
            if isinstance(A, h5py.Group):
                n = int(np.ravel(A["shape"][()])[1])
            else:
                n = int(A.shape[1]) if len(A.shape) == 2 else -1
            if recorded != str(model_sha256) or probs.ndim != 2 or probs.shape[0] != n:
                return False
            fingerprint = _optional_array(handle["estimates"], "class_fingerprint")
            if fingerprint is None:  # calcomp 0.1.0 wrote none: the count is all there is
                return True
            A_now = _footprints(_raw_footprints(handle["estimates"], path), path)
            current = footprint_fingerprint(A_now)
            rows = match_fingerprints(fingerprint, current)
            # a CaImAn restore keeps the count but reorders the columns
            return rows is not None and np.array_equal(rows, np.arange(n))
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError):
        logger.debug("is_classified_by: cannot read %s", path, exc_info=True)
        return False


# --------------------------------------------------------------------------- writing


def write_classification(
    path: str | os.PathLike,
    result: Mapping[str, Any],
    *,
    out_path: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> str:
    """Write a classification into a CaImAn result file, atomically.

    The file is rebuilt as a temporary file beside the destination (every group, dataset
    and attribute of the source copied as stored, then our datasets added) and moved over
    the destination in one ``os.replace``: afterwards the destination is either fully
    updated or, after any error, byte-identical to before. Updates ``path`` in place when
    ``out_path`` is None.

    Parameters
    ----------
    path : path-like
        The CaImAn result file (``cnm.save``) that was classified.
    result : mapping
        ``class_probs`` (N, 4) float32; ``class_labels`` (N,) int codes 1-4; ``cnn_preds``
        (N,) float32 = P(neuron); ``idx_components``, ``idx_components_bad`` int64 column
        indices; optional ``class_flags`` (or ``flags``) (N,) uint8 bit flags; optional
        ``provenance``: dict of str to str or number (model name, model SHA256, package
        version, classes, date, accept rule), stored as attributes.
        As returned by :func:`calcomp_caiman.classify.classification_fields`.
    out_path : path-like, optional
        Write an updated copy here instead; ``path`` is left untouched.
    overwrite : bool
        Allow replacing an existing ``out_path``.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    TypeError, ValueError
        ``result`` is malformed or its N differs from the file's number of components.
    InvalidFileError
        ``path`` is not a valid result file (see :func:`read_estimates`); ``out_path``
        exists and ``overwrite`` is False; the destination file or folder is read-only;
        or writing failed (e.g. disk full). The original is unchanged in every case.
    FileBusyError
        Another process holds the file locked (another calcomp process writing it).

    Notes
    -----
    Written under ``/estimates``: ``class_probs``, ``class_labels`` (int8), ``class_flags``
    (uint8), and CaImAn's own ``cnn_preds`` (float32), ``idx_components`` and
    ``idx_components_bad`` (int64), so that ``estimates.select_components(use_object=True)``
    keeps the components we accept; ``class_fingerprint`` (float64, (N, 3)) when the
    result has it (:func:`calcomp_caiman.align_classes` and :func:`read_estimates` match
    rows to ``A`` with it after a selection). What CaImAn had in those three before our first
    classification is kept as ``caiman_cnn_preds``, ``caiman_idx_components`` and
    ``caiman_idx_components_bad`` (``'NoneType'`` stays ``'NoneType'``) and never overwritten,
    so writing twice gives the same file. Provenance goes to attributes of
    ``estimates/class_probs`` named ``calcomp_<key>``. Nothing is written under ``/params``.
    CaImAn's ``load_CNMF`` sets every dataset of ``/estimates`` as an attribute of
    ``cnm.estimates``, so the new fields arrive as ``cnm.estimates.class_probs`` etc.

    The source is locked with ``flock`` for the whole operation; the temporary file is named
    ``.<name>.calcomp-tmp-<random>`` and gets the permission bits of the source.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> folder = tempfile.mkdtemp()
    >>> A = np.zeros((400, 2), np.float32)
    >>> A[[1, 2, 21], 0] = 1.0
    >>> A[[200, 201], 1] = 1.0
    >>> path = write_caiman_file(os.path.join(folder, "cnm.hdf5"), A=A,
    ...                          C=np.ones((2, 5)), dims=(20, 20))
    >>> probs = np.array([[0.9, 0.05, 0.03, 0.02], [0.1, 0.2, 0.6, 0.1]], np.float32)
    >>> result = {"class_probs": probs, "class_labels": np.array([1, 3], np.int8),
    ...           "cnn_preds": probs[:, 0], "idx_components": np.array([0]),
    ...           "idx_components_bad": np.array([1]), "provenance": {"model": "demo"}}
    >>> write_classification(path, result) == path
    True
    >>> read_estimates(path).classification
    {'model': 'demo'}
    """
    source = os.fspath(path)
    fields, provenance = _check_result(result)
    _check_hdf5(source)
    target = source if out_path is None else os.fspath(out_path)
    in_place = out_path is None or _same_file(source, target)
    destination = os.path.realpath(target) if in_place else target  # through symlinks
    _check_destination(destination, in_place=in_place, overwrite=overwrite, label=target)
    with contextlib.ExitStack() as stack:
        stack.enter_context(exclusive_lock(source))
        if not in_place and os.path.exists(destination):
            stack.enter_context(exclusive_lock(destination))
        current = _read(source, locking=False)
        n = current.n_components
        if len(fields["class_probs"]) != n:
            raise ValueError(
                f"result has {len(fields['class_probs'])} components but {source} has {n} "
                "(columns of estimates/A); classify this file's footprints."
            )
        too_large = [k for k in ("idx_components", "idx_components_bad") if np.any(fields[k] >= n)]
        if too_large:
            raise ValueError(f"result {too_large} hold indices >= {n} (components of {source}).")
        mode = os.stat(source).st_mode & 0o7777
        atomic_replace(
            destination,
            lambda tmp: _repack(source, tmp, fields, provenance),
            mode=mode,
            original=source,
            label=target,
        )
    logger.info("wrote the classification of %d components to %s", n, target)
    return target


def _check_result(result: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    if not isinstance(result, Mapping):
        raise TypeError(
            f"result must be a dict of arrays (classification_fields), got {type(result).__name__}."
        )
    required = ("class_probs", "class_labels", "cnn_preds", "idx_components",
                "idx_components_bad")  # fmt: skip
    missing = [key for key in required if key not in result]
    if missing:
        raise ValueError(
            f"result lacks {missing}; build it with calcomp_caiman.classify.classification_fields."
        )
    probs = np.asarray(result["class_probs"], dtype=np.float32)
    if probs.ndim != 2 or probs.shape[1] != len(CLASSES):
        raise ValueError(
            f"result['class_probs'] must be (N, {len(CLASSES)}) (one column per class in "
            f"{CLASSES}), got shape {probs.shape}."
        )
    n = probs.shape[0]
    labels = _int_array(result["class_labels"], "class_labels")
    if labels.shape != (n,) or (labels.size and (labels.min() < 1 or labels.max() > 4)):
        raise ValueError(
            f"result['class_labels'] must be {n} codes 1-4, got shape {labels.shape} "
            f"with values {np.unique(labels)[:8].tolist()}."
        )
    cnn_preds = np.asarray(result["cnn_preds"], dtype=np.float32)
    if cnn_preds.shape != (n,):
        raise ValueError(f"result['cnn_preds'] must have shape ({n},), got {cnn_preds.shape}.")
    raw_flags = result.get("class_flags", result.get("flags"))
    flags = np.zeros(n, np.uint8) if raw_flags is None else _int_array(raw_flags, "class_flags")
    if flags.shape != (n,) or (flags.size and (flags.min() < 0 or flags.max() > 255)):
        raise ValueError(f"result['class_flags'] must be ({n},) values 0-255, got {flags.shape}.")
    fields = {
        "class_probs": probs,
        "class_labels": labels.astype(np.int8),
        "class_flags": flags.astype(np.uint8),
        "cnn_preds": cnn_preds,
    }
    for key in ("idx_components", "idx_components_bad"):
        index = _int_array(result[key], key)
        if index.ndim != 1 or (index.size and index.min() < 0):
            raise ValueError(f"result[{key!r}] must be 1-D non-negative column indices.")
        fields[key] = index.astype(np.int64)
    if result.get("class_fingerprint") is not None:
        fingerprint = np.asarray(result["class_fingerprint"], dtype=np.float64)
        if fingerprint.shape != (n, 3):
            raise ValueError(
                f"result['class_fingerprint'] must have shape ({n}, 3), got {fingerprint.shape}."
            )
        fields["class_fingerprint"] = fingerprint
    provenance = result.get("provenance") or {}
    if not isinstance(provenance, Mapping):
        raise TypeError(f"result['provenance'] must be a dict, got {type(provenance).__name__}.")
    attrs: dict[str, Any] = {}
    for key, value in provenance.items():
        if not isinstance(value, (str, bool, int, float, np.integer, np.floating, np.bool_)):
            raise TypeError(
                f"result['provenance'][{key!r}] must be a str or a number, got "
                f"{type(value).__name__}; encode lists and dicts as JSON text."
            )
        name = str(key) if str(key).startswith(ATTR_PREFIX) else ATTR_PREFIX + str(key)
        attrs[name] = value
    return fields, attrs


def _int_array(value: Any, name: str) -> np.ndarray:
    array = np.asarray(value)
    if array.size == 0:
        return np.zeros(array.shape, np.int64)
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise TypeError(f"result[{name!r}] must hold integers, got dtype {array.dtype}.")
    return array.astype(np.int64)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _check_destination(destination: str, *, in_place: bool, overwrite: bool, label: str) -> None:
    folder = os.path.dirname(os.path.abspath(destination))
    exists = os.path.lexists(destination)
    if exists and os.path.isdir(destination):
        raise InvalidFileError(label, "is a folder; give a file name for the output.")
    if not in_place and exists and not overwrite:
        raise InvalidFileError(
            label,
            "already exists; use --overwrite (overwrite=True) to replace it, or choose "
            "another output.",
        )
    if not os.path.isdir(folder):
        raise InvalidFileError(label, f"cannot be written: no folder {folder}.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidFileError(
            label,
            f"cannot be written: the folder {folder} is read-only (a new file is created "
            "beside it, then renamed); write elsewhere (--out, or --out-dir). The original is "
            "unchanged.",
        )
    if exists:
        mode = os.stat(destination).st_mode
        if not os.access(destination, os.W_OK) or not mode & 0o222:
            raise InvalidFileError(
                label,
                "is read-only; make it writable (chmod u+w) or write a copy (--out, or --out-dir). "
                "The file is unchanged.",
            )


def _repack(source: str, tmp: str, fields: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    """Copy every object of ``source`` into the fresh file ``tmp``, then add our fields."""
    with _open_hdf5(source, locking=False) as src, h5py.File(tmp, "w") as dst:
        _copy_attrs(src, dst)
        for name in src:
            if name != "estimates":
                _copy_link(src, dst, name)
        src_estimates = src["estimates"]
        dst_estimates = _new_group_like(src_estimates, dst, "estimates")
        _copy_attrs(src_estimates, dst_estimates)
        # what goes where; links are then made in name order, so that a re-run (whose
        # source already holds our fields) lays the file out exactly as the first run did
        plan: dict[str, str | None] = {name: name for name in src_estimates if name not in fields}
        for name, backup in BACKUP_FIELDS.items():
            if backup not in plan:  # else: CaImAn's originals, saved by our first run
                plan[backup] = name if name in src_estimates else None
        plan.update(dict.fromkeys(fields, ""))
        for name in sorted(plan):
            origin = plan[name]
            if origin == "":
                _write_fields(dst_estimates, {name: fields[name]}, attrs)
            elif origin is None:
                dst_estimates.create_dataset(name, data=_NONE)
            elif origin == name:
                _copy_link(src_estimates, dst_estimates, name)
            else:
                src_estimates.copy(origin, dst_estimates, name=name)


def _write_fields(group: h5py.Group, fields: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    for name, value in fields.items():
        dataset = group.create_dataset(name, data=value)
        if name == "class_probs":
            for key, attr in attrs.items():
                dataset.attrs[key] = attr


def _copy_attrs(src: h5py.HLObject, dst: h5py.HLObject) -> None:
    for name in src.attrs:
        attr_id = src.attrs.get_id(name)
        dst.attrs.create(name, data=src.attrs[name], shape=attr_id.shape, dtype=attr_id.dtype)


def _copy_link(src: h5py.Group, dst: h5py.Group, name: str) -> None:
    link = src.get(name, getlink=True)
    if isinstance(link, h5py.SoftLink):
        dst[name] = h5py.SoftLink(link.path)
    elif isinstance(link, h5py.ExternalLink):
        dst[name] = h5py.ExternalLink(link.filename, link.path)
    else:
        src.copy(name, dst, name=name)


def _new_group_like(src: h5py.Group, parent: h5py.Group, name: str) -> h5py.Group:
    gcpl = src.id.get_create_plist()
    h5py.h5g.create(parent.id, name.encode(), gcpl=gcpl)
    return parent[name]


# --------------------------------------------------------------------------- CaImAn-layout files


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
            handle["dview"] = _NONE
            handle["remove_very_bad_comps"] = np.bool_(False)
            handle["skip_refinement"] = np.bool_(False)
            group = handle.create_group("estimates")
            for name, value in estimates.items():
                _write_value(group, name, value)
            data = handle.create_group("params/data")
            data["dims"] = np.asarray(dims, np.int64)
            data.attrs["caiman_version"] = str(caiman_version)
            init = handle.create_group("params/init")
            init["gSig"] = _NONE if gSig is None else gSig

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
        group[name] = _NONE
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
