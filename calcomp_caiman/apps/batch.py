"""Classify many result files (``calcomp reprocess``): find them, resume, report each one.

:func:`reprocess` classifies every file found under the paths given
(:func:`find_result_files`) as one :class:`ReprocessOptions` says, each with
:func:`calcomp_caiman.apps.one_file.classify_file`, in this process or in worker processes
(:mod:`calcomp_caiman.apps.workers`); :func:`calcomp_caiman.apps.distributed.reprocess_dask`
does the same on Dask with the same options. A file that fails is reported and the others
go on; :func:`write_summary_csv` writes one row per file.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from calcomp_caiman.apps.one_file import SUMMARY_COLUMNS, FileResult, classify_file
from calcomp_caiman.apps.workers import TIMED_OUT, run_in_processes
from calcomp_caiman.checks import check_gsig
from calcomp_caiman.classify import acceptance_rule
from calcomp_caiman.errors import CalcompError
from calcomp_caiman.evidence.modality import check_modality
from calcomp_caiman.io.atomic import atomic_write_text, remove_stale_temps
from calcomp_caiman.io.registry import FORMATS, find_inputs, get_format
from calcomp_caiman.model.folder import CalcompModel

logger = logging.getLogger(__name__)

__all__ = [
    "FoundInput",
    "ReprocessOptions",
    "Task",
    "find_result_files",
    "make_tasks",
    "process_one",
    "reprocess",
    "reprocess_options",
    "write_summary_csv",
]


class FoundInput(NamedTuple):
    """One input found by :func:`find_result_files`."""

    file: Path
    """The file (or Suite2p plane folder), resolved."""
    relative: Path
    """Its path under the folder it was found in (its name when named directly); it places
    the output in ``out_dir``."""


def find_result_files(
    paths: Iterable[str | os.PathLike], *, format: str = "auto"
) -> list[FoundInput]:
    """Every ``.hdf5`` file named or found (recursively) under the folders named.

    With ``format`` other than ``"caiman"``, folders are searched for that format's inputs
    (:func:`calcomp_caiman.io.registry.find_inputs`: ``auto`` finds ``.hdf5``, ``.nwb`` and
    Suite2p plane folders); a Suite2p plane folder named directly is one input.

    Returns
    -------
    list of FoundInput
        ``(file, relative)`` pairs, each input once.

    Raises
    ------
    FileNotFoundError
        A named path does not exist.
    """
    found: dict[Path, Path] = {}
    for entry in map(Path, paths):
        if entry.is_dir() and format in ("auto", "suite2p") and (entry / "stat.npy").is_file():
            found.setdefault(entry.resolve(), Path(entry.resolve().name))
        elif entry.is_dir():
            for file in find_inputs(entry, format):
                found.setdefault(file.resolve(), file.relative_to(entry))
        elif entry.is_file():
            found.setdefault(entry.resolve(), Path(entry.name))
        else:
            raise FileNotFoundError(f"{entry}: no such file or folder")
    return [FoundInput(file, relative) for file, relative in found.items()]


@dataclass(frozen=True)
class ReprocessOptions:
    """How :func:`reprocess` and :func:`calcomp_caiman.apps.distributed.reprocess_dask` treat
    every file: one option list for both.

    Attributes
    ----------
    model : CalcompModel
        Classifies every file (the two-photon ones, when ``one_photon_model`` is given).
    out_dir : Path, optional
        Write updated copies under this folder (keeping sub-folders); ``None`` updates
        every file in place, each atomically.
    overwrite : bool
        Replace existing outputs in ``out_dir`` that were not made by this model.
    resume : bool
        Skip files whose output is already classified by this model (same SHA256).
    accept : tuple of str, optional
        Classes kept as accepted components (``idx_components``).
    min_prob : float or "argmax", optional
        Accept when P(accepted classes) >= this; ``"argmax"``: the most probable class.
        Both default to the model folder's ``thresholds.json``
        (:func:`calcomp_caiman.classify.acceptance_rule`).
    gSig : float, optional
        Overrides the ``gSig`` stored in (or estimated for) every file.
    format : str
        ``"auto"`` (from each path), ``"caiman"``, ``"nwb"``, ``"suite2p"`` or ``"masks"``;
        also says what folders are searched for (:func:`find_result_files`).
    plane : str, optional
        NWB only: the ``PlaneSegmentation`` to classify (needed when there are several).
    replace_iscell : bool
        Suite2p only: also write ``iscell.npy`` (Suite2p's own kept as ``iscell_suite2p.npy``).
    allow_pickle : bool
        Suite2p only: allow loading the pickled ``stat.npy``/``ops.npy`` of the plane
        folders named or found (loading a pickle can run any code: only for folders you
        trust). Without it such a folder fails with :class:`PickleNotAllowedError`.
    timeout : float, optional
        Seconds one file may take; a file still running then (a read that stalls: a hung
        network share, a FIFO) is stopped and reported failed (``TimeoutError``), the file
        unchanged, and the batch goes on. ``None``: no limit. With a limit every file runs
        in a worker process of its own (see :func:`reprocess`).
    modality : {"auto", "1p", "2p"}
        One-photon (CNMF-E) or two-photon data; ``"auto"``: each file's CaImAn params say,
        else two-photon (:mod:`calcomp_caiman.evidence.modality`).
    one_photon_model : CalcompModel, optional
        Classifies the one-photon files instead of ``model``
        (:func:`~calcomp_caiman.apps.one_file.load_models`).

    Raises
    ------
    TypeError
        ``model`` (or ``one_photon_model``) is not a :class:`CalcompModel`.
    ValueError
        Unknown ``format`` or ``modality``, an acceptance rule the model does not allow, or
        a ``timeout`` that is not a positive number.
    GsigError
        ``gSig`` outside ``(0, MAX_GSIG]``.
    """

    model: CalcompModel
    out_dir: Path | None = None
    overwrite: bool = False
    resume: bool = True
    accept: tuple[str, ...] | None = None
    min_prob: float | str | None = None
    gSig: float | None = None
    format: str = "auto"
    plane: str | None = None
    replace_iscell: bool = False
    allow_pickle: bool = False
    timeout: float | None = None
    modality: str = "auto"
    one_photon_model: CalcompModel | None = None

    def __post_init__(self) -> None:
        for name in ("model", "one_photon_model"):
            value = getattr(self, name)
            if not isinstance(value, CalcompModel) and (name == "model" or value is not None):
                raise TypeError(
                    f"{name} must be a CalcompModel (CalcompModel.load(...)), "
                    f"got {type(value).__name__}."
                )
        check_modality(self.modality)
        if self.format != "auto" and self.format not in FORMATS:
            raise ValueError(f"format must be 'auto' or one of {FORMATS}, got {self.format!r}.")
        # checked before any file is read: a bad rule or gSig fails once, not per file; kept
        # as given (None: the model's thresholds.json, "argmax": the most probable class)
        acceptance_rule(self.model, self.accept, self.min_prob)
        if self.accept is not None:
            accept = (self.accept,) if isinstance(self.accept, str) else tuple(self.accept)
            object.__setattr__(self, "accept", accept)
        object.__setattr__(self, "gSig", check_gsig(self.gSig))
        if self.out_dir is not None:
            object.__setattr__(self, "out_dir", Path(self.out_dir))
        if self.timeout is not None:
            try:
                timeout = float(self.timeout)
            except (TypeError, ValueError):
                timeout = float("nan")
            if not timeout > 0:  # also NaN
                raise ValueError(
                    f"timeout must be a positive number of seconds, got {self.timeout!r}."
                )
            object.__setattr__(self, "timeout", timeout)


def reprocess_options(
    options: ReprocessOptions | None = None, **settings: object
) -> ReprocessOptions:
    """``options`` with ``settings`` (fields of :class:`ReprocessOptions`) on top.

    Raises
    ------
    TypeError
        Neither ``options`` nor ``model``, or a name that is not a field.
    """
    if options is None:
        return ReprocessOptions(**settings)  # type: ignore[arg-type]
    return dataclasses.replace(options, **settings) if settings else options


class Task(NamedTuple):
    """One file of a batch: where it is read and where its output goes."""

    file: Path
    target: Path
    in_place: bool


def make_tasks(found: Iterable[FoundInput], out_dir: str | os.PathLike | None) -> list[Task]:
    """One :class:`Task` per input: the output under ``out_dir`` (``None``: in place).

    The targets are absolute, as the inputs are (:func:`find_result_files`).
    """
    if out_dir is None:
        return [Task(item.file, item.file, True) for item in found]
    root = Path(out_dir).resolve()
    return [Task(item.file, root / item.relative, False) for item in found]


def _failure(task: Task, err: BaseException | str, error_type: str = "") -> FileResult:
    """A ``failed`` result whose one-line error names the file.

    An unexpected exception is written ``"<file>: <ExceptionType>: message"`` (its first
    line); a plain string is the problem itself (of kind ``error_type``).
    """
    if isinstance(err, BaseException):
        text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        error_type = type(err).__name__
    else:
        text = err
    lines = text.strip().splitlines() or [""]
    return FileResult(
        str(task.file),
        str(task.target),
        "failed",
        error=f"{task.file}: {lines[0]}",
        error_type=error_type,
    )


def process_one(task: Task, options: ReprocessOptions) -> FileResult:
    """Classify the file of ``task`` as ``options`` say; every failure becomes a result.

    Returns
    -------
    FileResult
        ``skipped`` when resuming and the output is already classified by this model;
        ``failed`` (with a one-line error naming the file) for any exception but
        ``KeyboardInterrupt``.
    """
    file, target, in_place = task
    models = [m for m in (options.model, options.one_photon_model) if m is not None]
    try:
        kind = get_format(options.format, file)
        seen = {"plane": options.plane} if "plane" in kind.read_options else {}
        if (
            options.resume
            and target.exists()
            and any(kind.is_classified_by(target, m.sha256, **seen) for m in models)
        ):
            return FileResult(str(file), str(target), "skipped", format=kind.name)
        if not in_place:
            target.parent.mkdir(parents=True, exist_ok=True)
        result, _ = classify_file(
            file,
            model=options.model,
            out_path=None if in_place else target,
            overwrite=options.overwrite,
            accept=options.accept,
            min_prob=options.min_prob,
            gSig=options.gSig,
            format=options.format,
            plane=options.plane,
            replace_iscell=options.replace_iscell,
            allow_pickle=options.allow_pickle,
            modality=options.modality,
            one_photon_model=options.one_photon_model,
        )
        return result
    except (CalcompError, OSError, ValueError) as err:
        logger.debug("failed on %s", file, exc_info=True)
        return FileResult(
            str(file), str(target), "failed", error=str(err), error_type=type(err).__name__
        )
    except Exception as err:  # a bug or an odd file must not stop the batch: report it
        logger.debug("unexpected error on %s", file, exc_info=True)
        return _failure(task, err)


_WORKER_DIED = (
    "the worker process died while classifying it (killed, e.g. out of memory); "
    "run `calcomp classify` on this file alone to see why"
)


def _lost(task: Task, reason: str, *, timeout: float | None) -> FileResult:
    """The result of a task whose worker process gave none (it died twice, or ran too long)."""
    if reason == TIMED_OUT:
        return _failure(
            task,
            f"stopped after {timeout:g} s without finishing (the timeout; a read or write "
            "that stalls?); the file is unchanged",
            "TimeoutError",
        )
    return _failure(task, _WORKER_DIED, "WorkerDied")


def _remove_temps(task: Task) -> None:
    remove_stale_temps(task.file, task.target)


def reprocess(
    paths: Iterable[str | os.PathLike],
    options: ReprocessOptions | None = None,
    *,
    jobs: int = 1,
    **settings: object,
) -> Iterator[FileResult]:
    """Classify many result files; yield one :class:`FileResult` per file.

    Parameters
    ----------
    paths : iterable of path-like
        Files and folders (searched recursively: :func:`find_result_files`).
    options : ReprocessOptions, optional
        How every file is treated (model, output folder, resume, acceptance rule, format,
        time limit).
    jobs : int
        Files classified at once, each in a worker process of its own. With ``jobs=1`` and
        no ``timeout`` the files are classified in this process, one after the other.
        A worker that dies (killed for memory, say) costs only its file: it is retried once
        in a fresh process, then reported failed; one that runs past ``timeout`` is
        stopped and reported failed.
    **settings
        Fields of :class:`ReprocessOptions` (``model=...``, ``out_dir=...``, ...), instead
        of ``options`` or on top of it.

    Yields
    ------
    FileResult
        In completion order, one per file found. A file that fails is reported
        (``status == "failed"``, ``error`` a line naming the file: the problem, an
        unexpected ``"<ExceptionType>: message"`` whose traceback is logged at debug
        level, that its worker process died twice, or that it ran past ``timeout``) and
        left unchanged; the others go on. ``KeyboardInterrupt`` stops the batch.

    Raises
    ------
    TypeError, ValueError
        Bad options (:class:`ReprocessOptions`), raised before any file is read.
    FileNotFoundError
        A named path does not exist.

    Examples
    --------
    >>> from calcomp_caiman import CalcompModel
    >>> options = ReprocessOptions(CalcompModel.load(), out_dir="classified", timeout=600)
    >>> list(reprocess([], options))
    []
    """
    options = reprocess_options(options, **settings)
    tasks = make_tasks(find_result_files(paths, format=options.format), options.out_dir)
    if jobs <= 1 and options.timeout is None:
        for task in tasks:
            yield process_one(task, options)
        return
    yield from run_in_processes(
        functools.partial(process_one, options=options),
        tasks,
        jobs=max(1, int(jobs)),
        timeout=options.timeout,
        lost=functools.partial(_lost, timeout=options.timeout),
        cleanup=_remove_temps,
    )


def write_summary_csv(results: Iterable[FileResult], path: str | os.PathLike) -> Path:
    """Write one row per file (:data:`SUMMARY_COLUMNS`), ordered by input path; return the path.

    Raises
    ------
    InvalidFileError
        ``path`` cannot be written (it is left as it was).
    """
    path = Path(path)
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS)
    writer.writeheader()
    for result in sorted(results, key=lambda result: result.file):
        writer.writerow(result.row())
    atomic_write_text(path, buffer.getvalue())
    return path
