"""Classify one result file of any format and write the answer into it (``calcomp classify``).

:func:`classify_file` reads the evidence with the format's reader
(:mod:`calcomp_caiman.io.registry`), classifies it and writes the record with the format's
writer; :class:`FileResult` says what happened, and is one row of ``calcomp reprocess``'s
summary (:mod:`calcomp_caiman.apps.batch`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from calcomp_caiman.checks import check_gsig
from calcomp_caiman.classify import acceptance_rule, classify
from calcomp_caiman.errors import GsigError, InvalidFileError, OutputIsInputError
from calcomp_caiman.evidence.modality import check_modality, modality_used
from calcomp_caiman.io.registry import get_format
from calcomp_caiman.io.sidecar import write_component_table
from calcomp_caiman.model.defaults import DEFAULT, resolve
from calcomp_caiman.model.folder import CalcompModel, bundled_models
from calcomp_caiman.model.ood import find_ood_reference
from calcomp_caiman.model.reliability import find_reliability
from calcomp_caiman.schema import CLASSES

__all__ = [
    "SUMMARY_COLUMNS",
    "FileResult",
    "check_writable",
    "classify_file",
    "load_models",
    "same_file",
    "write_component_csv",
]

SUMMARY_COLUMNS = (
    ["file", "format", "modality", "output", "status", "components"]
    + list(CLASSES)
    + ["accepted", "caiman_accepted", "ood_score", "ood", "expected_error", "unreliable"]
    + ["seconds", "error"]
)
"""Columns of the summary CSV (:func:`write_summary_csv`): see :class:`FileResult`."""


@dataclass(frozen=True)
class FileResult:
    """What happened to one result file (one row of the summary CSV).

    Attributes
    ----------
    file, output : str
        The input and where its classification was written (absolute paths in a batch).
    status : str
        ``"classified"``, ``"skipped"`` (already classified by the same model) or
        ``"failed"`` (``error`` says why; the file is unchanged).
    components, counts, accepted
        Components, components per predicted class, and how many the acceptance rule
        accepted (``idx_components``).
    seconds : float
    error : str
        One line naming the file and the problem (failed only).
    format : str
        The reader used (``caiman``, ``nwb``, ``suite2p``, ``masks``).
    modality, model : str
        What the components were classified as (``"1p"``, ``"2p"``:
        :mod:`calcomp_caiman.evidence.modality`) and the model's name (classified only).
    ood_score, ood, ood_threshold
        The out-of-distribution score of the file, whether it is above the model's
        threshold, and the threshold (:mod:`calcomp_caiman.model.ood`).
    expected_error, unreliable, unreliable_above
        The share of misclassified components the model's reliability map expects, whether
        it is above the map's warning level, and that level
        (:mod:`calcomp_caiman.model.reliability`); None for a model without a map.
    caiman_accepted : int, optional
        How many components CaImAn's own selection kept (``idx_components`` stored in the
        input), for comparison; None when the input holds none.
    error_type : str
        The kind of failure, to tell failures apart without reading ``error``: the
        exception's class (``OutputExistsError``, ``PickleNotAllowedError``,
        ``InvalidFileError``, ...), ``TimeoutError`` or ``WorkerDied``.
    """

    file: str
    output: str
    status: str
    components: int = 0
    counts: dict = field(default_factory=dict)
    accepted: int = 0
    seconds: float = 0.0
    error: str = ""
    format: str = ""
    ood_score: float | None = None
    ood: bool | None = None
    ood_threshold: float | None = None
    expected_error: float | None = None
    unreliable: bool | None = None
    unreliable_above: float | None = None
    caiman_accepted: int | None = None
    error_type: str = ""
    modality: str = ""
    model: str = ""

    def row(self) -> dict:
        """The summary-CSV row (:data:`SUMMARY_COLUMNS`)."""
        row = {k: v for k, v in asdict(self).items() if k in SUMMARY_COLUMNS}
        row.update({name: self.counts.get(name, "") for name in CLASSES})
        row["seconds"] = f"{self.seconds:.2f}"
        row["ood_score"] = "" if self.ood_score is None else f"{self.ood_score:.3f}"
        row["ood"] = "" if self.ood is None else ("yes" if self.ood else "no")
        row["expected_error"] = "" if self.expected_error is None else f"{self.expected_error:.3f}"
        row["unreliable"] = "" if self.unreliable is None else ("yes" if self.unreliable else "no")
        row["caiman_accepted"] = "" if self.caiman_accepted is None else self.caiman_accepted
        return row

    @property
    def disagrees_with_caiman(self) -> bool:
        """Whether calcomp and CaImAn's own selection differ a lot: one accepts less than
        half as many components as the other (and at least 5 fewer)."""
        if self.caiman_accepted is None or self.status != "classified":
            return False
        low, high = sorted((self.accepted, self.caiman_accepted))
        return low < high / 2 and high - low >= 5


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` name the same existing file (through links)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_writable(path: str | os.PathLike) -> Path:
    """``path`` as a file that can be written: its folder exists and is writable.

    Call it before changing anything when a run ends by writing ``path`` (a table beside
    an in-place update), so that a bad path fails first.

    Raises
    ------
    InvalidFileError
        ``path`` is a folder, or its folder is missing or not writable.
    """
    path = Path(path)
    folder = path.absolute().parent
    if path.is_dir():
        raise InvalidFileError(path, "is a folder; give a file name.")
    if not folder.is_dir():
        raise InvalidFileError(path, f"cannot be written: no folder {folder}.")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InvalidFileError(path, "cannot be written (permission denied); write elsewhere.")
    return path


def load_models(
    model: str | os.PathLike = DEFAULT, modality: str = "auto"
) -> tuple[CalcompModel, CalcompModel | None]:
    """The models a run classifies with: one for every file, and one for one-photon files.

    Parameters
    ----------
    model : str or path-like
        ``"default"``, a bundled name or a model folder (``--model``).
    modality : {"auto", "1p", "2p"}
        ``--modality``.

    Returns
    -------
    model : CalcompModel
        The model named; for ``"default"`` the default of ``modality`` (the two-photon one
        for ``"auto"``: :meth:`CalcompModel.load`).
    one_photon_model : CalcompModel or None
        With ``"default"`` and ``"auto"``, the default model of one-photon files when it is
        another model (the bundled one-photon model); else None: ``model`` classifies
        every file.

    Raises
    ------
    ValueError
        ``modality`` is not one of ``auto``, ``1p``, ``2p``.
    FileNotFoundError, CalcompError
        As :meth:`CalcompModel.load`.
    """
    check_modality(modality)
    main = CalcompModel.load(model, modality=None if modality == "auto" else modality)
    if modality != "auto" or os.fspath(model) != DEFAULT:
        return main, None
    known = bundled_models()
    if resolve(DEFAULT, known, modality="1p") == resolve(DEFAULT, known):
        return main, None
    return main, CalcompModel.load(DEFAULT, modality="1p")


def classify_file(
    path: str | os.PathLike,
    *,
    model: CalcompModel,
    out_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    accept: Sequence[str] | None = None,
    min_prob: float | str | None = None,
    gSig=None,
    batch_size: int = 128,
    format: str = "auto",
    plane: str | None = None,
    replace_iscell: bool = False,
    allow_pickle: bool = False,
    modality: str = "auto",
    one_photon_model: CalcompModel | None = None,
) -> tuple[FileResult, dict]:
    """Classify the components of one CaImAn result file and write the answer into it.

    Other pipelines' outputs (NWB, a Suite2p plane folder, mask files) go through the same
    engine and record with their own reader and writer (:mod:`calcomp_caiman.io.registry`).

    Parameters
    ----------
    path : path-like
        A CaImAn ``.hdf5`` result file (``cnm.save``).
    model : CalcompModel
        Classifies the file (two-photon files only, when ``one_photon_model`` is given).
    out_path : path-like, optional
        Write an updated copy here; ``None`` updates ``path`` in place (atomically).
    overwrite : bool
        Allow replacing an existing ``out_path`` (also ``path`` itself given as
        ``out_path``).
    accept, min_prob
        Acceptance rule (:func:`calcomp_caiman.classify.acceptance_rule`); default: the
        model folder's ``thresholds.json``.
    gSig : float, optional
        Overrides the ``params/init/gSig`` stored in the file.
    batch_size : int
    format : str
        ``"auto"`` (from the path), ``"caiman"``, ``"nwb"``, ``"suite2p"`` or ``"masks"``.
    plane : str, optional
        NWB only: the ``PlaneSegmentation`` to classify (needed when there are several).
    replace_iscell : bool
        Suite2p only: also write ``iscell.npy`` (Suite2p's own kept as ``iscell_suite2p.npy``).
    allow_pickle : bool
        Suite2p only: allow loading its pickled ``stat.npy``/``ops.npy`` (loading a pickle
        can run any code: only for folders you trust).
    modality : {"auto", "1p", "2p"}
        One-photon (CNMF-E) or two-photon data; ``"auto"``: what the file's CaImAn params
        say, else two-photon (:mod:`calcomp_caiman.evidence.modality`). Recorded with the
        classification; a model trained for the other modality warns (once, in the log).
    one_photon_model : CalcompModel, optional
        Classifies the file instead of ``model`` when it is one-photon
        (:func:`load_models`).

    Returns
    -------
    result : FileResult
    fields : dict
        The arrays written (:func:`calcomp_caiman.classify.classification_fields`).

    Raises
    ------
    InvalidFileError, FileBusyError, FileNotFoundError
        The file cannot be read or written, or its ``params/init/gSig`` (or ``gSig``)
        is outside ``(0, MAX_GSIG]`` (:func:`calcomp_caiman.checks.check_gsig`); it is
        left unchanged.
    OutputExistsError
        (an ``InvalidFileError``) ``out_path`` exists, and ``overwrite`` is False;
        :class:`~calcomp_caiman.errors.OutputIsInputError` when it is ``path`` itself.
    PickleNotAllowedError
        (an ``InvalidFileError``) A Suite2p folder and ``allow_pickle`` is False.
    """
    start = time.perf_counter()
    acceptance_rule(model, accept, min_prob)  # a bad rule fails before the file is read
    check_modality(modality)
    try:
        gsig = check_gsig(gSig)
    except GsigError as err:
        raise InvalidFileError(path, f"--gsig: {err}") from None
    if out_path is not None and not overwrite and same_file(path, out_path):
        raise OutputIsInputError(out_path)
    kind = get_format(format, path)
    given = {"plane": plane, "allow_pickle": allow_pickle}
    read_options = {name: given[name] for name in kind.read_options if name in given}
    write_options = {name: given[name] for name in kind.write_options if name in given}
    if replace_iscell and "replace_iscell" in kind.write_options:
        write_options["replace_iscell"] = True
    try:
        evidence = kind.read_evidence(path, **read_options)
    except GsigError as err:  # stored gSig out of range (files hold anything)
        raise InvalidFileError(path, f"params/init/gSig: {err}") from None
    if gsig is not None:
        evidence = dataclasses.replace(evidence, gSig=gsig)
    used = modality_used(modality, evidence.modality)
    if used == "1p" and one_photon_model is not None:
        model = one_photon_model
    record = classify(
        evidence, model, accept=accept, min_prob=min_prob, modality=used, batch_size=batch_size
    )
    written = kind.write_classification(
        path, record.as_result(), out_path=out_path, overwrite=overwrite, **write_options
    )
    fields = record.fields
    reference = find_ood_reference(model) if record.ood_score is not None else None
    reliability = find_reliability(model) if record.expected_error is not None else None
    result = FileResult(
        file=str(path),
        output=str(written),
        status="classified",
        components=record.n,
        counts=record.counts(),
        accepted=len(fields["idx_components"]),
        seconds=time.perf_counter() - start,
        format=kind.name,
        ood_score=record.ood_score,
        ood=record.ood,
        ood_threshold=None if reference is None else reference.threshold,
        expected_error=record.expected_error,
        unreliable=record.unreliable,
        unreliable_above=None if reliability is None else reliability.warning_level,
        caiman_accepted=(
            None if evidence.caiman_accepted is None else int(evidence.caiman_accepted.sum())
        ),
        modality=used,
        model=model.name,
    )
    return result, fields


def write_component_csv(fields: dict, path: str | os.PathLike) -> Path:
    """Write one row per component: index, label, probabilities, accepted, flags.

    The table of :func:`calcomp_caiman.io.sidecar.write_component_table`, written atomically.

    Raises
    ------
    InvalidFileError
        ``path`` cannot be written (it is left as it was).
    """
    return Path(write_component_table(path, fields))
