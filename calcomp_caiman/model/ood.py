"""How unlike the training data a file's components are: an out-of-distribution score.

A model's CNN maps every patch to an embedding (:meth:`CalcompModel.embed
<calcomp_caiman.model.folder.CalcompModel.embed>`): the footprint patch of models v1 and v2,
the stack of channels of a model v3 (its image branch,
:mod:`~calcomp_caiman.evidence.channels`). The reference statistics of the training
patches' (square-rooted) embeddings are stored in the model folder as ``ood.npz``: one
mean per group of training patches (class x real/simulated) and a shared, shrunk
covariance. A component's distance is its Mahalanobis distance to the nearest group mean,
divided by ``sqrt(D)`` (about 1 for a typical training patch); a file's score is the mean
over its non-empty components. A file whose score exceeds the calibrated ``threshold`` is flagged:
the classes may be unreliable there, and a few labels plus a refit
(``calcomp curate``) are the remedy. This is a warning, never a failure.

Compute the reference of a model with :func:`fit_ood_reference` on (a sample of) its
training patches, or with :func:`fit_evidence_reference` on the results it was trained on
(every component cropped as :func:`~calcomp_caiman.classify.classify_evidence` crops it:
the way for a model v3), calibrate ``threshold`` on held-out in-distribution files with
:func:`calibrate_ood_threshold`, and write it with :func:`save_ood_reference`
(``benchmarks/ood_calibration.py`` does all three for the bundled model v1).

Measured for ``calcomp_resnet_v1`` (``ood.npz`` in its folder; reference: 13,336 training
patches, 8,536 real from the ``real_rois`` training videos and 4,800 simulated with
``TRAIN_SETTINGS``; threshold 1.128 = 1.02 x the highest of 28 calibration files, the real
validation videos and 20 unseen ``TRAIN_SETTINGS`` fields). On files used for neither, 100
components each for the simulated ones: ROC-AUC of the file score 0.978 for
``SHIFTED_SETTINGS`` fields against unseen ``TRAIN_SETTINGS`` fields (20 each), 0.988
against those and the 16 real held-out test-video files together. At the threshold no
in-distribution file is flagged (0 of 20 simulated, 0 of 16 real), and 2 of 20 shifted
fields are: the score ranks files well, but the calibrated cut is deliberately
conservative (a warning must not cry wolf on the lab's ordinary data). The shared CaImAn
files score 1.023 (``real_mouse2p_cnmf``, passes), 1.171 (``real_mouse2p_onacid``,
flagged), 1.133 and 1.116 (the two CaImAn runs on a differently simulated movie: flagged and
passing). Scores per component are the distance to the nearest of the 7 group means (the label
classes present among the real and among the simulated patches) of the square-rooted
embedding: with one mean and the raw
embedding (median over components) the ROC-AUC was 0.69; with the group means and the
square root but the median instead of the mean, 0.87.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from calcomp_caiman.errors import CalcompError, InvalidFileError
from calcomp_caiman.evidence.channels import ChannelSource
from calcomp_caiman.evidence.evidence import Evidence
from calcomp_caiman.evidence.patches import crop_checked, footprints_for
from calcomp_caiman.io.atomic import atomic_replace
from calcomp_caiman.model.folder import CalcompModel, bundled_models, folder_file

logger = logging.getLogger(__name__)

__all__ = [
    "OOD_FILE",
    "OodReference",
    "fit_ood_reference",
    "fit_evidence_reference",
    "calibrate_ood_threshold",
    "component_distances",
    "file_score",
    "ood_score",
    "OodScore",
    "advice",
    "save_ood_reference",
    "load_ood_reference",
    "find_ood_reference",
    "network_fingerprint",
    "evidence_distances",
]

OOD_FILE = "ood.npz"
"""Name of the reference statistics inside a model folder."""

_COMPONENTS_PER_CHUNK = 4096
_NOT_IMAGE_NETWORK = ("head/", "temporal/")  # weights after the image network


@dataclass(frozen=True, eq=False)
class OodReference:
    """Embedding statistics of a model's training patches.

    Attributes
    ----------
    means : (K, D) float64 ndarray
        Mean square-rooted embedding of each of the K groups of training patches.
    precision : (D, D) float64 ndarray
        Inverse of the shrunk within-group covariance.
    threshold : float
        A file whose :func:`file_score` exceeds it is out of distribution (``inf`` until
        calibrated).
    network_sha256 : str
        :func:`network_fingerprint` of the network the embeddings came from; a reference
        fits every model with that network (a refitted fusion head keeps it valid).
    n_patches : int
        Number of patches the statistics were computed from.
    """

    means: np.ndarray
    precision: np.ndarray
    threshold: float = float("inf")
    network_sha256: str = ""
    n_patches: int = 0


def fit_ood_reference(
    model: CalcompModel,
    patches: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    shrinkage: float = 0.01,
) -> OodReference:
    """Reference statistics of a model's embedding of (training) patches.

    Parameters
    ----------
    model : CalcompModel
    patches : (N, P, P) or (N, P, P, C) float32 ndarray
        Patches the model was trained on (or a representative sample), from
        :func:`calcomp_caiman.extract_patches`; for a model v3 their channels
        (:func:`~calcomp_caiman.evidence.channels.component_channels`); at least 2.
    groups : (N,) array, optional
        A group per patch (e.g. its class code, or class and real/simulated); one mean is
        kept per group and a component is compared with the nearest. Default: one group.
    shrinkage : float
        Weight in [0, 1) of the scaled identity mixed into the within-group covariance
        (``(1 - s) * cov + s * mean(diag(cov)) * I``), so that it can be inverted.

    Returns
    -------
    OodReference
        Uncalibrated (``threshold = inf``): see :func:`calibrate_ood_threshold`.

    Raises
    ------
    ValueError
        Fewer than 2 patches, patches of another shape than the model reads, ``groups``
        of another length, or ``shrinkage`` outside [0, 1).

    Examples
    --------
    >>> import numpy as np
    >>> from calcomp_caiman.model.folder import CalcompModel
    >>> rng = np.random.default_rng(0)
    >>> patches = rng.random((20, 50, 50), np.float32)  # model v1/v2: footprint patches
    >>> reference = fit_ood_reference(CalcompModel.load("calcomp_v2"), patches, np.arange(20) % 2)
    >>> reference.means.shape, reference.n_patches
    ((2, 96), 20)
    """
    patches = np.asarray(patches, dtype=np.float32)
    expected = 4 if model.version >= 3 else 3
    if patches.ndim != expected or len(patches) < 2:
        shape = "(N, P, P, C)" if expected == 4 else "(N, P, P)"
        raise ValueError(
            f"patches must be {shape} with N >= 2 training patches, got shape {patches.shape}."
        )
    _check_fit(len(patches), groups, shrinkage)
    return _reference(model, model.embed(patches), groups, shrinkage, len(patches))


def fit_evidence_reference(
    model: CalcompModel,
    evidence: Sequence[Evidence],
    labels: Sequence[np.ndarray],
    *,
    sources: Sequence[str] | None = None,
    shrinkage: float = 0.01,
) -> OodReference:
    """Reference statistics of a model's embedding of every component of (training) results.

    Each component is cropped as :func:`~calcomp_caiman.classify.classify_evidence` crops
    it (for a model v3: its channels, with the evidence each result has) and embedded by
    the model's image network (:meth:`CalcompModel.embed`), as :func:`ood_score` embeds
    the components of a file to score. One group mean per label (and per source, when
    given), as for the bundled reference of model v1 (class x real/simulated).

    Parameters
    ----------
    model : CalcompModel
    evidence : sequence of Evidence
        The results the model was trained on (or a representative sample).
    labels : sequence of (n_i,) int ndarray
        A label code per component of each result; components with an all-zero footprint
        are left out, as :func:`ood_score` leaves them out.
    sources : sequence of str, optional
        A source per result (e.g. ``"real"``, ``"simulated"``), crossed with the labels
        into the groups. Default: groups by label only.
    shrinkage : float
        As for :func:`fit_ood_reference`.

    Returns
    -------
    OodReference
        Uncalibrated (``threshold = inf``): see :func:`calibrate_ood_threshold`.

    Raises
    ------
    ValueError
        ``labels`` or ``sources`` not one per result, a result's labels not one per
        component, fewer than 2 non-empty components, or ``shrinkage`` outside [0, 1).

    Examples
    --------
    >>> import numpy as np
    >>> from calcomp_caiman.model.folder import CalcompModel
    >>> rr, cc = np.mgrid[:64, :64]
    >>> cells = [np.exp(-((rr - r) ** 2 + (cc - 30) ** 2) / 12.0) for r in (15, 30, 45)]
    >>> A = np.stack([c.ravel(order="F") for c in cells], axis=1)
    >>> ev = Evidence.build(A, (64, 64), gSig=4)
    >>> ref = fit_evidence_reference(CalcompModel.load(), [ev], [np.array([1, 1, 3])])
    >>> ref.means.shape, ref.n_patches
    ((2, 64), 3)
    """
    evidence, labels = list(evidence), [np.asarray(x) for x in labels]
    sources = None if sources is None else [str(source) for source in sources]
    if len(labels) != len(evidence) or (sources is not None and len(sources) != len(evidence)):
        raise ValueError(
            f"labels (and sources) must have one entry per result ({len(evidence)}), got "
            f"{len(labels)}{'' if sources is None else f' and {len(sources)}'}."
        )
    embeddings, groups = [], []
    for k, (result, codes) in enumerate(zip(evidence, labels)):
        if codes.shape != (result.n,):
            raise ValueError(
                f"labels[{k}] must have one code per component of {result.source or 'evidence'} "
                f"({result.n}), got shape {codes.shape}."
            )
        nonempty = np.diff(result.A.indptr) > 0
        embeddings += [model.embed(chunk) for chunk in _evidence_patches(result, model)]
        prefix = "" if sources is None else f"{sources[k]}/"
        groups.append(np.array([f"{prefix}{code}" for code in codes[nonempty]], dtype=str))
    width = int(model.engine.dense[0].shape[0])
    embedding = np.concatenate(embeddings) if embeddings else np.zeros((0, width), np.float32)
    groups = np.concatenate(groups) if groups else np.zeros(0, str)
    if len(embedding) < 2:
        raise ValueError(
            f"the results hold {len(embedding)} non-empty components; the reference needs >= 2."
        )
    _check_fit(len(embedding), groups, shrinkage)
    return _reference(model, embedding, groups, shrinkage, len(embedding))


def _check_fit(n: int, groups, shrinkage: float) -> None:
    if not 0.0 <= float(shrinkage) < 1.0:
        raise ValueError(f"shrinkage must be in [0, 1), got {shrinkage!r}.")
    if groups is not None and np.shape(groups) != (n,):
        raise ValueError(f"groups must have one entry per patch ({n}), got {np.shape(groups)}.")


def _reference(model: CalcompModel, embedding, groups, shrinkage: float, n: int) -> OodReference:
    """Group means and shrunk within-group precision of the square-rooted ``embedding``."""
    groups = np.zeros(n, np.int64) if groups is None else np.asarray(groups)
    features = _features(embedding)
    names, inverse = np.unique(groups, return_inverse=True)
    means = np.stack([features[inverse == k].mean(axis=0) for k in range(len(names))])
    within = features - means[inverse]
    dim = features.shape[1]
    cov = np.cov(within, rowvar=False).reshape(dim, dim)
    scale = max(float(np.mean(np.diag(cov))), 1e-12)
    cov = (1.0 - shrinkage) * cov + shrinkage * scale * np.eye(dim)
    precision = np.linalg.inv(cov)
    return OodReference(means, precision, float("inf"), network_fingerprint(model), n)


def _features(embedding: np.ndarray) -> np.ndarray:
    """Square root of the (non-negative, pooled ReLU) embedding: closer to Gaussian."""
    return np.sqrt(np.maximum(np.asarray(embedding, dtype=np.float64), 0.0))


def calibrate_ood_threshold(
    reference: OodReference, in_distribution_scores: Sequence[float], *, margin: float = 1.02
) -> OodReference:
    """Set the threshold so that every held-out in-distribution file passes.

    Parameters
    ----------
    reference : OodReference
    in_distribution_scores : sequence of float
        :func:`file_score` of held-out files that the model should handle (not used for
        fitting the reference).
    margin : float
        The threshold is ``margin`` times the largest of these scores.

    Returns
    -------
    OodReference
        A copy with ``threshold`` set.

    Examples
    --------
    >>> import numpy as np
    >>> ref = OodReference(np.zeros((1, 2)), np.eye(2))
    >>> calibrate_ood_threshold(ref, [1.0, 1.5, 2.0]).threshold
    2.04
    """
    scores = np.asarray(in_distribution_scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        raise ValueError("in_distribution_scores holds no finite score; score held-out files.")
    return replace(reference, threshold=round(float(margin) * float(scores.max()), 6))


def component_distances(embedding: np.ndarray, reference: OodReference) -> np.ndarray:
    """Mahalanobis distance of each embedding to the nearest reference mean, over ``sqrt(D)``.

    Parameters
    ----------
    embedding : (N, D) ndarray
        From :meth:`CalcompModel.embed` (square-rooted here, as in :func:`fit_ood_reference`).
    reference : OodReference

    Returns
    -------
    (N,) float64 ndarray
        About 1 for typical training patches; larger means less like them.

    Examples
    --------
    >>> import numpy as np
    >>> ref = OodReference(np.zeros((1, 4)), np.eye(4))
    >>> component_distances(np.array([[0, 0, 0, 0], [4, 4, 4, 4]]), ref).tolist()
    [0.0, 2.0]
    """
    features = _features(embedding)
    means = np.asarray(reference.means, np.float64)
    precision = np.asarray(reference.precision, np.float64)
    precision = (precision + precision.T) / 2  # the same quadratic form
    # (f - m) P (f - m) = f P f - 2 f P m + m P m, for every mean at once
    projected = features @ precision
    squared = (projected * features).sum(axis=1)[:, None] - 2 * projected @ means.T
    squared += ((means @ precision) * means).sum(axis=1)
    best = squared.min(axis=1) if len(means) else np.full(len(features), np.inf)
    return np.sqrt(np.maximum(best, 0.0) / means.shape[1])


def file_score(distances: np.ndarray) -> float:
    """A file's score: the mean component distance (``nan`` without components)."""
    distances = np.asarray(distances, dtype=np.float64)
    return float(np.mean(distances)) if distances.size else float("nan")


