"""The exceptions this package raises on purpose: one class per kind of failure."""

from __future__ import annotations

__all__ = ["CalcompError", "FileBusyError", "InvalidFileError"]


class CalcompError(Exception):
    """Base class of the errors this package raises on purpose."""


class InvalidFileError(CalcompError, ValueError):
    """A file cannot be read or updated; the message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class FileBusyError(CalcompError, RuntimeError):
    """Another calcomp process is writing the same file."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
