"""Labelled footprints: the archives, patch sets and simulated fields that models learn from.

An archive is a ``.npz`` file (no pickles) with the CSC parts of a footprint matrix
``A`` (``A_data``, ``A_indices``, ``A_indptr``, ``A_shape``), ``dims``, and ``labels``
(``neuron``, ``process``, ``noise``, ``doubtful`` or ``non_neuron``), plus optional
``dataset``, ``video`` and ``method`` strings: the format of the ``real_rois`` data set
described in ``calcomp_caiman/models/README.md``. A video is named by its key
``"<dataset>/<video>"`` (:func:`video_key`), as the recipes and model folders record it.

* archives: :func:`archive_paths`, :func:`video_key`, :func:`load_roi_archive`;
* patch sets of the shape network (:class:`TrainingSet`): :func:`make_training_set`,
  :func:`load_training_set`, :func:`simulated_training_set`, a lab's labels
  (:func:`labels_from_csv`, :func:`curation_labels`);
* evaluation sets, one per video, with the baselines' shape features:
  :func:`load_evaluation_data`, :func:`simulated_evaluation_set`.

Whole CaImAn results with their evidence (the fusion head's data) are in
:mod:`calcomp_caiman.research.labelled_results`.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse

from calcomp_caiman.checks import check_footprints
from calcomp_caiman.errors import InvalidFileError
from calcomp_caiman.evidence.patches import extract_patches, project_footprints, resolve_gsig
from calcomp_caiman.io.caiman_h5 import read_estimates
from calcomp_caiman.research.baselines import SHAPE_FEATURES, shape_features
from calcomp_caiman.schema import PATCH_SIZE, class_codes

logger = logging.getLogger(__name__)

__all__ = [
    "LabelledFootprints",
    "TrainingSet",
    "archive_paths",
    "concatenate_sets",
    "curation_labels",
    "labels_from_csv",
    "load_evaluation_data",
    "load_roi_archive",
    "load_training_set",
    "make_training_set",
    "simulate_evaluation_fields",
    "simulated_evaluation_set",
    "simulated_training_set",
    "video_key",
]


# ---------------------------------------------------------------------- archives


@dataclass(frozen=True)
class LabelledFootprints:
    """Footprints of one field of view with one label each.

    Attributes
    ----------
    A : (prod(dims), N) csc_matrix, float32
        Footprints, Fortran pixel order.
    dims : tuple of int
    labels : (N,) int64 ndarray
        Codes 1-4 (``CLASSES`` order) or 0 for ``non_neuron`` (process or noise).
    video, method, source, dataset : str
        Where the components come from.
    """

    A: scipy.sparse.csc_matrix
    dims: tuple
    labels: np.ndarray
    video: str = ""
    method: str = ""
    source: str = ""
    dataset: str = ""

    @property
    def key(self) -> str:
        """``"<dataset>/<video>"``, or ``video`` alone when the dataset is unknown."""
        return _key(self.dataset, self.video)


def _key(dataset: str, video: str) -> str:
    return f"{dataset}/{video}" if dataset else video


def load_roi_archive(path: str | os.PathLike) -> LabelledFootprints:
    """Read one labelled-footprint archive (``.npz``).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    InvalidFileError
        A key is missing, or the footprints or labels are inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such labelled-footprint archive")
    try:
        with np.load(path, allow_pickle=False) as data:
            shape = tuple(int(v) for v in data["A_shape"])
            A = scipy.sparse.csc_matrix(
                (data["A_data"], data["A_indices"], data["A_indptr"]), shape=shape
            )
            dims = tuple(int(v) for v in data["dims"])
            labels = class_codes([str(v) for v in data["labels"]])
            dataset, video = _names(data, path)
            method = str(data["method"]) if "method" in data.files else ""
        A, dims = check_footprints(A, dims)
    except (KeyError, ValueError, OSError) as err:
        raise InvalidFileError(path, f"not a usable labelled-footprint archive ({err})") from err
    if len(labels) != A.shape[1]:
        raise InvalidFileError(path, f"{len(labels)} labels for {A.shape[1]} components")
    return LabelledFootprints(A, dims, labels, video, method, str(path), dataset)


