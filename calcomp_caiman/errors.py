"""The exceptions this package raises on purpose: one class per kind of failure.

Each class is also a subclass of the builtin exception it stands for (``ValueError``,
``FileExistsError``, ...), so code written against the builtin keeps working, and callers
that must tell failures apart catch the class, never match the message text.
"""

from __future__ import annotations

__all__ = ["CalcompError", "FileBusyError", "GsigError", "InvalidFileError"]


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


class GsigError(CalcompError, ValueError):
    """A ``gSig`` (typical neuron half-size, px) outside ``(0, MAX_GSIG]`` or not a number.

    Raised by :func:`calcomp_caiman.checks.check_gsig`, whether the value was given by the
    caller or stored in a file: the caller tells which (``--gsig`` or ``params/init/gSig``).
    """
