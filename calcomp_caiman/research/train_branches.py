"""Training of model v3: the image branch over channels, the temporal branch, the fusion head.

Model v3 (:class:`~calcomp_caiman.model.folder.CalcompModel`, ``version`` 3) reads three
things per component, made at run time by :func:`calcomp_caiman.classify.classify_evidence`
and here by :func:`branch_inputs` with the same functions:

* the channels (:mod:`calcomp_caiman.evidence.channels`): footprint, neighbours, ``Cn``,
  mean image;
* the transient profiles (:mod:`calcomp_caiman.evidence.transients`);
* the evidence features (:func:`~calcomp_caiman.evidence.features.evidence_features`).

:func:`train_v3` fits, on labelled results (:class:`~calcomp_caiman.research.labelled_results.LabelledResult`:
simulated CaImAn results, hybrid results, real masks):

1. the image branch (:func:`fit_image_branch`): the ResNet of
   :func:`~calcomp_caiman.model.network.build_resnet` over the channels, in Keras, with
   rotations and flips, and every optional channel dropped (zeroed) with probability
   ``channel_dropout`` per sample, so that any subset of channels works;
2. the temporal branch (:func:`fit_temporal_branch`): a perceptron over the flattened
   profiles of the components with traces (:func:`~calcomp_caiman.model.head.fit_head`);
3. the fusion head over both branches' log-probabilities, the channels' presence and the
   features, on every training result once with all its evidence and ``copies`` times
   with optional kinds of evidence left out (:func:`head_rows`), its size chosen on the
   validation set;
4. on the validation set, whose sources (simulated, hybrid, real) weigh the same: the
   temperatures with and without traces, and the acceptance cut ``min_prob``
   (:func:`choose_min_prob`: the cut that keeps at least ``recall_target`` of the true
   neurons of every validation source, the best mean accepted-set F1 among those).

Every source weighs the same in every fit, and the classes within it. Labels are codes
1-4 (``CLASSES``), 0 for ``non_neuron`` (process or noise) and :data:`UNLABELLED` (-1) for
components that take part as neighbours but teach nothing (a hybrid result's components on
the recording's own cells).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.optimize

from calcomp_caiman.evidence.channels import CHANNELS, component_channels
from calcomp_caiman.evidence.evidence import EVIDENCE_KINDS, Evidence
from calcomp_caiman.evidence.features import FEATURE_GROUPS, evidence_inputs, feature_names
from calcomp_caiman.evidence.patches import footprints_for
from calcomp_caiman.evidence.transients import PEAKS, SAMPLES, WINDOW
from calcomp_caiman.io.caiman_h5 import read_evidence
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.model.head import FusionHead, fit_head, probability_set_nll
from calcomp_caiman.model.network import build_resnet, variable_name
from calcomp_caiman.refit import LabelledInputs
from calcomp_caiman.research.labelled_results import METHODS, LabelledResult
from calcomp_caiman.schema import CLASSES, label_masks

logger = logging.getLogger(__name__)

__all__ = [
    "OPTIONAL_KINDS",
    "UNLABELLED",
    "BranchInputs",
    "V3Settings",
    "augment_channels",
    "branch_inputs",
    "choose_min_prob",
    "choose_neuron_shift",
    "fit_fusion_head",
    "fit_image_branch",
    "fit_temporal_branch",
    "HeadRows",
    "head_rows",
    "load_hybrid_results",
    "source_weights",
    "train_v3",
    "untrained_v3",
    "weighted_temperature",
]

UNLABELLED = -1
"""Label of a component that is a neighbour only (no class known)."""

OPTIONAL_KINDS = EVIDENCE_KINDS[1:]
"""Kinds of evidence the head is trained to do without (``neighbours``, ``image``,
``traces``, ``metrics``), as :func:`~calcomp_caiman.classify.classify_evidence`'s ``use``."""

_TEMPORAL_PREFIX = "temporal/"