def archive_paths(paths) -> list[Path]:
    """The archives named by ``paths``: files as given, folders as their sorted ``*.npz``.

    Raises
    ------
    FileNotFoundError
        An entry is neither a file nor a folder.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            found.extend(sorted(path.glob("*.npz")))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such labelled-footprint archive or folder")
    return found


def video_key(path: str | os.PathLike) -> str:
    """``"<dataset>/<video>"`` of an archive (``video`` alone, or the file stem, if unknown).

    Raises
    ------
    InvalidFileError
        ``path`` is not a readable ``.npz`` archive.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            dataset, video = _names(data, path)
    except (OSError, ValueError, EOFError, AttributeError, zipfile.BadZipFile) as err:
        raise InvalidFileError(path, f"not a labelled-footprint archive (.npz): {err}") from err
    return _key(dataset, video)


def _names(data, path: Path) -> tuple[str, str]:
    """``dataset`` (or ``""``) and ``video`` (or the file stem) of an open archive."""
    dataset = str(data["dataset"]) if "dataset" in data.files else ""
    video = str(data["video"]) if "video" in data.files else path.stem
    return dataset, video


# ------------------------------------------------------------------- patch sets


@dataclass(frozen=True)
class TrainingSet:
    """Patches with labels and the group (video) each comes from.

    Attributes
    ----------
    patches : (N, 50, 50) float32 ndarray
    labels : (N,) int64 ndarray
        Codes 0-4 (0 = non_neuron).
    groups : (N,) str ndarray
        Video (or simulation) of each patch: splits are made by group, never by patch.
    """

    patches: np.ndarray
    labels: np.ndarray
    groups: np.ndarray

    def select(self, mask: np.ndarray) -> TrainingSet:
        """The subset where ``mask`` is True."""
        return TrainingSet(self.patches[mask], self.labels[mask], self.groups[mask])

    @classmethod
    def concatenate(cls, parts: Iterable[TrainingSet]) -> TrainingSet:
        """One set of the parts' components, in order."""
        parts = list(parts)
        return cls(
            np.concatenate([p.patches for p in parts]).astype(np.float32, copy=False),
            np.concatenate([p.labels for p in parts]),
            np.concatenate([p.groups for p in parts]),
        )


def make_training_set(
    sources: Iterable[LabelledFootprints], *, patch_size: int = PATCH_SIZE
) -> TrainingSet:
    """Patches and labels of labelled footprints, grouped by video (key ``"<dataset>/<video>"``).

    ``gSig`` is estimated per source from its footprints, as at inference time when the
    user gives none.
    """
    parts = []
    for source in sources:
        patches = extract_patches(source.A, source.dims, patch_size=patch_size)
        groups = np.full(len(patches), source.key or source.source, dtype=object)
        parts.append(TrainingSet(patches, np.asarray(source.labels, np.int64), groups))
    if not parts:
        return TrainingSet(
            np.zeros((0, patch_size, patch_size), np.float32),
            np.zeros(0, np.int64),
            np.zeros(0, object),
        )
    return TrainingSet.concatenate(parts)


def load_training_set(paths) -> TrainingSet:
    """:func:`make_training_set` of the archives of ``paths`` (files or folders)."""
    return make_training_set(load_roi_archive(path) for path in archive_paths(paths))


