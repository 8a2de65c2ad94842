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
from calcomp_caiman.apps.curate.jobs import REFIT_FUNCTION, RefitJob
from calcomp_caiman.apps.curate.store import LabelStore
from calcomp_caiman.apps.curate.threshold import fit_min_prob
from calcomp_caiman.classify import classify_evidence
from calcomp_caiman.errors import CalcompError, InvalidFileError
from calcomp_caiman.evidence import Evidence
from calcomp_caiman.io.caiman_h5 import read_evidence
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.model.ood import (
    advice,
    evidence_distances,
    file_score,
    find_ood_reference,
    save_ood_reference,
)
from calcomp_caiman.schema import CLASSES, class_codes

logger = logging.getLogger(__name__)

__all__ = ["CurationSession", "uncertainty", "contradicts"]

_LOG4 = float(np.log(len(CLASSES)))


def uncertainty(probs: np.ndarray) -> np.ndarray:
    """Normalised entropy of each row of probabilities: 0 certain, 1 uniform.

    Examples
    --------
    >>> import numpy as np
    >>> uncertainty(np.array([[1.0, 0, 0, 0], [0.25, 0.25, 0.25, 0.25]])).round(3).tolist()
    [0.0, 1.0]
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1) / _LOG4


def contradicts(label: str, predicted: int) -> bool:
    """Whether a label contradicts the predicted class code (1-4).

    ``non_neuron`` (process or noise) contradicts a predicted neuron or doubtful.

    Examples
    --------
    >>> contradicts("neuron", 1), contradicts("noise", 1), contradicts("non_neuron", 3)
    (False, True, False)
    """
    code = int(class_codes([label])[0])
    if code == 0:
        return predicted in (CLASSES.index("neuron") + 1, CLASSES.index("doubtful") + 1)
    return code != predicted


@dataclass(eq=False)
class _File:
    path: Path
    evidence: Evidence
    probs: np.ndarray
    ood_score: float = float("nan")
    ood: bool = False
    geometry: FileGeometry | None = field(default=None, repr=False)


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
        A bundled model name or a model folder.
    model_out : path-like, optional
        Folder "Apply" saves the model in. Default ``calcomp_curated_model`` beside the
        labels CSV.
    refit_function : str
        ``module:function`` run by "Refit" (:data:`calcomp_caiman.apps.curate.jobs.REFIT_FUNCTION`).

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
    ):
        paths = [Path(f).resolve() for f in files]
        if not paths:
            raise ValueError("give at least one CaImAn result file to curate.")
        if len(set(paths)) != len(paths):
            raise ValueError("a file is given twice; give each result file once.")
        for path in paths:
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such file")
        self.model = CalcompModel.load(model)
        self.model_source = str(model)
        folder = Path(model) if Path(model).is_dir() else None
        self._ood_reference = find_ood_reference(self.model, folder)
        self.labels_path = Path(labels) if labels else paths[0].parent / "curate_labels.csv"
        self.store = LabelStore(self.labels_path)
        self.model_out = Path(model_out) if model_out else self.labels_path.parent / "calcomp_curated_model"  # fmt: skip
        self.refit_function = refit_function
        self._lock = threading.RLock()
        self.files: list[_File] = []
        for path in paths:
            evidence = read_evidence(path)
            self.files.append(_File(path, evidence, classify_evidence(evidence, self.model)))
        self._check_labels()
        self._score_ood()
        self.version = 0  # incremented whenever the probabilities change
        self.job: RefitJob | None = None
        self.refit_report: dict | None = None
        self.threshold: dict | None = None
        self.refitted = False

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

    def _score_ood(self) -> None:
        if self._ood_reference is None:
            return
        for f in self.files:
            f.ood_score = file_score(evidence_distances(f.evidence, self.model, self._ood_reference))  # fmt: skip
            f.ood = bool(np.isfinite(f.ood_score) and f.ood_score > self._ood_reference.threshold)
            if f.ood:
                logger.warning("%s: out of distribution (score %.3f)", f.path, f.ood_score)

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
            "version": self.version,
            "refit": self.refit_status(),
            "threshold": self.threshold,
            "refitted": self.refitted,
            "can_refit": self.model.uses_evidence,
        }

    def components(
        self, *, predicted: str | None = None, file: int | None = None, disagreements: bool = False
    ) -> list[dict]:
        """Every component, most uncertain first, with its probabilities and label.

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
            for i, f in enumerate(self.files):
                if file is not None and i != file:
                    continue
                codes = f.probs.argmax(axis=1) + 1
                score = uncertainty(f.probs)
                for k in range(f.evidence.n):
                    code = int(codes[k])
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
                        "uncertainty": round(float(score[k]), 4),
                        "label": label,
                    })  # fmt: skip
        items.sort(key=lambda item: (-item["uncertainty"], item["file"], item["component"]))
        return items

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
        return self.store.set(f.path, int(component), label)

    def _labelled(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        labels = self.store.labels()
        codes, components = [], []
        for f in self.files:
            mine = sorted((k, name) for (path, k), name in labels.items() if path == str(f.path))
            components.append(np.array([k for k, _ in mine], np.int64))
            codes.append(class_codes([name for _, name in mine]) if mine else np.zeros(0, np.int64))
        return codes, components

    # ------------------------------------------------------------------ refit and apply

    def start_refit(self, *, seed: int = 0) -> dict:
        """Start refitting the current model on the labels so far, in a background process."""
        with self._lock:
            if self.job is not None and self.job.status()["state"] in ("starting", "running"):
                raise CalcompError("a refit is running already; wait for it to finish.")
            codes, components = self._labelled()
            total = sum(len(c) for c in codes)
            if total == 0:
                raise CalcompError("label some components before refitting.")
            self.job = RefitJob(self.model, [f.path for f in self.files], codes, components,
                                seed=seed, function=self.refit_function)  # fmt: skip
            logger.info("refit started on %d labels", total)
            return self.refit_status()

    def refit_status(self) -> dict | None:
        """The refit job's status; when it has just finished, the new model is adopted."""
        if self.job is None:
            return None
        status = self.job.status()
        if status["state"] == "done" and self.job.model is not None:
            with self._lock:
                if self.job.model is not None:
                    self._adopt(self.job.model, status["report"])
                    self.job.model = None
        return status

    def _adopt(self, model: CalcompModel, report: dict) -> None:
        """Use a refitted model: re-score every file, refit the acceptance cut."""
        self.model = model
        for f in self.files:
            f.probs = classify_evidence(f.evidence, model)
        self.refit_report = report
        self.refitted = True
        self.version += 1
        try:
            self.threshold = self.fit_threshold()
        except ValueError as err:
            self.threshold = {"error": str(err)}
        logger.info("refitted model adopted (version %d)", self.version)

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

    def apply(self) -> dict:
        """Write the current model's classification into every file and save the model.

        The files are updated in place as ``calcomp classify --in-place`` does
        (:func:`calcomp_caiman.apps.one_file.classify_file`: atomic, under the file's lock), with
        the acceptance cut fitted from the labels when it can be fitted. The model folder
        (:attr:`model_out`) gets ``thresholds.json`` with that ``min_prob`` (and
        ``min_prob_fit``: agreement, cross-validated agreement, label counts) and, when
        the network is unchanged, the out-of-distribution reference ``ood.npz``.
        """
        from calcomp_caiman.apps.one_file import classify_file

        with self._lock:
            try:
                fit = self.fit_threshold()
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
        """Stop a running refit."""
        if self.job is not None:
            self.job.cancel()
