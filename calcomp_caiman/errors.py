"""The exceptions this package raises on purpose: one class per kind of failure.

Each class is also a subclass of the builtin exception it stands for (``ValueError``,
``FileExistsError``, ...), so code written against the builtin keeps working, and callers
that must tell failures apart catch the class, never match the message text.
"""

from __future__ import annotations

__all__ = [
    "CalcompError",
    "FileBusyError",
    "GsigError",
    "InvalidFileError",
    "OutputExistsError",
    "OutputIsInputError",
    "PickleNotAllowedError",
]


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


class OutputExistsError(InvalidFileError):
    """An output exists and replacing it was not asked for (``overwrite=False``).

    ``path`` is the output. The message is ``"<path>: <problem>; <remedy>."``; ``remedy``
    says what to pass from Python, and the command line says it in its own words
    (``--overwrite``).
    """

    problem_text = "already exists"
    remedy = "pass overwrite=True to replace it, or choose another output"

    def __init__(self, path):
        super().__init__(path, f"{self.problem_text}; {self.remedy}.")


class OutputIsInputError(OutputExistsError):
    """The output named is the input itself, and replacing it was not asked for."""

    problem_text = "is the input itself"
    remedy = "pass no output to update it in place, or overwrite=True"


class PickleNotAllowedError(InvalidFileError):
    """Reading would unpickle Python objects, and that was not allowed (``allow_pickle``).

    Suite2p saves ``stat.npy`` and ``ops.npy`` as pickles; loading a pickle can run any code,
    so it is opt-in (``allow_pickle=True``; ``calcomp --allow-pickle``), as in NumPy.
    """

    problem_text = (
        "holds pickled Python objects (Suite2p's stat.npy and ops.npy), and loading a pickle "
        "can run any code"
    )
    remedy = "pass allow_pickle=True if you trust this folder"

    def __init__(self, path):
        super().__init__(path, f"{self.problem_text}; {self.remedy}.")
