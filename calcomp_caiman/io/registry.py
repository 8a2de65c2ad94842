"""Which reader and writer a path needs: CaImAn HDF5, NWB, a Suite2p folder, or masks.

Every format has the same three functions, so one engine and one record serve them all:
its reader module has ``read_evidence(path, **options) -> Evidence`` and
``is_classified_by(output, model_sha256, **options) -> bool`` (for resuming), its writer
module ``write_classification(path, result, *, out_path=None, overwrite=False, **options)
-> str``; every writer checks ``result`` with :func:`calcomp_caiman.schema.check_result`.

| format | path | reader | writer |
|---|---|---|---|
| ``caiman`` | ``.hdf5``, ``.h5`` (``cnm.save``) | :mod:`~calcomp_caiman.io.caiman_h5` | :mod:`~calcomp_caiman.io.caiman_h5_write` |
| ``nwb`` | ``.nwb`` | :mod:`~calcomp_caiman.io.nwb` (pynwb) | :mod:`~calcomp_caiman.io.nwb_write` |
| ``suite2p`` | a plane folder with ``stat.npy`` and ``ops.npy`` | :mod:`~calcomp_caiman.io.suite2p` | the same |
| ``masks`` | ``.tif``, ``.tiff``, ``.npy`` | :mod:`~calcomp_caiman.io.masks` | the same |

:data:`REGISTRY` holds one :class:`Format` per name; the optional libraries (pynwb,
tifffile) are imported by their readers when a file of that format is read.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from calcomp_caiman.errors import InvalidFileError
from calcomp_caiman.io import caiman_h5, caiman_h5_write, masks, nwb, nwb_write, suite2p

__all__ = [
    "FORMATS",
    "REGISTRY",
    "Format",
    "SEARCH_PATTERNS",
    "detect_format",
    "find_inputs",
    "get_format",
]

FORMATS = ("caiman", "nwb", "suite2p", "masks")
"""Format names, as ``--format`` takes them (with ``auto``)."""

_SUFFIXES = {".hdf5": "caiman", ".h5": "caiman", ".nwb": "nwb", ".tif": "masks",
             ".tiff": "masks", ".npy": "masks"}  # fmt: skip

SEARCH_PATTERNS = {
    "auto": ("*.hdf5", "*.nwb"),
    "caiman": ("*.hdf5",),
    "nwb": ("*.nwb",),
    "suite2p": (),
    "masks": ("*.tif", "*.tiff", "*.npy"),
}
"""File patterns searched in folders per ``--format`` (``auto`` and ``suite2p`` also find
Suite2p plane folders; mask files are searched only with ``masks``)."""


@dataclass(frozen=True)
class Format:
    """The reader and writer of one format.

    Attributes
    ----------
    name : str
        One of :data:`FORMATS`.
    read_evidence, write_classification, is_classified_by : callable
        The module's functions (see the module docstring).
    read_options, write_options : tuple of str
        Extra keyword options of its reader and of its writer: ``plane`` for NWB (also taken
        by ``is_classified_by``), ``allow_pickle`` for Suite2p's reader, ``replace_iscell``
        for Suite2p's writer.
    """

    name: str
    read_evidence: Callable
    write_classification: Callable
    is_classified_by: Callable
    read_options: tuple[str, ...] = ()
    write_options: tuple[str, ...] = ()


def _format(name: str, reader, writer, read_options=(), write_options=()) -> Format:
    """The format whose ``read_evidence`` and ``is_classified_by`` are in the module
    ``reader`` and whose ``write_classification`` is in ``writer``."""
    return Format(
        name,
        reader.read_evidence,
        writer.write_classification,
        reader.is_classified_by,
        tuple(read_options),
        tuple(write_options),
    )


REGISTRY: dict[str, Format] = {
    "caiman": _format("caiman", caiman_h5, caiman_h5_write),
    "nwb": _format("nwb", nwb, nwb_write, ("plane",), ("plane",)),
    "suite2p": _format("suite2p", suite2p, suite2p, ("allow_pickle",), ("replace_iscell",)),
    "masks": _format("masks", masks, masks),
}
"""The reader and writer of every format, by name."""


def detect_format(path: str | os.PathLike) -> str:
    """The format of ``path`` from its name (and, for a folder, its content).

    Parameters
    ----------
    path : path-like
        A file, or a Suite2p plane folder.

    Returns
    -------
    str
        One of :data:`FORMATS`.

    Raises
    ------
    InvalidFileError
        The path's ending (or a folder's content) matches no format; pass ``--format``.

    Examples
    --------
    >>> detect_format("results.hdf5"), detect_format("session.nwb"), detect_format("rois.tif")
    ('caiman', 'nwb', 'masks')
    """
    path = Path(path)
    if path.is_dir():
        if (path / "stat.npy").is_file():
            return "suite2p"
        if (path / "plane0" / "stat.npy").is_file():
            raise InvalidFileError(
                path, "is a Suite2p output folder; give its plane folders (plane0, plane1, ...)."
            )
        raise InvalidFileError(
            path,
            "is a folder without stat.npy: not a Suite2p plane folder (give files, or plane0).",
        )
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None and path.is_file():
        found = _hdf5_kind(path)
    if found is None:
        raise InvalidFileError(
            path,
            f"has an unknown ending {path.suffix!r}: expected .hdf5/.h5 (CaImAn), .nwb, "
            ".tif/.tiff/.npy (masks) or a Suite2p plane folder; or pass --format.",
        )
    return found


def _hdf5_kind(path: Path) -> str | None:
    """``nwb`` or ``caiman`` for an HDF5 file with another ending (None if not HDF5)."""
    import h5py

    try:
        if not h5py.is_hdf5(path):
            return None
        with h5py.File(path, "r") as handle:
            return "nwb" if "nwb_version" in handle.attrs else "caiman"
    except OSError:
        return "caiman"  # unreadable: the CaImAn reader says why


def get_format(name: str, path: str | os.PathLike | None = None) -> Format:
    """The reader and writer of format ``name`` (``"auto"``: detected from ``path``).

    Parameters
    ----------
    name : str
        ``"auto"`` or one of :data:`FORMATS`.
    path : path-like, optional
        Needed with ``"auto"``.

    Returns
    -------
    Format

    Raises
    ------
    ValueError
        Unknown name, or ``"auto"`` without ``path``.
    InvalidFileError
        ``"auto"`` and the format of ``path`` cannot be told.

    Examples
    --------
    >>> get_format("auto", "session.nwb").name
    'nwb'
    >>> get_format("suite2p").read_options, get_format("suite2p").write_options
    (('allow_pickle',), ('replace_iscell',))
    """
    if name == "auto":
        if path is None:
            raise ValueError("format 'auto' needs the path to detect the format from.")
        name = detect_format(path)
    if name not in FORMATS:
        raise ValueError(f"format must be 'auto' or one of {FORMATS}, got {name!r}.")
    return REGISTRY[name]


def _is_plane_folder(path: Path) -> bool:
    return (path / "stat.npy").is_file() and (path / "ops.npy").is_file()


def find_inputs(folder: str | os.PathLike, format: str = "auto") -> list[Path]:
    """The inputs found (recursively) in ``folder`` for ``--format format``, sorted.

    ``caiman``: ``*.hdf5`` files; ``nwb``: ``*.nwb``; ``suite2p``: plane folders (holding
    ``stat.npy`` and ``ops.npy``); ``auto``: all three; ``masks``: ``*.tif``, ``*.tiff``
    and ``*.npy`` files outside Suite2p folders, except our own outputs (``calcomp_*``).
    Hidden files (``.name``) are skipped.

    Raises
    ------
    ValueError
        Unknown ``format``.

    Examples
    --------
    >>> import tempfile
    >>> find_inputs(tempfile.mkdtemp(), "auto")
    []
    """
    if format not in SEARCH_PATTERNS:
        raise ValueError(f"format must be 'auto' or one of {FORMATS}, got {format!r}.")
    folder = Path(folder)
    found: set[Path] = set()
    for pattern in SEARCH_PATTERNS[format]:
        for file in folder.rglob(pattern):
            if file.name.startswith(".") or not file.is_file():
                continue
            if format == "masks" and (
                file.name.startswith("calcomp_") or _is_plane_folder(file.parent)
            ):
                continue
            found.add(file)
    if format in ("auto", "suite2p"):
        found.update(
            stat.parent for stat in folder.rglob("stat.npy") if _is_plane_folder(stat.parent)
        )
    return sorted(found)
