"""Training of model v3: the image branch over channels, the temporal branch, then the fusion head.

Model v3 (:class:`~calcomp_caiman.model.folder.CalcompModel`, ``version`` 3) reads three
things per component, made at run time by :func:`calcomp_caiman.classify.classify_evidence`
and here by :func:`~calcomp_caiman.research.v3_inputs.branch_inputs` with the same functions:

* the channels (:mod:`calcomp_caiman.evidence.channels`): footprint, neighbours, ``Cn``,
  mean image;
* the transient profiles (:mod:`calcomp_caiman.evidence.transients`);
* the evidence features (:func:`~calcomp_caiman.evidence.features.evidence_features`).

:func:`train_v3` fits, on labelled results (:class:`~calcomp_caiman.research.labelled_results.LabelledResult`:
simulated CaImAn results, hybrid results (:func:`load_hybrid_results`), real masks):

1. the image branch (:func:`fit_image_branch`): the ResNet of
   :func:`~calcomp_caiman.model.network.build_resnet` over the channels, in Keras, with
   rotations and flips, and every optional channel dropped (zeroed) with probability
   ``channel_dropout`` per sample, so that any subset of channels works;
2. the temporal branch (:func:`fit_temporal_branch`): a perceptron over the flattened
   profiles of the components with traces (:func:`~calcomp_caiman.model.head.fit_head`);
3. the fusion head and its calibration (temperatures, the acceptance cut ``min_prob``) on
   the branches' outputs (:func:`~calcomp_caiman.research.train_v3_head.fit_fusion_head`).

Every source weighs the same in every fit, and the classes within it
(:func:`~calcomp_caiman.research.v3_inputs.source_weights`). Labels are codes 1-4
(``CLASSES``), 0 for ``non_neuron`` (process or noise) and
:data:`~calcomp_caiman.research.v3_inputs.UNLABELLED` (-1) for components that take part as
neighbours but teach nothing (a hybrid result's components on the recording's own cells).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from calcomp_caiman.evidence.channels import CHANNELS
from calcomp_caiman.evidence.features import FEATURE_GROUPS, feature_names
from calcomp_caiman.evidence.transients import PEAKS, SAMPLES, WINDOW
from calcomp_caiman.io.caiman_h5 import read_evidence
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.model.head import FusionHead, fit_head
from calcomp_caiman.model.network import build_resnet, variable_name
from calcomp_caiman.research.gt_labels import UNLABELLED as STORED_UNLABELLED
from calcomp_caiman.research.labelled_results import METHODS, LabelledResult
from calcomp_caiman.research.train_v3_head import fit_fusion_head
from calcomp_caiman.research.v3_inputs import UNLABELLED, V3Settings, branch_inputs, source_weights
from calcomp_caiman.schema import CLASSES, label_masks

logger = logging.getLogger(__name__)

__all__ = [
    "augment_channels",
    "fit_image_branch",
    "fit_temporal_branch",
    "load_hybrid_results",
    "train_v3",
    "untrained_v3",
]

_TEMPORAL_PREFIX = "temporal/"


def load_hybrid_results(
    folder: str | Path, *, methods: Sequence[str] = METHODS
) -> list[LabelledResult]:
    """The labelled CaImAn results of a ``recipes/build_hybrid_data.py`` output folder.

    ``<recording>/<field>_s<seed>_<method>.hdf5`` with ``..._labels.npz`` beside it (codes
    1-4; 0 there means unlabelled, a component on the recording's own cells: it becomes
    :data:`~calcomp_caiman.research.v3_inputs.UNLABELLED`). A result is ``held_out`` when its labels say so.
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
            labels = np.where(labels == STORED_UNLABELLED, UNLABELLED, labels)
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
        Training stacks (N, P, P, C), codes 0-4, per-sample weights
        (:func:`~calcomp_caiman.research.v3_inputs.source_weights`).
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
        and ``min_prob`` (:func:`~calcomp_caiman.research.train_v3_head.choose_min_prob`).
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
