"""Read CaImAn result files (``cnm.save`` HDF5): footprints, metrics and an earlier classification.

CaImAn 1.12 stores a ``CNMF`` / ``OnACID`` object as one HDF5 file: groups ``estimates`` and
``params``, the sparse footprints ``estimates/A`` as a group (``data``, ``indices``, ``indptr``,
``shape``; CSC, pixels in Fortran order) and ``None`` as the scalar string ``'NoneType'``.
:func:`read_estimates` reads only what the classifier needs, :func:`read_evidence` adds the
traces (read lazily) and images, :func:`is_classified_by` tells whether a file already holds
a model's classification. Writing is :mod:`calcomp_caiman.io.caiman_h5_write`.

Only numpy, scipy and h5py are used here; neither keras nor caiman is imported.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
import scipy.sparse

from calcomp_caiman.checks import check_dims
from calcomp_caiman.errors import CalcompError, FileBusyError, InvalidFileError
from calcomp_caiman.evidence.evidence import Evidence
from calcomp_caiman.evidence.footprints import footprint_fingerprint, match_fingerprints
from calcomp_caiman.evidence.modality import detect_modality
from calcomp_caiman.evidence.traces import Traces
from calcomp_caiman.io.atomic import reason
from calcomp_caiman.io.caiman_h5_layout import (
    ATTR_PREFIX,
    BACKUP_FIELDS,
    attribute_value,
    footprints_from_parts,
    is_none,
    optional_array,
    read_footprint_parts,
)
from calcomp_caiman.io.limits import check_hdf5_dataset, check_pixels

logger = logging.getLogger(__name__)

__all__ = [
    "ResultFile",
    "check_caiman_path",
    "check_hdf5_path",
    "is_classified_by",
    "read_estimates",
    "read_evidence",
]


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


def read_estimates(
    path: str | os.PathLike, *, locking: bool = True, stored_probs: bool = True
) -> ResultFile:
    """Read the footprints and quality fields of a CaImAn result file.

    Only ``estimates/A``, ``dims``, ``params/init/gSig`` and a few per-component fields are
    read; large fields (traces, OnACID's online state) are left on disk.

    Parameters
    ----------
    path : path-like
        A ``.hdf5`` file written by CaImAn's ``cnm.save`` (CNMF or OnACID).
    locking : bool
        Open with HDF5's file locking. False only for a caller that already holds
        :func:`~calcomp_caiman.io.atomic.exclusive_lock` on ``path`` (the writer does).
    stored_probs : bool
        Match the stored ``class_probs`` to ``A`` (``ResultFile.class_probs``); False skips
        that work and leaves ``class_probs`` None.

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
    The bundled demo, a CaImAn 1.12.1 batch-CNMF result:

    >>> from importlib import resources
    >>> source = read_estimates(resources.files("calcomp_caiman.data") / "demo_caiman_sim.hdf5")
    >>> source.A.shape, source.dims, source.gSig, source.classification
    ((9216, 36), (96, 96), (4.0, 4.0), None)
    """
    return _read(os.fspath(path), locking=locking, stored_probs=stored_probs)


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
        asked; ``g``, ``neurons_sn``, ``Cn``, ``SNR_comp``, ``r_values``, ``gSig`` and the
        frame rate (``params/data/fr``) where stored; the modality from
        ``params/init/center_psf`` (and ``method_init``, where a writer kept it:
        :func:`~calcomp_caiman.evidence.modality.detect_modality`). Traces or images that do not fit
        ``A`` are left out with a warning (the footprints are still classified).

    Raises
    ------
    FileNotFoundError, InvalidFileError, FileBusyError
        As :func:`read_estimates`.
    """
    path = os.fspath(path)
    source = _read(path, locking=True, fields=("SNR_comp", "r_values"))
    n = source.n_components
    extra: dict[str, Any] = {}
    with _reading(path) as handle:
        estimates = handle["estimates"]
        # idx_components: CaImAn's own selection, shown beside ours (Evidence.caiman_accepted);
        # in a file classified before, CaImAn's is kept under its backup name
        own = BACKUP_FIELDS["idx_components"]
        stored = {"idx_components": own if own in estimates else "idx_components"}
        for name in ("g", "neurons_sn", "Cn", "idx_components"):
            try:
                value = optional_array(estimates, stored.get(name, name))
            except (OSError, ValueError, TypeError) as err:
                logger.warning("%s: ignoring estimates/%s (%s)", path, name, reason(err))
                value = None
            if value is not None and value.dtype.kind in "biuf":
                extra[name] = value
        names, frames = _trace_layout(estimates, n, path)
        rate = handle.get("params/data/fr")  # CaImAn's frame rate (Hz), a scalar
        frame_rate = rate[()] if isinstance(rate, h5py.Dataset) and rate.size == 1 else None
        modality = _modality(handle, path)
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
        frame_rate=frame_rate,
        modality=modality,
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
        check_hdf5_dataset(node, row_axis=0)  # read a few components at a time
        if name == "C" or names:
            names.append(name)
            frames = int(node.shape[1])
    return tuple(names), frames


_FIELDS = ("cnn_preds", "idx_components", "idx_components_bad", "SNR_comp", "r_values",
           "accepted_list", "rejected_list")  # fmt: skip


def _read(
    path: str, *, locking: bool, stored_probs: bool = False, fields: tuple[str, ...] = _FIELDS
) -> ResultFile:
    """The file's :class:`ResultFile`, with only the optional ``fields`` read (the others
    None); ``class_probs`` read and matched to ``A`` only if ``stored_probs`` (classifying
    and writing never use them)."""
    check_caiman_path(path)
    with _reading(path, locking=locking) as handle:
        raw = _read_raw(handle, path, fields, stored_probs)
    A = footprints_from_parts(raw["A"], path)
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

    Raises
    ------
    FileNotFoundError
        No such path.
    InvalidFileError
        A folder, a file that cannot be opened, or not HDF5.
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


def check_caiman_path(path: str | os.PathLike) -> None:
    """Raise unless ``path`` is an existing HDF5 file, with messages for CaImAn result files.

    Raises
    ------
    FileNotFoundError, InvalidFileError
        As :func:`check_hdf5_path`.
    """
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


def _read_raw(
    handle: h5py.File, path: str, wanted: tuple[str, ...], stored_probs: bool
) -> dict[str, Any]:
    """What is needed from an open file, as plain arrays; structural checks only."""
    estimates = handle.get("estimates")
    if not isinstance(estimates, h5py.Group):
        raise InvalidFileError(
            path,
            "has no 'estimates' group; expected a CaImAn result file saved with cnm.save() "
            "(CNMF or OnACID).",
        )
    A_raw = read_footprint_parts(estimates, path)
    dims_where, dims_value = None, None
    for where in ("estimates/dims", "dims", "params/data/dims"):
        candidate = handle.get(where)
        if isinstance(candidate, h5py.Dataset):
            check_hdf5_dataset(candidate)
            value = candidate[()]
            if not is_none(value):
                dims_where, dims_value = where, value
                break
    fields: dict[str, Any] = {
        name: optional_array(estimates, name) if name in wanted else None for name in _FIELDS
    }
    fields["class_probs"] = optional_array(estimates, "class_probs") if stored_probs else None
    fields["gSig"] = _gsig(handle)
    fields["classification"] = _provenance_of(estimates)
    # every classified row the file holds, with its footprint's fingerprint: CaImAn's own
    # selection before cnm.save leaves our rows as they were (kept and discarded ones)
    stored = []
    for group in (estimates, estimates.get("discarded_components")) if stored_probs else ():
        if isinstance(group, h5py.Group):
            probs, fingerprint = (optional_array(group, name) for name in _STORED_ROWS)
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


def _dims(raw: dict, path: str) -> tuple[int, ...]:
    if raw["dims"] is None:
        raise InvalidFileError(
            path,
            "has no dims (estimates/dims, /dims or params/data/dims); cannot map the pixel "
            "rows of estimates/A to the image.",
        )
    try:
        dims = check_dims(raw["dims"])
    except ValueError:
        raise InvalidFileError(
            path,
            f"{raw['dims_where']} = {_one_line(raw['dims'])} is not 2 or 3 positive integers (the "
            "field-of-view shape).",
        ) from None
    check_pixels(path, raw["dims_where"], dims)
    return dims


def _one_line(value: Any, limit: int = 60) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _gsig(handle: h5py.File) -> tuple[float, ...] | None:
    node = handle.get("params/init/gSig")
    if not isinstance(node, h5py.Dataset):
        return None
    check_hdf5_dataset(node)
    value = node[()]
    if is_none(value):
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


def _modality(handle: h5py.File, path: str) -> str | None:
    """What the stored ``params/init`` says of the modality (None: nothing)."""
    init = handle.get("params/init")
    if not isinstance(init, h5py.Group):
        return None
    found = {}
    for name in ("center_psf", "method_init"):
        try:
            found[name] = optional_array(init, name)
        except (OSError, ValueError, TypeError) as err:
            logger.warning("%s: ignoring params/init/%s (%s)", path, name, reason(err))
    return detect_modality({"init": found})


def _provenance_of(estimates: h5py.Group) -> dict[str, Any] | None:
    node = estimates.get("class_probs")
    if not isinstance(node, h5py.Dataset):
        return None
    found = {
        key[len(ATTR_PREFIX) :]: attribute_value(value)
        for key, value in node.attrs.items()
        if key.startswith(ATTR_PREFIX)
    }
    return found or None


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
            recorded = attribute_value(probs.attrs.get(ATTR_PREFIX + "model_sha256"))
            if isinstance(A, h5py.Group):
                n = int(np.ravel(A["shape"][()])[1])
            else:
                n = int(A.shape[1]) if len(A.shape) == 2 else -1
            if recorded != str(model_sha256) or probs.ndim != 2 or probs.shape[0] != n:
                return False
            fingerprint = optional_array(handle["estimates"], "class_fingerprint")
            if fingerprint is None:  # calcomp 0.1.0 wrote none: the count is all there is
                return True
            A_now = footprints_from_parts(read_footprint_parts(handle["estimates"], path), path)
            current = footprint_fingerprint(A_now)
            rows = match_fingerprints(fingerprint, current)
            # a CaImAn restore keeps the count but reorders the columns
            return rows is not None and np.array_equal(rows, np.arange(n))
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError):
        logger.debug("is_classified_by: cannot read %s", path, exc_info=True)
        return False
