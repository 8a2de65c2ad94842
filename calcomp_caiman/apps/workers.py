"""Run each task of a batch in its own worker process: a death or a stall costs that task only.

:func:`calcomp_caiman.apps.batch.reprocess` runs files here when it has several workers or a
per-file time limit. Each task gets a fresh process (forked where the platform forks, so
the model is not copied), at most ``jobs`` at a time; its result comes back through a pipe.
A process that dies (killed for memory, ``os._exit``) is retried once, in a fresh process;
one that runs past the time limit is killed. Either way the caller's ``lost`` callback turns
the task into a result, and the other tasks go on.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

__all__ = ["DIED", "TIMED_OUT", "run_in_processes"]

T = TypeVar("T")
R = TypeVar("R")

DIED = "died"
"""``lost``'s reason for a task whose process died twice."""
TIMED_OUT = "timed out"
"""``lost``'s reason for a task whose process ran past ``timeout`` (it was killed)."""

_ATTEMPTS = 2
"""Processes a task may take down before it is given up (the first death may be another
task's fault: memory taken by the tasks running beside it)."""


def _child(work: Callable[[Any], Any], task: Any, conn: Connection) -> None:
    """The worker process: ``work(task)``, sent back as ``("result", value)``."""
    try:
        message = ("result", work(task))
    except KeyboardInterrupt:
        message = ("interrupted", None)
    except BaseException as err:  # work reports its own failures; anything else: say what
        message = ("raised", err)
    try:
        conn.send(message)
    except Exception as err:  # e.g. not picklable: the parent must still hear about it
        conn.send(("raised", RuntimeError(f"{type(err).__name__}: {err}")))
    finally:
        conn.close()


@dataclass
class _Running:
    task: Any
    attempt: int
    process: Any
    conn: Connection
    deadline: float

    def stop(self, grace: float = 0.0) -> None:
        """Wait up to ``grace`` seconds for the process to exit, then kill it."""
        self.process.join(grace)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def run_in_processes(
    work: Callable[[T], R],
    tasks: Sequence[T],
    *,
    jobs: int,
    timeout: float | None,
    lost: Callable[[T, str], R],
    cleanup: Callable[[T], None] | None = None,
) -> Iterator[R]:
    """Yield ``work(task)`` for every task, each computed in a worker process of its own.

    Parameters
    ----------
    work : callable
        ``work(task) -> result``, run in the worker; it should return its failures as
        results. It is pickled only where processes are spawned rather than forked.
    tasks : sequence
    jobs : int
        Worker processes at a time (at least 1).
    timeout : float, optional
        Seconds a task may run; its process is then killed. ``None``: no limit.
    lost : callable
        ``lost(task, reason) -> result`` for a task that gave no result: ``reason`` is
        :data:`DIED` (its process died twice) or :data:`TIMED_OUT`.
    cleanup : callable, optional
        ``cleanup(task)`` after its process died or was killed (e.g. remove temporary
        files it left).

    Yields
    ------
    result
        In completion order, one per task.

    Raises
    ------
    KeyboardInterrupt
        Raised in the parent (Ctrl-C) or in a worker; every worker is killed.
    """
    context = multiprocessing.get_context()
    pending = deque((task, 1) for task in tasks)
    running: list[_Running] = []
    jobs = max(1, int(jobs))
    try:
        while pending or running:
            while pending and len(running) < jobs:
                task, attempt = pending.popleft()
                running.append(_start(context, work, task, attempt, timeout))
            next_deadline = min(job.deadline for job in running)
            remaining = (
                None if math.isinf(next_deadline) else max(0.0, next_deadline - time.monotonic())
            )
            ready = set(wait([job.conn for job in running] + [job.process.sentinel for job in running], remaining))  # fmt: skip
            for job in list(running):
                outcome = _outcome(job, ready)
                if outcome is None:
                    continue
                running.remove(job)
                kind, value = outcome
                if kind == "result":
                    yield value
                    continue
                if kind == "interrupted":
                    raise KeyboardInterrupt
                if kind == "raised":
                    raise value
                if cleanup is not None:
                    cleanup(job.task)
                if kind == DIED and job.attempt < _ATTEMPTS:
                    logger.info("a worker process died; retrying its task in a fresh process")
                    pending.append((job.task, job.attempt + 1))
                else:
                    yield lost(job.task, kind)
    finally:
        for job in running:
            job.stop()


def _start(context, work, task, attempt: int, timeout: float | None) -> _Running:
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(work, task, writer), daemon=True)
    process.start()
    writer.close()  # the child holds its own end: EOF here when it dies
    deadline = math.inf if timeout is None else time.monotonic() + float(timeout)
    return _Running(task, attempt, process, reader, deadline)


def _outcome(job: _Running, ready: set) -> tuple[str, Any] | None:
    """``(kind, value)`` when ``job`` is over (its message, a death or a timeout), else None."""
    if job.conn in ready or job.process.sentinel in ready:
        try:
            kind, value = job.conn.recv()
        except (EOFError, OSError):  # it died without a word
            job.stop()
            logger.debug("the worker process of %s died (exit code %s)", job.task,
                         job.process.exitcode)  # fmt: skip
            return DIED, None
        job.stop(grace=10.0)  # it has sent its message and is exiting
        return kind, value
    if time.monotonic() >= job.deadline:
        job.stop()
        logger.debug("the worker process of %s ran past its time limit; killed", job.task)
        return TIMED_OUT, None
    return None
