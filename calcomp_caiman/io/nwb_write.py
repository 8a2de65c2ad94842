"""Write a classification into an NWB file: new columns of the ``PlaneSegmentation``, atomically.

Write the classification into an NWB file as new columns of the same ``PlaneSegmentation``:
``class_probs`` ((N, 4) float32), ``class_labels`` (int8 codes 1-4), ``class_flags``
(uint8) and ``class_accepted`` (bool), named and typed as in
:data:`calcomp_caiman.schema.FIELDS` (rows that are not components, such
as CaImAn's background rows, get NaN probabilities, label 0 and are not accepted); the
provenance (model, its SHA256, version, date, accept rule) is JSON at the end of the
description of ``class_probs``. The
file is copied to a temporary file beside the destination, the columns are added there with
pynwb (without rewriting the cached specifications), and the copy replaces the destination
in one ``os.replace``: every object already in the file keeps its content; only the table's
``colnames`` attribute gains the new names. Writing again overwrites our columns' values.

Reading (the ROIs, and these columns back) is :mod:`calcomp_caiman.io.nwb`; pynwb is needed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from calcomp_caiman.errors import InvalidFileError, OutputExistsError
from calcomp_caiman.io.atomic import atomic_replace, exclusive_lock
from calcomp_caiman.io.nwb import (
    COLUMN_MARK,
    NWB_COLUMNS,
    PROVENANCE_SEPARATOR,
    check_nwb_path,
    component_rows,
    find_plane,
    open_nwb,
)
from calcomp_caiman.schema import CLASSES, Classification, check_result

logger = logging.getLogger(__name__)

__all__ = ["write_classification"]


def _column_values(record: Classification, rows: np.ndarray, n_rows: int) -> dict:
    """Our columns over all ``n_rows`` rows; rows that are not components are unclassified
    (``class_probs`` NaN, ``class_labels`` 0, ``class_flags`` 0, not accepted)."""
    probs = np.full((n_rows, len(CLASSES)), np.nan, np.float32)
    labels = np.zeros(n_rows, np.int8)
    flags = np.zeros(n_rows, np.uint8)
    accepted = np.zeros(n_rows, bool)
    probs[rows] = record.fields["class_probs"]
    labels[rows] = record.fields["class_labels"]
    flags[rows] = record.fields["class_flags"]
    accepted[rows] = record.accepted
    return {"class_probs": probs, "class_labels": labels, "class_flags": flags,
            "class_accepted": accepted}  # fmt: skip


def _check_destination(destination: Path, *, in_place: bool, overwrite: bool) -> None:
    if destination.is_dir():
        raise InvalidFileError(destination, "is a folder; give a file name for the output.")
    if not in_place and destination.exists() and not overwrite:
        raise OutputExistsError(destination)
    folder = destination.resolve().parent
    if not folder.is_dir():
        raise InvalidFileError(destination, f"cannot be written: no folder {folder}.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidFileError(
            destination, f"cannot be written: the folder {folder} is read-only; write elsewhere."
        )


def _add_columns(tmp: str, source: Path, plane: str | None, record: Classification) -> None:
    """Add or overwrite our columns in the copy ``tmp`` of ``source``."""
    import h5py

    with open_nwb(tmp, "a", locking=False) as (io, nwbfile):
        _, table = find_plane(nwbfile, plane, source)
        rows = component_rows(nwbfile, table, source)
        record = check_result(record, len(rows), label=str(source))
        values = _column_values(record, rows, len(table.id))
        descriptions = dict(NWB_COLUMNS)
        provenance = json.dumps(record.provenance, sort_keys=True)
        descriptions["class_probs"] += PROVENANCE_SEPARATOR + provenance
        existing = {}
        for name in values:
            if name in table.colnames:
                description = str(table[name].description)
                if not description.startswith(COLUMN_MARK):
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
    result: Mapping[str, Any] | Classification,
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
    result : Classification or mapping
        What :func:`calcomp_caiman.classify.classify` returns (or its ``as_result()``),
        checked by :func:`calcomp_caiman.schema.check_result`.
    out_path : path-like, optional
        Write an updated copy here; ``None`` updates ``path`` in place.
    overwrite : bool
        Allow replacing an existing ``out_path``.
    plane : str, optional
        As in :func:`~calcomp_caiman.io.nwb.read_evidence`.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    FileNotFoundError, InvalidFileError, ImportError
        As :func:`~calcomp_caiman.io.nwb.read_evidence`; ``out_path`` exists and
        ``overwrite`` is False; the table has a column of our names that we did not write;
        writing failed. The destination is then as before.
    FileBusyError
        Another calcomp process is writing ``path``.
    TypeError, ValueError
        ``result`` is malformed (:func:`~calcomp_caiman.schema.check_result`), or does not
        have one row per ROI (then an :class:`~calcomp_caiman.errors.InvalidFileError`
        naming the file).
    """
    source = Path(path)
    record = check_result(result, label=str(source))  # against the table's rows once open
    check_nwb_path(source)
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
            _add_columns(tmp, source, plane, record)

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
