"""ROI masks from any pipeline: a label image or a stack of masks, in and out.

Two layouts are read, from a ``.npy`` file or a TIFF (``.tif``/``.tiff``, needs
``tifffile``: ``pip install "calcomp_caiman[masks]"``):

* a **label image**, ``(H, W)`` integers: one ROI per distinct positive value (0 is
  background), ROIs in increasing order of their value;
* a **stack of masks**, ``(N, H, W)``: one ROI per plane, binary or weighted (CNMF-like
  footprints), in the stack's order.

Rows and columns are the array's first and second image axes; a footprint becomes column
``k`` of ``A`` with pixel ``(row, col)`` at row ``row + col * H`` (CaImAn's Fortran order).
Masks carry no traces, no image and no ``gSig``: the classifier sees shapes only, with
``gSig`` estimated from the footprints unless given.

The input is only read. The classification goes beside it (or where asked): a CSV table
(one row per ROI, with the ROI's value in the label image) and a ``.npz`` record with every
array of :func:`calcomp_caiman.classify.classification_fields` and the provenance.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from calcomp_caiman.errors import InvalidFileError, OutputExistsError
from calcomp_caiman.evidence.evidence import Evidence
from calcomp_caiman.io.limits import check_declared
from calcomp_caiman.io.sidecar import (
    record_model_sha256,
    write_component_table,
    write_record,
)
from calcomp_caiman.schema import check_result

logger = logging.getLogger(__name__)

__all__ = [
    "MASK_SUFFIXES",
    "is_classified_by",
    "masks_to_footprints",
    "output_paths",
    "read_evidence",
    "read_masks",
    "write_classification",
]

MASK_SUFFIXES = (".tif", ".tiff", ".npy")
"""File name endings read as masks."""

_RESULT_SUFFIXES = (".csv", ".npz")


def read_masks(path: str | os.PathLike) -> np.ndarray:
    """The array stored in a mask file (``.npy`` or TIFF), as stored.

    Raises
    ------
    FileNotFoundError
        No such file.
    InvalidFileError
        Not a readable ``.npy``/TIFF, an array of Python objects (a ragged list), or a
        declared shape the file cannot hold or too large to read
        (:mod:`calcomp_caiman.io.limits`).
    ImportError
        A TIFF and ``tifffile`` is not installed (``pip install "calcomp_caiman[masks]"``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in MASK_SUFFIXES:
        raise InvalidFileError(path, f"is not a mask file (expected one of {MASK_SUFFIXES}).")
    if suffix == ".npy":
        try:  # memory-mapped first: a header that declares more than the file is refused
            mapped = np.load(path, mmap_mode="r", allow_pickle=False)
            check_declared(path, "the array", mapped.shape, mapped.dtype.itemsize,
                           path.stat().st_size)  # fmt: skip
            return np.array(mapped)
        except ValueError as err:
            if isinstance(err, InvalidFileError):
                raise
            if "allow_pickle" in str(err) or "Python objects" in str(err):
                raise InvalidFileError(
                    path,
                    "holds Python objects (a ragged list of masks?); save a label image "
                    "(H, W) of ints or a stack (N, H, W) of equal-sized masks.",
                ) from None
            raise InvalidFileError(path, f"cannot be read as .npy ({err}).") from None
        except OSError as err:
            raise InvalidFileError(path, f"cannot be read as .npy ({err}).") from None
    try:
        import tifffile
    except ImportError:
        raise ImportError(
            f"{path}: reading TIFF masks needs tifffile: pip install 'calcomp_caiman[masks]'"
        ) from None
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]  # what imread reads; its shape as the tags declare it
            check_declared(path, "the image", series.shape, series.dtype.itemsize,
                           path.stat().st_size)  # fmt: skip
            return tif.asarray()
    except InvalidFileError:
        raise
    except Exception as err:  # tifffile raises many kinds on a damaged file
        raise InvalidFileError(
            path, f"cannot be read as TIFF ({type(err).__name__}: {err})."
        ) from None


