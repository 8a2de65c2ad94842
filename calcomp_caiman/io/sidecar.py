"""Sidecar files: the classification record beside another pipeline's output (npz, CSV).

CaImAn result files and NWB files take the classification inside them. Suite2p folders and
mask files do not have a place for it, so their writers put it beside them: one
``.npz`` archive holding every array of
:func:`calcomp_caiman.classify.classification_fields` plus the provenance (JSON), and a
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
from calcomp_caiman.schema import CLASSES, FIELDS

logger = logging.getLogger(__name__)

__all__ = [
    "RECORD_FIELDS",
    "accepted_mask",
    "check_result",
    "read_record",
    "record_model_sha256",
    "write_atomically",
    "write_component_table",
    "write_record",
]

RECORD_FIELDS = tuple(FIELDS)
"""Arrays of :func:`~calcomp_caiman.classify.classification_fields`, in the order stored."""


def check_result(result: Mapping[str, Any], n: int, label: str) -> dict[str, np.ndarray]:
    """Check a classification record against ``n`` components; return its arrays.

    Parameters
    ----------
    result : mapping
        From :func:`calcomp_caiman.classify.classification_fields`, optionally with
        ``provenance`` (a dict of str to str or number).
    n : int
        Number of components of the file written.
    label : str
        The file, for messages.

    Returns
    -------
    dict
        The arrays present, with the dtypes of ``classification_fields``.

    Raises
    ------
    TypeError
        ``result`` is not a mapping.
    ValueError
        A required array is missing or has the wrong length.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[0.7, 0.1, 0.1, 0.1]], np.float32)
    >>> fields = {"class_probs": probs, "class_labels": np.array([1], np.int8),
    ...           "cnn_preds": probs[:, 0], "idx_components": np.array([0]),
    ...           "idx_components_bad": np.array([], np.int64)}
    >>> sorted(check_result(fields, 1, "x.npy"))[:3]
    ['class_flags', 'class_labels', 'class_probs']
    """
    if not isinstance(result, Mapping):
        raise TypeError(
            f"result must be a dict of arrays (classification_fields), got {type(result).__name__}."
        )
    required = ("class_probs", "class_labels", "cnn_preds", "idx_components", "idx_components_bad")
    missing = [key for key in required if key not in result]
    if missing:
        raise ValueError(
            f"result lacks {missing}; build it with calcomp_caiman.classify.classification_fields."
        )
    probs = np.asarray(result["class_probs"], dtype=np.float32)
    if probs.ndim != 2 or probs.shape != (n, len(CLASSES)):
        raise ValueError(
            f"result['class_probs'] has shape {probs.shape} but {label} has {n} components; "
            f"expected ({n}, {len(CLASSES)}): classify this file's components."
        )
    dtypes = {name: dtype for name, (dtype, _, _) in FIELDS.items()}
    fields = {}
    for name in RECORD_FIELDS:
        if name in result:
            fields[name] = np.asarray(result[name], dtype=dtypes[name])
    fields.setdefault("class_flags", np.zeros(n, np.uint8))
    for name in ("class_labels", "class_flags", "cnn_preds"):
        if len(fields[name]) != n:
            raise ValueError(f"result['{name}'] has {len(fields[name])} entries, expected {n}.")
    for name in ("idx_components", "idx_components_bad"):
        if fields[name].size and (fields[name].min() < 0 or fields[name].max() >= n):
            raise ValueError(f"result['{name}'] holds indices outside [0, {n}).")
    return fields


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
        Arrays from :func:`check_result`.
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
        Arrays from :func:`check_result`.
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
