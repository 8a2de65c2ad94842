"""What a file may make a reader allocate: sizes a file declares are checked before reading.

A file states the shape of each array it holds, and HDF5, ``.npy`` and TIFF let that shape
be far larger than the bytes the file really stores (an unallocated HDF5 dataset, a forged
header): a 31 KB file can declare a ``(3, 4e9)`` trace matrix. Readers check every array
they read at once, and every row they read of a large one, before reading it:

* against the file: what an array declares may exceed what it stores by compression only,
  at most :data:`MAX_COMPRESSION` times (deflate's best is about 1032:1), beyond a
  :data:`SMALL_BYTES` floor any array may declare;
* against a memory budget: no array read at once above :data:`MEMORY_BUDGET` bytes, no
  field of view above :data:`MAX_PIXELS` pixels (per-pixel work arrays of the classifier).

A file that fails is reported in one line (:class:`~calcomp_caiman.errors.InvalidFileError`
naming the file and the array), never as ``MemoryError`` or ``std::bad_alloc``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from calcomp_caiman.errors import InvalidFileError

__all__ = [
    "MAX_COMPRESSION",
    "MAX_PIXELS",
    "MEMORY_BUDGET",
    "SMALL_BYTES",
    "check_declared",
    "check_hdf5_dataset",
    "check_pixels",
    "human_bytes",
]

MEMORY_BUDGET = 4 << 30
"""Bytes one array read at once may take (4 GiB: a sparse ``A`` of 100,000 components)."""

MAX_PIXELS = 1 << 26
"""Largest field of view, in pixels (8192 x 8192, or 1024 x 1024 x 64 voxels): the
classifier holds a few arrays of one number per pixel."""

MAX_COMPRESSION = 1100
"""How many times its stored bytes an array may declare (deflate reaches about 1032)."""

SMALL_BYTES = 1 << 20
"""Bytes any array may declare whatever it stores (1 MiB: fill values, tiny files)."""


def human_bytes(size: float) -> str:
    """``size`` bytes in words.

    Examples
    --------
    >>> human_bytes(31_000), human_bytes(96e9)
    ('30.3 KiB', '89.4 GiB')
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def check_declared(
    path: str | os.PathLike,
    what: str,
    shape: Sequence[int],
    itemsize: int,
    stored: int,
    *,
    row_axis: int | None = None,
) -> None:
    """Raise unless an array of ``shape`` can be read: it fits the file and the budget.

    Parameters
    ----------
    path : path-like
        The file, for the message.
    what : str
        The array, for the message (``"estimates/C"``).
    shape : sequence of int
        Its declared shape.
    itemsize : int
        Bytes per value as read.
    stored : int
        Bytes the file stores for it (the whole file's size when the format cannot tell).
    row_axis : int, optional
        The array is read in slices along this axis (traces by component): the budget
        applies to one slice, not the whole array.

    Raises
    ------
    InvalidFileError
        It declares more than :data:`MAX_COMPRESSION` times what is stored (beyond
        :data:`SMALL_BYTES`), or what is read at once exceeds :data:`MEMORY_BUDGET`.

    Examples
    --------
    >>> check_declared("f.hdf5", "estimates/Cn", (512, 512), 8, stored=2 * 1024 * 1024)
    >>> check_declared("f.hdf5", "estimates/C", (3, 4_000_000_000), 8, stored=0)
    Traceback (most recent call last):
    ...
    calcomp_caiman.errors.InvalidFileError: f.hdf5: estimates/C declares shape (3, 4000000000) (89.4 GiB) but the file stores 0 B of it: the file is damaged or forged; re-save it from the tool that wrote it.
    """
    shape = tuple(int(s) for s in shape)
    declared = math.prod(shape) * int(itemsize)  # Python ints: no overflow
    if declared > max(SMALL_BYTES, MAX_COMPRESSION * int(stored)):
        raise InvalidFileError(
            path,
            f"{what} declares shape {shape} ({human_bytes(declared)}) but the file stores "
            f"{human_bytes(stored)} of it: the file is damaged or forged; re-save it from the "
            "tool that wrote it.",
        )
    at_once = declared
    if row_axis is not None and len(shape) > row_axis:
        at_once = declared // max(shape[row_axis], 1)
    if at_once > MEMORY_BUDGET:
        raise InvalidFileError(
            path,
            f"{what} declares shape {shape}: {human_bytes(at_once)} to read at once, more than "
            f"the {human_bytes(MEMORY_BUDGET)} allowed; split the data or check the file.",
        )


def check_hdf5_dataset(dataset, what: str | None = None, *, row_axis: int | None = None) -> None:
    """:func:`check_declared` for an ``h5py.Dataset``, its stored bytes from HDF5.

    Anything that is not an ``h5py.Dataset`` (an array already in memory) passes. Values are
    counted at 8 bytes at least: readers convert numbers to float64.
    """
    import h5py

    if not isinstance(dataset, h5py.Dataset):
        return
    stored = dataset.id.get_storage_size()
    itemsize = max(int(dataset.dtype.itemsize), 8)
    check_declared(dataset.file.filename, what or dataset.name.lstrip("/"), dataset.shape or (),
                   itemsize, stored, row_axis=row_axis)  # fmt: skip


def check_pixels(path: str | os.PathLike, what: str, dims: Sequence[int]) -> None:
    """Raise unless the field of view ``dims`` has at most :data:`MAX_PIXELS` pixels.

    Examples
    --------
    >>> check_pixels("f.hdf5", "dims", (512, 512))
    >>> check_pixels("f.hdf5", "dims", (1_000_000, 1_000_000))
    Traceback (most recent call last):
    ...
    calcomp_caiman.errors.InvalidFileError: f.hdf5: dims = (1000000, 1000000) is 1000000000000 pixels, more than the 67108864 a field of view may have; the file is damaged or forged.
    """
    values = tuple(int(d) for d in np.ravel(dims))
    pixels = math.prod(values)
    if pixels > MAX_PIXELS:
        raise InvalidFileError(
            path,
            f"{what} = {values} is {pixels} pixels, more than the {MAX_PIXELS} a field of view "
            "may have; the file is damaged or forged.",
        )
