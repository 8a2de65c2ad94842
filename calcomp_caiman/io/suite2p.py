"""Suite2p plane folders (``suite2p/plane0/``): ROIs and traces in, ``iscell``-style answer out.

A Suite2p plane folder holds ``stat.npy`` (one dict per ROI: ``ypix``, ``xpix``, ``lam``),
``ops.npy`` (the settings, with the image size ``Ly`` x ``Lx`` and ``meanImg``), and when
extraction ran ``F.npy``, ``Fneu.npy`` and ``spks.npy`` (ROIs x frames) and ``iscell.npy``
(Suite2p's own classifier: ``(N, 2)``, accepted 0/1 and its probability). Suite2p 1.x
splits ``ops`` into ``db.npy`` (paths, ``Ly``, ``Lx``), ``settings.npy`` (what the user set)
and ``reg_outputs.npy`` (``meanImg``, ...), and writes ``ops.npy`` as their union only with
``save_ops_orig=True`` (its default): without ``ops.npy`` those files are read instead.

What becomes :class:`~calcomp_caiman.evidence.evidence.Evidence`:

* footprints: ROI ``k`` has weight ``lam[i]`` at pixel ``(ypix[i], xpix[i])`` (row, col),
  i.e. row ``ypix + xpix * Ly`` of ``A`` (CaImAn's Fortran order), all its pixels
  (also those Suite2p marks as overlapping);
* traces: ``C = F - neucoeff * Fneu`` (Suite2p's neuropil-corrected fluorescence, with its
  ``ops['neucoeff']`` (0.x) or ``ops['extraction']['neuropil_coefficient']`` (1.x), default
  0.7; ``F`` alone when there is no ``Fneu.npy``, or when the coefficient is NaN or negative:
  it is then left out and named in the provenance) and
  ``S = spks``. Suite2p has no denoised trace: unlike CaImAn's ``C``, this ``C`` is the
  raw-ish trace (CaImAn's ``C + YrA``), so there is no ``YrA``. Traces are read in row
  chunks from memory-mapped files;
* image: ``ops['meanImg']`` (never ``Vcorr``, Suite2p's correlation map, whose scale is
  not CaImAn's ``Cn``). ``gSig`` is not taken from ``ops['diameter']`` (often
  Suite2p's default): it is estimated from the footprints unless given.

Suite2p saves ``stat.npy`` and ``ops.npy`` as pickled Python objects, so reading them
runs pickle (as Suite2p itself does): reading and writing refuse unless
``allow_pickle=True`` (``calcomp --allow-pickle``); give it only for folders you trust.

Written into the plane folder (or ``out_path``): ``calcomp_iscell.npy`` (``(N, 2)``
float64 in Suite2p's ``iscell`` layout: accepted 0/1, P(neuron)), ``calcomp_probs.npy``
(``(N, 4)`` float32) and ``calcomp_classification.npz`` (every array of
:func:`~calcomp_caiman.classify.classification_fields` and the provenance; written last).
``iscell.npy`` is replaced only with ``replace_iscell=True``, after Suite2p's own is kept
as ``iscell_suite2p.npy``.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from calcomp_caiman.errors import InvalidFileError, OutputExistsError, PickleNotAllowedError
from calcomp_caiman.evidence.evidence import Evidence
from calcomp_caiman.evidence.traces import Traces
from calcomp_caiman.io.limits import check_pixels
from calcomp_caiman.io.sidecar import (
    accepted_mask,
    record_model_sha256,
    write_atomically,
    write_record,
)
from calcomp_caiman.schema import check_result

logger = logging.getLogger(__name__)

__all__ = [
    "ISCELL_FILE",
    "PROBS_FILE",
    "RECORD_FILE",
    "is_classified_by",
    "is_suite2p_folder",
    "read_evidence",
    "write_classification",
]

ISCELL_FILE = "calcomp_iscell.npy"
PROBS_FILE = "calcomp_probs.npy"
RECORD_FILE = "calcomp_classification.npz"
_SUITE2P_BACKUP = "iscell_suite2p.npy"
_DEFAULT_NEUCOEFF = 0.7
_SETTINGS_MARKS = ("ops.npy", "db.npy")  # either one, beside stat.npy, marks a plane folder
_SETTINGS_FILES = ("db.npy", "settings.npy", "reg_outputs.npy")  # ops.npy's parts in 1.x


def is_suite2p_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a Suite2p plane folder (``stat.npy`` with ``ops.npy`` or ``db.npy``).

    Suite2p 1.x run with ``save_ops_orig=False`` writes no ``ops.npy``; its ``db.npy`` (and
    ``settings.npy``, ``reg_outputs.npy``) hold the same facts.

    Examples
    --------
    >>> is_suite2p_folder("no/such/plane0")
    False
    """
    path = Path(path)
    return (
        path.is_dir()
        and (path / "stat.npy").is_file()
        and any((path / name).is_file() for name in _SETTINGS_MARKS)
    )


