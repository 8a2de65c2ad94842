"""A curation session: result files, their classification, the labels, refit and apply.

:class:`CurationSession` holds everything the page shows and changes; the web app
(:mod:`calcomp_caiman.apps.curate.app`) is a thin layer over it, and a notebook can use it
directly. Nothing is global: two sessions in one process are independent.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calcomp_caiman.apps.curate.cards import FileGeometry, file_geometry, render_card
from calcomp_caiman.apps.curate.jobs import REFIT_FUNCTION, RefitJob, load_function
from calcomp_caiman.apps.curate.order import contradicts, label_order, label_points, uncertainty
from calcomp_caiman.apps.curate.store import LabelStore
from calcomp_caiman.apps.curate.threshold import fit_min_prob
from calcomp_caiman.classify import classify
from calcomp_caiman.errors import CalcompError, InvalidFileError
from calcomp_caiman.evidence import Evidence
from calcomp_caiman.evidence.footprints import flags_of_checked
from calcomp_caiman.io.caiman_h5 import read_evidence
from calcomp_caiman.model.defaults import resolve
from calcomp_caiman.model.folder import CalcompModel, bundled_models
from calcomp_caiman.model.ood import advice, find_ood_reference, save_ood_reference
from calcomp_caiman.model.reliability import find_reliability
from calcomp_caiman.refit import LabelledInputs, changes, concatenate_inputs, labelled_inputs
from calcomp_caiman.schema import CLASSES, FLAG_EMPTY, Classification, class_codes

logger = logging.getLogger(__name__)

__all__ = ["CurationSession", "uncertainty", "contradicts", "label_order", "label_points"]


AUTO_REFIT = 5
"""The page refits by itself after this many new labels (0: only when asked)."""

DEBOUNCE = 1.0
"""Seconds without a new label before an automatic refit starts (at most twice
:data:`AUTO_REFIT` labels are waited for)."""


@dataclass(eq=False)
class _File:
    path: Path
    evidence: Evidence
    probs: np.ndarray
    ood_score: float = float("nan")
    ood: bool = False
    expected_error: float = float("nan")
    unreliable: bool = False
    geometry: FileGeometry | None = field(default=None, repr=False)
    inputs: LabelledInputs | None = field(default=None, repr=False)  # every component's
    empty: np.ndarray | None = field(default=None, repr=False)  # footprints classified as noise


def _file(path: Path, evidence: Evidence, record: Classification) -> _File:
    """A file of the session as :func:`~calcomp_caiman.classify.classify` saw it: its
    probabilities and the file's warnings (out of distribution, expected error)."""
    f = _File(path, evidence, record.probs)
    if record.ood_score is not None:
        f.ood_score, f.ood = float(record.ood_score), bool(record.ood)
    if record.expected_error is not None:
        f.expected_error, f.unreliable = float(record.expected_error), bool(record.unreliable)
    if f.unreliable or (f.ood and record.expected_error is None):
        logger.warning("%s: the classes may be unreliable here (%s)", path,
                       f"expected error {f.expected_error:.2f}" if f.unreliable
                       else f"out of distribution, score {f.ood_score:.3f}")  # fmt: skip
    return f