def simulated_training_set(per_class: int, *, fields: int = 12, seed: int = 0) -> TrainingSet:
    """Simulated footprints over several fields of view, each at its own zoom.

    ``fields`` fields of view (each drawing its zoom from ``TRAIN_SETTINGS``), ``per_class``
    footprints of every class in each, cropped at their field's ``gSig``; the groups are
    the fields (seeds ``seed * 1000 + field``). The bundled model's recipe and
    ``calcomp train --simulated`` both use it.
    """
    from calcomp_caiman.research.simulate import TRAIN_SETTINGS, simulate_footprints

    parts = []
    for field in range(int(fields)):
        A, dims, labels, gsig = simulate_footprints(
            per_class, settings=TRAIN_SETTINGS, seed=seed * 1000 + field
        )
        patches = extract_patches(A, dims, gSig=gsig)
        parts.append(TrainingSet(patches, labels, np.full(len(labels), f"sim{field}", object)))
    return TrainingSet.concatenate(parts)


def _file_patches(path, components: np.ndarray) -> np.ndarray:
    source = read_estimates(path)
    n = source.A.shape[1]
    if components.size and (components.min() < 0 or components.max() >= n):
        raise ValueError(f"{path}: component indices must be in 0..{n - 1}.")
    gsig = resolve_gsig(source.A, source.dims, source.gSig)
    return extract_patches(source.A[:, components], source.dims, gSig=gsig)


def labels_from_csv(path) -> TrainingSet:
    """A lab's labels: a CSV with columns ``file``, ``component``, ``label``.

    ``file`` is a CaImAn result file (relative paths are relative to the CSV's folder),
    ``component`` the 0-based column of ``estimates.A``, ``label`` a class name, a code
    1-4, or ``non_neuron`` (process or noise). Groups are the files, so fine-tuning
    validates on whole sessions when there are several.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file or column, unknown label, index out of range (message names the row).
    """
    from calcomp_caiman.io.label_table import read_label_table

    parts = []
    for file, (indices, codes) in read_label_table(path).items():
        patches = _file_patches(file, indices)
        parts.append(TrainingSet(patches, codes, np.full(len(codes), str(file), object)))
    return TrainingSet.concatenate(parts)


def curation_labels(paths) -> TrainingSet:
    """Labels from CaImAn's manual curation: ``accepted_list`` -> neuron, ``rejected_list`` ->
    non_neuron, in each result file that has them."""
    parts = []
    for path in paths:
        source = read_estimates(path)
        accepted = np.asarray(
            [] if source.accepted_list is None else source.accepted_list, np.int64
        )
        rejected = np.asarray(
            [] if source.rejected_list is None else source.rejected_list, np.int64
        )
        if accepted.size + rejected.size == 0:
            raise ValueError(f"{path}: no accepted_list / rejected_list (no manual curation).")
        components = np.concatenate([accepted, rejected])
        labels = np.r_[np.ones(accepted.size, np.int64), np.zeros(rejected.size, np.int64)]
        parts.append(TrainingSet(_file_patches(path, components), labels,
                                 np.full(len(labels), str(path), object)))  # fmt: skip
    return TrainingSet.concatenate(parts)


# -------------------------------------------------------------- evaluation sets


