"""Footprints from the ROI masks of an NWB ``PlaneSegmentation`` (image, pixel or voxel masks).

NWB's ``x`` is the first axis of ``image_mask``, as pynwb's ``pixel_to_image`` has it, and
is taken as the row: pixel ``(x, y)`` is row ``x + y * H`` of ``A`` (CaImAn's Fortran
order). For ``pixel_mask`` the image size comes from the imaging plane's ``TwoPhotonSeries``
when the file has one (its data's frame shape, or the ``dimension`` of an external series
whose data is a placeholder), else from the ROIs' extent, with a warning. Used by
:mod:`calcomp_caiman.io.nwb`, which opens the file (pynwb).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import scipy.sparse

from calcomp_caiman.errors import InvalidFileError
from calcomp_caiman.io.limits import check_hdf5_dataset, check_pixels

logger = logging.getLogger(__name__)

__all__ = ["read_footprints"]

_CHUNK_BYTES = 64 << 20  # dense image masks read at once: 64 MB (32 masks of 512 x 512 float64)


def read_footprints(
    nwbfile, plane, path: str | os.PathLike, *, caiman: bool = False
) -> tuple[scipy.sparse.csc_matrix, tuple[int, ...]]:
    """Footprints of every row of the ``PlaneSegmentation`` ``plane``, and the image size.

    Parameters
    ----------
    nwbfile : pynwb.NWBFile
        The open file (for the image size of ``pixel_mask`` ROIs).
    plane : pynwb.ophys.PlaneSegmentation
    path : path-like
        The file, for messages.
    caiman : bool
        The table was written by CaImAn's ``Estimates.save_NWB``: its ``image_mask`` rows
        are ``A[:, k].reshape(dims)`` in C order and are flattened back so.

    Returns
    -------
    A : (pixels, rows) scipy.sparse.csc_matrix
        Pixels in Fortran order (float32 weights).
    dims : tuple of int
        The image (or volume) size.

    Raises
    ------
    InvalidFileError
        No mask column, masks of the wrong shape, outside the image or not finite, or no
        ROI; masks or an image size that declare more than the file can hold or too much to
        read (:mod:`calcomp_caiman.io.limits`); the message names ``path``.
    """
    path = Path(path)
    if "image_mask" in plane.colnames:
        A, dims = _image_mask_footprints(plane, path, caiman=caiman)
    elif "pixel_mask" in plane.colnames or "voxel_mask" in plane.colnames:
        A, dims = _pixel_mask_footprints(nwbfile, plane, path)
    else:
        raise InvalidFileError(
            path, f"PlaneSegmentation {plane.name} has no image_mask, pixel_mask or voxel_mask."
        )
    if A.shape[1] == 0:
        raise InvalidFileError(
            path, f"PlaneSegmentation {plane.name} has no ROI: nothing to classify."
        )
    if A.nnz and not np.all(np.isfinite(A.data)):
        raise InvalidFileError(path, f"the masks of {plane.name} hold NaN or Inf values.")
    return A, dims


def _to_columns(chunk: np.ndarray, caiman: bool) -> scipy.sparse.csc_matrix:
    """(n, H, W[, D]) masks -> (pixels, n) sparse, Fortran pixel order.

    ``caiman``: the masks are CaImAn's ``A[:, k].reshape(dims)`` (C order of a Fortran-order
    column), so flattening them in C order gives ``A`` back.
    """
    n = chunk.shape[0]
    if caiman:
        flat = chunk.reshape(n, -1)
    else:
        order = (0, *reversed(range(1, chunk.ndim)))
        flat = np.ascontiguousarray(chunk.transpose(order)).reshape(n, -1)
    return scipy.sparse.csr_matrix(flat.astype(np.float32)).T.tocsc()


def _image_mask_footprints(
    plane, path: Path, caiman: bool = False
) -> tuple[scipy.sparse.csc_matrix, tuple[int, ...]]:
    data = plane["image_mask"].data
    if len(data.shape) not in (3, 4):
        raise InvalidFileError(
            path,
            f"image_mask of {plane.name} has shape {tuple(data.shape)}; expected (ROIs, H, W) "
            "or (ROIs, H, W, D).",
        )
    n = data.shape[0]
    dims = tuple(int(d) for d in data.shape[1:])
    check_pixels(path, f"the image_mask size of {plane.name}", dims)
    check_hdf5_dataset(data, f"image_mask of {plane.name}", row_axis=0)
    rows = max(1, _CHUNK_BYTES // max(1, int(np.prod(dims)) * data.dtype.itemsize))
    parts = [_to_columns(np.asarray(data[start : start + rows]), caiman)
             for start in range(0, n, rows)]  # fmt: skip
    A = scipy.sparse.hstack(parts, format="csc") if parts else scipy.sparse.csc_matrix((0, 0))
    return A, dims


def _series_dims(nwbfile, plane) -> tuple[int, ...] | None:
    """Image size of the plane's ``TwoPhotonSeries``: its data's frame shape, else (an
    external series, whose data is a ``(0, 0, 0)`` placeholder) its ``dimension``."""
    from pynwb.ophys import TwoPhotonSeries

    for obj in nwbfile.objects.values():
        if isinstance(obj, TwoPhotonSeries) and obj.imaging_plane is plane.imaging_plane:
            shape = tuple(int(d) for d in obj.data.shape) if obj.data is not None else ()
            if len(shape) >= 3 and min(shape[1:]) > 0:
                return shape[1:]
            if obj.dimension is not None:
                dims = tuple(int(d) for d in np.ravel(obj.dimension[:]))
                if dims and min(dims) > 0:
                    return dims
    return None


def _pixel_mask_footprints(
    nwbfile, plane, path: Path
) -> tuple[scipy.sparse.csc_matrix, tuple[int, ...]]:
    column = "pixel_mask" if "pixel_mask" in plane.colnames else "voxel_mask"
    target = getattr(plane, column)
    index = getattr(plane, f"{column}_index")
    check_hdf5_dataset(target.data, f"{column} of {plane.name}")
    check_hdf5_dataset(index.data, f"{column}_index of {plane.name}")
    records = np.asarray(target.data[:])
    ends = np.asarray(index.data[:], dtype=np.int64)
    coords = ("x", "y") if column == "pixel_mask" else ("x", "y", "z")
    try:
        points = np.column_stack([np.asarray(records[name]) for name in coords])
        weights = np.asarray(records["weight"], dtype=np.float64)
    except (ValueError, KeyError, IndexError, TypeError):
        raise InvalidFileError(
            path, f"{column} of {plane.name} is not a table of ({', '.join(coords)}, weight)."
        ) from None
    if points.size and (np.any(points < 0) or np.any(points != np.round(points))):
        raise InvalidFileError(
            path, f"{column} of {plane.name} has negative or fractional coordinates."
        )
    points = points.astype(np.int64)
    extent = tuple(int(v) + 1 for v in points.max(axis=0)) if len(points) else (1,) * len(coords)
    dims = _series_dims(nwbfile, plane)
    if dims is None or len(dims) != len(coords):
        logger.warning(
            "%s: no TwoPhotonSeries gives the image size of %s; using the ROIs' extent %s",
            path, plane.name, extent,
        )  # fmt: skip
        dims = extent
    check_pixels(path, f"the image size of {plane.name}", dims)
    if any(e > d for e, d in zip(extent, dims)):
        raise InvalidFileError(
            path,
            f"{column} of {plane.name} has pixels up to {extent}, outside the {dims} image of "
            "its TwoPhotonSeries.",
        )
    n = len(ends)
    if n and (np.any(np.diff(ends) < 0) or ends[-1] != len(records)):
        raise InvalidFileError(
            path, f"{column}_index of {plane.name} is inconsistent with {column}."
        )
    columns = np.repeat(np.arange(n), np.diff(np.concatenate([[0], ends])))
    pixels = np.ravel_multi_index(tuple(points.T), dims, order="F") if len(points) else points[:, 0]
    A = scipy.sparse.csc_matrix(
        (weights.astype(np.float32), (pixels, columns)), shape=(int(np.prod(dims)), n)
    )
    return A, tuple(dims)