class CurationSession:
    """Result files being curated with one model and one labels CSV.

    Parameters
    ----------
    files : sequence of path-like
        CaImAn result files (``cnm.save``).
    labels : path-like, optional
        The labels CSV (``calcomp finetune --labels`` format). Default ``curate_labels.csv``
        beside the first file.
    model : str or path-like
        A bundled model name or a model folder; ``"default"``: the lab's default model
        (:mod:`calcomp_caiman.model.defaults`).
    model_out : path-like, optional
        Folder "Apply" saves the model in. Default ``calcomp_curated_model`` beside the
        labels CSV.
    refit_function : str
        ``module:function`` a refit runs (:data:`calcomp_caiman.apps.curate.jobs.REFIT_FUNCTION`).
    auto_refit : int
        Refit in the background after this many new labels (:data:`AUTO_REFIT`; 0: only
        when :meth:`start_refit` is called), once no label came for ``debounce`` seconds.
    debounce : float
        :data:`DEBOUNCE`.

    Raises
    ------
    FileNotFoundError
        A file does not exist.
    InvalidFileError
        A file is not a CaImAn result; the labels CSV is malformed, names none of the
        files being curated, or holds a component index a file does not have.
    """

    def __init__(
        self,
        files,
        *,
        labels: str | os.PathLike | None = None,
        model: str | os.PathLike = "default",
        model_out: str | os.PathLike | None = None,
        refit_function: str = REFIT_FUNCTION,
        auto_refit: int = AUTO_REFIT,
        debounce: float = DEBOUNCE,
    ):
        paths = [Path(f).resolve() for f in files]
        if not paths:
            raise ValueError("give at least one CaImAn result file to curate.")
        if len(set(paths)) != len(paths):
            raise ValueError("a file is given twice; give each result file once.")
        for path in paths:
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such file")
        source = resolve(model, bundled_models())  # "default": the lab's default model
        self.model = CalcompModel.load(source)
        self.model_source = str(source)
        folder = Path(source) if Path(source).is_dir() else None
        self._ood_reference = find_ood_reference(self.model, folder)
        self.labels_path = Path(labels) if labels else paths[0].parent / "curate_labels.csv"
        self.store = LabelStore(self.labels_path)
        self.model_out = Path(model_out) if model_out else self.labels_path.parent / "calcomp_curated_model"  # fmt: skip
        self.refit_function = refit_function
        self.base_model = self.model  # every refit starts from it, with all labels so far
        self.auto_refit = max(0, int(auto_refit))
        self.debounce = float(debounce)
        self._lock = threading.RLock()
        self.files: list[_File] = []
        for path in paths:
            evidence = read_evidence(path)
            self.files.append(_file(path, evidence, classify(evidence, self.model)))
        self._check_labels()
        if self.can_refit:  # what the head reads, once: refits reuse it
            for f in self.files:
                f.inputs = labelled_inputs(self.model, f.evidence, np.arange(f.evidence.n))
                f.empty = (flags_of_checked(f.evidence.A) & FLAG_EMPTY) > 0
        self._reliability = find_reliability(self.model)
        self.version = 0  # incremented whenever the probabilities change
        self.job: RefitJob | None = None
        self.refit_report: dict | None = None
        self.threshold: dict | None = None
        self.refitted = False
        self._new_labels = 0  # labels set since the last refit started
        self._timer: threading.Timer | None = None
        self._closed = False

    @property
    def can_refit(self) -> bool:
        """Whether the model can be refitted here (a model with a fusion head)."""
        return self.base_model.uses_evidence

    # ------------------------------------------------------------------ checks and OOD

    def _check_labels(self) -> None:
        labels = self.store.labels()
        if not labels:
            return
        ours = {str(f.path): f for f in self.files}
        mine = [key for key in labels if key[0] in ours]
        if not mine:
            others = sorted({Path(key[0]).name for key in labels})
            raise InvalidFileError(
                self.store.path,
                f"labels files {', '.join(others[:3])}{' ...' if len(others) > 3 else ''}, none "
                f"of the files being curated; pass those files, or another --labels CSV.",
            )
        for file, component in mine:
            n = ours[file].evidence.n
            if not 0 <= component < n:
                raise InvalidFileError(
                    self.store.path,
                    f"labels component {component} of {file}, which has {n} components "
                    f"(0..{n - 1}); the CSV belongs to another version of that file.",
                )

    # ------------------------------------------------------------------ reading

    def state(self) -> dict:
        """Files (with OOD scores and advice), model, labels CSV, refit status."""
        labels = self.store.labels()
        reference = self._ood_reference
        files = []
        for i, f in enumerate(self.files):
            mine = sum(1 for key in labels if key[0] == str(f.path))
            files.append({
                "index": i,
                "name": f.path.name,
                "path": str(f.path),
                "components": f.evidence.n,
                "labelled": mine,
                "ood_score": None if not np.isfinite(f.ood_score) else round(f.ood_score, 4),
                "ood": f.ood,
                "expected_error": None if not np.isfinite(f.expected_error) else round(f.expected_error, 4),
                "unreliable": f.unreliable,
                "advice": advice(f.evidence.n),
            })  # fmt: skip
        return {
            "files": files,
            "classes": list(CLASSES),
            "model": self.model.name,
            "model_source": self.model_source,
            "model_out": str(self.model_out),
            "labels_path": str(self.store.path),
            "ood_threshold": None if reference is None else reference.threshold,
            "unreliable_above": None
            if self._reliability is None
            else self._reliability.warning_level,
            "version": self.version,
            "refit": self.refit_status(),
            "threshold": self.threshold,
            "refitted": self.refitted,
            "can_refit": self.can_refit,
            "auto_refit": self.auto_refit if self.can_refit else 0,
        }

    def components(
        self, *, predicted: str | None = None, file: int | None = None, disagreements: bool = False
    ) -> list[dict]:
        """Every component in the page's order (:meth:`order`), with its probabilities and label.

        Parameters
        ----------
        predicted : str, optional
            Keep only components whose most probable class is this one.
        file : int, optional
            Keep only this file (index in :attr:`files`).
        disagreements : bool
            Keep only labelled components whose label contradicts the prediction.
        """
        if predicted is not None and predicted not in CLASSES:
            raise ValueError(f"predicted must be one of {CLASSES}, got {predicted!r}.")
        labels = self.store.labels()
        items = []
        with self._lock:
            scores = [uncertainty(f.probs) for f in self.files]
            for i, k in self.order(labels):
                f = self.files[i]
                if file is not None and i != file:
                    continue
                code = int(f.probs[k].argmax()) + 1
                if predicted is not None and CLASSES[code - 1] != predicted:
                    continue
                label = labels.get((str(f.path), k))
                if disagreements and (label is None or not contradicts(label, code)):
                    continue
                items.append({
                    "file": i,
                    "component": k,
                    "predicted": CLASSES[code - 1],
                    "probs": [round(float(p), 4) for p in f.probs[k]],
                    "uncertainty": round(float(scores[i][k]), 4),
                    "label": label,
                })  # fmt: skip
        return items

    def order(self, labels: dict | None = None) -> list[tuple[int, int]]:
        """Every ``(file, component)`` in the order the page shows them (:func:`label_order`:
        uncertain and diverse across files and classes first, labelled ones last)."""
        labels = self.store.labels() if labels is None else labels
        with self._lock:
            done = []
            for f in self.files:
                mask = np.zeros(f.evidence.n, bool)
                mine = [k for (path, k) in labels if path == str(f.path) and 0 <= k < len(mask)]
                mask[mine] = True
                done.append(mask)
            points = None
            if all(f.inputs is not None for f in self.files):
                points = [label_points(f.probs, f.inputs.features) for f in self.files]
            return label_order([f.probs for f in self.files], points, done)

    def card(self, file: int, component: int) -> dict:
        """Drawing data of one component (:func:`~calcomp_caiman.apps.curate.cards.render_card`)."""
        f = self._file(file)
        if not 0 <= component < f.evidence.n:
            raise ValueError(f"{f.path.name} has components 0..{f.evidence.n - 1}, not {component}.")  # fmt: skip
        if f.geometry is None:
            f.geometry = file_geometry(f.evidence)
        return render_card(f.geometry, f.evidence, component)

    def _file(self, index: int) -> _File:
        if not 0 <= int(index) < len(self.files):
            raise ValueError(f"file index must be 0..{len(self.files) - 1}, got {index}.")
        return self.files[int(index)]

    # ------------------------------------------------------------------ labelling

    def set_label(self, file: int, component: int, label: str | None) -> str | None:
        """Label a component (None removes the label); saved at once. Returns the previous."""
        f = self._file(file)
        if not 0 <= int(component) < f.evidence.n:
            raise ValueError(f"{f.path.name} has components 0..{f.evidence.n - 1}, not {component}.")  # fmt: skip
        previous = self.store.set(f.path, int(component), label)
        if previous != label:
            self._label_changed()
        return previous

    def _labelled(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        labels = self.store.labels()
        codes, components = [], []
        for f in self.files:
            mine = sorted((k, name) for (path, k), name in labels.items() if path == str(f.path))
            components.append(np.array([k for k, _ in mine], np.int64))
            codes.append(class_codes([name for _, name in mine]) if mine else np.zeros(0, np.int64))
        return codes, components

    # ------------------------------------------------------------------ refit and apply

    def _label_changed(self) -> None:
        """Count a new label; after :attr:`auto_refit` of them, refit once labelling pauses."""
        with self._lock:
            self._new_labels += 1
            if not self.auto_refit or not self.can_refit or self._closed:
                return
            if self._new_labels < self.auto_refit:
                return
            if self._timer is not None:
                self._timer.cancel()
            wait = 0.0 if self._new_labels >= 2 * self.auto_refit else self.debounce
            self._timer = threading.Timer(wait, self._auto_refit)
            self._timer.daemon = True
            self._timer.start()

    def _auto_refit(self) -> None:
        with self._lock:
            self._timer = None
            if self._closed or (self.job is not None and self.job.running):
                return  # the running job starts the next one when it finishes
            try:
                self.start_refit()
            except (CalcompError, ValueError) as err:
                logger.info("automatic refit not started: %s", err)

    def start_refit(self, *, seed: int = 0) -> dict:
        """Refit the model loaded on every label so far, in the background.

        The refit starts from the model the session was opened with (never from an
        earlier refit, which these labels made already) and reuses each component's
        head inputs (:func:`~calcomp_caiman.refit.refit_inputs`); when
        it finishes, :meth:`refit_status` says what it did and, when it was applied,
        every file is re-scored.
        """
        with self._lock:
            if self.job is not None and self.job.running:
                raise CalcompError("a refit is running already; wait for it to finish.")
            codes, components = self._labelled()
            total = sum(len(c) for c in codes)
            if total == 0:
                raise CalcompError("label some components before refitting.")
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._new_labels = 0
            function = load_function(self.refit_function)
            if self.can_refit:
                x = concatenate_inputs([f.inputs.take(c) for f, c in zip(self.files, components)])
            else:  # the refit says why it cannot
                x = LabelledInputs(np.zeros((total, len(CLASSES))), np.zeros((total, 0)))
            extra = {} if x.profiles is None else {"profiles": x.profiles, "presence": x.presence}
            groups = np.concatenate([np.full(len(c), i) for i, c in enumerate(codes)])
            base, labels_file = self.base_model, self.store.path

            def work(progress):
                return function(base, x.logits, x.features, np.concatenate(codes), groups=groups,
                                seed=seed, progress=progress, labels_file=labels_file, **extra)  # fmt: skip

            self.job = RefitJob(work, labels=total, on_finish=self._finished)
            logger.info("refit started on %d labels", total)
            return self.refit_status()

    def _finished(self, job: RefitJob) -> None:
        """A refit ended (in its thread): adopt its result, start the next if labels came."""
        with self._lock:
            if job is not self.job or self._closed:
                return
            if job.model is not None:
                self._adopt(job.model, job.report)
                job.model = None
            if self.auto_refit and self._new_labels >= self.auto_refit:
                self._timer = threading.Timer(0.0, self._auto_refit)
                self._timer.daemon = True
                self._timer.start()

    def refit_status(self) -> dict:
        """What the background refit is doing.

        ``state``: ``idle`` (none yet), ``scheduled`` (starts once labelling pauses),
        ``starting``, ``running``, ``done`` or ``failed``; with a job also ``progress``,
        ``error``, ``labels`` and ``report`` (:func:`~calcomp_caiman.refit.refit`'s, with
        ``changed``: the components of the session's files whose class and acceptance
        it changed). Always ``version`` (the probabilities' version), ``new_labels``
        (labels since the last refit started) and ``auto_refit``.
        """
        with self._lock:
            status = {"state": "idle"} if self.job is None else self.job.status()
            if self._timer is not None and not (self.job is not None and self.job.running):
                status["state"] = "scheduled"
            status.update(version=self.version, new_labels=self._new_labels,
                          auto_refit=self.auto_refit if self.can_refit else 0)  # fmt: skip
            return status

    def _adopt(self, model: CalcompModel, report: dict) -> None:
        """Use a refit's result: re-score every file from the stored inputs, count what
        changed, and say in the report whether it was applied."""
        report["changed"] = changes(self.model, model, [f.inputs for f in self.files])
        report["model"] = model.name
        self.refit_report = report
        if model is not self.model:
            for f in self.files:
                probs = f.inputs.probs(model)
                probs[f.empty] = f.probs[f.empty]  # an empty footprint is noise for every model
                f.probs = probs
            self.model = model
            self.version += 1
        self.refitted = bool(report.get("applied"))
        try:
            self.threshold = self._cut()
        except ValueError as err:
            self.threshold = {"error": str(err)}
        logger.info("refit %s (version %d): %s", "applied" if self.refitted else "not applied",
                    self.version, report.get("summary"))  # fmt: skip

    def fit_threshold(self) -> dict:
        """Fit ``min_prob`` to the labels with the current model (see :mod:`.threshold`)."""
        accept = list(self.model.thresholds.get("accept", ["neuron"]))
        columns = [CLASSES.index(name) for name in accept]
        codes, components = self._labelled()
        p, decisions = [], []
        for f, code, index in zip(self.files, codes, components):
            if not len(index):
                continue
            keep = code > 0 if any(CLASSES[c] in ("process", "noise") for c in columns) else np.ones(len(code), bool)  # fmt: skip
            p.append(f.probs[index[keep]][:, columns].sum(axis=1))
            decisions.append(np.isin(code[keep], [c + 1 for c in columns]))
        if not p:
            raise ValueError("no labels yet: label some components to fit min_prob.")
        result = fit_min_prob(np.concatenate(p), np.concatenate(decisions))
        return dict(result, accept=accept)

    def _cut(self) -> dict:
        """The acceptance cut Apply writes: the applied refit's (fitted with its calibration,
        :func:`~calcomp_caiman.refit_calibration.fit_cut`), else :meth:`fit_threshold`'s."""
        fit = self.model.thresholds.get("min_prob_fit")
        if (
            self.refitted
            and isinstance(fit, dict)
            and self.model.thresholds.get("min_prob") is not None
        ):
            accept = list(self.model.thresholds.get("accept", ["neuron"]))
            return dict(fit, min_prob=self.model.thresholds["min_prob"], accept=accept)
        return self.fit_threshold()

    def apply(self) -> dict:
        """Write the current model's classification into every file and save the model.

        The files are updated in place as ``calcomp classify --in-place`` does
        (:func:`calcomp_caiman.apps.one_file.classify_file`: atomic, under the file's lock), with
        the acceptance cut fitted from the labels when it can be fitted (:meth:`_cut`). The model folder
        (:attr:`model_out`) gets ``thresholds.json`` with that ``min_prob`` (and
        ``min_prob_fit``: agreement, cross-validated agreement, label counts) and, when
        the network is unchanged, the out-of-distribution reference ``ood.npz``.
        """
        from calcomp_caiman.apps.one_file import classify_file

        with self._lock:
            try:
                fit = self._cut()
            except ValueError as err:
                fit = {"error": str(err)}
            self.threshold = fit
            min_prob = fit.get("min_prob")
            extra = {}
            if min_prob is not None:
                extra = {"min_prob": min_prob, "min_prob_fit": {k: v for k, v in fit.items() if k != "min_prob"}}  # fmt: skip
            model = self.model.with_thresholds(**extra) if extra else self.model
            folder = model.save(self.model_out)
            if self._ood_reference is not None:  # same network: the reference still fits
                save_ood_reference(self._ood_reference, folder)
            written = []
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for f in self.files:  # the rule: the saved model's thresholds.json
                    result, _ = classify_file(f.path, model=model, out_path=None)
                    written.append({"file": str(f.path), "accepted": result.accepted,
                                    "components": result.components})  # fmt: skip
            logger.info("applied: %d files written, model saved to %s", len(written), folder)
            return {"files": written, "model_folder": str(folder), "threshold": fit}

    def close(self) -> None:
        """Stop a scheduled or running refit."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            if self.job is not None:
                self.job.cancel()
