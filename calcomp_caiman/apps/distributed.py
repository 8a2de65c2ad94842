"""Run ``calcomp reprocess`` on Dask distributed: a local cluster or any running scheduler.

One task per result file. The model is scattered once to every worker, so each worker
holds one copy however many files it processes; only paths travel through the scheduler,
and each file is read and written by the worker that processes it (the folders must be
visible to the workers under the same paths, as on a cluster file system).

``dask.distributed`` is imported inside :func:`reprocess_dask`, so this module (and the
package) imports without Dask installed.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from calcomp_caiman.apps.batch import FileResult, find_result_files, process_one, target_path
from calcomp_caiman.classify import acceptance_rule
from calcomp_caiman.errors import CalcompError
from calcomp_caiman.model.folder import CalcompModel

logger = logging.getLogger(__name__)

__all__ = ["reprocess_dask"]


def _classify_task(
    file: Path, target: Path, in_place: bool, model: CalcompModel, options: dict
) -> FileResult:
    """Worker side of one file: :func:`calcomp_caiman.apps.batch.process_one`.

    ``model`` arrives as the worker's own copy of the scattered model (Dask resolves the
    future given as a top-level argument), so it is deserialized once per worker.
    """
    return process_one(file, target, in_place, dict(options, model=model))


def _failure(file: Path, target: Path, err: BaseException) -> FileResult:
    """A ``"failed"`` result for a task that did not return one (worker deaths, bugs)."""
    problem = str(err).strip().splitlines()[0] if str(err).strip() else "no message"
    if type(err).__name__ == "KilledWorker":
        problem = f"the Dask workers processing it died repeatedly ({problem})"
    return FileResult(
        str(file), str(target), "failed", error=f"{file}: {type(err).__name__}: {problem}"
    )


def _check_arguments(model, scheduler, workers, retries) -> None:
    if not isinstance(model, CalcompModel):
        raise TypeError(
            f"model must be a CalcompModel (CalcompModel.load(...)), got {type(model).__name__}."
        )
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
    *,
    model: CalcompModel,
    scheduler: str | None = None,
    workers: int | None = None,
    out_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    resume: bool = True,
    accept: Sequence[str] | None = None,
    min_prob: float | str | None = None,
    retries: int = 2,
) -> Iterator[FileResult]:
    """Classify many CaImAn result files on Dask; yield one :class:`FileResult` per file.

    The distributed counterpart of :func:`calcomp_caiman.apps.batch.reprocess`: same results,
    resume rule and failure reporting, with one Dask task per file.

    Parameters
    ----------
    paths : iterable of path-like
        Files and folders (searched recursively for ``*.hdf5``), listed here on the client
        with :func:`calcomp_caiman.apps.batch.find_result_files`. The workers open the same
        paths, so they must see the same file system (absolute paths are sent).
    model : CalcompModel
        Scattered once to every worker (``broadcast=True``): one copy per worker, not
        one per task.
    scheduler : str, optional
        Address of a running Dask scheduler (``"tcp://HOST:8786"``, e.g. a
        dask-jobqueue ``SLURMCluster``'s ``scheduler_address``). That cluster is used as
        it is and left running. ``None`` starts a ``LocalCluster`` on 127.0.0.1 (worker
        processes, one thread each, no dashboard) and closes it at the end.
    workers : int, optional
        Worker processes of the local cluster (default ``os.cpu_count()``, never more than
        there are files). Ignored with ``scheduler``.
    out_dir : path-like, optional
        Write updated copies under this folder (keeping sub-folders); ``None`` updates
        every file in place, each atomically.
    overwrite : bool
        Replace existing outputs in ``out_dir`` that were not made by this model.
    resume : bool
        Skip files whose output is already classified by this model (same SHA256).
    accept : sequence of str, optional
        Classes kept as accepted components (``idx_components``).
    min_prob : float or "argmax", optional
        Accept when P(accepted classes) >= this; ``"argmax"``: the most probable class.
        Both default to the model folder's ``thresholds.json``
        (:func:`calcomp_caiman.classify.acceptance_rule`).
    retries : int
        Extra runs of a file's task after an unexpected error in it. On the local cluster
        it is also the number of worker deaths a task survives (the scheduler's
        ``allowed-failures``); a remote scheduler applies its own setting.

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
        Wrong ``model``, ``scheduler``, ``workers``, ``retries`` or ``accept``.
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
    >>> for result in reprocess_dask(["results/"], model=CalcompModel.load(),
    ...                              scheduler="tcp://10.0.0.5:8786"):  # doctest: +SKIP
    ...     print(result.file, result.status)
    """
    _check_arguments(model, scheduler, workers, retries)
    accept, min_prob = acceptance_rule(model, accept, min_prob)
    files = find_result_files(paths)
    if not files:
        logger.info("no .hdf5 result files found")
        return

    try:
        import dask
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError as err:
        raise CalcompError(
            f"Dask is needed for --dask/--scheduler ({err}); install it with "
            f"pip install 'calcomp_caiman[dask]'."
        ) from err

    out = None if out_dir is None else Path(out_dir).resolve()
    options = {
        "resume": resume,
        "overwrite": overwrite,
        "accept": accept,
        "min_prob": min_prob,
    }
    tasks = [(file, target_path(relative, file, out), out is None) for file, relative in files]

    cluster = None
    client = None
    futures: dict = {}  # running task -> (file, target, in_place, the model future it uses)
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
        model_future = client.scatter(model, broadcast=True, hash=False)
        reruns = dict.fromkeys((file for file, _, _ in tasks), 0)

        def submit(file: Path, target: Path, in_place: bool):
            future = client.submit(
                _classify_task,
                file,
                target,
                in_place,
                model_future,
                options,
                pure=False,
                retries=int(retries),
            )
            futures[future] = (file, target, in_place, model_future)
            return future

        for task in tasks:
            submit(*task)
        logger.info("submitted %d files", len(tasks))

        pending = as_completed(list(futures), loop=client.loop)
        for future in pending:
            file, target, in_place, used_model = futures.pop(future)
            try:
                result = future.result()
            except Exception as err:
                result = _failure(file, target, err)
                logger.debug("task for %s failed", file, exc_info=True)
                if used_model.status != "finished" and reruns[file] < retries:
                    # every worker holding the model died (a one-worker cluster, say) and
                    # Dask cancelled the tasks that needed it: scatter it again, rerun them
                    try:
                        if model_future.status != "finished":
                            logger.warning("the model was lost with its workers; sending it again")
                            model_future = client.scatter(model, broadcast=True, hash=False)
                        reruns[file] += 1
                        pending.add(submit(file, target, in_place))
                        continue
                    except Exception as again:
                        result = _failure(file, target, again)
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
