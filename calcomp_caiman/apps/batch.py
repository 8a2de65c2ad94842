"""Classify CaImAn result files: one file, or many with resume and a summary."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, as_completed, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from calcomp_caiman.checks import check_gsig
from calcomp_caiman.classify import acceptance_rule, classify
from calcomp_caiman.errors import CalcompError, GsigError, InvalidFileError
from calcomp_caiman.io.atomic import remove_stale_temps
from calcomp_caiman.io.registry import FORMATS, find_inputs, get_format
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.schema import CLASSES

logger = logging.getLogger(__name__)

__all__ = [
    "FileResult",
    "FoundInput",
    "ReprocessOptions",
    "Task",
    "classify_file",
    "find_result_files",
    "reprocess",
    "write_summary_csv",
    "write_component_csv",
    "SUMMARY_COLUMNS",
]

SUMMARY_COLUMNS = (
    ["file", "format", "output", "status", "components"]
    + list(CLASSES)
    + ["accepted", "ood_score", "ood", "seconds", "error"]
)


@dataclass(frozen=True)
class FileResult:
    """What happened to one result file.

    ``status`` is ``"classified"``, ``"skipped"`` (already classified by the same model)
    or ``"failed"`` (``error`` says why; the file is unchanged).
    """

    file: str
    output: str
    status: str
    components: int = 0
    counts: dict = field(default_factory=dict)
    accepted: int = 0
    seconds: float = 0.0
    error: str = ""
    format: str = ""
    ood_score: float | None = None
    ood: bool | None = None

    def row(self) -> dict:
        """The summary-CSV row."""
        row = {k: v for k, v in asdict(self).items() if k != "counts"}
        row.update({name: self.counts.get(name, "") for name in CLASSES})
        row["seconds"] = f"{self.seconds:.2f}"
        row["ood_score"] = "" if self.ood_score is None else f"{self.ood_score:.3f}"
        row["ood"] = "" if self.ood is None else ("yes" if self.ood else "no")
        return row


def classify_file(
    path: str | os.PathLike,
    *,
    model: CalcompModel,
    out_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    accept: Sequence[str] | None = None,
    min_prob: float | str | None = None,
    gSig=None,
    batch_size: int = 128,
    format: str = "auto",
    plane: str | None = None,
    replace_iscell: bool = False,
) -> tuple[FileResult, dict]:
    """Classify the components of one CaImAn result file and write the answer into it.

    Other pipelines' outputs (NWB, a Suite2p plane folder, mask files) go through the same
    engine and record with their own reader and writer (:mod:`calcomp_caiman.io.registry`).

    Parameters
    ----------
    path : path-like
        A CaImAn ``.hdf5`` result file (``cnm.save``).
    model : CalcompModel
    out_path : path-like, optional
        Write an updated copy here; ``None`` updates ``path`` in place (atomically).
    overwrite : bool
        Allow replacing an existing ``out_path``.
    accept, min_prob
        Acceptance rule (:func:`calcomp_caiman.classify.acceptance_rule`); default: the
        model folder's ``thresholds.json``.
    gSig : float, optional
        Overrides the ``params/init/gSig`` stored in the file.
    batch_size : int
    format : str
        ``"auto"`` (from the path), ``"caiman"``, ``"nwb"``, ``"suite2p"`` or ``"masks"``.
    plane : str, optional
        NWB only: the ``PlaneSegmentation`` to classify (needed when there are several).
    replace_iscell : bool
        Suite2p only: also write ``iscell.npy`` (Suite2p's own kept as ``iscell_suite2p.npy``).

    Returns
    -------
    result : FileResult
    fields : dict
        The arrays written (:func:`calcomp_caiman.classify.classification_fields`).

    Raises
    ------
    InvalidFileError, FileBusyError, FileNotFoundError
        The file cannot be read or written, or its ``params/init/gSig`` (or ``gSig``)
        is outside ``(0, MAX_GSIG]`` (:func:`calcomp_caiman.checks.check_gsig`); it is
        left unchanged.
    """
    start = time.perf_counter()
    acceptance_rule(model, accept, min_prob)  # a bad rule fails before the file is read
    try:
        gsig = check_gsig(gSig)
    except GsigError as err:
        raise InvalidFileError(path, f"--gsig: {err}") from None
    kind = get_format(format, path)
    read_options = {"plane": plane} if "plane" in kind.read_options else {}
    write_options = dict(read_options)
    if replace_iscell and "replace_iscell" in kind.write_options:
        write_options["replace_iscell"] = True
    try:
        evidence = kind.read_evidence(path, **read_options)
    except GsigError as err:  # stored gSig out of range (files hold anything)
        raise InvalidFileError(path, f"params/init/gSig: {err}") from None
    if gsig is not None:
        evidence = dataclasses.replace(evidence, gSig=gsig)
    record = classify(evidence, model, accept=accept, min_prob=min_prob, batch_size=batch_size)
    written = kind.write_classification(
        path, record.as_result(), out_path=out_path, overwrite=overwrite, **write_options
    )
    fields = record.fields
    result = FileResult(
        file=str(path),
        output=str(written),
        status="classified",
        components=record.n,
        counts=record.counts(),
        accepted=len(fields["idx_components"]),
        seconds=time.perf_counter() - start,
        format=kind.name,
        ood_score=record.ood_score,
        ood=record.ood,
    )
    return result, fields


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

    Raises
    ------
    TypeError
        ``model`` is not a :class:`CalcompModel`.
    ValueError
        Unknown ``format``, or an acceptance rule the model does not allow.
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

    def __post_init__(self) -> None:
        if not isinstance(self.model, CalcompModel):
            raise TypeError(
                f"model must be a CalcompModel (CalcompModel.load(...)), "
                f"got {type(self.model).__name__}."
            )
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
    """One :class:`Task` per input: the output under ``out_dir`` (``None``: in place)."""
    if out_dir is None:
        return [Task(item.file, item.file, True) for item in found]
    return [Task(item.file, Path(out_dir) / item.relative, False) for item in found]


def _failure(task: Task, err: BaseException | str) -> FileResult:
    """A ``failed`` result whose one-line error names the file.

    An unexpected exception is written ``"<file>: <ExceptionType>: message"`` (its first
    line); a plain string is the problem itself.
    """
    if isinstance(err, BaseException):
        text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    else:
        text = err
    lines = text.strip().splitlines() or [""]
    return FileResult(str(task.file), str(task.target), "failed", error=f"{task.file}: {lines[0]}")


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
    model = options.model
    try:
        kind = get_format(options.format, file)
        seen = {"plane": options.plane} if "plane" in kind.read_options else {}
        if (
            options.resume
            and target.exists()
            and kind.is_classified_by(target, model.sha256, **seen)
        ):
            return FileResult(str(file), str(target), "skipped", format=kind.name)
        if not in_place:
            target.parent.mkdir(parents=True, exist_ok=True)
        result, _ = classify_file(
            file,
            model=model,
            out_path=None if in_place else target,
            overwrite=options.overwrite,
            accept=options.accept,
            min_prob=options.min_prob,
            gSig=options.gSig,
            format=options.format,
            plane=options.plane,
            replace_iscell=options.replace_iscell,
        )
        return result
    except (CalcompError, OSError, ValueError) as err:
        logger.debug("failed on %s", file, exc_info=True)
        return FileResult(str(file), str(target), "failed", error=str(err))
    except Exception as err:  # a bug or an odd file must not stop the batch: report it
        logger.debug("unexpected error on %s", file, exc_info=True)
        return _failure(task, err)


_MAX_IDLE_DEATHS = 3
"""Fresh pools in a row whose workers die before taking a task, before giving up."""

_WORKER_DIED = (
    "the worker process died while classifying it (killed, e.g. out of memory); "
    "run `calcomp classify` on this file alone to see why"
)


def _collect(futures: dict, suspects: list[Task]) -> Iterator[FileResult]:
    """Yield the results of ``futures`` (future -> task) as they finish.

    A task whose pool broke (a worker died) goes to ``suspects`` instead; any other
    exception raised by the pool machinery (e.g. pickling) is reported ``failed``.
    """
    for future in as_completed(list(futures)):
        task = futures.pop(future)
        try:
            yield future.result()
        except BrokenProcessPool:
            suspects.append(task)
        except Exception as err:
            logger.debug("the pool failed on %s", task.file, exc_info=True)
            yield _failure(task, err)


def _in_processes(tasks: list[Task], jobs: int, options: ReprocessOptions) -> Iterator[FileResult]:
    """Run ``tasks`` in ``jobs`` worker processes; a worker's death is reported, not raised.

    At most ``jobs`` tasks are in a pool at a time, so when a worker dies (killed for
    memory, ``os._exit``) the tasks the broken pool takes down are the ones that were
    running. Those are retried once, each alone in its own one-worker pool (concurrently):
    a task whose worker dies again is reported ``failed``, the others' results are kept.
    The tasks not yet started then go on in a fresh pool.
    """
    pending = list(reversed(tasks))  # popped from the end: submission order kept
    idle_deaths = 0
    while pending:
        suspects: list[Task] = []
        running: dict = {}
        broken = False
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            while running or (pending and not broken):
                while pending and len(running) < jobs and not broken:
                    try:
                        future = pool.submit(process_one, pending[-1], options)
                    except BrokenProcessPool:  # an idle worker died: go on in a fresh pool
                        broken = True
                        break
                    running[future] = pending.pop()
                if not running:
                    break
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                yield from _collect({future: running.pop(future) for future in done}, suspects)
                # once broken, the pool takes its other running tasks down too: wait for them
                broken = broken or bool(suspects)
        if broken and not suspects:
            idle_deaths += 1
            if idle_deaths > _MAX_IDLE_DEATHS:
                for task in reversed(pending):
                    yield _failure(task, _WORKER_DIED)
                return
        else:
            idle_deaths = 0
        for task in suspects:
            remove_stale_temps(task.file, task.target)
        if suspects:
            logger.info(
                "a worker process died; retrying %d file(s) each in its own process",
                len(suspects),
            )
            yield from _isolated(suspects, options)


def _isolated(tasks: list[Task], options: ReprocessOptions) -> Iterator[FileResult]:
    """Run each task in its own one-worker pool, all at once; a death fails that task only."""
    with contextlib.ExitStack() as stack:
        futures = {}
        for task in tasks:
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=1))
            futures[pool.submit(process_one, task, options)] = task
        died: list[Task] = []
        yield from _collect(futures, died)
    for task in died:
        logger.debug("the worker process classifying %s died twice", task.file)
        remove_stale_temps(task.file, task.target)
        yield _failure(task, _WORKER_DIED)


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
        How every file is treated (model, output folder, resume, acceptance rule, format).
    jobs : int
        Worker processes. A worker that dies (killed for memory, say) costs only the
        file it was classifying: the files it was running with are retried, each alone
        in a fresh process, and the rest go on in a fresh pool.
    **settings
        Fields of :class:`ReprocessOptions` (``model=...``, ``out_dir=...``, ...), instead
        of ``options`` or on top of it.

    Yields
    ------
    FileResult
        In completion order, one per file found. A file that fails is reported
        (``status == "failed"``, ``error`` a line naming the file: the problem, an
        unexpected ``"<ExceptionType>: message"`` whose traceback is logged at debug
        level, or that its worker process died twice) and left unchanged; the others go
        on. ``KeyboardInterrupt`` stops the batch.

    Raises
    ------
    TypeError, ValueError
        Bad options (:class:`ReprocessOptions`), raised before any file is read.
    FileNotFoundError
        A named path does not exist.

    Examples
    --------
    >>> from calcomp_caiman import CalcompModel
    >>> options = ReprocessOptions(CalcompModel.load(), out_dir="classified")
    >>> list(reprocess([], options))
    []
    """
    options = reprocess_options(options, **settings)
    tasks = make_tasks(find_result_files(paths, format=options.format), options.out_dir)
    if jobs <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield process_one(task, options)
        return
    # the model (a few hundred kB of weights) travels with each task
    yield from _in_processes(tasks, int(jobs), options)


def write_summary_csv(results: Iterable[FileResult], path: str | os.PathLike) -> Path:
    """Write one row per file (``SUMMARY_COLUMNS``); return the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        for result in results:
            writer.writerow(result.row())
    os.replace(tmp, path)
    return path


def write_component_csv(fields: dict, path: str | os.PathLike) -> Path:
    """Write one row per component: index, label, probabilities, accepted, flags."""
    path = Path(path)
    accepted = np.zeros(len(fields["class_probs"]), dtype=bool)
    accepted[fields["idx_components"]] = True
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["component", "label"] + [f"p_{n}" for n in CLASSES] + ["accepted", "flags"]
        )
        for i, (probs, label) in enumerate(zip(fields["class_probs"], fields["class_labels"])):
            writer.writerow(
                [i, CLASSES[int(label) - 1]]
                + [f"{p:.4f}" for p in probs]
                + [int(accepted[i]), int(fields["class_flags"][i])]
            )
    os.replace(tmp, path)
    return path