@dataclass(frozen=True)
class V3Settings:
    """The hyperparameters of a model v3 training, written into ``config.json["training"]``.

    Attributes
    ----------
    patch_size : int
        Side of the channel patches.
    widths, blocks : tuple of int
        The image network's stages (:func:`~calcomp_caiman.model.network.build_resnet`).
    dropout : float
        Dropout before the image network's output.
    channels : tuple of str
        The channels, among :data:`~calcomp_caiman.evidence.channels.CHANNELS`.
    channel_dropout : float
        Probability that an optional channel of a training sample is zeroed (per epoch).
    epochs, batch_size, learning_rate, patience : int, int, float, int
        The image branch's training (Adam; the rate halves after ``patience // 2`` epochs
        without a lower validation loss; stops after ``patience``).
    temporal_hidden, temporal_l2 : int, float
        The temporal branch's perceptron.
    head_grid : tuple of (int, float)
        ``(hidden, l2)`` of the fusion heads tried; the lowest validation NLL wins.
    copies, p_drop : int, float
        Missing-evidence copies of every training result for the head, and the
        probability that each optional kind is left out of a copy.
    recall_target : float
        Share of the true neurons of every validation source the default cut keeps.
    seed : int
        Seeds Keras, the augmentation, the copies and the perceptrons.
    """

    patch_size: int = 32
    widths: tuple[int, ...] = (16, 32, 64)
    blocks: tuple[int, ...] = (1, 1, 1)
    dropout: float = 0.2
    channels: tuple[str, ...] = CHANNELS
    channel_dropout: float = 0.3
    epochs: int = 45
    batch_size: int = 64
    learning_rate: float = 1e-3
    patience: int = 8
    temporal_hidden: int = 32
    temporal_l2: float = 1e-3
    head_grid: tuple[tuple[int, float], ...] = ((8, 1e-2), (16, 3e-3), (16, 1e-2), (32, 3e-3))
    copies: int = 3
    p_drop: float = 0.4
    recall_target: float = 0.95
    seed: int = 0


class BranchInputs(NamedTuple):
    """What model v3 reads about the components of one result."""

    channels: np.ndarray
    """(N, P, P, C) float32."""
    features: np.ndarray
    """(N, F) float32: every column of :func:`~calcomp_caiman.evidence.features.feature_names`."""
    profiles: np.ndarray | None
    """(N, 2, S) float32, or None without traces."""


def branch_inputs(
    evidence: Evidence,
    *,
    patch_size: int,
    channels: Sequence[str] = CHANNELS,
    temporal_options: Mapping | None = None,
    use: Sequence[str] | None = None,
) -> BranchInputs:
    """The channels, features and profiles of every component, as classifying makes them.

    Parameters
    ----------
    evidence : Evidence
    patch_size : int
    channels : sequence of str
    temporal_options : mapping, optional
        ``window``, ``samples``, ``peaks`` of the profiles.
    use : sequence of str, optional
        Optional kinds of evidence to use (default all present).
    """
    found = footprints_for(evidence, "footprints")
    features, profiles = evidence_inputs(
        evidence, *found, use=use, profiles=True, profile_options=temporal_options
    )
    stack = component_channels(evidence, found, patch_size=patch_size, names=channels, use=use)
    return BranchInputs(np.ascontiguousarray(stack), features, profiles)