def network_fingerprint(model: CalcompModel) -> str:
    """SHA256 of the image network's weights: every weight but the fusion head's ``head/``
    and model v3's temporal branch ``temporal/`` (the embedding depends on neither).

    Examples
    --------
    >>> len(network_fingerprint(CalcompModel.load()))
    64
    """
    digest = hashlib.sha256()
    for key in sorted(k for k in model.weights if not k.startswith(_NOT_IMAGE_NETWORK)):
        value = np.ascontiguousarray(model.weights[key], dtype=np.float32)
        digest.update(key.encode() + str(value.shape).encode() + value.tobytes())
    return digest.hexdigest()


def _evidence_patches(evidence: Evidence, model: CalcompModel):
    """Patches of the non-empty components, cropped as :func:`classify_evidence` crops them
    (model v3: their channels; empty footprints add nothing to the neighbours channel)."""
    found = footprints_for(evidence, model.scale_rule)
    flat, flat_dims, scale = found
    keep = np.flatnonzero(np.diff(flat.indptr) > 0)
    flat = flat[:, keep]
    source = None
    if model.version >= 3:
        source = ChannelSource.from_evidence(
            evidence, found._replace(A=flat), patch_size=model.patch_size,
            names=model.channel_names,
        )  # fmt: skip
    for start in range(0, len(keep), _COMPONENTS_PER_CHUNK):
        stop = start + _COMPONENTS_PER_CHUNK
        if source is not None:
            yield source.crop(start, stop)
        else:
            yield crop_checked(flat[:, start:stop], flat_dims, scale, model.patch_size)


