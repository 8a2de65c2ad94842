"""One BLAS thread while small matrix products run; the caller's setting restored after.

Inference and head fitting multiply many small matrices. On one BLAS thread they run
several times faster than on a multi-threaded OpenBLAS, whose threads collapse when the
machine is loaded (measured: 28 x 32 products over 36,000 rows took 0.25 s on the
default threads of a loaded 2-core machine, 0.009 s on one).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController

__all__ = ["single_threaded_blas"]


class _SingleThreadedBlas:
    """One BLAS thread while any inference runs; the caller's setting restored after.

    Inference multiplies small matrices, in parallel batches: on one BLAS thread per
    batch it runs about twice as fast as with a multi-threaded BLAS. BLAS thread counts
    are process-wide (OpenBLAS has no per-thread setting) and a plain
    ``threadpool_limits`` per call leaks when calls overlap (the second saves the first's
    "1" as the original and restores it). So all ``predict`` calls share one limit,
    reference-counted under a lock: the first to enter saves the caller's setting and
    sets one thread, the last to leave restores what the first saved.

    Meanwhile other BLAS users in the process run single-threaded too, and a setting
    they change while an inference runs is overwritten by the restore. The BLAS
    libraries are looked up once, at the first call (libraries loaded later are left
    alone); after a fork, the child starts with a fresh lock and count.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._blas: list | None = None
        self._saved: list[int] = []
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        """A fork copies the lock as it was, possibly held by a thread that is gone."""
        self._lock = threading.Lock()
        self._users = 0

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                if self._blas is None:
                    self._blas = ThreadpoolController().select(user_api="blas").lib_controllers
                self._saved = [pool.num_threads for pool in self._blas]
                for pool in self._blas:
                    pool.set_num_threads(1)
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    for pool, threads in zip(self._blas, self._saved):
                        pool.set_num_threads(threads)


single_threaded_blas = _SingleThreadedBlas()
"""Context manager: ``with single_threaded_blas(): ...`` (re-entrant across threads)."""
