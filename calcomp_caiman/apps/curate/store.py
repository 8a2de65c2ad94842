"""The labels CSV of a curation session, rewritten atomically after every label.

The file is the one ``calcomp finetune --labels`` reads (columns ``file``, ``component``,
``label``; :func:`calcomp_caiman.research.datasets.labels_from_csv`). Every change takes an exclusive
lock on a sidecar file (``.<name>.lock``), re-reads the CSV (so that another tab or process
that labelled meanwhile is not overwritten), applies the one change and rewrites the file
with :func:`calcomp_caiman.io.atomic.atomic_replace` (temporary file, fsync, ``os.replace``),
keeping its permission bits; a CSV path that is a symbolic link is written through to the
file it points to (the link stays a link).
A crash or a kill therefore loses at most the label being sent, and the CSV is always
complete. The lock waits (a label takes milliseconds) rather than failing like
:func:`calcomp_caiman.io.atomic.exclusive_lock`, so two tabs never see "busy".
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from calcomp_caiman.errors import InvalidFileError
from calcomp_caiman.io.atomic import atomic_replace
from calcomp_caiman.schema import CLASSES, class_codes

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: atomic but unlocked
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

__all__ = ["LABEL_NAMES", "LabelStore", "label_name"]

LABEL_NAMES = (*CLASSES, "non_neuron")
"""Labels a component can get: a class name, or ``non_neuron`` (process or noise)."""

COLUMNS = ("file", "component", "label")


def label_name(label) -> str:
    """The canonical name of a label (a class name, a code 1-4, or ``non_neuron``).

    Examples
    --------
    >>> label_name("3"), label_name(" Neuron "), label_name("non_neuron")
    ('noise', 'neuron', 'non_neuron')
    """
    code = int(class_codes([label])[0])
    return "non_neuron" if code == 0 else CLASSES[code - 1]


class LabelStore:
    """Labels of components, kept in a CSV that is rewritten atomically on each change.

    Parameters
    ----------
    path : path-like
        The labels CSV; created on the first label if missing. Rows of files that are not
        being curated are kept as they are.

    Raises
    ------
    InvalidFileError
        The CSV exists but lacks a column, has a row whose component is not an integer or
        whose label is unknown (the message names the line).

    Examples
    --------
    >>> import tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> store = LabelStore(os.path.join(folder, "labels.csv"))
    >>> store.set(os.path.join(folder, "a.hdf5"), 3, "neuron") is None
    True
    >>> store.labels()[(os.path.join(folder, "a.hdf5"), 3)]
    'neuron'
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).absolute()
        self._read()  # check it now: a bad CSV is reported before anything is served

    def _key(self, file) -> str:
        return str((self.path.parent / Path(file)).resolve())

    def _display(self, file: str) -> str:
        """How a file is written in the CSV: relative to the CSV's folder when below it."""
        try:
            return str(Path(file).relative_to(self.path.parent.resolve()))
        except ValueError:
            return str(file)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        target = self._target()  # one lock per file, whichever link names it
        with open(target.parent / f".{target.name}.lock", "a") as handle:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _read(self) -> tuple[list[str], dict[tuple[str, int], dict[str, str]]]:
        """The CSV's columns and its rows keyed by (resolved file, component)."""
        rows: dict[tuple[str, int], dict[str, str]] = {}
        if not self.path.exists():
            return list(COLUMNS), rows
        try:
            with open(self.path, newline="") as handle:
                reader = csv.DictReader(handle)
                columns = list(reader.fieldnames or [])
                entries = list(reader)
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise InvalidFileError(self.path, f"cannot be read as a labels CSV ({err}).") from err
        if not columns and not entries:
            return list(COLUMNS), rows
        missing = [name for name in COLUMNS if name not in columns]
        if missing:
            raise InvalidFileError(
                self.path,
                f"is not a labels CSV: needs columns file, component, label; missing "
                f"{', '.join(missing)} (found {', '.join(columns) or 'none'}).",
            )
        for line, row in enumerate(entries, start=2):
            try:
                component = int(row["component"])
                row["label"] = label_name(row["label"])
            except (TypeError, ValueError) as err:
                raise InvalidFileError(self.path, f"line {line}: {err}") from None
            rows[(self._key(row["file"]), component)] = row
        return columns, rows

    def labels(self) -> dict[tuple[str, int], str]:
        """Every label in the CSV now: ``{(resolved file path, component): label name}``."""
        _, rows = self._read()
        return {key: row["label"] for key, row in rows.items()}

    def set(self, file: str | os.PathLike, component: int, label: str | None) -> str | None:
        """Set (or with ``label=None`` remove) the label of one component; return the previous.

        Parameters
        ----------
        file : path-like
            The result file (resolved; relative paths are relative to the CSV's folder).
        component : int
            0-based column of ``estimates.A``.
        label : str or None
            A name of :data:`LABEL_NAMES` (or a code 1-4); None removes the label.

        Returns
        -------
        str or None
            The label it had before (None: none), for undo.
        """
        name = None if label is None else label_name(label)
        key = (self._key(file), int(component))
        with self._locked():
            columns, rows = self._read()
            previous = rows.get(key)
            if name is None:
                rows.pop(key, None)
            elif previous is not None:
                previous = dict(previous)
                rows[key] = dict(previous, label=name)
            else:
                rows[key] = {"file": self._display(key[0]), "component": str(key[1]), "label": name}
            if rows.get(key) != previous or name is None:
                self._write(columns, rows)
        logger.debug("%s: component %d of %s: %s -> %s", self.path, key[1], key[0],
                     previous and previous["label"], name)  # fmt: skip
        return None if previous is None else previous["label"]

    def _write(self, columns: list[str], rows: dict[tuple[str, int], dict[str, str]]) -> None:
        ordered = [rows[key] for key in sorted(rows)]

        def build(tmp: str) -> None:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(ordered)

        target = self._target()
        try:  # the file keeps its permission bits (a private 0600 CSV stays private)
            mode = stat.S_IMODE(os.stat(target).st_mode)
        except FileNotFoundError:  # a new file: as open() would make it (the umask's)
            mode = None
        atomic_replace(str(target), build, mode=mode, original=None if mode is None else str(target),
                       label=str(self.path))  # fmt: skip

    def _target(self) -> Path:
        """The file the CSV's path leads to: a symbolic link is written through, not replaced."""
        return Path(os.path.realpath(self.path))
