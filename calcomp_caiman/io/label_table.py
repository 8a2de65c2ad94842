"""A lab's labels CSV: which component of which file is which class.

The CSV has the columns ``file``, ``component`` and ``label`` (:func:`read_label_table`);
:func:`labels_file_record` says which CSV a refitted model learnt from (path, SHA256, count),
as :func:`calcomp_caiman.refit.refit` records it in the model's ``config.json``.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import numpy as np

from calcomp_caiman.schema import class_codes

__all__ = ["labels_file_record", "read_label_table"]


def read_label_table(path: str | os.PathLike) -> dict[Path, tuple[np.ndarray, np.ndarray]]:
    """A labels CSV (columns ``file``, ``component``, ``label``) grouped by file.

    ``file`` paths are relative to the CSV's folder; ``label`` is a class name
    (``neuron``, ``process``, ``noise``, ``doubtful``), ``non_neuron`` or a code 1-4.
    When a component is labelled twice, the last row wins.

    Returns
    -------
    dict
        ``{file: (components, codes)}``.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file or column, unknown label (the message names the row).
    """
    path = Path(path)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = {"file", "component", "label"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(
            f"{path}: needs columns file, component, label; missing {sorted(missing)}."
        )
    by_file: dict[Path, dict[int, int]] = {}
    for line, row in enumerate(rows, start=2):
        try:
            code = int(class_codes([row["label"]])[0])
            index = int(row["component"])
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}, line {line}: {err}") from None
        file = (path.parent / row["file"]).resolve()
        by_file.setdefault(file, {})[index] = code
    return {
        file: (np.array(list(d), np.int64), np.array(list(d.values()), np.int64))
        for file, d in by_file.items()
    }


def labels_file_record(path: str | os.PathLike, count: int) -> dict:
    """Which labels CSV a refit learnt from, as a refitted model's ``config.json`` records it
    (``labels_file``): its absolute ``path``, ``sha256`` and the ``count`` of labels used.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> csv = Path(tempfile.mkdtemp()) / "labels.csv"
    >>> _ = csv.write_text("file,component,label\\n")
    >>> sorted(labels_file_record(csv, 0)), labels_file_record(csv, 0)["sha256"][:8]
    (['count', 'path', 'sha256'], 'a8f88e61')
    """
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return {"path": str(Path(path).resolve()), "sha256": digest, "count": int(count)}