def load_evaluation_data(
    paths,
    *,
    gSig=None,
    videos: Collection[str] | None = None,
    exclude_videos: Collection[str] = (),
    group_by: str = "video",
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Patches, labels and shape features of real-ROI archives, one entry per video.

    Parameters
    ----------
    paths : path-like or sequence of path-likes
        Labelled-footprint archives (``.npz``, :func:`load_roi_archive`) or folders of
        them (every ``*.npz`` inside).
    gSig : float, optional
        Typical neuron half-size in px; by default estimated per file from its footprints,
        as :func:`make_training_set` does for training.
    videos : collection of str, optional
        Keep only these video keys (e.g. the test videos of
        :func:`~calcomp_caiman.research.evaluate.held_out_videos`).
    exclude_videos : collection of str
        Drop these video keys.
    group_by : {"video", "file"}
        One entry per video (key ``"<dataset>/<video>"``, as in the training recipe; the
        files of the methods of one video are concatenated in path order) or per file
        (key ``"<dataset>/<video>/<method>"``).

    Returns
    -------
    dict of str to (patches, labels, features)
        ``(N, 50, 50)`` float32 patches, ``(N,)`` int64 codes (1 neuron, 4 doubtful,
        0 non_neuron), ``(N, 10)`` float64
        :func:`~calcomp_caiman.research.baselines.shape_features`; sorted by key.

    Raises
    ------
    FileNotFoundError
        A path does not exist.
    InvalidFileError
        An archive cannot be read.
    ValueError
        ``group_by`` is neither ``"video"`` nor ``"file"``.
    """
    if group_by not in ("video", "file"):
        raise ValueError(f"group_by must be 'video' or 'file', got {group_by!r}.")
    keep = None if videos is None else set(videos)
    parts: dict[str, list] = {}
    for path in archive_paths(paths):
        key = video_key(path)
        if (keep is not None and key not in keep) or key in set(exclude_videos):
            continue
        source = load_roi_archive(path)
        if group_by == "file":
            key = f"{key}/{source.method or path.stem}"
        flat, dims2 = project_footprints(source.A, source.dims)
        gsig = resolve_gsig(flat, dims2, gSig)
        patches = extract_patches(flat, dims2, gSig=gsig)
        features = shape_features(flat, dims2, gSig=gsig)
        parts.setdefault(key, []).append((patches, source.labels.astype(np.int64), features))
        logger.info("loaded %s: %d components (gSig %.2f)", path.name, len(patches), gsig)
    return {key: concatenate_sets(items) for key, items in sorted(parts.items())}


def _resolve_settings(settings):
    """``simulate.TRAIN_SETTINGS`` / ``SHIFTED_SETTINGS`` for ``"train"`` / ``"shifted"``."""
    if not isinstance(settings, str):
        return settings
    from calcomp_caiman.research import simulate

    names = {"train": simulate.TRAIN_SETTINGS, "shifted": simulate.SHIFTED_SETTINGS}
    if settings not in names:
        raise ValueError(
            f"simulation settings must be 'train', 'shifted' or a SimulationSettings, "
            f"got {settings!r}."
        )
    return names[settings]


def simulate_evaluation_fields(fields: int, per_class: int, seed: int, settings) -> Iterator[tuple]:
    """``(A, dims, labels, gSig)`` of ``fields`` simulated fields of view, one at a time.

    :func:`~calcomp_caiman.research.simulate.simulate_footprints` with seeds ``seed``,
    ``seed + 1``, ...; ``settings``: ``"train"``, ``"shifted"``, a ``SimulationSettings``
    or ``None`` (``TRAIN_SETTINGS``). The fields of :func:`simulated_evaluation_set`.
    """
    from calcomp_caiman.research.simulate import simulate_footprints

    options = {} if settings is None else {"settings": _resolve_settings(settings)}
    for index in range(int(fields)):
        A, dims, labels, gsig = simulate_footprints(per_class, seed=seed + index, **options)
        yield A, dims, np.asarray(labels, np.int64), gsig


def simulated_evaluation_set(fields: int, per_class: int, seed: int, settings) -> tuple:
    """(patches, labels, features) of the fields of view of :func:`simulate_evaluation_fields`."""
    parts = [
        (extract_patches(A, dims, gSig=gsig), labels, shape_features(A, dims, gSig=gsig))
        for A, dims, labels, gsig in simulate_evaluation_fields(fields, per_class, seed, settings)
    ]
    if not parts:
        return (
            np.zeros((0, PATCH_SIZE, PATCH_SIZE), np.float32),
            np.zeros(0, np.int64),
            np.zeros((0, len(SHAPE_FEATURES))),
        )
    return concatenate_sets(parts)


def concatenate_sets(items: Sequence[tuple]) -> tuple:
    """Concatenate ``(patches, labels, features)`` evaluation sets part by part."""
    return tuple(np.concatenate([item[i] for item in items]) for i in range(3))
