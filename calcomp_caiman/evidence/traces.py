"""Traces of the components, read in row chunks (``C``, ``YrA``, ``S``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np

__all__ = ["TRACE_NAMES", "Traces"]

TRACE_NAMES = ("C", "YrA", "S")


class Traces:
    """Per-component time series, read in row chunks.

    Parameters
    ----------
    n : int
        Number of components (rows).
    frames : int
        Number of time points.
    read : callable
        ``read(start, stop)`` returns a dict with ``"C"`` and, when available, ``"YrA"``
        and ``"S"``: float arrays of shape ``(stop - start, frames)``.
    names : tuple of str
        The traces ``read`` returns (``C`` first).

    Examples
    --------
    >>> import numpy as np
    >>> traces = Traces.from_arrays(C=np.ones((3, 5)), YrA=np.zeros((3, 5)))
    >>> [(start, chunk["C"].shape) for start, chunk in traces.chunks(2)]
    [(0, (2, 5)), (2, (1, 5))]
    """

    def __init__(
        self,
        n: int,
        frames: int,
        read: Callable[[int, int], Mapping[str, np.ndarray]],
        names: tuple[str, ...] = ("C",),
    ):
        self.n = int(n)
        self.frames = int(frames)
        self.names = tuple(names)
        self._read = read

    @classmethod
    def from_arrays(cls, C, YrA=None, S=None) -> Traces:
        """Traces held in memory (``estimates.C``, ``estimates.YrA``, ``estimates.S``).

        Raises
        ------
        ValueError
            ``C`` is not 2-D, or ``YrA`` / ``S`` do not have ``C``'s shape.
        """
        arrays = {"C": np.asarray(C)}
        if arrays["C"].ndim != 2:
            raise ValueError(f"C must be 2-D (components x frames), got shape {arrays['C'].shape}.")
        for name, value in (("YrA", YrA), ("S", S)):
            if value is None:
                continue
            value = np.asarray(value)
            if value.shape != arrays["C"].shape:
                raise ValueError(
                    f"{name} has shape {value.shape} but C has {arrays['C'].shape}; they must "
                    f"come from the same fit."
                )
            arrays[name] = value
        n, frames = arrays["C"].shape

        def read(start: int, stop: int) -> dict[str, np.ndarray]:
            return {name: value[start:stop] for name, value in arrays.items()}

        return cls(n, frames, read, tuple(arrays))

    def chunks(self, rows: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Yield ``(start, {name: (rows, frames) float32 array})`` over all components."""
        rows = max(1, int(rows))
        for start in range(0, self.n, rows):
            stop = min(self.n, start + rows)
            part = self._read(start, stop)
            yield start, {name: np.asarray(part[name], dtype=np.float32) for name in part}

    def take(self, index) -> Traces:
        """The traces of the components ``index`` (read eagerly: meant for small subsets)."""
        index = np.asarray(index, dtype=np.int64)
        rows: dict[str, list] = {name: [np.zeros((0, self.frames))] for name in self.names}
        order = np.argsort(index)
        for i in index[order]:
            part = self._read(int(i), int(i) + 1)
            for name in self.names:
                rows[name].append(np.asarray(part[name], dtype=np.float64))
        picked = {name: np.concatenate(rows[name])[np.argsort(order)] for name in self.names}
        return Traces.from_arrays(**picked)
