"""Baselines to compare a classifier with, trained on the same patches and labels.

* :func:`shape_features` (columns ``SHAPE_FEATURES``): Suite2p-style shape descriptors
  of every footprint, and :class:`ShapeBaseline`, a logistic regression on them.
* :func:`build_caiman_cnn`: CaImAn's own component CNN architecture, trained by
  :func:`train_caiman_cnn_baseline` the way the calcomp model is trained and wrapped as
  a :class:`KerasBaseline`.
* :func:`fit_baselines`: both, trained on one set of patches, features and labels (the
  patch report and the evidence report train them alike).
* :func:`caiman_rule_probs`: CaImAn's own SNR / r-value selection, as probabilities.

Labels are codes 1-4 (``CLASSES``) or 0 for ``non_neuron`` (process or noise); both
trained baselines fit the set cross-entropy of
:mod:`calcomp_caiman.research.train_network`. Keras is imported only inside the CNN
functions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.optimize
import scipy.spatial

from calcomp_caiman.evidence.patches import project_footprints, resolve_gsig
from calcomp_caiman.model.head import softmax
from calcomp_caiman.research.metrics import check_probs_labels
from calcomp_caiman.research.train_network import balanced_weights, fit_network
from calcomp_caiman.schema import CLASSES, PATCH_SIZE, label_masks

logger = logging.getLogger(__name__)

__all__ = [
    "SHAPE_FEATURES",
    "KerasBaseline",
    "ShapeBaseline",
    "build_caiman_cnn",
    "caiman_rule_probs",
    "fit_baselines",
    "shape_features",
    "train_caiman_cnn_baseline",
]

SHAPE_FEATURES = (
    "log_area",
    "log_weighted_area",
    "log_radius",
    "compactness",
    "eccentricity",
    "log_elongation",
    "solidity",
    "central_fraction",
    "log_peak_to_mean",
    "bbox_fill",
)
"""Column names of :func:`shape_features`."""


# ------------------------------------------------------------------ shape features


def shape_features(A, dims, *, gSig=None, threshold: float = 0.1) -> np.ndarray:
    """Shape descriptors of every footprint, in the spirit of Suite2p's ROI classifier.

    Parameters
    ----------
    A : (prod(dims), N) sparse matrix or ndarray
        Footprints, pixels in Fortran order (``estimates.A``); 3-D footprints are
        described by their maximum projection over z.
    dims : tuple of 2 or 3 ints
        Field of view shape.
    gSig : float or sequence, optional
        Typical neuron half-size in px; estimated from the footprints when omitted
        (:func:`~calcomp_caiman.estimate_gsig`). Sizes are divided by it, so the features
        do not depend on the zoom.
    threshold : float
        The *pixel set* of a component is its pixels above ``threshold`` times its
        maximum (all pixels of a binary mask).

    Returns
    -------
    (N, 10) float64 ndarray
        Columns ``SHAPE_FEATURES``:

        ``log_area``
            ``log(pixel count / (pi gSig^2))``.
        ``log_weighted_area``
            ``log((sum w)^2 / sum w^2 / (pi gSig^2))`` (effective number of pixels).
        ``log_radius``
            ``log(sqrt(2 (l1 + l2)) / gSig)``, ``l1 >= l2`` the eigenvalues of the
            intensity-weighted covariance of pixel positions (each pixel a unit square);
            the radius of a filled disk.
        ``compactness``
            Mean distance of the pixel set to its centroid over that of a disk of the
            same area (``2/3 sqrt(n / pi)``); about 1 for a disk, larger for lines.
        ``eccentricity``, ``log_elongation``
            ``sqrt(1 - l2 / l1)`` and ``log(sqrt(l1 / l2))``.
        ``solidity``
            Pixel count over the area of the convex hull of the pixel squares.
        ``central_fraction``
            Share of the weight within ``gSig`` of the weighted centroid.
        ``log_peak_to_mean``
            ``log(max / mean weight of the pixel set)``; 0 for binary masks.
        ``bbox_fill``
            Pixel count over the area of the bounding box of the pixel set.

        An all-zero footprint gives a row of zeros. ``N == 0`` gives ``(0, 10)``.

    Notes
    -----
    Everything is computed from the sparse entries at once, without a dense image of any
    component; only the convex hulls (for ``solidity``) loop over components, with the
    leftmost and rightmost pixel of each row as hull candidates.

    Examples
    --------
    >>> import numpy as np
    >>> rr, cc = np.mgrid[:40, :40]
    >>> disk = ((rr - 20) ** 2 + (cc - 20) ** 2 <= 25).ravel(order="F")
    >>> line = ((rr == 20) & (cc >= 5) & (cc < 35)).ravel(order="F")
    >>> f = shape_features(np.stack([disk, line], 1).astype(float), (40, 40), gSig=5)
    >>> j = SHAPE_FEATURES.index("log_elongation")
    >>> bool(f[1, j] > f[0, j] + 1)
    True
    """
    flat, dims2 = project_footprints(A, dims)
    gsig = resolve_gsig(flat, dims2, gSig)
    n = flat.shape[1]
    out = np.zeros((n, len(SHAPE_FEATURES)), dtype=np.float64)
    if n == 0 or flat.nnz == 0:
        return out
    coo = flat.tocoo()
    comp = coo.col.astype(np.int64)
    weight = coo.data.astype(np.float64)
    rows = (coo.row % dims2[0]).astype(np.float64)
    cols = (coo.row // dims2[0]).astype(np.float64)
    total = np.bincount(comp, weight, minlength=n)
    filled = total > 0
    safe_total = np.where(filled, total, 1.0)
    peak = np.zeros(n)
    np.maximum.at(peak, comp, weight)

    # intensity-weighted moments
    centre_r = np.bincount(comp, weight * rows, minlength=n) / safe_total
    centre_c = np.bincount(comp, weight * cols, minlength=n) / safe_total
    dr, dc = rows - centre_r[comp], cols - centre_c[comp]
    var_r = np.bincount(comp, weight * dr * dr, minlength=n) / safe_total + 1.0 / 12
    var_c = np.bincount(comp, weight * dc * dc, minlength=n) / safe_total + 1.0 / 12
    cov = np.bincount(comp, weight * dr * dc, minlength=n) / safe_total
    half_trace = (var_r + var_c) / 2
    spread = np.sqrt(((var_r - var_c) / 2) ** 2 + cov**2)
    l1, l2 = half_trace + spread, np.maximum(half_trace - spread, 1e-12)
    weighted_area = total**2 / np.maximum(np.bincount(comp, weight * weight, minlength=n), 1e-30)
    central = np.bincount(comp, weight * (dr * dr + dc * dc <= gsig * gsig), minlength=n)

    # the pixel set
    inside = weight >= threshold * peak[comp]
    pcomp, prow, pcol, pweight = comp[inside], rows[inside], cols[inside], weight[inside]
    count = np.bincount(pcomp, minlength=n).astype(np.float64)
    safe_count = np.maximum(count, 1.0)
    mean_r = np.bincount(pcomp, prow, minlength=n) / safe_count
    mean_c = np.bincount(pcomp, pcol, minlength=n) / safe_count
    distance = np.hypot(prow - mean_r[pcomp], pcol - mean_c[pcomp])
    mean_distance = np.bincount(pcomp, distance, minlength=n) / safe_count
    mean_weight = np.bincount(pcomp, pweight, minlength=n) / safe_count
    low_r, high_r = np.full(n, np.inf), np.full(n, -np.inf)
    low_c, high_c = np.full(n, np.inf), np.full(n, -np.inf)
    np.minimum.at(low_r, pcomp, prow)
    np.maximum.at(high_r, pcomp, prow)
    np.minimum.at(low_c, pcomp, pcol)
    np.maximum.at(high_c, pcomp, pcol)
    box = np.where(count > 0, (high_r - low_r + 1) * (high_c - low_c + 1), 1.0)

    disk = np.pi * gsig * gsig
    with np.errstate(divide="ignore", invalid="ignore"):
        columns = {
            "log_area": np.log(safe_count / disk),
            "log_weighted_area": np.log(np.maximum(weighted_area, 1.0) / disk),
            "log_radius": np.log(np.sqrt(2 * (l1 + l2)) / gsig),
            "compactness": mean_distance / (2.0 / 3.0 * np.sqrt(safe_count / np.pi)),
            "eccentricity": np.sqrt(np.clip(1 - l2 / l1, 0, 1)),
            "log_elongation": 0.5 * np.log(l1 / l2),
            "solidity": count / _hull_areas(pcomp, prow, pcol, n),
            "central_fraction": central / safe_total,
            "log_peak_to_mean": np.log(peak / np.where(mean_weight > 0, mean_weight, peak)),
            "bbox_fill": count / box,
        }
    for j, name in enumerate(SHAPE_FEATURES):
        out[:, j] = columns[name]
    out[~filled | (count == 0)] = 0.0
    out[~np.isfinite(out)] = 0.0
    return out


def _hull_areas(comp: np.ndarray, rows: np.ndarray, cols: np.ndarray, n: int) -> np.ndarray:
    """Convex hull area of the pixel squares of each component (1 for an empty one)."""
    areas = np.ones(n)
    if comp.size == 0:
        return areas
    order = np.lexsort((cols, rows, comp))
    comp, rows, cols = comp[order], rows[order], cols[order]
    new_run = np.r_[True, (comp[1:] != comp[:-1]) | (rows[1:] != rows[:-1])]
    first = np.flatnonzero(new_run)
    last = np.r_[first[1:] - 1, comp.size - 1]
    # leftmost and rightmost pixel of every row of every component, as its 4 corners
    run_comp = comp[first]
    run_row = rows[first]
    left, right = cols[first] - 0.5, cols[last] + 0.5
    corners_r = np.stack([run_row - 0.5, run_row + 0.5] * 2, axis=1).ravel()
    corners_c = np.stack([left, left, right, right], axis=1).ravel()
    corners_comp = np.repeat(run_comp, 4)
    bounds = np.searchsorted(corners_comp, np.arange(n + 1))
    points = np.stack([corners_r, corners_c], axis=1)
    for k in np.flatnonzero(np.diff(bounds)):
        areas[k] = scipy.spatial.ConvexHull(points[bounds[k] : bounds[k + 1]]).volume
    return areas


# -------------------------------------------------------------------- shape baseline


@dataclass
class ShapeBaseline:
    """Multinomial logistic regression on standardised shape features and their squares.

    Fitted by L-BFGS on the class-balanced set cross-entropy (``-log`` of the summed
    probability of the classes a label allows; ``non_neuron`` allows process and noise),
    the loss the CNNs are trained with, plus an L2 penalty ``l2 * |W|^2`` (bias free).

    Parameters
    ----------
    l2 : float
        Strength of the L2 penalty on the weights.
    squares : bool
        Add the squared standardised features (a quadratic decision boundary).
    max_iter : int
        L-BFGS iterations.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> features = np.r_[rng.normal(0, 1, (50, 3)), rng.normal(3, 1, (50, 3))]
    >>> labels = np.r_[np.ones(50, int), np.full(50, 2)]
    >>> baseline = ShapeBaseline().fit(features, labels)
    >>> probs = baseline.predict_proba(features)
    >>> probs.shape, bool(np.mean(probs.argmax(1) + 1 == labels) > 0.9)
    ((100, 4), True)
    """

    l2: float = 1e-3
    squares: bool = True
    max_iter: int = 1000
    mean_: np.ndarray | None = field(default=None, init=False, repr=False)
    scale_: np.ndarray | None = field(default=None, init=False, repr=False)
    coef_: np.ndarray | None = field(default=None, init=False, repr=False)

    def _design(self, features: np.ndarray) -> np.ndarray:
        n_features = features.shape[1]
        z = _standardise(features, self.mean_[:n_features], self.scale_[:n_features])
        if self.squares:
            sq = z * z
            z = np.concatenate(
                [z, (sq - self.mean_[features.shape[1] :]) / self.scale_[features.shape[1] :]], 1
            )
        return np.concatenate([z, np.ones((len(z), 1))], axis=1)

    @staticmethod
    def _check(features) -> np.ndarray:
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2:
            raise ValueError(f"features must be 2-D (N, F), got shape {features.shape}.")
        if not np.all(np.isfinite(features)):
            raise ValueError("features have NaN or Inf values; use shape_features, which has none.")
        return features

    def fit(self, features, labels) -> ShapeBaseline:
        """Fit on ``features`` (N, F) and label codes 0-4; returns ``self``.

        Raises
        ------
        ValueError
            Wrong shapes, non-finite features, labels outside 0-4, or no samples.
        """
        features = self._check(features)
        codes = check_probs_labels(np.zeros((len(features), len(CLASSES))), labels)[1]
        if len(features) == 0:
            raise ValueError("ShapeBaseline.fit needs at least one labelled sample.")
        mean = features.mean(axis=0)
        scale = _nonzero_std(features)
        if self.squares:
            sq = _standardise(features, mean, scale) ** 2
            mean = np.r_[mean, sq.mean(axis=0)]
            scale = np.r_[scale, _nonzero_std(sq)]
        self.mean_, self.scale_ = mean, scale
        design = self._design(features)
        masks = label_masks(codes).astype(np.float64)
        weights = balanced_weights(codes).astype(np.float64)
        weights /= weights.sum()
        shape = (design.shape[1], len(CLASSES))
        penalty = np.ones(shape)
        penalty[-1] = 0.0  # no penalty on the bias

        def loss_and_grad(theta):
            coef = theta.reshape(shape)
            probs = softmax(design @ coef)
            allowed = np.maximum((probs * masks).sum(axis=1), 1e-300)
            loss = -np.sum(weights * np.log(allowed)) + self.l2 * np.sum(penalty * coef**2)
            target = probs * masks / allowed[:, None]
            grad = design.T @ ((probs - target) * weights[:, None]) + 2 * self.l2 * penalty * coef
            return loss, grad.ravel()

        result = scipy.optimize.minimize(
            loss_and_grad,
            np.zeros(np.prod(shape)),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": int(self.max_iter)},
        )
        self.coef_ = result.x.reshape(shape)
        logger.debug("shape baseline fitted: loss %.4f after %d iterations", result.fun, result.nit)
        return self

    def predict_proba(self, features) -> np.ndarray:
        """Class probabilities ``(N, 4)`` float32 in ``CLASSES`` order (rows sum to 1).

        Raises
        ------
        RuntimeError
            :meth:`fit` was not called.
        ValueError
            ``features`` has a different number of columns than at fit time.
        """
        if self.coef_ is None:
            raise RuntimeError("ShapeBaseline is not fitted; call fit(features, labels) first.")
        features = self._check(features)
        n_features = (self.coef_.shape[0] - 1) // (2 if self.squares else 1)
        if features.shape[1] != n_features:
            raise ValueError(
                f"features have {features.shape[1]} columns, the baseline was fitted on "
                f"{n_features}; compute them with the same shape_features."
            )
        if len(features) == 0:
            return np.zeros((0, len(CLASSES)), np.float32)
        return softmax(self._design(features) @ self.coef_).astype(np.float32)


def _nonzero_std(values: np.ndarray) -> np.ndarray:
    """Standard deviation of each column, 1 where it is (about) 0."""
    std = values.std(axis=0)
    return np.where(std > 1e-12, std, 1.0)


def _standardise(features: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(features - mean) / scale``, clipped to +-8 standard deviations."""
    return np.clip((features - mean) / scale, -8, 8)