def evidence_distances(
    evidence: Evidence, model: CalcompModel, reference: OodReference
) -> np.ndarray:
    """:func:`component_distances` of the non-empty components of ``evidence``."""
    parts = [component_distances(model.embed(p), reference) for p in _evidence_patches(evidence, model)]  # fmt: skip
    return np.concatenate(parts) if parts else np.zeros(0)


def advice(n_components: int) -> int:
    """About how many components to label before a refit: 10 %, at least 30, at most 200."""
    return int(min(max(30, round(0.1 * n_components)), 200, max(n_components, 0)))


class OodScore(NamedTuple):
    """A file's out-of-distribution score and whether it is above the threshold."""

    score: float
    """:func:`file_score` of the file's non-empty components (``nan`` without any)."""
    is_ood: bool
    """``score > reference.threshold``."""


def ood_score(
    evidence: Evidence,
    model: CalcompModel,
    *,
    reference: OodReference | str | os.PathLike | None = None,
    embedding: np.ndarray | None = None,
) -> OodScore:
    """How unlike the model's training data the components of one file are.

    Parameters
    ----------
    evidence : Evidence
        One result (:func:`calcomp_caiman.io.caiman_h5.read_evidence`).
    model : CalcompModel
    reference : OodReference or path-like, optional
        The reference, or a model folder (or ``ood.npz``) holding it. Default: the
        ``ood.npz`` of the bundled model with ``model``'s weights
        (:func:`find_ood_reference`).
    embedding : (N, D) ndarray, optional
        :meth:`CalcompModel.embed` of every component of ``evidence`` when already at hand
        (:func:`calcomp_caiman.classify.classify_with_embedding`); computed otherwise.

    Returns
    -------
    OodScore
        ``score`` (float): :func:`file_score` (``nan`` for a file without non-empty
        components); ``is_ood`` (bool): ``score > reference.threshold``. A
        ``UserWarning`` naming the file and the advice (label about :func:`advice`
        components with ``calcomp curate`` and refit) is issued then; nothing fails.

    Raises
    ------
    CalcompError
        No reference is known for ``model`` (compute one with :func:`fit_ood_reference`),
        or the reference was computed for other weights.

    Examples
    --------
    >>> import numpy as np
    >>> from calcomp_caiman.evidence.evidence import Evidence
    >>> rr, cc = np.mgrid[:64, :64]
    >>> cell = np.exp(-((rr - 30) ** 2 + (cc - 30) ** 2) / 12.0)
    >>> ev = Evidence.build(cell.reshape(-1, 1, order="F"), (64, 64), gSig=4)
    >>> score, is_ood = ood_score(ev, CalcompModel.load())
    >>> bool(score > 0)
    True
    """
    if reference is None:
        reference = find_ood_reference(model)
        if reference is None:
            raise CalcompError(
                f"no out-of-distribution reference ({OOD_FILE}) for model {model.name!r}; "
                "compute one with calcomp_caiman.model.ood.fit_ood_reference and save it in the "
                "model folder."
            )
    elif not isinstance(reference, OodReference):
        reference = load_ood_reference(reference)
    network = network_fingerprint(model)
    if reference.network_sha256 and reference.network_sha256 != network:
        raise CalcompError(
            f"the {OOD_FILE} reference was computed for network {reference.network_sha256[:12]}, "
            f"not that of model {model.name!r} ({network[:12]}); recompute it."
        )
    if embedding is None:
        distances = evidence_distances(evidence, model, reference)
    else:
        nonempty = np.diff(evidence.A.indptr) > 0
        distances = component_distances(np.asarray(embedding)[nonempty], reference)
    score = file_score(distances)
    is_ood = bool(np.isfinite(score) and score > reference.threshold)
    if is_ood:
        warnings.warn(
            f"{evidence.source or 'estimates'}: components unlike the training data of "
            f"{model.name} (OOD score {score:.2f} > {reference.threshold:.2f}); label "
            f"~{advice(evidence.n)} components with `calcomp curate` and refit.",
            UserWarning,
            stacklevel=2,
        )
    return OodScore(score, is_ood)