def load_hybrid_results(
    folder: str | Path, *, methods: Sequence[str] = METHODS
) -> list[LabelledResult]:
    """The labelled CaImAn results of a ``recipes/build_hybrid_data.py`` output folder.

    ``<recording>/<field>_s<seed>_<method>.hdf5`` with ``..._labels.npz`` beside it (codes
    1-4; 0 there means unlabelled, a component on the recording's own cells: it becomes
    :data:`UNLABELLED`). A result is ``held_out`` when its labels say so.
    """
    items = []
    for labels_path in sorted(Path(folder).glob("*/*_labels.npz")):
        movie = labels_path.name[: -len("_labels.npz")]
        with np.load(labels_path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        held_out = bool(arrays.get("held_out", False))
        recording = labels_path.parent.name
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
                logger.warning("skipping %s: %d labels, %d components", path, len(labels), evidence.n)  # fmt: skip
                continue
            labels = np.where(labels == 0, UNLABELLED, labels)
            accepted = arrays.get(f"{method}_caiman_accepted")
            items.append(
                LabelledResult(
                    evidence,
                    labels,
                    f"{recording}/{movie}",
                    "hybrid",
                    recording,
                    held_out,
                    method,
                    accepted,
                )  # fmt: skip
            )
    logger.info("loaded %d hybrid results from %s", len(items), folder)
    return items


def source_weights(labels: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Weights (mean 1 over the labelled) giving every source the same total weight and,
    within a source, every label code; :data:`UNLABELLED` components weigh 0.

    Examples
    --------
    >>> w = source_weights(np.array([1, 1, 3, 1, -1]), np.array(["a", "a", "a", "b", "b"]))
    >>> w.round(3).tolist()
    [0.5, 0.5, 1.0, 2.0, 0.0]
    """
    labels = np.asarray(labels)
    sources = np.asarray(sources)
    out = np.zeros(len(labels))
    labelled = labels != UNLABELLED
    names = np.unique(sources[labelled])
    for source in names:
        in_source = labelled & (sources == source)
        codes = np.unique(labels[in_source])
        for code in codes:
            members = in_source & (labels == code)
            out[members] = 1.0 / members.sum() / len(codes) / len(names)
    return out / out[labelled].mean() if labelled.any() else out


def augment_channels(
    channels: np.ndarray,
    rng: np.random.Generator,
    *,
    names: Sequence[str] = CHANNELS,
    channel_dropout: float = 0.3,
) -> np.ndarray:
    """Randomly turned, flipped copies of channel stacks, optional channels dropped.

    The same rotation (a multiple of 90 degrees) and flip apply to every channel of a
    sample; each channel other than the footprint is zeroed with probability
    ``channel_dropout``, as when a result lacks it.

    Parameters
    ----------
    channels : (N, P, P, C) float32 ndarray
    rng : numpy.random.Generator
    names : sequence of str
        The channels' names (``footprint`` is never dropped).
    channel_dropout : float

    Returns
    -------
    (N, P, P, C) float32 ndarray
    """
    out = np.array(channels, dtype=np.float32, copy=True)
    n = len(out)
    turns = rng.integers(0, 4, n)
    for k in range(1, 4):
        chosen = turns == k
        out[chosen] = np.rot90(out[chosen], k, axes=(1, 2))
    flips = rng.random(n) < 0.5
    out[flips] = out[flips, :, ::-1]
    for c, name in enumerate(names):
        if name != "footprint":
            out[rng.random(n) < channel_dropout, :, :, c] = 0.0
    return out


def _set_cross_entropy(y_true, y_pred):
    from keras import ops

    return -ops.log(ops.clip(ops.sum(y_true * y_pred, axis=-1), 1e-7, 1.0))


def _weighted_set_nll(probs: np.ndarray, allowed: np.ndarray, weights: np.ndarray) -> float:
    p = np.clip((probs * allowed).sum(axis=1), 1e-7, 1.0)
    return float(-(weights * np.log(p)).sum() / max(weights.sum(), 1e-12))


def fit_image_branch(
    net,
    channels: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    *,
    val_channels: np.ndarray,
    val_labels: np.ndarray,
    val_weights: np.ndarray,
    settings: V3Settings,
) -> dict:
    """Train the image network on channel stacks with the set cross-entropy; keep its best epoch.

    Fresh :func:`augment_channels` copies every epoch; early stopping and learning-rate
    halving on the weighted validation set NLL (channels as they are).

    Parameters
    ----------
    net : keras.Model
        From :func:`~calcomp_caiman.model.network.build_resnet` with ``channels=C``.
    channels, labels, weights
        Training stacks (N, P, P, C), codes 0-4, per-sample weights (:func:`source_weights`).
    val_channels, val_labels, val_weights
        The validation set, likewise.
    settings : V3Settings

    Returns
    -------
    dict
        Per-epoch ``loss``, ``val_loss``, ``seconds``; ``best_epoch`` (1-based).
    """
    import keras

    if len(channels) == 0 or len(val_channels) == 0:
        raise ValueError("the image branch needs labelled training and validation components.")
    rng = np.random.default_rng(settings.seed)
    optimizer = keras.optimizers.Adam(learning_rate=settings.learning_rate)
    net.compile(optimizer=optimizer, loss=_set_cross_entropy)
    targets = label_masks(labels)
    val_allowed = label_masks(val_labels)
    history: dict = {"loss": [], "val_loss": [], "seconds": []}
    best, best_weights, best_epoch, waited = np.inf, net.get_weights(), 0, 0
    rate = settings.learning_rate
    for epoch in range(int(settings.epochs)):
        start = time.perf_counter()
        x = augment_channels(
            channels, rng, names=settings.channels, channel_dropout=settings.channel_dropout
        )
        fit = net.fit(x, targets, sample_weight=weights.astype(np.float32),
                      batch_size=settings.batch_size, epochs=1, shuffle=True, verbose=0)  # fmt: skip
        val_probs = np.asarray(net.predict(val_channels, batch_size=256, verbose=0))
        val_loss = _weighted_set_nll(val_probs, val_allowed, val_weights)
        history["loss"].append(float(fit.history["loss"][-1]))
        history["val_loss"].append(val_loss)
        history["seconds"].append(time.perf_counter() - start)
        logger.info("image branch epoch %d/%d: loss %.4f, val_loss %.4f (%.0f s)", epoch + 1,
                    settings.epochs, history["loss"][-1], val_loss, history["seconds"][-1])  # fmt: skip
        if val_loss < best - 1e-4:
            best, best_weights, best_epoch, waited = val_loss, net.get_weights(), epoch + 1, 0
        else:
            waited += 1
            if waited >= settings.patience:
                break
            if waited == max(1, settings.patience // 2):
                rate /= 2
                optimizer.learning_rate.assign(rate)
    net.set_weights(best_weights)
    history["best_epoch"] = best_epoch
    return history


def fit_temporal_branch(
    profiles: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    *,
    hidden: int = 32,
    l2: float = 1e-3,
    seed: int = 0,
) -> FusionHead:
    """The temporal branch: a perceptron over flattened profiles (components with traces).

    Parameters
    ----------
    profiles : (N, 2, S) ndarray
        Of labelled components with traces (an all-zero profile teaches nothing: left out).
    labels : (N,) int ndarray
        Codes 0-4.
    weights : (N,) ndarray
    hidden, l2, seed
        As :func:`~calcomp_caiman.model.head.fit_head`.
    """
    flat = np.asarray(profiles, np.float64).reshape(len(profiles), -1)
    keep = (np.abs(flat).max(axis=1) > 0) & (np.asarray(weights) > 0)
    if not keep.any():
        raise ValueError("the temporal branch needs labelled components with traces.")
    allowed = label_masks(labels[keep]).astype(bool)
    return fit_head(flat[keep], allowed, sample_weight=weights[keep], hidden=hidden, l2=l2,
                    seed=seed, max_iter=600)  # fmt: skip


def _keras_weights(net) -> dict[str, np.ndarray]:
    return {
        f"{layer.name}/{variable_name(variable)}": np.asarray(variable.numpy(), np.float32)
        for layer in net.layers
        for variable in layer.weights
    }


def _placeholder(width: int) -> FusionHead:
    """A head of ``width`` inputs that outputs zeros (to assemble a model before its head)."""
    zero = np.zeros
    classes = len(CLASSES)
    return FusionHead(zero(width), np.ones(width), zero((width, 1)), zero(1), zero((1, classes)),
                      zero(classes))  # fmt: skip


class HeadRows(NamedTuple):
    """What the fusion head reads about labelled components (:func:`head_rows`)."""

    logits: np.ndarray
    """(N, 4) the image branch's logits."""
    features: np.ndarray
    """(N, F) every feature column."""
    profiles: np.ndarray
    """(N, 2, S) transient profiles; all zero without traces."""
    presence: np.ndarray
    """(N, C - 1) the optional channels' presence."""
    labels: np.ndarray
    """(N,) codes 0-4."""
    sources: np.ndarray
    """(N,) source of each row."""

    def as_inputs(self) -> LabelledInputs:
        """What the head reads of these rows, as a refit keeps it (:func:`~calcomp_caiman.refit.labelled_inputs`)."""
        return LabelledInputs(self.logits, self.features, self.profiles, self.presence)

    def inputs(self, model: CalcompModel) -> np.ndarray:
        """The head's input columns (:meth:`CalcompModel.head_inputs`)."""
        return self.as_inputs().head_inputs(model)

    def probs(self, model: CalcompModel) -> np.ndarray:
        """Calibrated probabilities (:meth:`CalcompModel.fuse`)."""
        return self.as_inputs().probs(model)


def head_rows(
    model: CalcompModel,
    items: Sequence[LabelledResult],
    inputs: Sequence[BranchInputs],
    *,
    copies: int = 0,
    p_drop: float = 0.4,
    seed: int = 0,
) -> HeadRows:
    """What the fusion head reads about the labelled components of ``items``.

    Every result once with all its evidence, then ``copies`` times with each optional kind
    of evidence present left out with probability ``p_drop`` (a kind left out of a result
    is absent for all its components, exactly as :func:`~calcomp_caiman.classify.classify_evidence`
    with ``use`` computes it: channels zeroed, features recomputed, no profiles).

    Parameters
    ----------
    model : CalcompModel
        A model v3 whose image branch makes the logits.
    items, inputs
        Labelled results and their :func:`branch_inputs`.
    copies, p_drop, seed
        The missing-evidence copies.
    """
    rng = np.random.default_rng(seed)
    kind_of = {"neighbours": "neighbours", "cn": "image", "image": "image"}
    blocks: list[tuple] = []
    for item, found in zip(items, inputs):
        labelled = item.labels != UNLABELLED
        if not labelled.any():
            continue
        kinds = tuple(kind for kind in OPTIONAL_KINDS if kind in item.evidence.kinds)
        variants = [kinds]
        for _ in range(copies if kinds else 0):
            variants.append(tuple(k for k in kinds if rng.random() >= p_drop))
        n = int(labelled.sum())
        for use in variants:
            channels = found.channels[labelled]
            features = found.features[labelled]
            profiles = np.zeros((n, 2, SAMPLES), np.float32)
            if found.profiles is not None and "traces" in use:
                profiles = found.profiles[labelled]
            if use != kinds:
                channels = channels.copy()
                for c, name in enumerate(model.channel_names):
                    if kind_of.get(name, "shape") not in ("shape", *use):
                        channels[..., c] = 0.0
                found_fp = footprints_for(item.evidence, "footprints")
                features = evidence_inputs(item.evidence, *found_fp, use=use).features[labelled]
            blocks.append((model.shape_logits(channels), features, profiles,
                           model.channel_presence(channels), item.labels[labelled],
                           np.full(n, item.source)))  # fmt: skip
    if not blocks:
        raise ValueError("no labelled components to fit the fusion head on.")
    return HeadRows(*(np.concatenate(parts) for parts in zip(*blocks)))


def _selection_by_source(
    accepted: np.ndarray, labels: np.ndarray, sources: np.ndarray
) -> dict[str, tuple[float, float]]:
    """Per source with true neurons: recall of the true neurons and accepted-set F1 of the
    components ``accepted`` (unlabelled components left out)."""
    out = {}
    for source in np.unique(sources):
        members = (sources == source) & (labels != UNLABELLED)
        positive = labels[members] == 1
        if positive.any():
            tp = np.sum(accepted[members] & positive)
            recall = tp / positive.sum()
            precision = tp / max(accepted[members].sum(), 1)
            out[str(source)] = (
                float(recall),
                float(2 * precision * recall / max(precision + recall, 1e-12)),
            )
    return out


def choose_min_prob(
    probs: np.ndarray, labels: np.ndarray, sources: np.ndarray, *, recall_target: float = 0.95
) -> tuple[float, dict]:
    """The P(neuron) cut that keeps ``recall_target`` of the true neurons of every source.

    Among the cuts (0.01 steps) whose recall of true neurons (label 1) is at least
    ``recall_target`` on every source that has neurons, the one with the best mean
    accepted-set F1 over the sources (each source weighs the same). When no cut keeps
    that many on every source, the cut with the highest smallest recall (the lowest).

    Returns
    -------
    cut : float
    report : dict
        Per source: ``neurons``, ``recall`` and ``accepted_f1`` at the cut; ``feasible``
        (whether the target was met everywhere).

    Examples
    --------
    >>> p = np.zeros((6, 4)); p[:, 0] = [0.9, 0.8, 0.3, 0.2, 0.6, 0.1]
    >>> cut, report = choose_min_prob(p, np.array([1, 1, 3, 3, 1, 3]), np.array(["a"] * 6))
    >>> cut, report["a"]["recall"]
    (0.31, 1.0)
    """
    p = np.asarray(probs)[:, CLASSES.index("neuron")]
    labels = np.asarray(labels)
    sources = np.asarray(sources)
    cuts = np.round(np.arange(0.01, 1.0, 0.01), 2)
    per_cut = [_selection_by_source(p >= cut, labels, sources) for cut in cuts]
    names = list(per_cut[0])
    recall = np.array([[per[name][0] for name in names] for per in per_cut]).reshape(len(cuts), -1)
    f1 = np.array([[per[name][1] for name in names] for per in per_cut]).reshape(len(cuts), -1)
    feasible = recall.min(axis=1, initial=1.0) >= recall_target - 1e-12
    if feasible.any():
        score = np.where(feasible, f1.mean(axis=1) if names else 0.0, -np.inf)
        best = int(np.argmax(score))
    else:  # recall only falls with the cut: the lowest cut is the best there is
        best = 0
    report = {
        source: {
            "neurons": int(np.sum((sources.astype(str) == source) & (labels == 1))),
            "recall": float(recall[best, j]),
            "accepted_f1": float(f1[best, j]),
        }
        for j, source in enumerate(names)
    }
    report["feasible"] = bool(feasible.any())
    return float(cuts[best]), report


def choose_neuron_shift(
    model: CalcompModel,
    rows: HeadRows,
    rows_without_traces: np.ndarray,
    *,
    recall_target: float = 0.95,
) -> tuple[float, dict]:
    """The shift of the neuron logit of components without traces (masks) at ``min_prob``.

    Among shifts from -3 to 3 (0.1 steps) whose recall of true neurons is at least
    ``recall_target`` on every source of ``rows[rows_without_traces]`` at the model's
    ``min_prob``, the one with the best mean accepted-set F1; when none reaches it, the
    largest shift (the most neurons kept).

    Returns
    -------
    shift : float
    report : dict
        As :func:`choose_min_prob`'s, at the chosen shift.
    """
    cut = float(model.thresholds["min_prob"])
    labels, sources = rows.labels[rows_without_traces], rows.sources[rows_without_traces]
    best = None
    for shift in np.round(np.arange(-3.0, 3.01, 0.1), 1):
        probs = rows.probs(model.with_thresholds(neuron_shift_without_traces=float(shift)))
        accepted = probs[rows_without_traces, CLASSES.index("neuron")] >= cut
        per = _selection_by_source(accepted, labels, sources)
        recalls, f1s = [r for r, _ in per.values()], [f for _, f in per.values()]
        feasible = bool(min(recalls, default=1.0) >= recall_target - 1e-12)
        key = (feasible, float(np.mean(f1s)) if feasible else float(shift))
        if best is None or key > best[0]:
            best = (key, float(shift), {"recall": recalls, "accepted_f1": f1s,
                                        "sources": list(per), "feasible": feasible})  # fmt: skip
    return best[1], best[2]


def weighted_temperature(logits: np.ndarray, allowed: np.ndarray, weights: np.ndarray) -> float:
    """The softmax temperature minimising the weighted set NLL of ``logits`` (as
    :func:`~calcomp_caiman.model.head.fit_temperature`, with a weight per row).

    Examples
    --------
    >>> from calcomp_caiman.model.head import fit_temperature
    >>> z = np.array([[4.0, 0, 0, 0], [4.0, 0, 0, 0], [0, 4.0, 0, 0]])
    >>> allowed = np.eye(4, dtype=bool)[[0, 1, 1]]
    >>> t = weighted_temperature(z, allowed, np.ones(3))
    >>> bool(abs(t - fit_temperature(z, allowed)) < 1e-3)
    True
    """
    z = np.asarray(logits, np.float64)
    log_allowed = np.where(np.asarray(allowed, bool), 0.0, -np.inf)
    weights = np.asarray(weights, np.float64)

    def loss(log_t: float) -> float:
        scaled = z / np.exp(log_t)
        scaled = scaled - scaled.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(scaled).sum(axis=1))
        kept = scaled + log_allowed
        top = kept.max(axis=1)
        log_set = top + np.log(np.exp(kept - top[:, None]).sum(axis=1)) - log_norm
        return float(-(weights * log_set).sum() / weights.sum())

    found = scipy.optimize.minimize_scalar(
        loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded"
    )
    return float(np.exp(found.x))


def _temperatures(model: CalcompModel, rows: HeadRows) -> dict[str, float]:
    """Temperatures of the head's logits, with and without traces (as :meth:`CalcompModel.fuse`
    applies them), every source weighing the same (its classes as they come)."""
    z = model.head.logits(rows.inputs(model))
    allowed = label_masks(rows.labels).astype(bool)
    has = rows.features[:, feature_names().index("has_traces")] > 0
    out = {}
    for key, chosen in (("temperature", has), ("temperature_without_traces", ~has)):
        if chosen.any():
            _, index, counts = np.unique(rows.sources[chosen], return_inverse=True,
                                         return_counts=True)  # fmt: skip
            out[key] = weighted_temperature(z[chosen], allowed[chosen], 1.0 / counts[index])
    return out


def _source_nll(probs: np.ndarray, rows: HeadRows) -> float:
    """Mean set NLL, every source weighing the same."""
    allowed = label_masks(rows.labels)
    return float(np.mean([probability_set_nll(probs[rows.sources == s], allowed[rows.sources == s])
                          for s in np.unique(rows.sources)]))  # fmt: skip


def _temporal_options() -> dict:
    return {"window": list(WINDOW), "samples": SAMPLES, "peaks": PEAKS}


def _head_width(channels: Sequence[str], columns: Sequence[str]) -> int:
    """Inputs of the fusion head: two branches' log-probabilities, presence, features."""
    return 2 * len(CLASSES) + sum(name != "footprint" for name in channels) + len(columns)


def _v3_config(settings: V3Settings, columns, *, training_samples: int, record) -> dict:
    """``config.json`` of a model v3 of ``settings`` reading the features ``columns``."""
    import keras

    return {
        "version": 3,
        "classes": list(CLASSES),
        "patch_size": settings.patch_size,
        "scale_rule": "footprints",
        "inputs": ["channels", "profiles", "features"],
        "channels": list(settings.channels),
        "architecture": {"widths": list(settings.widths), "blocks": list(settings.blocks),
                         "dropout": settings.dropout, "channels": len(settings.channels)},
        "temporal": {"hidden": settings.temporal_hidden, **_temporal_options()},
        "feature_names": list(columns),
        "feature_groups": FEATURE_GROUPS,
        "normalisation": "channels of calcomp_caiman.evidence.channels (footprint: square "
                         "root, unit L2 norm)",
        "crop": "half-width 4*scale+1 around the centre of mass (scale measured from the "
                "footprints), zero padding at borders",
        "training": dataclasses.asdict(settings),
        "keras_version": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "training_samples": training_samples,
        **dict(record or {}),
    }  # fmt: skip


def _assemble(network_weights: Mapping, head: FusionHead, config: Mapping) -> CalcompModel:
    weights = dict(network_weights)
    weights.update({k: v.astype(np.float32) for k, v in head.to_arrays().items()})
    return CalcompModel(weights, dict(config), {})


def untrained_v3(
    settings: V3Settings | None = None, *, feature_columns: Sequence[str] | None = None
) -> CalcompModel:
    """A model v3 of ``settings`` with random weights (Keras' initialisation, random
    perceptrons): for timing and testing the run-time path, whose speed does not depend
    on the weights' values.

    Examples
    --------
    >>> model = untrained_v3(V3Settings(widths=(4, 8), blocks=(1, 1)))  # doctest: +SKIP
    >>> model.version, model.channel_names  # doctest: +SKIP
    (3, ('footprint', 'neighbours', 'cn', 'image'))
    """
    import keras

    settings = V3Settings() if settings is None else settings
    keras.utils.set_random_seed(settings.seed)
    columns = list(feature_names() if feature_columns is None else feature_columns)
    net = build_resnet(patch_size=settings.patch_size, widths=settings.widths,
                       blocks=settings.blocks, dropout=settings.dropout,
                       channels=len(settings.channels))  # fmt: skip
    rng = np.random.default_rng(settings.seed)

    def perceptron(inputs: int, hidden: int) -> FusionHead:
        return FusionHead(np.zeros(inputs), np.ones(inputs),
                          rng.normal(0, np.sqrt(2.0 / inputs), (inputs, hidden)), np.zeros(hidden),
                          rng.normal(0, np.sqrt(1.0 / hidden), (hidden, len(CLASSES))),
                          np.zeros(len(CLASSES)))  # fmt: skip

    weights = _keras_weights(net)
    temporal = perceptron(2 * SAMPLES, settings.temporal_hidden)
    weights.update(
        {k: v.astype(np.float32) for k, v in temporal.to_arrays(_TEMPORAL_PREFIX).items()}
    )
    config = _v3_config(settings, columns, training_samples=0,
                        record={"name": "untrained_v3", "training_data": "none: random weights"})  # fmt: skip
    head = perceptron(_head_width(settings.channels, columns), settings.head_grid[0][0])
    return _assemble(weights, head, config)


def fit_fusion_head(
    shell: CalcompModel,
    train: Sequence[LabelledResult],
    train_inputs: Sequence[BranchInputs],
    validation: Sequence[LabelledResult],
    val_inputs: Sequence[BranchInputs],
    *,
    settings: V3Settings,
) -> tuple[CalcompModel, dict]:
    """The fusion head and calibration of a model v3 whose branches are fixed.

    The head is fitted on ``train`` (with ``settings.copies`` missing-evidence copies) for
    each ``settings.head_grid`` size; the lowest source-weighted validation NLL wins. Then
    the temperatures and the acceptance cut (:func:`choose_min_prob`) come from
    ``validation``. :func:`train_v3` calls it after fitting the branches; a model for
    another modality refits it alone on that modality's results.

    Parameters
    ----------
    shell : CalcompModel
        A model v3: its image and temporal branches are kept, its head replaced.
    train, validation : sequence of LabelledResult
    train_inputs, val_inputs : sequence of BranchInputs
        :func:`branch_inputs` of the same results.
    settings : V3Settings

    Returns
    -------
    model : CalcompModel
        With the new head, temperatures, ``accept = ["neuron"]`` and ``min_prob``.
    history : dict
        ``head`` candidates and the chosen size, ``temperatures``, ``min_prob`` and
        ``min_prob_report``.
    """
    # a shift fitted for another head means nothing for the new one
    kept = {k: v for k, v in shell.thresholds.items() if k != "neuron_shift_without_traces"}
    shell = CalcompModel(shell.weights, shell.config, kept)
    rows = head_rows(shell, train, train_inputs, copies=settings.copies, p_drop=settings.p_drop,
                     seed=settings.seed)  # fmt: skip
    val_rows = head_rows(shell, validation, val_inputs)
    allowed = label_masks(rows.labels).astype(bool)
    row_weights = source_weights(rows.labels, rows.sources)
    row_inputs = rows.inputs(shell)
    candidates, best = [], None
    for hidden, l2 in settings.head_grid:
        head = fit_head(row_inputs, allowed, sample_weight=row_weights, hidden=hidden, l2=l2,
                        seed=settings.seed, max_iter=600)  # fmt: skip
        trial = shell.with_head(head)
        trial = trial.with_thresholds(**_temperatures(trial, val_rows))
        score = _source_nll(val_rows.probs(trial), val_rows)
        logger.info("v3 head hidden=%d l2=%g: validation set-NLL %.4f", hidden, l2, score)
        candidates.append({"hidden": hidden, "l2": l2, "validation_nll": score})
        if best is None or score < best[0]:
            best = (score, trial, hidden, l2)
    _, model, hidden, l2 = best
    model = model.with_head(
        model.head, fusion_head={"hidden": hidden, "l2": l2, "inputs": model.head_input_names}
    ).with_thresholds(**model.thresholds)
    # the cut on the results with traces (CaImAn's); masks reach it by a neuron shift
    traces = val_rows.features[:, feature_names().index("has_traces")] > 0
    probs = val_rows.probs(model)
    min_prob, report = choose_min_prob(probs[traces], val_rows.labels[traces],
                                       val_rows.sources[traces], recall_target=settings.recall_target)  # fmt: skip
    model = model.with_thresholds(accept=["neuron"], min_prob=min_prob)
    logger.info("v3: min_prob %.2f, per source %s", min_prob, json.dumps(report))
    shift, shift_report = None, None
    if np.any(~traces & (val_rows.labels == 1)):
        shift, shift_report = choose_neuron_shift(model, val_rows, ~traces,
                                                  recall_target=settings.recall_target)  # fmt: skip
        model = model.with_thresholds(neuron_shift_without_traces=shift)
        logger.info("v3: neuron shift without traces %.2f, per source %s", shift,
                    json.dumps(shift_report))  # fmt: skip
    history = {
        "head": {"candidates": candidates, "hidden": hidden, "l2": l2},
        "temperatures": {k: model.thresholds[k] for k in ("temperature", "temperature_without_traces")
                         if k in model.thresholds},
        "min_prob": min_prob,
        "min_prob_report": report,
        "neuron_shift_without_traces": shift,
        "neuron_shift_report": shift_report,
    }  # fmt: skip
    return model, history


def train_v3(
    train: Sequence[LabelledResult],
    validation: Sequence[LabelledResult],
    *,
    settings: V3Settings | None = None,
    record: Mapping | None = None,
    feature_columns: Sequence[str] | None = None,
) -> tuple[CalcompModel, dict]:
    """Model v3 from labelled results: image branch, temporal branch, head, calibration.

    Parameters
    ----------
    train, validation : sequence of LabelledResult
        Whole results (movies, recordings, videos), never split within; every validation
        source (``LabelledResult.source``) weighs the same in the choices made on it.
    settings : V3Settings, optional
    record : mapping, optional
        Entries of ``config.json`` that say what the model is (``name``, versions, seed,
        ``training_data``: :func:`calcomp_caiman.research.train.training_record`).
    feature_columns : sequence of str, optional
        The evidence features the head reads (default every column of
        :func:`~calcomp_caiman.evidence.features.feature_names`).

    Returns
    -------
    model : CalcompModel
        Not saved yet; ``thresholds.json`` with both temperatures, ``accept = ["neuron"]``
        and ``min_prob`` (:func:`choose_min_prob`).
    history : dict
        ``image_branch`` (per-epoch losses), ``temporal`` (training components),
        ``head`` candidates and the chosen size, ``temperatures``, ``min_prob`` and its
        per-source ``min_prob_report``, ``seconds``.
    """
    import keras

    started = time.perf_counter()
    settings = V3Settings() if settings is None else settings
    names = tuple(settings.channels)
    temporal_options = _temporal_options()
    keras.utils.set_random_seed(settings.seed)

    def prepare(items):
        return [branch_inputs(i.evidence, patch_size=settings.patch_size, channels=names,
                              temporal_options=temporal_options) for i in items]  # fmt: skip

    train_inputs, val_inputs = prepare(train), prepare(validation)

    def stacked(items, inputs):
        labels = np.concatenate([i.labels for i in items])
        sources = np.concatenate([np.full(i.evidence.n, i.source) for i in items])
        keep = labels != UNLABELLED
        channels = np.concatenate([x.channels for x in inputs])[keep]
        profiles = np.concatenate(
            [x.profiles if x.profiles is not None else np.zeros((i.evidence.n, 2, SAMPLES), np.float32)
             for i, x in zip(items, inputs)]
        )[keep]  # fmt: skip
        return channels, profiles, labels[keep], source_weights(labels[keep], sources[keep])

    x, profiles, labels, weights = stacked(train, train_inputs)
    val_x, _, val_labels, val_weights = stacked(validation, val_inputs)
    net = build_resnet(patch_size=settings.patch_size, widths=settings.widths,
                       blocks=settings.blocks, dropout=settings.dropout, channels=len(names))  # fmt: skip
    image_history = fit_image_branch(
        net, x, labels, weights, val_channels=val_x, val_labels=val_labels,
        val_weights=val_weights, settings=settings,
    )  # fmt: skip
    temporal = fit_temporal_branch(profiles, labels, weights, hidden=settings.temporal_hidden,
                                   l2=settings.temporal_l2, seed=settings.seed)  # fmt: skip
    columns = list(feature_names() if feature_columns is None else feature_columns)
    config = _v3_config(settings, columns, training_samples=int(len(labels)), record=record)
    weights_v3 = _keras_weights(net)
    weights_v3.update(
        {k: v.astype(np.float32) for k, v in temporal.to_arrays(_TEMPORAL_PREFIX).items()}
    )
    shell = _assemble(weights_v3, _placeholder(_head_width(names, columns)), config)
    model, head_history = fit_fusion_head(shell, train, train_inputs, validation, val_inputs,
                                          settings=settings)  # fmt: skip
    history = {
        "image_branch": image_history,
        "temporal": {"components": int(np.sum(np.abs(profiles).reshape(len(profiles), -1).max(axis=1) > 0))},
        **head_history,
        "seconds": time.perf_counter() - started,
    }  # fmt: skip
    return model, history