def masks_to_footprints(
    masks: np.ndarray,
) -> tuple[scipy.sparse.csc_matrix, tuple[int, int], np.ndarray]:
    """Footprints ``A`` (Fortran pixel order) from a label image or a stack of masks.

    Parameters
    ----------
    masks : (H, W) integer ndarray or (N, H, W) ndarray
        A label image (0 background, one ROI per positive value) or one mask per plane.

    Returns
    -------
    A : (H * W, N) csc_matrix, float32
    dims : (H, W)
    values : (N,) int64 ndarray
        The label of each ROI (label image), or its plane index (stack).

    Raises
    ------
    ValueError
        Not 2-D or 3-D; a label image that is not integral or has negative labels; a
        stack with non-finite values.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.array([[0, 5, 5], [2, 0, 0]])
    >>> A, dims, values = masks_to_footprints(labels)
    >>> dims, values.tolist(), A.shape
    ((2, 3), [2, 5], (6, 2))
    >>> sorted(A[:, 1].nonzero()[0].tolist())  # (0, 1) and (0, 2): rows 0 + 1*2 and 0 + 2*2
    [2, 4]
    """
    masks = np.asarray(masks)
    if masks.ndim == 2:
        return _from_labels(masks)
    if masks.ndim == 3:
        return _from_stack(masks)
    raise ValueError(
        f"masks must be a label image (H, W) or a stack of masks (N, H, W), got shape "
        f"{masks.shape}."
    )


def _from_labels(labels: np.ndarray) -> tuple[scipy.sparse.csc_matrix, tuple[int, int], np.ndarray]:
    if labels.dtype == bool:
        labels = labels.astype(np.int64)
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise ValueError(
                "a 2-D mask array must be a label image of integers (one value per ROI, 0 "
                f"background), got non-integral {labels.dtype} values; save a stack (N, H, W) "
                "for weighted masks."
            )
    elif labels.dtype.kind not in "iu":
        raise ValueError(f"a label image must hold integers, got dtype {labels.dtype}.")
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise ValueError("a label image must not hold negative labels (0 is background).")
    height, width = labels.shape
    rows, cols = np.nonzero(labels)
    values, column = np.unique(labels[rows, cols], return_inverse=True)
    pixels = rows + cols * height
    A = scipy.sparse.csc_matrix(
        (np.ones(len(pixels), np.float32), (pixels, column.ravel())),
        shape=(height * width, len(values)),
    )
    return A, (height, width), values.astype(np.int64)


def _from_stack(stack: np.ndarray) -> tuple[scipy.sparse.csc_matrix, tuple[int, int], np.ndarray]:
    if stack.dtype.kind not in "biuf":
        raise ValueError(f"a stack of masks must hold numbers, got dtype {stack.dtype}.")
    n, height, width = stack.shape
    flat = stack.transpose(0, 2, 1).reshape(n, height * width)  # column c*H + row
    if flat.dtype.kind == "f" and not np.all(np.isfinite(flat)):
        bad = np.flatnonzero(~np.all(np.isfinite(flat), axis=1))
        raise ValueError(f"masks {bad[:5].tolist()} hold NaN or Inf values.")
    A = scipy.sparse.csr_matrix(flat.astype(np.float32)).T.tocsc()
    return A, (height, width), np.arange(n, dtype=np.int64)


def _read(path: Path) -> tuple[scipy.sparse.csc_matrix, tuple[int, int], np.ndarray]:
    masks = read_masks(path)
    try:
        A, dims, values = masks_to_footprints(masks)
    except ValueError as err:
        raise InvalidFileError(path, str(err)) from None
    if A.shape[1] == 0:
        raise InvalidFileError(
            path, "holds no ROI (all zeros, or an empty stack): nothing to classify."
        )
    return A, dims, values


