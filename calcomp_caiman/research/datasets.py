"""Labelled footprints on disk: the real-ROI archives used to train and evaluate models.

An archive is a ``.npz`` file (no pickles) with the CSC parts of a footprint matrix
``A`` (``A_data``, ``A_indices``, ``A_indptr``, ``A_shape``), ``dims``, and ``labels``
(``neuron``, ``process``, ``noise``, ``doubtful`` or ``non_neuron``), plus optional
``video`` and ``method`` strings: the format of the ``real_rois`` data set described in
``calcomp_caiman/models/README.md``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse

from calcomp_caiman.checks import check_footprints
from calcomp_caiman.errors import InvalidFileError
from calcomp_caiman.schema import class_codes

__all__ = ["LabelledFootprints", "load_roi_archive"]


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
    video, method, source : str
        Where the components come from.
    """

    A: scipy.sparse.csc_matrix
    dims: tuple
    labels: np.ndarray
    video: str = ""
    method: str = ""
    source: str = ""


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
            video = str(data["video"]) if "video" in data.files else path.stem
            method = str(data["method"]) if "method" in data.files else ""
        A, dims = check_footprints(A, dims)
    except (KeyError, ValueError, OSError) as err:
        raise InvalidFileError(path, f"not a usable labelled-footprint archive ({err})") from err
    if len(labels) != A.shape[1]:
        raise InvalidFileError(path, f"{len(labels)} labels for {A.shape[1]} components")
    return LabelledFootprints(A, dims, labels, video, method, str(path))