def save_ood_reference(reference: OodReference, folder: str | os.PathLike) -> Path:
    """Write ``ood.npz`` into a model folder atomically; return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / OOD_FILE

    def build(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            np.savez_compressed(
                handle,
                means=reference.means.astype(np.float64),
                precision=reference.precision.astype(np.float64),
                threshold=np.float64(reference.threshold),
                network_sha256=np.str_(reference.network_sha256),
                n_patches=np.int64(reference.n_patches),
            )

    atomic_replace(str(target), build, mode=0o644, original=str(target) if target.exists() else None)  # fmt: skip
    return target


def load_ood_reference(path: str | os.PathLike) -> OodReference:
    """Read ``ood.npz`` (a model folder or the file itself).

    Raises
    ------
    FileNotFoundError
        No such file.
    InvalidFileError
        Not a reference written by :func:`save_ood_reference`.
    """
    path = folder_file(path, OOD_FILE, "out-of-distribution reference")
    try:
        with np.load(path, allow_pickle=False) as data:
            means = np.asarray(data["means"], np.float64)
            precision = np.asarray(data["precision"], np.float64)
            reference = OodReference(
                means,
                precision,
                float(data["threshold"]),
                str(data["network_sha256"]),
                int(data["n_patches"]),
            )
    except (KeyError, ValueError, OSError) as err:
        raise InvalidFileError(path, f"not an out-of-distribution reference ({err}).") from err
    dim = means.shape[-1]
    if means.ndim != 2 or precision.shape != (dim, dim):
        raise InvalidFileError(path, f"means {means.shape} and precision {precision.shape} differ.")
    return reference


def find_ood_reference(
    model: CalcompModel, folder: str | os.PathLike | None = None
) -> OodReference | None:
    """The reference for ``model``'s network: in ``folder`` if it has one, else bundled.

    A reference fits every model with the same shape network
    (:func:`network_fingerprint`): a refitted head keeps the bundled reference valid.
    Among bundled folders, the model's own (by name, or the one it was refitted from) comes
    first, then those that crop the same way (``scale_rule``), since the reference is of
    patches cropped by that rule. Returns None when there is none for this network.
    """
    candidates = [] if folder is None else [Path(folder)]
    candidates += sorted(set(bundled_models().values()), key=lambda f: _preference(f, model))
    network = network_fingerprint(model)
    for candidate in candidates:
        if not (candidate / OOD_FILE).is_file():
            continue
        reference = load_ood_reference(candidate)
        if reference.network_sha256 == network:
            return reference
    logger.debug("no %s for the network of model %s", OOD_FILE, model.name)
    return None


def _preference(folder: Path, model: CalcompModel) -> tuple[int, int, str]:
    """Sort key of a bundled model folder as the source of ``model``'s reference."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return (2, 2, folder.name)
    name = str(config.get("name", folder.name))
    own = name == model.name or str(model.config.get("refit_from", "")).startswith(name + " ")
    same_crop = str(config.get("scale_rule", "gsig")) == model.scale_rule
    return (0 if own else 1, 0 if same_crop else 1, folder.name)
