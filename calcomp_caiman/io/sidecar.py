"""Sidecar files: the classification record beside another pipeline's output (npz, CSV).

CaImAn result files and NWB files take the classification inside them. Suite2p folders and
mask files do not have a place for it, so their writers put it beside them: one
``.npz`` archive holding every array of
:data:`calcomp_caiman.schema.FIELDS` plus the provenance (JSON), and a
per-component CSV table for people. Both are written atomically (a temporary file in the
same folder, then ``os.replace``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from calcomp_caiman.errors import InvalidFileError
from calcomp_caiman.io.atomic import atomic_replace
from calcomp_caiman.schema import CLASSES

logger = logging.getLogger(__name__)

__all__ = [
    "accepted_mask",
    "read_record",
    "record_model_sha256",
    "write_atomically",
    "write_component_table",
    "write_record",
]


def accepted_mask(fields: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """``(n,)`` bool array: True for the components in ``idx_components``.

    Examples
    --------
    >>> import numpy as np
    >>> accepted_mask({"idx_components": np.array([1])}, 3).tolist()
    [False, True, False]
    """
    accepted = np.zeros(n, dtype=bool)
    accepted[np.asarray(fields["idx_components"], dtype=np.int64)] = True
    return accepted


def write_atomically(path: str | os.PathLike, data: bytes, *, label: str | None = None) -> str:
    """Write ``data`` to ``path`` atomically (temporary file beside it, fsync, ``os.replace``).

    Raises
    ------
    InvalidFileError
        The folder is missing or read-only, or writing failed; ``path`` is unchanged.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "a.txt")
    >>> write_atomically(path, b"hello") == path and open(path).read()
    'hello'
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InvalidFileError(label or path, f"cannot be written: no folder {folder}.")
    if os.path.isdir(path):
        raise InvalidFileError(label or path, "is a folder; give a file name for the output.")

    def build(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)

    existing = os.path.exists(path)
    mode = os.stat(path).st_mode & 0o7777 if existing else None
    atomic_replace(path, build, mode=mode, original=path if existing else None, label=label)
    return path


def write_record(
    path: str | os.PathLike, fields: Mapping[str, np.ndarray], provenance: Mapping[str, Any]
) -> str:
    """Write the classification arrays and provenance as one ``.npz`` archive, atomically.

    Parameters
    ----------
    path : path-like
        The archive to write (replaced if it exists).
    fields : mapping
        Arrays of a checked record (:func:`calcomp_caiman.schema.check_result`).
    provenance : mapping
        Model name, SHA256, package version, date, acceptance rule; stored as the JSON
        string ``provenance``.

    Returns
    -------
    str
        ``path``.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "r.npz")
    >>> _ = write_record(path, {"class_probs": np.ones((1, 4), np.float32)}, {"model": "m"})
    >>> fields, provenance = read_record(path)
    >>> fields["class_probs"].shape, provenance
    ((1, 4), {'model': 'm'})
    """
    buffer = io.BytesIO()
    arrays = {name: np.asarray(value) for name, value in fields.items()}
    arrays["provenance"] = np.array(json.dumps(dict(provenance), sort_keys=True))
    np.savez_compressed(buffer, **arrays)
    return write_atomically(path, buffer.getvalue())


def read_record(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read an archive written by :func:`write_record`: ``(arrays, provenance)``.

    Raises
    ------
    FileNotFoundError
        No such file.
    InvalidFileError
        Not such an archive.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            fields = {name: data[name] for name in data.files if name != "provenance"}
            provenance = json.loads(str(data["provenance"]))
    except (OSError, ValueError, KeyError) as err:
        raise InvalidFileError(path, f"is not a calcomp classification archive ({err}).") from err
    return fields, provenance


def record_model_sha256(path: str | os.PathLike) -> str | None:
    """The model SHA256 recorded in an archive, or None when missing or unreadable.

    Examples
    --------
    >>> record_model_sha256("no/such/file.npz") is None
    True
    """
    try:
        _, provenance = read_record(path)
    except (OSError, ValueError):
        return None
    value = provenance.get("model_sha256")
    return None if value is None else str(value)


def write_component_table(
    path: str | os.PathLike,
    fields: Mapping[str, np.ndarray],
    *,
    extra: Mapping[str, Sequence] | None = None,
) -> str:
    """Write one CSV row per component: index, label, probabilities, accepted, flags.

    Parameters
    ----------
    path : path-like
    fields : mapping
        Arrays of a checked record (:func:`calcomp_caiman.schema.check_result`).
    extra : mapping of str to sequence, optional
        More columns, placed after ``component`` (e.g. ``roi_value`` of a label image).

    Returns
    -------
    str
        ``path``.
    """
    probs = np.asarray(fields["class_probs"])
    n = len(probs)
    accepted = accepted_mask(fields, n)
    extra = dict(extra or {})
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(
        ["component", *extra, "label"] + [f"p_{name}" for name in CLASSES] + ["accepted", "flags"]
    )
    for i in range(n):
        writer.writerow(
            [
                i,
                *(column[i] for column in extra.values()),
                CLASSES[int(fields["class_labels"][i]) - 1],
            ]
            + [f"{p:.4f}" for p in probs[i]]
            + [int(accepted[i]), int(fields["class_flags"][i])]
        )
    return write_atomically(path, text.getvalue().encode())