def _load_pickled(path: Path, folder: Path) -> Any:
    try:
        return np.load(path, allow_pickle=True)
    except Exception as err:  # unpickling can raise anything
        raise InvalidFileError(
            path, f"cannot be read ({type(err).__name__}: {err}); is {folder} a Suite2p folder?"
        ) from None


def _roi_count(path: Path) -> int:
    """The number of ROIs in ``stat.npy``, read from its ``.npy`` header (no unpickling)."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, _ = read_header(handle)
    except (OSError, ValueError) as err:
        raise InvalidFileError(path, f"cannot be read as .npy ({err}).") from None
    if len(shape) != 1:
        raise InvalidFileError(path, f"must hold one dict per ROI, got an array of shape {shape}.")
    return int(shape[0])


def _check_folder(folder: Path) -> None:
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise InvalidFileError(
            folder, "is not a folder (a Suite2p plane folder, e.g. suite2p/plane0)."
        )
    if not (folder / "stat.npy").is_file():
        raise InvalidFileError(
            folder, "is not a Suite2p plane folder: no stat.npy (give suite2p/planeN)."
        )
    if not any((folder / name).is_file() for name in _SETTINGS_MARKS):
        raise InvalidFileError(
            folder,
            "is not a Suite2p plane folder: no ops.npy (Suite2p 0.x) or db.npy (Suite2p 1.x); "
            "give suite2p/planeN.",
        )


def _as_dict(value: Any, path: Path) -> dict:
    if isinstance(value, np.ndarray) and value.dtype == object and value.ndim == 0:
        value = value.item()
    if not isinstance(value, dict):
        raise InvalidFileError(
            path, f"must hold Suite2p's settings dict, got {type(value).__name__}."
        )
    return value


def _plane_settings(folder: Path) -> tuple[dict, Path]:
    """Suite2p's ``ops`` of a plane folder and the file it came from.

    ``ops.npy`` when there is one; else (Suite2p 1.x with ``save_ops_orig=False``) ``db.npy``,
    ``settings.npy`` and ``reg_outputs.npy`` merged in that order, as Suite2p itself merges
    them into ``ops.npy`` (so ``meanImg`` is the registered mean image of ``reg_outputs``).
    """
    if (folder / "ops.npy").is_file():
        path = folder / "ops.npy"
        return _as_dict(_load_pickled(path, folder), path), path
    ops: dict = {}
    for name in _SETTINGS_FILES:
        path = folder / name
        if path.is_file():
            ops.update(_as_dict(_load_pickled(path, folder), path))
    return ops, folder / "db.npy"


def _image_size(ops: dict, path: Path) -> tuple[int, int]:
    try:
        dims = (int(ops["Ly"]), int(ops["Lx"]))
    except (KeyError, TypeError, ValueError):
        raise InvalidFileError(path, "has no image size (Ly, Lx).") from None
    if min(dims) < 1:
        raise InvalidFileError(path, f"has image size Ly x Lx = {dims}; both must be positive.")
    check_pixels(path, "Ly x Lx", dims)
    return dims


def _neuropil_coefficient(ops: dict, path: Path, dropped: dict[str, str]) -> float | None:
    """Suite2p's neuropil coefficient: ``ops['neucoeff']`` (0.x) or
    ``ops['extraction']['neuropil_coefficient']`` (1.x); Suite2p's default 0.7 when neither is
    there. None (with a reason in ``dropped``) when it is not a finite number >= 0: the
    neuropil is then not subtracted."""
    extraction = ops.get("extraction")
    if "neucoeff" in ops:
        value, where = ops["neucoeff"], "ops['neucoeff']"
    elif isinstance(extraction, dict) and "neuropil_coefficient" in extraction:
        value, where = extraction["neuropil_coefficient"], "ops['extraction']['neuropil_coefficient']"  # fmt: skip
    else:
        logger.info(
            "%s: no neuropil coefficient; using Suite2p's default %s", path, _DEFAULT_NEUCOEFF
        )
        return _DEFAULT_NEUCOEFF
    try:
        coefficient = float(value)
    except (TypeError, ValueError):
        coefficient = float("nan")
    if np.isfinite(coefficient) and coefficient >= 0:
        return coefficient
    reason = f"{where} is {value!r}, not a number >= 0: neuropil not subtracted (C = F)"
    logger.warning("%s: leaving out the neuropil coefficient: %s", path, reason)
    dropped["neucoeff"] = reason
    return None


def _footprints(stat: Any, dims: tuple[int, int], path: Path) -> scipy.sparse.csc_matrix:
    if not isinstance(stat, np.ndarray) or stat.ndim != 1 or stat.dtype != object:
        raise InvalidFileError(
            path, "must hold a 1-D array of dicts (one per ROI), as Suite2p saves it."
        )
    height, width = dims
    rows, columns, values = [], [], []
    for k, roi in enumerate(stat):
        if not isinstance(roi, dict) or "ypix" not in roi or "xpix" not in roi:
            raise InvalidFileError(path, f"ROI {k} is not a dict with 'ypix' and 'xpix'.")
        ypix = np.asarray(roi["ypix"]).ravel()
        xpix = np.asarray(roi["xpix"]).ravel()
        lam = np.asarray(roi.get("lam", np.ones(len(ypix))), dtype=np.float64).ravel()
        if not (len(ypix) == len(xpix) == len(lam)):
            raise InvalidFileError(
                path,
                f"ROI {k} has {len(ypix)} ypix, {len(xpix)} xpix and {len(lam)} lam values; "
                "they must have the same length.",
            )
        if ypix.dtype.kind not in "iu" or xpix.dtype.kind not in "iu":
            if not (np.all(ypix == np.round(ypix)) and np.all(xpix == np.round(xpix))):
                raise InvalidFileError(path, f"ROI {k} has non-integer ypix/xpix.")
        ypix, xpix = ypix.astype(np.int64), xpix.astype(np.int64)
        if len(ypix) and (
            ypix.min() < 0 or xpix.min() < 0 or ypix.max() >= height or xpix.max() >= width
        ):
            raise InvalidFileError(
                path,
                f"ROI {k} has pixels outside the {height} x {width} image (Ly x Lx); "
                "stat.npy and the settings (ops.npy or db.npy) must come from the same run.",
            )
        if not np.all(np.isfinite(lam)):
            raise InvalidFileError(path, f"ROI {k} has NaN or Inf weights (lam).")
        rows.append(ypix + xpix * height)
        columns.append(np.full(len(ypix), k))
        values.append(lam)
    if not rows:
        raise InvalidFileError(path, "holds no ROI: nothing to classify.")
    return scipy.sparse.csc_matrix(
        (
            np.concatenate(values).astype(np.float32),
            (np.concatenate(rows), np.concatenate(columns)),
        ),
        shape=(height * width, len(rows)),
    )


def _trace_file(folder: Path, name: str, n: int) -> Path | None:
    path = folder / name
    if not path.is_file():
        return None
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        logger.warning("%s: ignoring it (%s)", path, err)
        return None
    if (
        array.ndim != 2
        or array.shape[0] != n
        or array.shape[1] < 2
        or array.dtype.kind not in "biuf"
    ):
        logger.warning("%s: ignoring it: shape %s, but there are %d ROIs", path, array.shape, n)
        return None
    return path


def _traces(folder: Path, n: int, neucoeff: float | None) -> Traces | None:
    """``C = F - neucoeff * Fneu`` (``F`` alone when ``neucoeff`` is None or there is no
    ``Fneu.npy``) and ``S = spks``, read in row chunks."""
    f_path = _trace_file(folder, "F.npy", n)
    if f_path is None:
        return None
    frames = int(np.load(f_path, mmap_mode="r").shape[1])
    extra = {}
    wanted = (("spks.npy", "S"),) if neucoeff is None else (("Fneu.npy", "Fneu"), ("spks.npy", "S"))
    for name, key in wanted:
        path = _trace_file(folder, name, n)
        if path is not None and np.load(path, mmap_mode="r").shape[1] == frames:
            extra[key] = path

    def read(start: int, stop: int) -> dict[str, np.ndarray]:
        C = np.asarray(np.load(f_path, mmap_mode="r")[start:stop], dtype=np.float64)
        if "Fneu" in extra:
            C = C - neucoeff * np.load(extra["Fneu"], mmap_mode="r")[start:stop]
        part = {"C": C}
        if "S" in extra:
            part["S"] = np.asarray(np.load(extra["S"], mmap_mode="r")[start:stop], np.float64)
        return part

    return Traces(n, frames, read, ("C", "S") if "S" in extra else ("C",))


def read_evidence(
    folder: str | os.PathLike, *, gSig: float | None = None, allow_pickle: bool = False
) -> Evidence:
    """Everything a Suite2p plane folder holds about its ROIs.

    Parameters
    ----------
    folder : path-like
        A Suite2p plane folder (``.../suite2p/plane0``) with ``stat.npy`` and ``ops.npy``, or
        (Suite2p 1.x with ``save_ops_orig=False``) ``db.npy``, ``settings.npy`` and
        ``reg_outputs.npy``.
    gSig : float, optional
        Typical neuron half-size in px; estimated from the footprints when omitted.
    allow_pickle : bool
        Suite2p saves ``stat.npy`` and its settings as pickles, and loading a pickle can run
        any code: allow it only for folders you trust (as ``numpy.load``, off by default).

    Returns
    -------
    Evidence
        Footprints, traces (``C = F - neucoeff * Fneu``, ``S = spks``) when ``F.npy`` fits,
        ``image = meanImg`` when it has the image's shape, and the frame rate ``ops['fs']``.
        A neuropil coefficient that is not a number >= 0 is left out (``C = F``) and named
        in ``Evidence.dropped``.

    Raises
    ------
    FileNotFoundError
        No such folder.
    InvalidFileError
        Not a plane folder; ``stat.npy`` or the settings unreadable or inconsistent (ROI
        pixels outside ``Ly`` x ``Lx``, ragged ``ypix``/``xpix``/``lam``); no ROI.
    PickleNotAllowedError
        (an ``InvalidFileError``) ``allow_pickle`` is False.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> folder = tempfile.mkdtemp()
    >>> stat = np.array([{"ypix": np.arange(3, 8), "xpix": np.full(5, 4),
    ...                   "lam": np.ones(5, np.float32)}], dtype=object)
    >>> np.save(os.path.join(folder, "stat.npy"), stat)
    >>> np.save(os.path.join(folder, "ops.npy"), {"Ly": 32, "Lx": 40})
    >>> ev = read_evidence(folder, allow_pickle=True)
    >>> ev.n, ev.dims, sorted(ev.A[:, 0].nonzero()[0].tolist())[:2]  # row 3 + col 4 * 32
    (1, (32, 40), [131, 132])
    """
    folder = Path(folder)
    _check_folder(folder)
    if not allow_pickle:
        raise PickleNotAllowedError(folder)
    ops, ops_path = _plane_settings(folder)
    dims = _image_size(ops, ops_path)
    A = _footprints(_load_pickled(folder / "stat.npy", folder), dims, folder / "stat.npy")
    dropped: dict[str, str] = {}
    neucoeff = _neuropil_coefficient(ops, ops_path, dropped)
    image = ops.get("meanImg")
    if image is not None and np.shape(image) != dims:
        logger.warning("%s: ignoring meanImg of shape %s", folder, np.shape(image))
        image = None
    return Evidence.build(
        A,
        dims,
        traces=_traces(folder, A.shape[1], neucoeff),
        image=image,
        gSig=gSig,
        frame_rate=ops.get("fs"),  # Suite2p's frame rate per plane (Hz)
        source=str(folder),
        dropped=dropped,
    )


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_classification(
    folder: str | os.PathLike,
    result: Mapping[str, Any],
    *,
    out_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    replace_iscell: bool = False,
) -> str:
    """Write the classification of a Suite2p plane folder's ROIs.

    Parameters
    ----------
    folder : path-like
        The plane folder that was classified.
    result : mapping
        :func:`calcomp_caiman.classify.classification_fields`, optionally with ``provenance``.
    out_path : path-like, optional
        A folder to write into instead of ``folder`` (created if missing); only our files go
        there.
    overwrite : bool
        Allow replacing our files in an ``out_path`` that already has them (in ``folder``
        itself they are always replaced).
    replace_iscell : bool
        Also write ``iscell.npy`` (what Suite2p's GUI loads) from our answer; Suite2p's own is
        first copied to ``iscell_suite2p.npy`` (once: an existing copy is kept).

    Returns
    -------
    str
        The folder written.

    Raises
    ------
    FileNotFoundError, InvalidFileError
        As :func:`read_evidence`; our files exist in ``out_path`` and ``overwrite`` is
        False; writing failed (each file is then as before).
    ValueError
        ``result`` does not have one row per ROI.

    Notes
    -----
    Each file is replaced atomically; ``calcomp_classification.npz`` is written last, so a
    folder holding it holds the other files of the same run. Nothing of Suite2p's is changed
    unless ``replace_iscell``.
    """
    folder = Path(folder)
    _check_folder(folder)
    n = _roi_count(folder / "stat.npy")  # from its header: nothing is unpickled here
    record = check_result(result, n, label=str(folder))
    fields = record.fields
    target = folder if out_path is None else Path(out_path)
    if out_path is not None:
        if target.exists() and not target.is_dir():
            raise InvalidFileError(target, "is not a folder; give a folder for Suite2p outputs.")
        target.mkdir(parents=True, exist_ok=True)
        if (
            not overwrite
            and (target / RECORD_FILE).exists()
            and target.resolve() != folder.resolve()
        ):
            raise OutputExistsError(target / RECORD_FILE)
    iscell = np.column_stack(
        [accepted_mask(fields, n).astype(np.float64), fields["cnn_preds"].astype(np.float64)]
    ).reshape(n, 2)
    write_atomically(target / PROBS_FILE, _npy_bytes(fields["class_probs"]))
    write_atomically(target / ISCELL_FILE, _npy_bytes(iscell))
    if replace_iscell:
        original = target / "iscell.npy"
        backup = target / _SUITE2P_BACKUP
        suite2p_own = original if original.exists() else folder / "iscell.npy"
        if suite2p_own.exists() and not backup.exists():
            write_atomically(backup, suite2p_own.read_bytes())
        write_atomically(original, _npy_bytes(iscell))
    write_record(target / RECORD_FILE, fields, record.provenance)
    logger.info("wrote the classification of %d ROIs to %s", n, target)
    return str(target)


def is_classified_by(folder: str | os.PathLike, model_sha256: str) -> bool:
    """Whether ``folder`` holds our files from the model ``model_sha256``.

    Examples
    --------
    >>> is_classified_by("no/such/plane0", "0" * 64)
    False
    """
    return record_model_sha256(Path(folder) / RECORD_FILE) == str(model_sha256)
