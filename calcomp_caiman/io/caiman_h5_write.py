"""Write a classification into a CaImAn result file (``cnm.save`` HDF5), atomically.

The file is repacked: every group, dataset and attribute of the source is copied as stored
into a temporary file beside the destination, our fields are added under ``/estimates``, and
the copy replaces the destination in one ``os.replace``. Reading is
:mod:`calcomp_caiman.io.caiman_h5`; the names written are fixed in
:mod:`calcomp_caiman.io.caiman_h5_layout` and :data:`calcomp_caiman.schema.FIELDS`.

Only numpy and h5py are used here; neither keras nor caiman is imported.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

from calcomp_caiman.errors import InvalidFileError, OutputExistsError
from calcomp_caiman.io.atomic import atomic_replace, exclusive_lock
from calcomp_caiman.io.caiman_h5 import check_caiman_path, read_estimates
from calcomp_caiman.io.caiman_h5_layout import ATTR_PREFIX, BACKUP_FIELDS, STORED_NONE
from calcomp_caiman.schema import Classification, check_result

logger = logging.getLogger(__name__)

__all__ = ["write_classification"]


def write_classification(
    path: str | os.PathLike,
    result: Mapping[str, Any] | Classification,
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
    result : Classification or mapping
        What :func:`calcomp_caiman.classify.classify` returns (or its ``as_result()``):
        ``class_probs`` (N, 4) float32; ``class_labels`` (N,) int codes 1-4; ``cnn_preds``
        (N,) float32 = P(neuron); ``idx_components``, ``idx_components_bad`` int64 column
        indices; optional ``class_flags`` (N,) uint8 bit flags and ``class_fingerprint``;
        optional ``provenance``: dict of str to str or number (model name, model SHA256,
        package version, classes, date, accept rule), stored as attributes. Checked by
        :func:`calcomp_caiman.schema.check_result`.
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
        ``result`` is malformed or its N differs from the file's number of components
        (:func:`~calcomp_caiman.schema.check_result`).
    InvalidFileError
        ``path`` is not a valid result file (see
        :func:`~calcomp_caiman.io.caiman_h5.read_estimates`); ``out_path``
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
    result has it (:func:`calcomp_caiman.align_classes` and ``read_estimates`` match
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
    >>> import shutil, tempfile
    >>> from importlib import resources
    >>> from calcomp_caiman.io.caiman_h5 import read_estimates
    >>> demo = resources.files("calcomp_caiman.data") / "demo_caiman_sim.hdf5"
    >>> path = shutil.copy(demo, tempfile.mkdtemp())
    >>> n = read_estimates(path).n_components
    >>> probs = np.tile(np.float32([0.7, 0.1, 0.1, 0.1]), (n, 1))
    >>> result = {"class_probs": probs, "class_labels": np.ones(n, np.int8),
    ...           "cnn_preds": probs[:, 0], "idx_components": np.arange(n),
    ...           "idx_components_bad": np.array([], np.int64), "provenance": {"model": "demo"}}
    >>> write_classification(path, result) == path
    True
    >>> read_estimates(path).classification
    {'model': 'demo'}
    """
    source = os.fspath(path)
    check_caiman_path(source)
    target = source if out_path is None else os.fspath(out_path)
    in_place = out_path is None or _same_file(source, target)
    destination = os.path.realpath(target) if in_place else target  # through symlinks
    _check_destination(destination, in_place=in_place, overwrite=overwrite, label=target)
    with contextlib.ExitStack() as stack:
        stack.enter_context(exclusive_lock(source))
        if not in_place and os.path.exists(destination):
            stack.enter_context(exclusive_lock(destination))
        n = read_estimates(source, locking=False, stored_probs=False).n_components
        record = check_result(result, n, label=source)
        attrs = _attributes(record.provenance)
        mode = os.stat(source).st_mode & 0o7777
        atomic_replace(
            destination,
            lambda tmp: _repack(source, tmp, record.fields, attrs),
            mode=mode,
            original=source,
            label=target,
        )
    logger.info("wrote the classification of %d components to %s", n, target)
    return target


def _attributes(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance as attributes of ``estimates/class_probs``: ``calcomp_<key>``."""
    attrs = {}
    for key, value in provenance.items():
        name = str(key)
        attrs[name if name.startswith(ATTR_PREFIX) else ATTR_PREFIX + name] = value
    return attrs


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
        raise OutputExistsError(label)
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
    with h5py.File(source, "r", locking=False) as src, h5py.File(tmp, "w") as dst:
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
                dst_estimates.create_dataset(name, data=STORED_NONE)
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
