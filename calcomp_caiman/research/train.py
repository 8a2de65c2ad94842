"""Training and fine-tuning: plain functions over patches and labels.

Labels are integer codes: 1-4 for ``CLASSES`` (neuron, process, noise, doubtful) and 0
for ``non_neuron``, a component known to be process *or* noise. The loss is the
cross-entropy of the set of allowed classes, ``-log(sum of their probabilities)``, so a
``non_neuron`` label asks for ``P(process) + P(noise)`` to be high without choosing
between them. Training needs Keras 3 (any backend) and runs on the CPU.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.ndimage

from calcomp_caiman._version import __version__
from calcomp_caiman.evidence.patches import extract_patches, resolve_gsig
from calcomp_caiman.io.caiman_h5 import read_estimates
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.model.network import DEFAULT_ARCHITECTURE, build_resnet
from calcomp_caiman.research.datasets import LabelledFootprints
from calcomp_caiman.research.metrics import set_nll_of_probs
from calcomp_caiman.schema import CLASSES, PATCH_SIZE, class_codes, label_masks

logger = logging.getLogger(__name__)

__all__ = [
    "TrainConfig",
    "TrainingSet",
    "label_masks",
    "augment_patches",
    "balanced_weights",
    "make_training_set",
    "fit_network",
    "train_model",
    "fine_tune",
    "calibrate_temperature",
    "simulated_training_set",
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
        parts = list(parts)
        return cls(
            np.concatenate([p.patches for p in parts]).astype(np.float32, copy=False),
            np.concatenate([p.labels for p in parts]),
            np.concatenate([p.groups for p in parts]),
        )


def make_training_set(
    sources: Iterable[LabelledFootprints], *, patch_size: int = PATCH_SIZE
) -> TrainingSet:
    """Patches and labels of labelled footprints, grouped by video.

    ``gSig`` is estimated per source from its footprints, as at inference time when the
    user gives none.
    """
    parts = []
    for source in sources:
        patches = extract_patches(source.A, source.dims, patch_size=patch_size)
        groups = np.full(len(patches), source.video or source.source, dtype=object)
        parts.append(TrainingSet(patches, np.asarray(source.labels, np.int64), groups))
    if not parts:
        return TrainingSet(
            np.zeros((0, patch_size, patch_size), np.float32),
            np.zeros(0, np.int64),
            np.zeros(0, object),
        )
    return TrainingSet.concatenate(parts)


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
        As in :func:`train_model`.
    epochs, batch_size, learning_rate, patience, augment, seed
        As in :func:`train_model`.
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


def _training_data(description: str | Mapping, base: CalcompModel | None) -> str | dict:
    """``training_data`` of a new model: held-out videos only where the caller states them.

    A model trained further from a base on data this function cannot check makes no claim
    about which videos it has never seen, so the base's lists are not carried over.
    """
    if isinstance(description, Mapping):
        return dict(description)
    return description or (base.training_description if base is not None else "")


def train_model(
    patches: np.ndarray,
    labels: np.ndarray,
    *,
    val_patches: np.ndarray,
    val_labels: np.ndarray,
    base: CalcompModel | None = None,
    architecture: dict | None = None,
    name: str = "custom",
    epochs: int = TrainConfig.epochs,
    batch_size: int = TrainConfig.batch_size,
    learning_rate: float = TrainConfig.learning_rate,
    patience: int = TrainConfig.patience,
    augment: bool = TrainConfig.augment,
    seed: int = TrainConfig.seed,
    data_description: str | Mapping = "",
) -> tuple[CalcompModel, dict]:
    """Train a classifier (from scratch, or from ``base``) with early stopping.

    The hyperparameters are recorded as a :class:`TrainConfig` in the model's
    ``config.json`` (``training``), beside the architecture and the data description.

    Parameters
    ----------
    patches : (N, 50, 50) float32 ndarray
        Training patches from :func:`~calcomp_caiman.extract_patches`.
    labels : (N,) int ndarray
        Codes 1-4, or 0 for non_neuron (process or noise).
    val_patches, val_labels : ndarray
        Held-out patches (whole videos), for early stopping and temperature calibration.
    base : CalcompModel, optional
        Start from this model's weights and architecture (fine-tuning).
    architecture : dict, optional
        ``widths``, ``blocks``, ``dropout`` for a new model (default: the bundled one's).
    name : str
        Name recorded in the model's ``config.json``.
    epochs, batch_size, learning_rate, patience : int, int, float, int
        Adam with the learning rate halved after ``patience // 2`` epochs without a better
        validation loss, and stopping after ``patience``; the best epoch's weights are kept.
    augment : bool
        Draw fresh :func:`augment_patches` copies every epoch.
    seed : int
        Seeds NumPy and Keras: the same data and seed give the same model.
    data_description : str or dict
        Stored in the model card (``config.json`` ``training_data``). A dict is stored as
        it is: a recipe records there the real videos it held out
        (``real_validation_videos``, ``real_test_videos``, read by
        :func:`~calcomp_caiman.research.evaluate.held_out_videos`) beside a
        ``description``. Free text is stored as it is; empty: ``base``'s description.
        Lists of held-out videos are never inherited from ``base``: the new training
        data may include them.

    Returns
    -------
    model : CalcompModel
        Calibrated (``thresholds.json`` temperature fitted on the validation data).
    history : dict
        Per-epoch ``loss``, ``val_loss``, ``val_accuracy``, ``seconds``; ``best_epoch``,
        ``temperature``.
    """
    import keras

    keras.utils.set_random_seed(seed)
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
    settings = TrainConfig(epochs, batch_size, learning_rate, patience, augment, seed)
    history = fit_network(
        net, patches, labels, val_patches=val_patches, val_labels=val_labels,
        **dataclasses.asdict(settings),
    )  # fmt: skip
    config.update(
        training=dataclasses.asdict(settings),
        name=name,
        calcomp_version=__version__,
        keras_version=keras.__version__,
        keras_backend=keras.backend.backend(),
        trained=time.strftime("%Y-%m-%d"),
        training_data=_training_data(data_description, base),
        training_samples=int(len(patches)),
        epochs_run=len(history["loss"]),
        best_epoch=history["best_epoch"],
        seed=seed,
    )
    model = CalcompModel.from_keras(net, config=config, thresholds=thresholds)
    temperature = calibrate_temperature(model, val_patches, val_labels)
    model = model.with_thresholds(temperature=temperature)
    history["temperature"] = temperature
    logger.info("best epoch %d, temperature %.3f", history["best_epoch"], temperature)
    return model, history


def fine_tune(
    model: CalcompModel,
    patches: np.ndarray,
    labels: Sequence,
    *,
    groups: Sequence | None = None,
    validation_fraction: float = 0.25,
    epochs: int = 15,
    batch_size: int = 32,
    learning_rate: float = 3e-4,
    seed: int = 0,
    name: str | None = None,
) -> tuple[CalcompModel, dict]:
    """Adapt a trained model to a lab's own labelled components.

    Parameters
    ----------
    model : CalcompModel
        Starting point, usually ``CalcompModel.load()`` (the bundled model).
    patches : (N, 50, 50) float32 ndarray
        Patches of the labelled components (:func:`~calcomp_caiman.extract_patches`).
    labels : sequence of int or str
        Class names or codes 1-4, or ``non_neuron``/0 (process or noise).
    groups : sequence, optional
        Session (file) of each component. With two or more groups, whole groups are held
        out for validation; otherwise a stratified random ``validation_fraction``.
    validation_fraction : float
        Share of the labels held out for early stopping and calibration.
    epochs, batch_size, learning_rate, seed
        As in :func:`train_model`; the small learning rate keeps what the model knew.
    name : str, optional
        Name of the new model (default: ``<model name>-finetuned``).

    Returns
    -------
    model : CalcompModel
    history : dict
        As :func:`train_model`, plus ``val_index`` (positions held out).

    Examples
    --------
    >>> from calcomp_caiman import CalcompModel, extract_patches
    >>> from calcomp_caiman.research.simulate import simulate_footprints
    >>> A, dims, labels, gSig = simulate_footprints(10, seed=1)
    >>> new, history = fine_tune(CalcompModel.load(), extract_patches(A, dims, gSig=gSig),
    ...                          labels, epochs=1)  # doctest: +SKIP
    """
    patches = np.asarray(patches, dtype=np.float32)
    codes = (
        class_codes(list(labels))
        if not np.issubdtype(np.asarray(labels).dtype, np.integer)
        else np.asarray(labels, np.int64)
    )
    if len(codes) != len(patches):
        raise ValueError(f"{len(patches)} patches but {len(codes)} labels.")
    if len(codes) < 8:
        raise ValueError(f"fine-tuning needs at least 8 labelled components, got {len(codes)}.")
    rng = np.random.default_rng(seed)
    val = np.zeros(len(codes), dtype=bool)
    unique_groups = np.unique(np.asarray(groups)) if groups is not None else np.array([])
    if len(unique_groups) >= 2:
        group_array = np.asarray(groups)
        order = rng.permutation(unique_groups)
        for group in order:
            if val.mean() >= validation_fraction:
                break
            val |= group_array == group
        if val.all():
            val[:] = False
    if not val.any():
        for code in np.unique(codes):
            members = np.flatnonzero(codes == code)
            take = int(round(len(members) * validation_fraction))
            val[rng.choice(members, size=min(take, len(members) - 1), replace=False)] = True
    new, history = train_model(
        patches[~val],
        codes[~val],
        val_patches=patches[val],
        val_labels=codes[val],
        base=model,
        name=name or f"{model.name}-finetuned",
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        patience=max(4, epochs // 3),
        seed=seed,
        data_description=f"fine-tuned from {model.name} ({model.sha256[:12]}) on {len(codes)} labels",
    )
    history["val_index"] = np.flatnonzero(val)
    return new, history


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
    from calcomp_caiman.refit import read_label_table

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


def simulated_training_set(per_class: int, *, fields: int = 12, seed: int = 0) -> TrainingSet:
    """Simulated footprints over several fields of view, each at its own zoom.

    ``fields`` fields of view (each drawing its zoom from ``TRAIN_SETTINGS``), ``per_class``
    footprints of every class in each, cropped at their field's ``gSig``; the groups are
    the fields. The bundled model's recipe and ``calcomp train --simulated`` both use it.
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