def read_evidence(path: str | os.PathLike, *, gSig: float | None = None) -> Evidence:
    """Footprints of the ROIs of a mask file.

    Parameters
    ----------
    path : path-like
        A label image or a stack of masks (``.npy``, ``.tif``, ``.tiff``).
    gSig : float, optional
        Typical neuron half-size in px; estimated from the footprints when omitted.

    Returns
    -------
    Evidence
        Footprints only (kinds ``shape`` and, with several ROIs, ``neighbours``).

    Raises
    ------
    FileNotFoundError, InvalidFileError, ImportError
        As :func:`read_masks`; also a wrong shape or dtype, or no ROI at all.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> labels = np.zeros((40, 40), np.uint16)
    >>> labels[5:12, 5:12] = 3; labels[20:30, 22:28] = 7
    >>> path = os.path.join(tempfile.mkdtemp(), "labels.npy")
    >>> np.save(path, labels)
    >>> ev = read_evidence(path)
    >>> ev.n, ev.dims
    (2, (40, 40))
    """
    path = Path(path)
    A, dims, _ = _read(path)
    return Evidence.build(A, dims, gSig=gSig, source=str(path))


def output_paths(
    path: str | os.PathLike, out_path: str | os.PathLike | None = None
) -> tuple[Path, Path]:
    """The CSV table and ``.npz`` record written for a mask file.

    ``out_path`` ending in ``.csv`` or ``.npz`` names them (the other ending beside it);
    another ``out_path`` (or the mask file itself) gives ``<stem>.calcomp.csv`` and
    ``<stem>.calcomp.npz`` in its folder.

    Examples
    --------
    >>> [p.name for p in output_paths("data/labels.tif")]
    ['labels.calcomp.csv', 'labels.calcomp.npz']
    >>> [str(p) for p in output_paths("data/labels.tif", "out/result.csv")]
    ['out/result.csv', 'out/result.npz']
    """
    base = Path(out_path) if out_path is not None else Path(path)
    if base.suffix.lower() in _RESULT_SUFFIXES:
        stem = base.with_suffix("")
    else:
        stem = base.with_name(f"{base.stem}.calcomp")
    return Path(f"{stem}.csv"), Path(f"{stem}.npz")


def write_classification(
    path: str | os.PathLike,
    result: Mapping[str, Any],
    *,
    out_path: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> str:
    """Write the classification of a mask file's ROIs beside it (or at ``out_path``).

    Parameters
    ----------
    path : path-like
        The mask file that was classified (only read).
    result : mapping
        :func:`calcomp_caiman.classify.classification_fields`, optionally with
        ``provenance``.
    out_path : path-like, optional
        Where to write (see :func:`output_paths`); default beside ``path``.
    overwrite : bool
        Allow replacing existing outputs of ``out_path``. Outputs beside the mask file
        (``out_path`` None) are always replaced.

    Returns
    -------
    str
        The CSV table written.

    Raises
    ------
    InvalidFileError
        ``path`` cannot be read; an output exists and ``overwrite`` is False; writing failed
        (each output is then as before).
    ValueError
        ``result`` does not have one row per ROI.

    Notes
    -----
    The ``.npz`` record is written first and the CSV after it, each atomically. The CSV
    has a ``roi_value`` column: the ROI's label (label image) or plane index (stack).
    """
    path = Path(path)
    A, _, values = _read(path)
    checked = check_result(result, A.shape[1], label=str(path))
    fields = checked.fields
    table, record = output_paths(path, out_path)
    if out_path is not None and not overwrite:
        for target in (table, record):
            if target.exists():
                raise OutputExistsError(target)
    write_record(record, fields, checked.provenance)
    write_component_table(table, fields, extra={"roi_value": values.tolist()})
    logger.info("wrote the classification of %d ROIs to %s and %s", A.shape[1], table, record)
    return str(table)


def is_classified_by(path: str | os.PathLike, model_sha256: str) -> bool:
    """Whether the outputs for ``path`` (:func:`output_paths`) were made by this model.

    Examples
    --------
    >>> is_classified_by("no/such/labels.tif", "0" * 64)
    False
    """
    table, record = output_paths(path)
    return table.is_file() and record_model_sha256(record) == str(model_sha256)
