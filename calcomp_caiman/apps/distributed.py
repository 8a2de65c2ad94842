"""Run ``calcomp reprocess`` on Dask distributed: a local cluster or any running scheduler.

One task per result file. The options (with the model) are scattered once to every
worker, so each worker holds one copy however many files it processes; only paths travel through the scheduler,
and each file is read and written by the worker that processes it (the folders must be
visible to the workers under the same paths, as on a cluster file system).

``dask.distributed`` is imported inside :func:`reprocess_dask`, so this module (and the
package) imports without Dask installed.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Iterable, Iterator

from calcomp_caiman.apps.batch import (
    ReprocessOptions,
    Task,
    find_result_files,
    make_tasks,
    process_one,
    reprocess_options,
)
from calcomp_caiman.apps.one_file import FileResult
from calcomp_caiman.errors import CalcompError

logger = logging.getLogger(__name__)

__all__ = ["reprocess_dask"]


def _classify_task(task: Task, options: ReprocessOptions) -> FileResult:
    """Worker side of one file: :func:`calcomp_caiman.apps.batch.process_one`.

    ``options`` arrives as the worker's own copy of the scattered options (Dask resolves
    the future given as a top-level argument), so the model in it is deserialized once per
    worker. With ``options.timeout`` the file is classified in a thread of its own; a file
    still running then is reported failed and the task returns (a Dask worker process
    cannot start processes of its own to kill): the stalled thread stays blocked in its
    read, holding no Dask slot, and a file that was only slow may still be written later
    (atomically; a run with resume then skips it).
    """
    if options.timeout is None:
        return process_one(task, options)
    outcome: list[FileResult] = []
    thread = threading.Thread(
        target=lambda: outcome.append(process_one(task, options)),
        name=f"calcomp {task.file.name}",
        daemon=True,
    )
    thread.start()
    thread.join(options.timeout)
    if outcome:
        return outcome[0]
    logger.warning("%s: still running after %g s; reported failed", task.file, options.timeout)
    return FileResult(
        str(task.file),
        str(task.target),
        "failed",
        error=f"{task.file}: stopped waiting after {options.timeout:g} s (the timeout; a read "
        "or write that stalls?); the file is unchanged unless it finishes later",
        error_type="TimeoutError",
    )


def _failure(task: Task, err: BaseException) -> FileResult:
    """A ``"failed"`` result for a task that did not return one (worker deaths, bugs)."""
    from distributed import KilledWorker

    problem = str(err).strip().splitlines()[0] if str(err).strip() else "no message"
    if isinstance(err, KilledWorker):
        problem = f"the Dask workers processing it died repeatedly ({problem})"
    return FileResult(
        str(task.file),
        str(task.target),
        "failed",
        error=f"{task.file}: {type(err).__name__}: {problem}",
        error_type="WorkerDied" if isinstance(err, KilledWorker) else type(err).__name__,
    )


def _check_arguments(scheduler, workers, retries) -> None:
    if scheduler is not None and not isinstance(scheduler, str):
        raise TypeError(
            f"scheduler must be an address string such as 'tcp://HOST:8786', "
            f"got {type(scheduler).__name__}."
        )
    if workers is not None and (
        isinstance(workers, bool) or int(workers) != workers or workers < 1
    ):
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}.")
    if isinstance(retries, bool) or int(retries) != retries or retries < 0:
        raise ValueError(f"retries must be an integer >= 0, got {retries!r}.")


def reprocess_dask(
    paths: Iterable[str | os.PathLike],
    options: ReprocessOptions | None = None,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    retries: int = 2,
    **settings: object,
) -> Iterator[FileResult]:
    """Classify many CaImAn result files on Dask; yield one :class:`FileResult` per file.

    The distributed counterpart of :func:`calcomp_caiman.apps.batch.reprocess`: same results,
    resume rule and failure reporting, with one Dask task per file.

    Parameters
    ----------
    paths : iterable of path-like
        Files and folders (searched recursively), listed here on the client with
        :func:`calcomp_caiman.apps.batch.find_result_files`. The workers open the same
        paths, so they must see the same file system (absolute paths are sent).
    options : ReprocessOptions, optional
        How every file is treated, as in :func:`calcomp_caiman.apps.batch.reprocess`.
        Scattered once to every worker (``broadcast=True``) with the model in it: one copy
        per worker, not one per task.
    scheduler : str, optional
        Address of a running Dask scheduler (``"tcp://HOST:8786"``, e.g. a
        dask-jobqueue ``SLURMCluster``'s ``scheduler_address``). That cluster is used as
        it is and left running. ``None`` starts a ``LocalCluster`` on 127.0.0.1 (worker
        processes, one thread each, no dashboard) and closes it at the end.
    workers : int, optional
        Worker processes of the local cluster (default ``os.cpu_count()``, never more than
        there are files). Ignored with ``scheduler``.
    retries : int
        Extra runs of a file's task after an unexpected error in it. On the local cluster
        it is also the number of worker deaths a task survives (the scheduler's
        ``allowed-failures``); a remote scheduler applies its own setting.
    **settings
        Fields of :class:`~calcomp_caiman.apps.batch.ReprocessOptions` (``model=...``,
        ``out_dir=...``, ``format=...``, ...), instead of ``options`` or on top of it.

    Yields
    ------
    FileResult
        In completion order. A file that cannot be processed, whose task keeps killing
        its workers (``KilledWorker``), or that fails in any other way is reported with
        ``status == "failed"`` and the error; the stream goes on with the other files.

    Raises
    ------
    FileNotFoundError
        A named path does not exist (raised on the first ``next()``).
    TypeError, ValueError
        Bad options (:class:`~calcomp_caiman.apps.batch.ReprocessOptions`), ``scheduler``,
        ``workers`` or ``retries``.
    ImportError
        ``dask.distributed`` is not installed (``pip install "calcomp_caiman[dask]"``).
    OSError
        The scheduler cannot be reached.

    Notes
    -----
    Crash safety is the single-machine one: every file is written to a temporary file
    in its own folder and renamed over the original, so a worker killed in the middle of
    a file leaves it as it was (old) or fully classified (new), never half-written. Dask
    reruns the task of a dead worker on another worker; with ``resume`` a file already
    renamed into place is then reported ``"skipped"``.

    Closing the generator early (``break``, Ctrl-C) cancels the remaining tasks and
    closes the client, and the local cluster if one was started.

    Examples
    --------
    >>> from calcomp_caiman.apps.distributed import reprocess_dask  # doctest: +SKIP
    >>> options = ReprocessOptions(CalcompModel.load())  # doctest: +SKIP
    >>> for result in reprocess_dask(["results/"], options,
    ...                              scheduler="tcp://10.0.0.5:8786"):  # doctest: +SKIP
    ...     print(result.file, result.status)
    """
    options = reprocess_options(options, **settings)
    _check_arguments(scheduler, workers, retries)
    found = find_result_files(paths, format=options.format)
    if not found:
        logger.info("no result files found")
        return

    try:
        import dask
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError as err:
        raise CalcompError(
            f"Dask is needed for --dask/--scheduler ({err}); install it with "
            f"pip install 'calcomp_caiman[dask]'."
        ) from err

    tasks = make_tasks(found, options.out_dir)

    cluster = None
    client = None
    futures: dict = {}  # running future -> (task, the options future it uses)
    try:
        if scheduler is None:
            n_workers = min(int(workers or os.cpu_count() or 1), len(tasks))
            with (
                warnings.catch_warnings(),
                dask.config.set({"distributed.scheduler.allowed-failures": int(retries)}),
            ):
                # no dashboard; Dask still opens a small HTTP server and warns when its
                # default port is taken (another cluster on this machine): harmless here
                warnings.filterwarnings("ignore", message="Port .* is already in use")
                cluster = LocalCluster(
                    n_workers=n_workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                )
            client = Client(cluster, set_as_default=False)
            logger.info(
                "started a local Dask cluster: %d workers at %s",
                n_workers,
                cluster.scheduler_address,
            )
        else:
            client = Client(scheduler, set_as_default=False)
            logger.info(
                "connected to the Dask scheduler at %s (%d workers now)",
                scheduler,
                len(client.scheduler_info().get("workers", {})),
            )

        # one copy per worker; tasks take the future as a top-level argument, so Dask
        # hands each task its worker's copy instead of shipping the model with every file
        shared = client.scatter(options, broadcast=True, hash=False)
        reruns = dict.fromkeys((task.file for task in tasks), 0)

        def submit(task: Task):
            future = client.submit(_classify_task, task, shared, pure=False, retries=int(retries))
            futures[future] = (task, shared)
            return future

        for task in tasks:
            submit(task)
        logger.info("submitted %d files", len(tasks))

        pending = as_completed(list(futures), loop=client.loop)
        for future in pending:
            task, used = futures.pop(future)
            try:
                result = future.result()
            except Exception as err:
                result = _failure(task, err)
                logger.debug("task for %s failed", task.file, exc_info=True)
                if used.status != "finished" and reruns[task.file] < retries:
                    # every worker holding the model died (a one-worker cluster, say) and
                    # Dask cancelled the tasks that needed it: scatter it again, rerun them
                    try:
                        if shared.status != "finished":
                            logger.warning("the model was lost with its workers; sending it again")
                            shared = client.scatter(options, broadcast=True, hash=False)
                        reruns[task.file] += 1
                        pending.add(submit(task))
                        continue
                    except Exception as again:
                        result = _failure(task, again)
            finally:
                future.release()
            yield result
    finally:
        if client is not None:
            try:
                if futures:
                    client.cancel(list(futures))
                futures.clear()
            finally:
                client.close()
        if cluster is not None:
            cluster.close()
