"""Training of the shape network: a Keras network fitted on patches and labels.

Labels are integer codes: 1-4 for ``CLASSES`` (neuron, process, noise, doubtful) and 0
for ``non_neuron``, a component known to be process *or* noise. The loss is the
cross-entropy of the set of allowed classes, ``-log(sum of their probabilities)``, so a
``non_neuron`` label asks for ``P(process) + P(noise)`` to be high without choosing
between them. Training needs Keras 3 (any backend) and runs on the CPU.

* :func:`train_network`: a network from scratch or from a base model, early-stopped and
  calibrated (model v1, and the network model v2 reuses);
* :func:`fit_network`: the loop itself, shared with the CaImAn-CNN baseline
  (:func:`calcomp_caiman.research.baselines.train_caiman_cnn_baseline`);
* :func:`augment_patches`, :func:`balanced_weights`, :func:`calibrate_temperature`.

The entries that choose data and record provenance are in
:mod:`calcomp_caiman.research.train`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import scipy.ndimage

from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.model.network import DEFAULT_ARCHITECTURE, build_resnet
from calcomp_caiman.research.metrics import set_nll_of_probs
from calcomp_caiman.schema import CLASSES, label_masks

logger = logging.getLogger(__name__)

__all__ = [
    "TrainConfig",
    "augment_patches",
    "balanced_weights",
    "calibrate_temperature",
    "fit_network",
    "train_network",
]


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Per-sample weights giving every label code the same total weight (mean 1)."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        return np.zeros(0, dtype=np.float32)
    counts = np.bincount(labels, minlength=5).astype(np.float64)
    present = counts > 0
    per_code = np.where(present, labels.size / (present.sum() * np.maximum(counts, 1)), 0.0)
    return per_code[labels].astype(np.float32)


def augment_patches(patches: np.ndarray, rng: np.random.Generator, *, binarize_prob: float = 0.25):
    """Randomly transformed copies of patches, for training.

    Rotations by multiples of 90 degrees and flips; a small random affine map (rotation
    up to 20 degrees, shear up to 0.15, zoom 0.8-1.25, shift up to 2 px); Gaussian blur
    (sigma 0.7-1.8 px, 60 % of patches); a gamma change of contrast (0.6-1.7); pixel noise
    on the support (30 %); zeroing below a random fraction (0-0.25) of the maximum, like
    CNMF's thresholding; and, with probability ``binarize_prob``, binarisation at a random
    fraction of the maximum, as when a pipeline exports masks. Each patch is re-normalised
    to unit L2 norm, as :func:`~calcomp_caiman.extract_patches` does.

    Parameters
    ----------
    patches : (N, P, P) float32 ndarray
    rng : numpy.random.Generator
    binarize_prob : float

    Returns
    -------
    (N, P, P) float32 ndarray
    """
    out = np.array(patches, dtype=np.float32, copy=True)
    n, size = len(out), out.shape[-1]
    if n == 0:
        return out
    turns = rng.integers(0, 4, n)
    flips = rng.random(n) < 0.5
    for k in range(1, 4):
        sel = turns == k
        out[sel] = np.rot90(out[sel], k, axes=(1, 2))
    out[flips] = out[flips, :, ::-1]
    angle = np.deg2rad(rng.uniform(-20, 20, n))
    shear = rng.uniform(-0.15, 0.15, n)
    zoom = np.exp(rng.uniform(np.log(0.8), np.log(1.25), n))
    shift = rng.uniform(-2, 2, (n, 2))
    centre = (size - 1) / 2.0
    for i in range(n):
        cos, sin = np.cos(angle[i]), np.sin(angle[i])
        matrix = np.array([[cos, -sin + shear[i]], [sin, cos]]) / zoom[i]
        offset = centre - matrix @ (centre + shift[i])
        out[i] = scipy.ndimage.affine_transform(out[i], matrix, offset=offset, order=1)
    # optical blur (out of focus, low zoom), in a few discrete widths
    blur = rng.choice([0.0, 0.0, 0.7, 1.2, 1.8], size=n)
    for sigma in np.unique(blur[blur > 0]):
        sel = blur == sigma
        out[sel] = scipy.ndimage.gaussian_filter(out[sel], sigma=(0, sigma, sigma))
    np.maximum(out, 0, out=out)
    peak = out.max(axis=(1, 2), keepdims=True)
    out /= np.where(peak > 0, peak, 1.0)
    gamma = np.exp(rng.uniform(np.log(0.6), np.log(1.7), n)).astype(np.float32)
    out **= gamma[:, None, None]
    # CNMF-like pixel noise on the support, then sparsification at a fraction of the max
    noisy = rng.random(n) < 0.3
    noise = rng.normal(0.0, 1.0, out[noisy].shape).astype(np.float32)
    level = rng.uniform(0.03, 0.15, noisy.sum()).astype(np.float32)[:, None, None]
    out[noisy] = np.maximum(out[noisy] + noise * level * (out[noisy] > 0.02), 0)
    cut = rng.uniform(0.0, 0.25, n).astype(np.float32)[:, None, None]
    out[out < cut * out.max(axis=(1, 2), keepdims=True)] = 0
    peak = out.max(axis=(1, 2), keepdims=True)
    out /= np.where(peak > 0, peak, 1.0)
    binarize = rng.random(n) < binarize_prob
    level = rng.uniform(0.1, 0.5, n).astype(np.float32)[:, None, None]
    out[binarize] = (out[binarize] > level[binarize]).astype(np.float32)
    norms = np.sqrt(np.einsum("nij,nij->n", out, out))
    out /= np.where(norms > 0, norms, 1.0)[:, None, None]
    return out


def _set_cross_entropy(y_true, y_pred):
    from keras import ops

    allowed = ops.sum(y_true * y_pred, axis=-1)
    return -ops.log(ops.clip(allowed, 1e-7, 1.0))


def calibrate_temperature(model: CalcompModel, patches: np.ndarray, labels: np.ndarray) -> float:
    """Temperature that minimises the set cross-entropy of ``model`` on held-out data.

    ``softmax(logits / T)`` with ``T > 1`` softens over-confident probabilities. The
    fitted value goes into ``thresholds.json`` (``CalcompModel.with_thresholds``).
    """
    import scipy.optimize

    base = model.with_thresholds(temperature=1.0).predict(patches)
    log_probs = np.log(np.clip(base, 1e-12, 1.0))

    def loss(log_t: float) -> float:
        scaled = log_probs / np.exp(log_t)
        scaled -= scaled.max(axis=1, keepdims=True)
        probs = np.exp(scaled)
        probs /= probs.sum(axis=1, keepdims=True)
        return set_nll_of_probs(probs, labels)

    result = scipy.optimize.minimize_scalar(
        loss, bounds=(np.log(0.25), np.log(8.0)), method="bounded"
    )
    return float(np.exp(result.x))


@dataclass(frozen=True)
class TrainConfig:
    """The hyperparameters of one network training, written into ``config.json["training"]``.

    Attributes
    ----------
    epochs : int
        Most epochs; training stops ``patience`` epochs after the best validation loss.
    batch_size : int
    learning_rate : float
        Adam's initial rate (halved after plateaus).
    patience : int
    augment : bool
        Fresh augmentation (:func:`augment_patches`) every epoch.
    seed : int
        Seeds Keras and the augmentation (own generators).

    Examples
    --------
    >>> TrainConfig(epochs=5).epochs, TrainConfig().batch_size
    (5, 64)
    """

    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 1e-3
    patience: int = 8
    augment: bool = True
    seed: int = 0


def fit_network(
    net,
    patches: np.ndarray,
    labels: np.ndarray,
    *,
    val_patches: np.ndarray,
    val_labels: np.ndarray,
    epochs: int = TrainConfig.epochs,
    batch_size: int = TrainConfig.batch_size,
    learning_rate: float = TrainConfig.learning_rate,
    patience: int = TrainConfig.patience,
    augment: bool = TrainConfig.augment,
    seed: int = TrainConfig.seed,
    log_name: str = "",
) -> dict:
    """Train a Keras network on patches with the set cross-entropy, keeping its best epoch.

    Adam, class-balanced sample weights (:func:`balanced_weights`), fresh
    :func:`augment_patches` copies every epoch; the learning rate is halved after
    ``patience // 2`` epochs without a lower validation loss and training stops after
    ``patience``; the weights of the best epoch are restored in ``net``.

    Parameters
    ----------
    net : keras.Model
        Softmax output over ``CLASSES``; compiled here. Seed Keras
        (``keras.utils.set_random_seed``) before building it for reproducible runs.
    patches, labels, val_patches, val_labels
        As in :func:`train_network`.
    epochs, batch_size, learning_rate, patience, augment, seed
        As the fields of :class:`TrainConfig`.
    log_name : str
        Prefix of the per-epoch log lines.

    Returns
    -------
    dict
        Per-epoch ``loss``, ``val_loss``, ``val_accuracy`` (the top class is allowed by
        the label), ``seconds``; and ``best_epoch`` (1-based).
    """
    import keras

    labels = np.asarray(labels, dtype=np.int64)
    val_labels = np.asarray(val_labels, dtype=np.int64)
    if len(patches) != len(labels) or len(val_patches) != len(val_labels):
        raise ValueError("patches and labels must have the same length (training and validation).")
    if len(patches) == 0 or len(val_patches) == 0:
        raise ValueError("training and validation sets must not be empty.")
    rng = np.random.default_rng(seed)  # augmentation; Keras is seeded by the caller
    patches = np.asarray(patches, dtype=np.float32)
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    net.compile(optimizer=optimizer, loss=_set_cross_entropy)
    weights = balanced_weights(labels)
    targets = label_masks(labels)
    val_x = np.asarray(val_patches, np.float32)[..., None]
    val_allowed = label_masks(val_labels)
    history: dict = {"loss": [], "val_loss": [], "val_accuracy": [], "seconds": []}
    best_loss, best_weights, best_epoch, waited = np.inf, net.get_weights(), 0, 0
    rate = learning_rate
    for epoch in range(int(epochs)):
        start = time.perf_counter()
        x = augment_patches(patches, rng) if augment else patches
        fit = net.fit(
            x[..., None],
            targets,
            sample_weight=weights,
            batch_size=batch_size,
            epochs=1,
            shuffle=True,
            verbose=0,
        )
        val_probs = np.asarray(net.predict(val_x, batch_size=256, verbose=0))
        val_loss = set_nll_of_probs(val_probs, val_labels)
        top = val_probs.argmax(axis=1)
        val_accuracy = float(np.mean(val_allowed[np.arange(len(top)), top]))
        history["loss"].append(float(fit.history["loss"][-1]))
        history["val_loss"].append(val_loss)
        history["val_accuracy"].append(val_accuracy)
        history["seconds"].append(time.perf_counter() - start)
        logger.info(
            "%sepoch %d/%d: loss %.4f, val_loss %.4f, val_accuracy %.3f (%.0f s)",
            log_name, epoch + 1, epochs, history["loss"][-1], val_loss, val_accuracy,
            history["seconds"][-1],
        )  # fmt: skip
        if val_loss < best_loss - 1e-4:
            best_loss, best_weights, best_epoch, waited = val_loss, net.get_weights(), epoch + 1, 0
        else:
            waited += 1
            if waited >= patience:
                break
            if waited == max(1, patience // 2):
                rate /= 2
                optimizer.learning_rate.assign(rate)
    net.set_weights(best_weights)
    history["best_epoch"] = best_epoch
    return history


def train_network(
    patches: np.ndarray,
    labels: np.ndarray,
    *,
    val_patches: np.ndarray,
    val_labels: np.ndarray,
    base: CalcompModel | None = None,
    architecture: Mapping | None = None,
    settings: TrainConfig | None = None,
    record: Mapping | None = None,
) -> tuple[CalcompModel, dict]:
    """Train a shape network (from scratch, or from ``base``) with early stopping.

    The hyperparameters are recorded as ``settings`` in the model's ``config.json``
    (``training``), beside the architecture, the Keras version and ``record``.

    Parameters
    ----------
    patches : (N, 50, 50) float32 ndarray
        Training patches from :func:`~calcomp_caiman.extract_patches`.
    labels : (N,) int ndarray
        Codes 1-4, or 0 for non_neuron (process or noise).
    val_patches, val_labels : ndarray
        Held-out patches (whole videos), for early stopping and temperature calibration.
    base : CalcompModel, optional
        Start from this model's weights, architecture and thresholds (fine-tuning).
    architecture : dict, optional
        ``widths``, ``blocks``, ``dropout`` for a new model (default: the bundled one's).
    settings : TrainConfig, optional
        Epochs, batch size, learning rate, patience, augmentation and seed (default
        ``TrainConfig()``): the same data and settings give the same model.
    record : mapping, optional
        Entries of ``config.json`` that say what the model is (``name``, versions, seed,
        ``training_data``: :func:`calcomp_caiman.research.train.training_record`),
        written over the base's.

    Returns
    -------
    model : CalcompModel
        Calibrated (``thresholds.json`` temperature fitted on the validation data).
    history : dict
        Per-epoch ``loss``, ``val_loss``, ``val_accuracy``, ``seconds``; ``best_epoch``,
        ``temperature``.
    """
    import keras

    settings = TrainConfig() if settings is None else settings
    keras.utils.set_random_seed(settings.seed)
    if base is not None:
        net = base.to_keras()
        config = dict(base.config)
        thresholds = dict(base.thresholds)
    else:
        architecture = dict(architecture or DEFAULT_ARCHITECTURE)
        net = build_resnet(
            patch_size=patches.shape[-1],
            widths=architecture["widths"],
            blocks=architecture["blocks"],
            dropout=architecture.get("dropout", 0.2),
        )
        config = {
            "classes": list(CLASSES),
            "patch_size": int(patches.shape[-1]),
            "architecture": architecture,
            "normalisation": "square root, then unit L2 norm (extract_patches)",
            "crop": "half-width 4*gSig+1 around the centre of mass, zero padding at borders",
        }
        thresholds = {"accept": ["neuron"], "min_prob": None}
    history = fit_network(
        net, patches, labels, val_patches=val_patches, val_labels=val_labels,
        **dataclasses.asdict(settings),
    )  # fmt: skip
    config.update(
        training=dataclasses.asdict(settings),
        keras_version=keras.__version__,
        keras_backend=keras.backend.backend(),
        training_samples=int(len(patches)),
        epochs_run=len(history["loss"]),
        best_epoch=history["best_epoch"],
        **dict(record or {}),
    )
    model = CalcompModel.from_keras(net, config=config, thresholds=thresholds)
    temperature = calibrate_temperature(model, val_patches, val_labels)
    model = model.with_thresholds(temperature=temperature)
    history["temperature"] = temperature
    logger.info("best epoch %d, temperature %.3f", history["best_epoch"], temperature)
    return model, history
