"""Refit in a background process while labelling goes on.

:class:`RefitJob` starts ``calcomp_caiman.refit.refit`` in a fresh ``spawn`` process (the
server's threads are never forked), hands it the model's weights and the labelled
components, and collects its progress and result through a queue, from a watcher thread.
The child re-reads each result file itself (evidence is read lazily from the files).
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import queue
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from calcomp_caiman.model.folder import CalcompModel

logger = logging.getLogger(__name__)

__all__ = ["RefitJob", "REFIT_FUNCTION"]

REFIT_FUNCTION = "calcomp_caiman.refit:refit"
"""``module:function`` the job runs: ``refit(model, evidences, labels, components, *,
seed, progress) -> (new_model, report)``."""


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


def _child(channel, function: str, model_parts: tuple, paths: list[str], labels, components,
           seed: int) -> None:  # fmt: skip
    """Runs in the spawned process: read the files, refit, send the result back."""
    try:
        from calcomp_caiman.io.caiman_h5 import read_evidence

        module, name = function.split(":")
        refit = getattr(importlib.import_module(module), name)
        model = CalcompModel(*model_parts)
        evidences = [read_evidence(path) for path in paths]
        last = [0.0]

        def progress(*args, **kwargs) -> None:
            fraction = _fraction(args, kwargs)
            now = time.monotonic()
            if fraction is not None and (now - last[0] > 0.2 or fraction >= 1.0):
                last[0] = now
                channel.put(("progress", fraction))

        start = time.perf_counter()
        new, report = refit(model, evidences, labels, components, seed=seed, progress=progress)
        report = dict(_plain(report), seconds=round(time.perf_counter() - start, 2))
        channel.put(("done", (new.weights, new.config, new.thresholds, new.sha256), report))
    except BaseException as err:  # reported to the page; the server keeps running
        channel.put(("failed", f"{type(err).__name__}: {err}"))


class RefitJob:
    """One refit running in a background process.

    Parameters
    ----------
    model : CalcompModel
        The model to refit.
    paths : sequence of path-like
        The result files, in the order of ``labels`` and ``components``.
    labels : sequence of (n_i,) int ndarray
        Class codes 1-4, or 0 for ``non_neuron``, of the labelled components of each file.
    components : sequence of (n_i,) int ndarray
        Their indices (columns of ``estimates.A``).
    seed : int
    function : str
        ``module:function`` to run (:data:`REFIT_FUNCTION`).
    """

    def __init__(
        self,
        model: CalcompModel,
        paths: Sequence,
        labels: Sequence[np.ndarray],
        components: Sequence[np.ndarray],
        *,
        seed: int = 0,
        function: str = REFIT_FUNCTION,
    ):
        self._lock = threading.Lock()
        self.state = "starting"
        self.progress = 0.0
        self.error = ""
        self.report: dict | None = None
        self.model: CalcompModel | None = None
        self.started = time.time()
        self.labels = int(sum(len(x) for x in labels))
        context = multiprocessing.get_context("spawn")
        self._channel = context.Queue()
        args = (
            self._channel,
            function,
            (model.weights, model.config, model.thresholds, model.sha256),
            [str(Path(p)) for p in paths],
            [np.asarray(x, np.int64) for x in labels],
            [np.asarray(x, np.int64) for x in components],
            int(seed),
        )
        self._process = context.Process(target=_child, args=args, daemon=True, name="calcomp-refit")
        self._process.start()
        self._watcher = threading.Thread(
            target=self._watch, daemon=True, name="calcomp-refit-watch"
        )
        self._watcher.start()

    def _watch(self) -> None:
        try:
            self._collect()
        except Exception as err:  # a broken channel: the page must not wait forever
            with self._lock:
                if self.state in ("starting", "running"):
                    self.state, self.error = "failed", f"lost the refit process ({err})"
            self.cancel()

    def _collect(self) -> None:
        while True:
            try:
                message = self._channel.get(timeout=0.5)
            except queue.Empty:
                if not self._process.is_alive():
                    with self._lock:
                        if self.state in ("starting", "running"):
                            self.state = "failed"
                            self.error = (
                                f"the refit process exited with code {self._process.exitcode}"
                            )
                    return
                continue
            with self._lock:
                if message[0] == "progress":
                    self.state, self.progress = "running", float(message[1])
                elif message[0] == "done":
                    self.model = CalcompModel(*message[1])
                    self.report = message[2]
                    self.state, self.progress = "done", 1.0
                else:
                    self.state, self.error = "failed", str(message[1])
            if message[0] != "progress":
                self._process.join(timeout=10)
                return

    def status(self) -> dict:
        """``state`` (starting, running, done, failed), ``progress`` 0-1, ``error``, ``report``."""
        with self._lock:
            return {
                "state": self.state,
                "progress": round(self.progress, 3),
                "error": self.error,
                "report": self.report,
                "labels": self.labels,
                "seconds": round(time.time() - self.started, 1),
            }

    def cancel(self) -> None:
        """Stop the process (its result is lost)."""
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=5)
