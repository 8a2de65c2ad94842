"""Refit in the background while labelling goes on.

:class:`RefitJob` runs one refit in a daemon thread of the server and collects its
progress and result; the page polls :meth:`RefitJob.status`. A refit works on what the
head reads, which the session computed once (:func:`calcomp_caiman.refit.refit_inputs`):
it reads no file and runs no network, so it takes a fraction of a second and needs no
process of its own (starting one, and importing SciPy in it, took 2-4 s on a loaded
2-core machine: most of the time a label may take to show new probabilities).
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from calcomp_caiman.model.folder import CalcompModel

logger = logging.getLogger(__name__)

__all__ = ["RefitJob", "REFIT_FUNCTION", "load_function"]

REFIT_FUNCTION = "calcomp_caiman.refit:refit_inputs"
"""``module:function`` a session refits with: ``refit_inputs(model, logits, features,
labels, *, groups, seed, progress, labels_file) -> (new_model, report)``, and for a model v3
also ``profiles`` and ``presence`` (:class:`~calcomp_caiman.refit.LabelledInputs`)."""


def load_function(spec: str) -> Callable:
    """The function a ``module:function`` string names.

    Raises
    ------
    ValueError
        ``spec`` is not ``module:function`` or names nothing importable.
    """
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"refit function {spec!r}: {err}; give it as module:function.") from None


def _fraction(args: tuple, kwargs: dict) -> float | None:
    """Progress as a fraction from whatever the callback receives: a fraction, (done, total)."""
    values = [v for v in (*args, *kwargs.values()) if isinstance(v, (int, float, np.number))]
    if len(values) >= 2 and float(values[1]) > 0:
        return float(np.clip(float(values[0]) / float(values[1]), 0.0, 1.0))
    if len(values) == 1:
        value = float(values[0])
        return float(np.clip(value if value <= 1.0 else value / 100.0, 0.0, 1.0))
    return None


def _plain(value):
    """JSON-friendly copy of a report (arrays to lists, numpy scalars to numbers)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 1000 else f"array{value.shape}"
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class RefitJob:
    """One refit running in a background thread.

    Parameters
    ----------
    work : callable
        ``work(progress) -> (model, report)``; ``progress(fraction, message)`` may be called.
    labels : int
        How many labels it refits on (shown while it runs).
    on_finish : callable, optional
        ``on_finish(job)``, called in the job's thread when it is done or failed (not when
        cancelled), before :meth:`status` says so.
    """

    def __init__(
        self,
        work: Callable[[Callable], tuple[CalcompModel, dict]],
        *,
        labels: int,
        on_finish: Callable[[RefitJob], None] | None = None,
    ):
        self._lock = threading.Lock()
        self.state = "starting"
        self.progress = 0.0
        self.error = ""
        self.report: dict | None = None
        self.model: CalcompModel | None = None
        self.started = time.time()
        self.labels = int(labels)
        self._cancelled = False
        self._on_finish = on_finish
        self._thread = threading.Thread(
            target=self._run, args=(work,), daemon=True, name="calcomp-refit"
        )
        self._thread.start()

    def _progress(self, *args, **kwargs) -> None:
        fraction = _fraction(args, kwargs)
        with self._lock:
            self.state = "running"
            if fraction is not None:
                self.progress = fraction

    def _run(self, work) -> None:
        try:
            start = time.perf_counter()
            model, report = work(self._progress)
            outcome = ("done", model, dict(_plain(report), seconds=round(time.perf_counter() - start, 2)), "")  # fmt: skip
        except Exception as err:  # reported to the page; the server keeps running
            logger.warning("refit failed: %s: %s", type(err).__name__, err)
            outcome = ("failed", None, None, f"{type(err).__name__}: {err}")
        if self._cancelled:
            return
        state, self.model, self.report, self.error = outcome
        if self._on_finish is not None:
            try:
                self._on_finish(self)
            except Exception as err:  # adopting failed: the page says so
                logger.error("refit result could not be used", exc_info=err)
                state, self.error = "failed", f"{type(err).__name__}: {err}"
        with self._lock:
            self.state = state
            self.progress = 1.0 if state == "done" else self.progress

    @property
    def running(self) -> bool:
        """Whether it has neither finished nor failed nor been cancelled."""
        return self.state in ("starting", "running") and not self._cancelled

    def status(self) -> dict:
        """``state`` (starting, running, done, failed), ``progress`` 0-1, ``error``, ``report``,
        ``labels``, ``seconds`` since it started."""
        with self._lock:
            return {
                "state": self.state,
                "progress": round(self.progress, 3),
                "error": self.error,
                "report": self.report,
                "labels": self.labels,
                "seconds": round(time.time() - self.started, 1),
            }

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until it has finished; whether it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def cancel(self) -> None:
        """Forget its result (the thread finishes its few remaining steps unseen)."""
        self._cancelled = True