# ---------------------------------------------------------------- CaImAn CNN baseline


def build_caiman_cnn(*, patch_size: int = PATCH_SIZE, num_classes: int = len(CLASSES)):
    """CaImAn's component classifier CNN, rebuilt with built-in Keras layers.

    Two 3x3 convolutions with 32 filters (valid padding), 2x2 max pooling, dropout 0.25;
    two 3x3 convolutions with 64 filters (the first 'same', the second valid), 2x2 max
    pooling, dropout 0.25; a 512-unit dense layer, dropout 0.5 and a softmax over
    ``num_classes``. About 3.4 million weights for 50 x 50 patches.

    Returns
    -------
    keras.Model

    Notes
    -----
    The architecture of ``caiman/train/train_cnn_model_keras.py`` (``cnn_model_keras``)
    and of the model shipped as ``cnn_model.json``, with 4 outputs instead of 2.
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=(patch_size, patch_size, 1), name="patches")
    x = layers.Conv2D(32, 3, activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(32, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Dropout(0.25, name="drop1")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv4")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Dropout(0.25, name="drop2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, activation="relu", name="dense")(x)
    x = layers.Dropout(0.5, name="drop3")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="caiman_cnn")


@dataclass(frozen=True)
class KerasBaseline:
    """A trained Keras network that maps patches to class probabilities.

    Attributes
    ----------
    net : keras.Model
    name : str
    history : dict
        Per-epoch ``loss``, ``val_loss``, ``seconds``; ``best_epoch``.
    """

    net: object
    name: str
    history: dict = field(default_factory=dict)

    def predict(self, patches, *, batch_size: int = 256) -> np.ndarray:
        """Class probabilities ``(N, 4)`` float32 of ``(N, P, P)`` patches."""
        patches = np.asarray(patches, dtype=np.float32)
        if len(patches) == 0:
            return np.zeros((0, len(CLASSES)), np.float32)
        probs = self.net.predict(patches[..., None], batch_size=batch_size, verbose=0)
        return np.asarray(probs, dtype=np.float32)


def train_caiman_cnn_baseline(
    patches,
    labels,
    *,
    val_patches,
    val_labels,
    epochs: int = 15,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    patience: int = 5,
    augment: bool = True,
    seed: int = 0,
) -> KerasBaseline:
    """Train :func:`build_caiman_cnn` the way the calcomp model is trained.

    Same loss (set cross-entropy), class-balanced sample weights, augmentation
    (:func:`~calcomp_caiman.research.train_network.augment_patches`, fresh every epoch) and
    optimiser (Adam, halved on plateaus) as
    :func:`~calcomp_caiman.research.train_network.train_network` -- both use
    :func:`~calcomp_caiman.research.train_network.fit_network` -- so the comparison is about the
    architecture. The best epoch's weights are kept.

    Parameters
    ----------
    patches : (N, 50, 50) float32 ndarray
    labels : (N,) int ndarray
        Codes 1-4, or 0 for non_neuron.
    val_patches, val_labels : ndarray
        Held-out videos, for early stopping.
    epochs, batch_size, learning_rate, patience, augment, seed
        As the fields of :class:`~calcomp_caiman.research.train_network.TrainConfig`.

    Returns
    -------
    KerasBaseline
        Named ``caiman_cnn``; ``history`` holds the per-epoch losses.

    Notes
    -----
    About 50 M multiply-adds per patch (10x the calcomp model): an epoch takes about
    3.5 ms per training patch on two CPU cores (augmentation included).
    """
    import keras

    keras.utils.set_random_seed(seed)
    net = build_caiman_cnn(patch_size=np.shape(patches)[-1])
    history = fit_network(
        net, patches, labels, val_patches=val_patches, val_labels=val_labels, epochs=epochs,
        batch_size=batch_size, learning_rate=learning_rate, patience=patience, augment=augment,
        seed=seed, log_name="caiman_cnn ",
    )  # fmt: skip
    return KerasBaseline(net, "caiman_cnn", history)


def fit_baselines(
    patches,
    features,
    labels,
    *,
    val_patches,
    val_labels,
    cnn: bool = True,
    cnn_epochs: int = 15,
    seed: int = 0,
) -> tuple[dict, dict]:
    """:class:`ShapeBaseline` and (with ``cnn``) the CaImAn CNN, trained on the same data.

    Parameters
    ----------
    patches : (N, 50, 50) float32 ndarray
    features : (N, 10) float ndarray
        :func:`shape_features` of the same components.
    labels : (N,) int ndarray
        Codes 1-4, or 0 for non_neuron.
    val_patches, val_labels : ndarray
        Held-out videos, for the CNN's early stopping.
    cnn : bool
        Also train :func:`train_caiman_cnn_baseline` (minutes; needs Keras).
    cnn_epochs, seed
        The CNN's most epochs and seed.

    Returns
    -------
    baselines : dict
        ``shape_baseline`` and ``caiman_cnn`` (when trained).
    seconds : dict
        Training time of each.
    """
    start = time.perf_counter()
    baselines: dict = {"shape_baseline": ShapeBaseline().fit(features, labels)}
    seconds = {"shape_baseline": time.perf_counter() - start}
    if cnn:
        start = time.perf_counter()
        baselines["caiman_cnn"] = train_caiman_cnn_baseline(
            patches, labels, val_patches=val_patches, val_labels=val_labels, epochs=cnn_epochs,
            seed=seed,
        )  # fmt: skip
        seconds["caiman_cnn"] = time.perf_counter() - start
    return baselines, seconds


def caiman_rule_probs(accepted) -> np.ndarray | None:
    """CaImAn's stored selection as probabilities: accepted -> neuron, rejected -> noise.

    ``accepted`` is ``idx_components`` as a ``(N,)`` bool mask, or ``None`` (no selection
    stored: ``None``).
    """
    if accepted is None:
        return None
    accepted = np.asarray(accepted, bool)
    probs = np.zeros((len(accepted), len(CLASSES)), np.float32)
    probs[accepted, CLASSES.index("neuron")] = 1.0
    probs[~accepted, CLASSES.index("noise")] = 1.0
    return probs
