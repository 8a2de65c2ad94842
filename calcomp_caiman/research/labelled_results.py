"""Labelled CaImAn results: every component of a result file with its evidence and a label.

The fusion head of model v2 learns from these, and the evidence report scores on them.
Two sources:

* simulated movies run through real CaImAn (``recipes/build_caiman_sim_data.py``): every
  component of every CNMF / OnACID result, with its traces, ``Cn`` and CaImAn's metrics,
  labelled by :func:`calcomp_caiman.research.gt_labels.label_components`
  (:func:`load_simulated`);
* the real labelled masks of ``../shared/data/real_rois`` (shape and neighbours only;
  labels neuron / doubtful / non_neuron; :func:`load_real_masks`).

Splits are by whole movie and video (:func:`split`, :func:`split_hybrid`,
:func:`evaluation_sets`). The shape
network's logits and the evidence features of a result (:func:`result_inputs`) are those
:func:`calcomp_caiman.classify.classify_evidence` computes at run time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calcomp_caiman.evidence import Evidence
from calcomp_caiman.evidence.features import group_columns
from calcomp_caiman.evidence.patches import crop_checked, footprints_for
from calcomp_caiman.io.caiman_h5 import read_evidence
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.refit import LabelledInputs, labelled_inputs
from calcomp_caiman.research.datasets import archive_paths, load_roi_archive

logger = logging.getLogger(__name__)

__all__ = [
    "METHODS",
    "LabelledResult",
    "drop_groups",
    "evaluation_sets",
    "load_real_masks",
    "load_simulated",
    "result_inputs",
    "result_patches",
    "split",
    "split_hybrid",
]

METHODS = ("cnmf", "onacid")
"""The CaImAn pipelines of the simulated results (file suffixes ``_<method>.hdf5``)."""


@dataclass
class LabelledResult:
    """One result (file) with a label per component.

    Attributes
    ----------
    evidence : Evidence
    labels : (N,) int64 ndarray
        Codes 1-4, or 0 for ``non_neuron``.
    group : str
        The movie / video (whole groups are held out together).
    source : str
        ``"simulated"`` or ``"real"``.
    setting : str
        The simulator preset, or the real dataset.
    held_out : bool
        Whether the setting is one never used for training or tuning.
    method : str
        ``"cnmf"``, ``"onacid"``, or the real archive's method.
    caiman_accepted : (N,) bool ndarray, optional
        CaImAn's own ``idx_components`` (its SNR / r-value rule), when stored.
    """

    evidence: Evidence
    labels: np.ndarray
    group: str
    source: str
    setting: str
    held_out: bool
    method: str
    caiman_accepted: np.ndarray | None = None


def load_simulated(folder: str | Path, *, methods: Sequence[str] = METHODS) -> list[LabelledResult]:
    """Every labelled CaImAn result of a ``build_caiman_sim_data.py`` output folder."""
    folder = Path(folder)
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    held_out = set(manifest.get("held_out_presets", []))
    items = []
    for labels_path in sorted(folder.glob("*/*_labels.npz")):
        preset = labels_path.parent.name
        movie = labels_path.name[: -len("_labels.npz")]
        with np.load(labels_path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        for method in methods:
            path = labels_path.parent / f"{movie}_{method}.hdf5"
            if f"{method}_labels" not in arrays or not path.exists():
                continue
            try:
                evidence = read_evidence(path)
            except Exception as err:  # a result CaImAn could not finish: report, go on
                logger.warning("skipping %s: %s", path, err)
                continue
            labels = arrays[f"{method}_labels"].astype(np.int64)
            if len(labels) != evidence.n:
                logger.warning(
                    "skipping %s: %d labels, %d components", path, len(labels), evidence.n
                )
                continue
            accepted = arrays.get(f"{method}_caiman_accepted")
            items.append(
                LabelledResult(
                    evidence,
                    labels,
                    f"{preset}/{movie}",
                    "simulated",
                    preset,
                    preset in held_out,
                    method,
                    accepted,
                )  # fmt: skip
            )
    logger.info("loaded %d simulated results from %s", len(items), folder)
    return items


def load_real_masks(paths, held_out_videos: Collection[str], *, gSig=None) -> list[LabelledResult]:
    """The real labelled masks: one result per archive (shape and neighbours only).

    ``paths`` are archives or folders of them (:func:`~calcomp_caiman.research.datasets.archive_paths`);
    a result is ``held_out`` when its video key is in ``held_out_videos``. ``gSig``: the
    evidence's (default: none, measured from the footprints).
    """
    items = []
    for path in archive_paths(paths):
        source = load_roi_archive(path)
        evidence = Evidence.build(source.A, source.dims, gSig=gSig, source=str(path))
        items.append(
            LabelledResult(
                evidence,
                source.labels.astype(np.int64),
                source.key,
                "real",
                source.dataset or "real",
                source.key in held_out_videos,
                source.method or path.stem,
            )  # fmt: skip
        )
    return items


def split(items: Sequence[LabelledResult], validation_videos, test_videos):
    """Train, validation and test results: whole movies and videos, never components.

    Simulated: presets marked held out are the test set; in every other preset the movie
    with the highest seed is validation, the rest training. Real: ``test_videos`` and
    ``validation_videos`` (as for v1), the rest training.
    """
    last = {}
    for item in items:
        if item.source == "simulated" and not item.held_out:
            last[item.setting] = max(last.get(item.setting, ""), item.group)
    train, val, test = [], [], []
    for item in items:
        if item.source == "simulated":
            target = test if item.held_out else val if item.group == last[item.setting] else train
        elif item.group in test_videos:
            target = test
        elif item.group in validation_videos:
            target = val
        else:
            target = train
        target.append(item)
    return train, val, test


def split_hybrid(items: Sequence[LabelledResult]):
    """Train, validation and test hybrid results (whole movies, as model v3 was trained).

    Held-out recordings are the test set; in every other recording the movie with the
    last group name is validation, the rest training.

    Examples
    --------
    >>> items = [LabelledResult(None, np.zeros(0), g, "hybrid", g.split("/")[0], h, "cnmf")
    ...          for g, h in (("a/s1", False), ("a/s2", False), ("b/s1", True))]
    >>> [[i.group for i in part] for part in split_hybrid(items)]
    [['a/s1'], ['a/s2'], ['b/s1']]
    """
    last: dict[str, str] = {}
    for item in items:
        if not item.held_out:
            last[item.setting] = max(last.get(item.setting, ""), item.group)
    train, val, test = [], [], []
    for item in items:
        if item.held_out:
            test.append(item)
        elif item.group == last[item.setting]:
            val.append(item)
        else:
            train.append(item)
    return train, val, test


def evaluation_sets(val, test) -> dict[str, list[LabelledResult]]:
    """The evidence report's test sets (and the validation set, for reference)."""
    simulated = [i for i in test if i.source == "simulated"]
    return {
        "simulated_heldout_cnmf": [i for i in simulated if i.method == "cnmf"],
        "simulated_heldout_onacid": [i for i in simulated if i.method == "onacid"],
        "simulated_heldout": simulated,
        "simulated_validation": [i for i in val if i.source == "simulated"],
        "real_test_masks": [i for i in test if i.source == "real"],
    }


def result_inputs(model: CalcompModel, item: LabelledResult) -> LabelledInputs:
    """Shape logits and features of every component of one result (run-time pipeline)."""
    return labelled_inputs(model, item.evidence, np.arange(item.evidence.n))


def result_patches(model: CalcompModel, item: LabelledResult) -> np.ndarray:
    """Patches of every component of one result, cropped as the model crops them."""
    flat, dims, scale = footprints_for(item.evidence, model.scale_rule)
    return crop_checked(flat, dims, scale, model.patch_size)


def drop_groups(features: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """``features`` as if the optional ``groups`` were absent (their columns zeroed)."""
    out = np.array(features, copy=True)
    columns = group_columns()
    for group in groups:
        out[:, columns[group]] = 0.0
    return out
