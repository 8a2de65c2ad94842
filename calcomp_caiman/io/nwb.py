"""Read NWB files: the ROIs of a ``PlaneSegmentation`` as evidence, and our columns back.

Needs ``pynwb`` (``pip install "calcomp_caiman[nwb]"``), imported inside the functions.

What becomes :class:`~calcomp_caiman.evidence.evidence.Evidence`:

* footprints from the ``image_mask`` column (``(N, H, W)``, or ``(N, H, W, D)``), or else
  from ``pixel_mask`` (``x, y, weight`` per pixel) / ``voxel_mask``
  (:mod:`calcomp_caiman.io.nwb_footprints`: which pixel is which row of ``A``, the image
  size; Suite2p's NWB export writes ``pixel_mask = (ypix, xpix, lam)``, so its ROIs come out
  as Suite2p has them);
* traces: ``C`` from a ``RoiResponseSeries`` over this table (one in the ``Fluorescence``
  container named ``Fluorescence`` first, then another ``Fluorescence``, then ``DfOverF``;
  never one whose container is named for neuropil, deconvolved spikes, background or a
  second channel: Suite2p writes ``Fluorescence``, ``Neuropil`` and ``Deconvolved``, each
  a ``Fluorescence`` container with a series ``plane0``), read in row chunks. NWB stores
  the traces (frames, ROIs) and says nothing about denoising: there is no ``YrA`` or ``S``;
* a file written by CaImAn's own ``Estimates.save_NWB`` (1.12: table description
  ``CNMF_ROIs``, columns ``r``, ``snr``, ``accepted``, ``rejected``) is read as CaImAn's
  ``load_CNMF`` reads it: ``image_mask`` is ``A[:, k].reshape(dims)`` in C order (so it is
  flattened back in C order, not read as an image), the background components CaImAn
  appends to the table are left out, ``YrA`` comes from the ``residuals`` series and
  ``SNR_comp`` / ``r_values`` from the ``snr`` / ``r`` columns.

Images: ``Cn`` (a local correlation image: ``local_correlations``, never Suite2p's
``Vcorr``) and a mean image (Suite2p's ``meanImg`` before its ``max_proj``) from ``Images``
containers of the same processing module, when they have the field of view's shape.
``gSig`` is not stored by either: it is estimated from the footprints unless given.

The classification this package wrote (:mod:`calcomp_caiman.io.nwb_write`) is read back by
:func:`read_classification`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from calcomp_caiman.errors import FileBusyError, InvalidFileError
from calcomp_caiman.evidence.evidence import Evidence
from calcomp_caiman.evidence.traces import Traces
from calcomp_caiman.io.caiman_h5 import check_hdf5_path
from calcomp_caiman.io.limits import check_hdf5_dataset
from calcomp_caiman.io.nwb_footprints import read_footprints
from calcomp_caiman.schema import CLASSES

logger = logging.getLogger(__name__)

__all__ = [
    "COLUMN_MARK",
    "NWB_COLUMNS",
    "PROVENANCE_SEPARATOR",
    "check_nwb_path",
    "component_rows",
    "find_plane",
    "is_classified_by",
    "list_planes",
    "open_nwb",
    "read_classification",
    "read_evidence",
]

COLUMN_MARK = "calcomp_caiman"
"""How the description of each of our columns begins (a column without it is not ours)."""

PROVENANCE_SEPARATOR = "; provenance: "
"""What separates the description of ``class_probs`` from the provenance (JSON) after it."""

NWB_COLUMNS = {
    "class_probs": f"{COLUMN_MARK}: probabilities of the classes {', '.join(CLASSES)} (columns in that order)",
    "class_labels": f"{COLUMN_MARK}: most probable class, codes 1 neuron, 2 process, 3 noise, 4 doubtful",
    "class_flags": f"{COLUMN_MARK}: bit flags, 1 = empty footprint (classified noise), 2 = negative values clipped",
    "class_accepted": f"{COLUMN_MARK}: accepted by the rule in the provenance of class_probs",
}
"""Columns written into the ``PlaneSegmentation`` and their descriptions."""


def _pynwb():
    try:
        import pynwb
    except ImportError:
        raise ImportError(
            "reading NWB files needs pynwb: pip install 'calcomp_caiman[nwb]'"
        ) from None
    return pynwb


def check_nwb_path(path: str | os.PathLike) -> None:
    """Raise unless ``path`` is an existing HDF5 file, with messages for NWB files.

    Raises
    ------
    FileNotFoundError, InvalidFileError
        As :func:`~calcomp_caiman.io.caiman_h5.check_hdf5_path`.
    """
    check_hdf5_path(path, "an NWB file (.nwb)", "an HDF5-based NWB file (.nwb written by pynwb)")


@contextlib.contextmanager
def open_nwb(path: str | os.PathLike, mode: str = "r", *, locking: bool = True) -> Iterator[Any]:
    """``(io, nwbfile)`` of ``path`` opened with pynwb; errors become one-line errors.

    Parameters
    ----------
    path : path-like
    mode : str
        ``"r"``, or ``"a"`` to add to the file.
    locking : bool
        HDF5's file locking; False only for a caller holding
        :func:`~calcomp_caiman.io.atomic.exclusive_lock` (the writer, on its temporary copy).

    Raises
    ------
    InvalidFileError
        Locked by another program, cannot be opened, or not NWB.
    ImportError
        pynwb is not installed.
    """
    import h5py

    pynwb = _pynwb()
    try:
        handle = h5py.File(path, mode, locking=locking)
    except OSError as err:
        if "unable to lock file" in str(err):  # HDF5's own words (not "sblock" of a truncated file)
            raise FileBusyError(
                path, "is locked by another program (open for writing); try again later."
            ) from None
        raise InvalidFileError(
            path, f"cannot be opened ({err}); the file may be truncated or not HDF5."
        ) from None
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


def find_plane(nwbfile, plane: str | None, path: str | os.PathLike) -> tuple[str, Any]:
    """``(key, table)``: the ``PlaneSegmentation`` named ``plane``, or the only one.

    Raises
    ------
    InvalidFileError
        No ``PlaneSegmentation``; several and ``plane`` is None; none or several named
        ``plane``. The message names ``path``.
    """
    return _choose(_planes(nwbfile), plane, Path(path))


def list_planes(path: str | os.PathLike) -> list[str]:
    """The ``PlaneSegmentation`` tables of an NWB file, as ``module/container/name`` paths.

    Raises
    ------
    FileNotFoundError, InvalidFileError, ImportError
        No such file; not an NWB file; pynwb missing.
    """
    path = Path(path)
    check_nwb_path(path)
    with open_nwb(path) as (_, nwbfile):
        return list(_planes(nwbfile))


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
                check_hdf5_dataset(obj.rois.data, f"the rois of {obj.name}")
                layout["rows"] = np.asarray(obj.rois.data[:], dtype=np.int64)
    module = plane.parent.parent if plane.parent is not None else None
    residuals = None
    if module is not None and hasattr(module, "data_interfaces"):
        residuals = module.data_interfaces.get("residuals")
    if isinstance(residuals, TimeSeries) and not isinstance(residuals, RoiResponseSeries):
        layout["residuals"] = residuals
    return layout


def _columns_of(series, rows: np.ndarray) -> np.ndarray | None:
    """Column of ``series.data`` holding each of ``rows`` (None unless each is there once)."""
    check_hdf5_dataset(series.rois.data, f"the rois of {series.name}")
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
    check_hdf5_dataset(series.data, f"the traces of {series.name}", row_axis=1)  # per ROI
    return True


_NOT_FLUORESCENCE = ("neuropil", "deconv", "spike", "spks", "background", "chan2")
"""Words in a container's name that say its series are not the ROIs' own fluorescence
(Suite2p writes ``Neuropil`` and ``Deconvolved`` as ``Fluorescence`` containers too)."""


def _fluorescence_rank(container, fluorescence_type, dff_type) -> int | None:
    """How fit a container's series are to be ``C``: 0 a ``Fluorescence`` container named
    ``Fluorescence``, 1 another ``Fluorescence``, 2 ``DfOverF``, 3 anything else; None when
    its name says neuropil, deconvolved spikes, background or a second channel."""
    name = str(getattr(container, "name", "")).lower()
    if any(word in name for word in _NOT_FLUORESCENCE):
        return None
    if isinstance(container, fluorescence_type):
        return 0 if name == "fluorescence" else 1
    return 2 if isinstance(container, dff_type) else 3


def _traces(
    nwbfile, plane, rows: np.ndarray, path: Path, layout: dict | None
) -> tuple[Traces | None, float | None]:
    """``C`` (and, in CaImAn's layout, ``YrA``) of the components ``rows`` of ``plane``, and
    the series' frame rate (its ``rate``, else from its first timestamps)."""
    from pynwb.ophys import DfOverF, Fluorescence, RoiResponseSeries

    if layout is not None and layout["series"] is not None:
        candidates = [(0, "", layout["series"])]
    else:
        candidates = []
        for obj in nwbfile.objects.values():
            if isinstance(obj, RoiResponseSeries) and obj.rois.table is plane:
                rank = _fluorescence_rank(obj.parent, Fluorescence, DfOverF)
                if rank is not None:
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
        rate = series.rate
        if rate is None and series.timestamps is not None:  # from the first time steps
            step = np.median(np.diff(np.asarray(series.timestamps[:1001], np.float64)))
            rate = 1.0 / step if step > 0 else None
        return Traces(len(rows), frames, read, tuple(names)), rate
    return None, None


def _metric(plane, name: str, rows: np.ndarray) -> np.ndarray | None:
    if name in plane.colnames:
        check_hdf5_dataset(plane[name].data, f"column {name} of {plane.name}")
    try:
        values = np.asarray(plane[name].data[:], dtype=np.float64)[rows]
    except (KeyError, ValueError, TypeError, IndexError):
        return None
    return values if values.size and np.all(np.isfinite(values)) else None


_SUMMARY_IMAGES = {
    # role: names, most wanted first. Suite2p's Vcorr is no correlation coefficient (values
    # far above 1): it is never read as Cn.
    "Cn": ("local_correlations", "Cn", "correlation_image", "correlation"),
    "image": ("meanImg", "mean_image", "mean", "average", "max_proj", "max"),
}


def _summary_images(plane, dims: tuple[int, ...]) -> dict:
    """``Cn`` and ``image`` from the ``Images`` containers of the table's processing module.

    By name, the most wanted first (:data:`_SUMMARY_IMAGES`): a local correlation image
    (CaImAn's ``local_correlations``) as ``Cn``, a mean image before a max projection as
    ``image``. Suite2p's NWB export writes ``meanImg``, ``max_proj`` and ``Vcorr`` (its own
    correlation map, on another scale: not read). CaImAn 1.12.1's ``save_NWB`` builds
    ``summary_images`` but never adds it to the file. Only images of the field of view's
    shape are read.
    """
    from pynwb.base import Images

    found: dict = {}
    module = plane.parent.parent if plane.parent is not None else None
    interfaces = getattr(module, "data_interfaces", {}) or {}
    for container in interfaces.values():
        if not isinstance(container, Images):
            continue
        for name, image in container.images.items():
            for role, names in _SUMMARY_IMAGES.items():
                if name not in names or tuple(image.data.shape) != tuple(dims[:2]):
                    continue
                rank = names.index(name)
                if role not in found or rank < found[role][0]:
                    check_hdf5_dataset(image.data, f"image {name}")
                    data = np.asarray(image.data)
                    if data.dtype.kind in "biuf":
                        found[role] = (rank, data)
    return {role: data for role, (_, data) in found.items()}


def _components(nwbfile, table, path: Path) -> tuple[np.ndarray, dict | None]:
    """Rows of ``table`` that are components (CaImAn's background rows left out)."""
    layout = _caiman_layout(nwbfile, table)
    rows = np.arange(len(table.id)) if layout is None else np.sort(layout["rows"])
    if len(rows) and (rows.min() < 0 or rows.max() >= len(table.id)):
        raise InvalidFileError(path, f"RoiResponseSeries refers to rows outside {table.name}.")
    return rows, layout


def component_rows(nwbfile, table, path: str | os.PathLike) -> np.ndarray:
    """The rows of ``table`` that are components, sorted (CaImAn's background rows left out).

    Raises
    ------
    InvalidFileError
        CaImAn's ``RoiResponseSeries`` refers to rows outside the table.
    """
    return _components(nwbfile, table, Path(path))[0]


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
    check_nwb_path(path)
    with open_nwb(path) as (_, nwbfile):
        key, table = find_plane(nwbfile, plane, path)
        rows, layout = _components(nwbfile, table, path)
        A, dims = read_footprints(nwbfile, table, path, caiman=layout is not None)
        A = A[:, rows] if layout is not None else A
        if A.shape[1] == 0:
            raise InvalidFileError(path, f"PlaneSegmentation {table.name} has no component.")
        traces, frame_rate = _traces(nwbfile, table, rows, path, layout)
        metrics = _summary_images(table, dims)
        if layout is not None:
            metrics["SNR_comp"] = _metric(table, "snr", rows)
            metrics["r_values"] = _metric(table, "r", rows)
    logger.debug("%s: %d ROIs from %s", path, A.shape[1], key)
    return Evidence.build(
        A, dims, traces=traces, gSig=gSig, frame_rate=frame_rate, source=str(path), **metrics
    )


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
    check_nwb_path(path)
    with open_nwb(path) as (_, nwbfile):
        _, table = find_plane(nwbfile, plane, path)
        if "class_probs" not in table.colnames:
            return None
        columns = {
            name: np.asarray(table[name].data[:]) for name in NWB_COLUMNS if name in table.colnames
        }
        description = str(table["class_probs"].description)
    text = (
        description.split(PROVENANCE_SEPARATOR, 1)[1]
        if PROVENANCE_SEPARATOR in description
        else "{}"
    )
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
