"""NWB files: ROIs of a ``PlaneSegmentation`` in, the classification as new columns out.

Needs ``pynwb`` (``pip install "calcomp_caiman[nwb]"``), imported inside the functions.

What becomes :class:`~calcomp_caiman.evidence.evidence.Evidence`:

* footprints from the ``image_mask`` column (``(N, H, W)``, or ``(N, H, W, D)``), or else
  from ``pixel_mask`` (``x, y, weight`` per pixel) / ``voxel_mask``. NWB's ``x`` is the first
  axis of ``image_mask``, as pynwb's ``pixel_to_image`` has it, and is taken as the row:
  pixel ``(x, y)`` is row ``x + y * H`` of ``A`` (CaImAn's Fortran order; Suite2p's NWB
  export writes ``pixel_mask = (ypix, xpix, lam)``, so its ROIs come out as Suite2p has them).
  For ``pixel_mask`` the image size comes from the imaging plane's ``TwoPhotonSeries`` when
  the file has one (else from the ROIs' extent, with a warning);
* traces: ``C`` from a ``RoiResponseSeries`` over this table (one in a ``Fluorescence``
  container first, else one in ``DfOverF``), read in row chunks. NWB stores the traces
  (frames, ROIs) and says nothing about denoising: there is no ``YrA`` or ``S``;
* a file written by CaImAn's own ``Estimates.save_NWB`` (1.12: table description
  ``CNMF_ROIs``, columns ``r``, ``snr``, ``accepted``, ``rejected``) is read as CaImAn's
  ``load_CNMF`` reads it: ``image_mask`` is ``A[:, k].reshape(dims)`` in C order (so it is
  flattened back in C order, not read as an image), the background components CaImAn
  appends to the table are left out, ``YrA`` comes from the ``residuals`` series and
  ``SNR_comp`` / ``r_values`` from the ``snr`` / ``r`` columns.

Images: ``Cn`` and a mean image from ``Images`` containers of the same processing module
(CaImAn's ``summary_images/local_correlations``, Suite2p's ``meanImg``), when they have the
field of view's shape. ``gSig`` is not stored by either: it is estimated from the footprints
unless given.

The classification is written as new columns of the same ``PlaneSegmentation``:
``class_probs`` ((N, 4) float32), ``class_labels`` (int8 codes 1-4), ``class_flags``
(uint8) and ``class_accepted`` (bool), named and typed as in
:func:`calcomp_caiman.classify.classification_fields` (rows that are not components, such
as CaImAn's background rows, get NaN probabilities, label 0 and are not accepted); the
provenance (model, its SHA256, version, date, accept rule) is JSON at the end of the
description of ``class_probs``. The
file is copied to a temporary file beside the destination, the columns are added there with
pynwb (without rewriting the cached specifications), and the copy replaces the destination
in one ``os.replace``: every object already in the file keeps its content; only the table's
``colnames`` attribute gains the new names. Writing again overwrites our columns' values.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from calcomp_caiman.errors import InvalidFileError
from calcomp_caiman.evidence.evidence import Evidence
from calcomp_caiman.evidence.traces import Traces
from calcomp_caiman.io.atomic import atomic_replace, exclusive_lock
from calcomp_caiman.io.caiman_h5 import check_hdf5_path
from calcomp_caiman.io.sidecar import accepted_mask, check_result
from calcomp_caiman.schema import CLASSES

logger = logging.getLogger(__name__)

__all__ = [
    "NWB_COLUMNS",
    "is_classified_by",
    "list_planes",
    "read_classification",
    "read_evidence",
    "write_classification",
]

_MARK = "calcomp_caiman"
_PROVENANCE = "; provenance: "
NWB_COLUMNS = {
    "class_probs": f"{_MARK}: probabilities of the classes {', '.join(CLASSES)} (columns in that order)",
    "class_labels": f"{_MARK}: most probable class, codes 1 neuron, 2 process, 3 noise, 4 doubtful",
    "class_flags": f"{_MARK}: bit flags, 1 = empty footprint (classified noise), 2 = negative values clipped",
    "class_accepted": f"{_MARK}: accepted by the rule in the provenance of class_probs",
}
"""Columns written into the ``PlaneSegmentation`` and their descriptions."""

_CHUNK_BYTES = 64 << 20  # dense image masks read at once: 64 MB (32 masks of 512 x 512 float64)


def _pynwb():
    try:
        import pynwb
    except ImportError:
        raise ImportError(
            "reading NWB files needs pynwb: pip install 'calcomp_caiman[nwb]'"
        ) from None
    return pynwb


def _check_file(path: Path) -> None:
    check_hdf5_path(path, "an NWB file (.nwb)", "an HDF5-based NWB file (.nwb written by pynwb)")


@contextlib.contextmanager
def _open(path: Path, mode: str = "r", *, locking: bool = True) -> Iterator[Any]:
    """Open with pynwb; errors become one-line :class:`InvalidFileError`."""
    import h5py

    pynwb = _pynwb()
    try:
        handle = h5py.File(path, mode, locking=locking)
    except OSError as err:
        if "lock" in str(err):
            raise InvalidFileError(path, "is locked by another program; try again later.") from None
        raise InvalidFileError(path, f"cannot be opened ({err}).") from None
    try:
        try:
            io = pynwb.NWBHDF5IO(file=handle, mode=mode, load_namespaces=True)
            nwbfile = io.read()
        except Exception as err:  # pynwb/hdmf raise many kinds on a non-NWB file
            text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InvalidFileError(path, f"cannot be read as NWB ({text}).") from None
        try:
            yield io, nwbfile
        finally:
            io.close()
    finally:
        handle.close()


def _planes(nwbfile) -> dict[str, Any]:
    from pynwb.ophys import PlaneSegmentation

    found = {}
    for obj in nwbfile.objects.values():
        if isinstance(obj, PlaneSegmentation):
            found[_plane_path(obj)] = obj
    return dict(sorted(found.items()))


def _plane_path(plane) -> str:
    names = []
    node = plane
    while node is not None and node.parent is not None:
        names.append(node.name)
        node = node.parent
    return "/".join(reversed(names))


def _choose(planes: dict[str, Any], plane: str | None, path: Path):
    if not planes:
        raise InvalidFileError(
            path,
            "holds no ImageSegmentation/PlaneSegmentation (no ROIs): nothing to classify.",
        )
    if plane is None:
        if len(planes) > 1:
            raise InvalidFileError(
                path,
                f"holds {len(planes)} PlaneSegmentations ({', '.join(planes)}); choose one with "
                "--plane NAME (plane=NAME).",
            )
        return next(iter(planes.items()))
    matches = [(key, ps) for key, ps in planes.items() if plane in (key, ps.name)]
    if len(matches) != 1:
        what = "no" if not matches else "more than one"
        raise InvalidFileError(
            path, f"has {what} PlaneSegmentation named {plane!r}; it holds: {', '.join(planes)}."
        )
    return matches[0]


def list_planes(path: str | os.PathLike) -> list[str]:
    """The ``PlaneSegmentation`` tables of an NWB file, as ``module/container/name`` paths.

    Raises
    ------
    FileNotFoundError, InvalidFileError, ImportError
        No such file; not an NWB file; pynwb missing.
    """
    path = Path(path)
    _check_file(path)
    with _open(path) as (_, nwbfile):
        return list(_planes(nwbfile))


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


def _caiman_layout(nwbfile, plane) -> dict | None:
    """What CaImAn's ``Estimates.save_NWB`` (1.12) wrote, or None for another writer.

    CaImAn names the table's description ``CNMF_ROIs``, adds the columns ``r``, ``snr``,
    ``accepted`` and ``rejected``, appends the background components (``b``) as more rows,
    and stores ``C`` as ``Fluorescence/RoiResponseSeries`` over the component rows,
    ``f`` as ``Background_Fluorescence_Response`` and ``YrA`` as the ``TimeSeries``
    ``residuals`` of the same module.
    """
    from pynwb.base import TimeSeries
    from pynwb.ophys import RoiResponseSeries

    if str(plane.description) != "CNMF_ROIs" or not {"r", "snr", "accepted", "rejected"} <= set(
        plane.colnames
    ):
        return None
    n = len(plane.id)
    layout = {"rows": np.arange(n), "series": None, "residuals": None}
    for obj in nwbfile.objects.values():
        if isinstance(obj, RoiResponseSeries) and obj.rois.table is plane:
            if obj.name == "RoiResponseSeries":
                layout["series"] = obj
                layout["rows"] = np.asarray(obj.rois.data[:], dtype=np.int64)
    module = plane.parent.parent if plane.parent is not None else None
    residuals = None
    if module is not None and hasattr(module, "data_interfaces"):
        residuals = module.data_interfaces.get("residuals")
    if isinstance(residuals, TimeSeries) and not isinstance(residuals, RoiResponseSeries):
        layout["residuals"] = residuals
    return layout


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
    rows = max(1, _CHUNK_BYTES // max(1, int(np.prod(dims)) * data.dtype.itemsize))
    parts = [_to_columns(np.asarray(data[start : start + rows]), caiman)
             for start in range(0, n, rows)]  # fmt: skip
    A = scipy.sparse.hstack(parts, format="csc") if parts else scipy.sparse.csc_matrix((0, 0))
    return A, dims


def _series_dims(nwbfile, plane) -> tuple[int, ...] | None:
    from pynwb.ophys import TwoPhotonSeries

    for obj in nwbfile.objects.values():
        if isinstance(obj, TwoPhotonSeries) and obj.imaging_plane is plane.imaging_plane:
            if obj.data is not None and len(obj.data.shape) >= 3:
                return tuple(int(d) for d in obj.data.shape[1:])
            if obj.dimension is not None:
                return tuple(int(d) for d in np.ravel(obj.dimension))
    return None


def _pixel_mask_footprints(
    nwbfile, plane, path: Path
) -> tuple[scipy.sparse.csc_matrix, tuple[int, ...]]:
    column = "pixel_mask" if "pixel_mask" in plane.colnames else "voxel_mask"
    target = getattr(plane, column)
    index = getattr(plane, f"{column}_index")
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


def _footprints(
    nwbfile, plane, path: Path, layout: dict | None
) -> tuple[scipy.sparse.csc_matrix, tuple[int, ...]]:
    """Footprints of every row of ``plane``."""
    if "image_mask" in plane.colnames:
        A, dims = _image_mask_footprints(plane, path, caiman=layout is not None)
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


def _columns_of(series, rows: np.ndarray) -> np.ndarray | None:
    """Column of ``series.data`` holding each of ``rows`` (None unless each is there once)."""
    covered = np.asarray(series.rois.data[:], dtype=np.int64)
    if len(covered) != len(rows) or not np.array_equal(np.sort(covered), np.sort(rows)):
        return None
    if len(np.unique(covered)) != len(covered):
        return None
    position = {int(row): column for column, row in enumerate(covered)}
    return np.array([position[int(row)] for row in rows], dtype=np.int64)


def _usable(series, n_columns: int, path: Path) -> bool:
    shape = tuple(series.data.shape)
    if len(shape) != 2 or shape[1] != n_columns or shape[0] < 2 or not hasattr(series.data, "name"):
        logger.warning("%s: ignoring %s of shape %s", path, series.name, shape)
        return False
    return True


def _traces(nwbfile, plane, rows: np.ndarray, path: Path, layout: dict | None) -> Traces | None:
    """``C`` (and, in CaImAn's layout, ``YrA``) of the components ``rows`` of ``plane``."""
    from pynwb.ophys import DfOverF, Fluorescence, RoiResponseSeries

    if layout is not None and layout["series"] is not None:
        candidates = [(0, "", layout["series"])]
    else:
        candidates = []
        for obj in nwbfile.objects.values():
            if isinstance(obj, RoiResponseSeries) and obj.rois.table is plane:
                parent = obj.parent
                rank = 0 if isinstance(parent, Fluorescence) else 1 if isinstance(parent, DfOverF) else 2  # fmt: skip
                candidates.append((rank, obj.name, obj))
    for _, _, series in sorted(candidates, key=lambda item: item[:2]):
        columns = _columns_of(series, rows)
        if columns is None:
            logger.warning("%s: ignoring %s: it does not cover each ROI once", path, series.name)
            continue
        if not _usable(series, len(columns), path):
            continue
        names = {"C": series.data.name}
        residuals = None if layout is None else layout["residuals"]
        if residuals is not None and tuple(residuals.data.shape) == tuple(series.data.shape):
            names["YrA"] = residuals.data.name
        frames = int(series.data.shape[0])

        def read(start: int, stop: int, names=names, columns=columns, frames=frames) -> dict:
            import h5py

            wanted = columns[start:stop]
            if len(wanted) == 0:
                return {name: np.zeros((0, frames)) for name in names}
            low, high = int(wanted.min()), int(wanted.max()) + 1
            out = {}
            with h5py.File(path, "r") as handle:
                for name, dataset in names.items():
                    block = handle[dataset][:, low:high]
                    out[name] = np.asarray(block[:, wanted - low], dtype=np.float64).T
            return out

        logger.debug("%s: traces from %s", path, series.name)
        return Traces(len(rows), frames, read, tuple(names))
    return None


def _metric(plane, name: str, rows: np.ndarray) -> np.ndarray | None:
    try:
        values = np.asarray(plane[name].data[:], dtype=np.float64)[rows]
    except (KeyError, ValueError, TypeError, IndexError):
        return None
    return values if values.size and np.all(np.isfinite(values)) else None


_CORRELATION_IMAGES = ("local_correlations", "Cn", "correlation", "Vcorr")
_MEAN_IMAGES = ("meanImg", "mean", "mean_image", "average", "max_proj", "max")


def _summary_images(plane, dims: tuple[int, ...]) -> dict:
    """``Cn`` and ``image`` from the ``Images`` containers of the table's processing module.

    CaImAn's ``save_NWB`` writes ``summary_images/local_correlations`` (its ``Cn``); Suite2p's
    NWB export writes ``meanImg`` (and ``Vcorr``, ``max_proj`` cropped to its valid range,
    which do not fit and are left out). Only images of the field of view's shape are used.
    """
    from pynwb.base import Images

    found: dict = {}
    module = plane.parent.parent if plane.parent is not None else None
    interfaces = getattr(module, "data_interfaces", {}) or {}
    for container in interfaces.values():
        if not isinstance(container, Images):
            continue
        for name, image in container.images.items():
            data = np.asarray(image.data)
            if data.shape != tuple(dims[:2]) or data.dtype.kind not in "biuf":
                continue
            if name in _CORRELATION_IMAGES:
                found.setdefault("Cn", data)
            elif name in _MEAN_IMAGES:
                found.setdefault("image", data)
    return found


def _components(nwbfile, table, path: Path) -> tuple[np.ndarray, dict | None]:
    """Rows of ``table`` that are components (CaImAn's background rows left out)."""
    layout = _caiman_layout(nwbfile, table)
    rows = np.arange(len(table.id)) if layout is None else np.sort(layout["rows"])
    if len(rows) and (rows.min() < 0 or rows.max() >= len(table.id)):
        raise InvalidFileError(path, f"RoiResponseSeries refers to rows outside {table.name}.")
    return rows, layout


def read_evidence(
    path: str | os.PathLike, *, plane: str | None = None, gSig: float | None = None
) -> Evidence:
    """Footprints and traces of the ROIs of one ``PlaneSegmentation`` of an NWB file.

    Parameters
    ----------
    path : path-like
        An ``.nwb`` file (HDF5).
    plane : str, optional
        Name (or ``module/container/name`` path, see :func:`list_planes`) of the
        ``PlaneSegmentation``; needed when the file has several.
    gSig : float, optional
        Typical neuron half-size in px; estimated from the footprints when omitted.

    Returns
    -------
    Evidence
        Footprints; ``C`` from a ``RoiResponseSeries`` over the table when there is one.
        For a file written by CaImAn's ``Estimates.save_NWB``: its components only (not the
        background rows), in CaImAn's pixel order, with ``YrA`` from ``residuals`` and
        ``SNR_comp`` / ``r_values`` from the ``snr`` / ``r`` columns.

    Raises
    ------
    FileNotFoundError
        No such file.
    InvalidFileError
        Not an NWB file; no ``PlaneSegmentation``, several and no ``plane``, or no such
        ``plane``; masks missing, of the wrong shape, out of the image or not finite.
    ImportError
        pynwb is not installed.
    """
    path = Path(path)
    _check_file(path)
    with _open(path) as (_, nwbfile):
        key, table = _choose(_planes(nwbfile), plane, path)
        rows, layout = _components(nwbfile, table, path)
        A, dims = _footprints(nwbfile, table, path, layout)
        A = A[:, rows] if layout is not None else A
        if A.shape[1] == 0:
            raise InvalidFileError(path, f"PlaneSegmentation {table.name} has no component.")
        traces = _traces(nwbfile, table, rows, path, layout)
        metrics = _summary_images(table, dims)
        if layout is not None:
            metrics["SNR_comp"] = _metric(table, "snr", rows)
            metrics["r_values"] = _metric(table, "r", rows)
    logger.debug("%s: %d ROIs from %s", path, A.shape[1], key)
    return Evidence.build(A, dims, traces=traces, gSig=gSig, source=str(path), **metrics)


def _column_values(fields: Mapping[str, np.ndarray], rows: np.ndarray, n_rows: int) -> dict:
    """Our columns over all ``n_rows`` rows; rows that are not components are unclassified
    (``class_probs`` NaN, ``class_labels`` 0, ``class_flags`` 0, not accepted)."""
    probs = np.full((n_rows, len(CLASSES)), np.nan, np.float32)
    labels = np.zeros(n_rows, np.int8)
    flags = np.zeros(n_rows, np.uint8)
    accepted = np.zeros(n_rows, bool)
    probs[rows] = fields["class_probs"]
    labels[rows] = fields["class_labels"]
    flags[rows] = fields["class_flags"]
    accepted[rows] = accepted_mask(fields, len(rows))
    return {"class_probs": probs, "class_labels": labels, "class_flags": flags,
            "class_accepted": accepted}  # fmt: skip


def _check_destination(destination: Path, *, in_place: bool, overwrite: bool) -> None:
    if destination.is_dir():
        raise InvalidFileError(destination, "is a folder; give a file name for the output.")
    if not in_place and destination.exists() and not overwrite:
        raise InvalidFileError(
            destination, "already exists; use --overwrite (overwrite=True) to replace it."
        )
    folder = destination.resolve().parent
    if not folder.is_dir():
        raise InvalidFileError(destination, f"cannot be written: no folder {folder}.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidFileError(
            destination, f"cannot be written: the folder {folder} is read-only; write elsewhere."
        )


def _add_columns(tmp: str, source: Path, plane: str | None, result: Mapping[str, Any]) -> None:
    """Add or overwrite our columns in the copy ``tmp`` of ``source``."""
    import h5py

    with _open(Path(tmp), "a", locking=False) as (io, nwbfile):
        key, table = _choose(_planes(nwbfile), plane, source)
        rows, _ = _components(nwbfile, table, source)
        fields = check_result(result, len(rows), str(source))
        values = _column_values(fields, rows, len(table.id))
        descriptions = dict(NWB_COLUMNS)
        provenance = json.dumps(dict(result.get("provenance", {})), sort_keys=True)
        descriptions["class_probs"] += _PROVENANCE + provenance
        existing = {}
        for name in values:
            if name in table.colnames:
                description = str(table[name].description)
                if not description.startswith(_MARK):
                    raise InvalidFileError(
                        source,
                        f"PlaneSegmentation {table.name} already has a column {name!r} that "
                        "calcomp did not write; rename it before classifying.",
                    )
                existing[name] = table[name].data.name
            else:
                table.add_column(name=name, description=descriptions[name], data=values[name])
        group = table.id.data.parent.name
        if len(existing) < len(values):
            io.write(nwbfile, cache_spec=False)
    if existing:
        with h5py.File(tmp, "r+", locking=False) as handle:
            for name, dataset_name in existing.items():
                dataset = handle[dataset_name]
                new = np.asarray(values[name]).astype(dataset.dtype)
                if dataset.shape != new.shape:
                    raise ValueError(
                        f"{group}/{name} has shape {dataset.shape}, expected {new.shape}"
                    )
                dataset[...] = new
                dataset.attrs["description"] = descriptions[name]


def write_classification(
    path: str | os.PathLike,
    result: Mapping[str, Any],
    *,
    out_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    plane: str | None = None,
) -> str:
    """Write the classification as columns of the ``PlaneSegmentation``, atomically.

    Parameters
    ----------
    path : path-like
        The NWB file that was classified.
    result : mapping
        :func:`calcomp_caiman.classify.classification_fields`, optionally with
        ``provenance``.
    out_path : path-like, optional
        Write an updated copy here; ``None`` updates ``path`` in place.
    overwrite : bool
        Allow replacing an existing ``out_path``.
    plane : str, optional
        As in :func:`read_evidence`.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    FileNotFoundError, InvalidFileError, ImportError
        As :func:`read_evidence`; ``out_path`` exists and ``overwrite`` is False; the table
        has a column of our names that we did not write; writing failed. The destination
        is then as before.
    FileBusyError
        Another calcomp process is writing ``path``.
    ValueError
        ``result`` does not have one row per ROI.
    """
    source = Path(path)
    _check_file(source)
    target = source if out_path is None else Path(out_path)
    in_place = out_path is None or (target.exists() and os.path.samefile(source, target))
    destination = Path(os.path.realpath(target)) if in_place else target
    _check_destination(destination, in_place=in_place, overwrite=overwrite)
    with contextlib.ExitStack() as stack:
        stack.enter_context(exclusive_lock(str(source)))
        if not in_place and destination.exists():
            stack.enter_context(exclusive_lock(str(destination)))

        def build(tmp: str) -> None:
            shutil.copyfile(source, tmp)
            _add_columns(tmp, source, plane, result)

        try:
            atomic_replace(
                str(destination),
                build,
                mode=os.stat(source).st_mode & 0o7777,
                original=str(source),
                label=str(target),
            )
        except InvalidFileError as err:
            cause = err.__cause__
            if isinstance(cause, (InvalidFileError, ValueError)):  # our own check, said plainly
                raise (cause if isinstance(cause, InvalidFileError) else InvalidFileError(source, str(cause))) from None  # fmt: skip
            raise
    logger.info("wrote the classification to %s", target)
    return str(target)


def read_classification(
    path: str | os.PathLike, *, plane: str | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """Our columns and provenance from an NWB file, or None if it has none.

    Returns
    -------
    (columns, provenance) or None
        ``columns``: ``class_probs``, ``class_labels``, ``class_flags``, ``class_accepted``
        arrays, one row per row of the table.

    Raises
    ------
    FileNotFoundError, InvalidFileError, ImportError
        As :func:`read_evidence`.
    """
    path = Path(path)
    _check_file(path)
    with _open(path) as (_, nwbfile):
        _, table = _choose(_planes(nwbfile), plane, path)
        if "class_probs" not in table.colnames:
            return None
        columns = {
            name: np.asarray(table[name].data[:]) for name in NWB_COLUMNS if name in table.colnames
        }
        description = str(table["class_probs"].description)
    text = description.split(_PROVENANCE, 1)[1] if _PROVENANCE in description else "{}"
    return columns, json.loads(text)


def is_classified_by(
    path: str | os.PathLike, model_sha256: str, *, plane: str | None = None
) -> bool:
    """Whether the ``PlaneSegmentation`` holds our columns from the model ``model_sha256``.

    Examples
    --------
    >>> is_classified_by("no/such/file.nwb", "0" * 64)
    False
    """
    try:
        found = read_classification(path, plane=plane)
    except (OSError, ValueError, ImportError):
        return False
    return found is not None and str(found[1].get("model_sha256")) == str(model_sha256)
