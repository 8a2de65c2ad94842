"""The classifier: a small Keras ResNet, stored as a folder and run with NumPy.

A model folder holds

* ``config.json``: classes, patch size, architecture, normalisation, versions, and the
  SHA256 of the weights;
* ``thresholds.json``: the default acceptance rule and the calibration temperature;
* ``weights.npz``: every Keras variable, keyed ``<layer name>/<variable>``.

``weights.npz`` is the one source of truth. Training and fine-tuning rebuild the Keras
network from ``config.json`` (:func:`build_resnet`, :meth:`CalcompModel.to_keras`), so they
work with Keras 3 on any backend. Inference (:meth:`CalcompModel.predict`) runs the same
network in NumPy with batch norm folded into the convolutions: it needs neither
TensorFlow nor torch, starts in milliseconds, and gives the same numbers in a plain
environment, next to CaImAn <= 1.12 (Keras 2, TensorFlow < 2.16), and next to
CaImAn >= 1.13 (Keras 3 on the torch backend). Keras is imported only inside the
functions that need it, and ``KERAS_BACKEND`` is never set here: the host decides.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from calcomp_caiman.errors import CalcompError
from calcomp_caiman.evidence.features import absent_features, feature_names
from calcomp_caiman.io.atomic import atomic_replace, atomic_write_text
from calcomp_caiman.model.cpus import available_cpus
from calcomp_caiman.model.engine import Engine
from calcomp_caiman.model.head import FusionHead, head_inputs, softmax
from calcomp_caiman.model.network import build_resnet, variable_name
from calcomp_caiman.model.threads import single_threaded_blas
from calcomp_caiman.schema import CLASSES, PATCH_SIZE

logger = logging.getLogger(__name__)

__all__ = ["CalcompModel", "bundled_models"]


_BUNDLED_PACKAGE = "calcomp_caiman.models"
_DEFAULT_NAME = "calcomp_v2"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundled_models() -> dict[str, Path]:
    """Names and folders of the models installed with the package (``"default"`` included)."""
    root = resources.files(_BUNDLED_PACKAGE)
    found = {}
    for entry in root.iterdir():
        if entry.is_dir() and entry.joinpath("config.json").is_file():
            found[entry.name] = Path(str(entry))
    if _DEFAULT_NAME in found:
        found["default"] = found[_DEFAULT_NAME]
    return dict(sorted(found.items()))


@dataclass(frozen=True, eq=False)
class CalcompModel:
    """A trained classifier: Keras weights plus the settings needed to use them.

    Use :meth:`load` to get the bundled model or one saved by ``calcomp train`` /
    :func:`calcomp_caiman.research.train.fine_tune`, :meth:`predict` to classify patches, and
    :meth:`save` to write a model folder.

    Attributes
    ----------
    weights : dict of str to ndarray
        Keras variables keyed ``<layer>/<variable>`` (``weights.npz``).
    config : dict
        ``config.json``: ``classes``, ``patch_size``, ``architecture``, ``name``, ...
    thresholds : dict
        ``thresholds.json``: ``accept`` (class names), ``min_prob`` and ``temperature``.
    sha256 : str
        SHA256 of the saved ``weights.npz`` (empty for a model not saved yet).

    Models compare and hash by identity (``eq=False``): two loads of one folder are two
    objects; compare ``sha256`` to tell whether two models have the same weights.

    Examples
    --------
    >>> import numpy as np
    >>> model = CalcompModel.load()          # the bundled model, hash-checked
    >>> model.predict(np.zeros((2, 50, 50), np.float32)).shape
    (2, 4)
    """

    weights: dict
    config: dict
    thresholds: dict = field(default_factory=dict)
    sha256: str = ""

    def __post_init__(self):
        classes = tuple(self.config.get("classes", ()))
        if classes != CLASSES:
            raise CalcompError(
                f"model {self.name!r} predicts classes {classes}, expected {CLASSES}."
            )
        try:
            engine = Engine.from_weights(self.weights, self.config["architecture"])
        except KeyError as err:
            raise CalcompError(f"model {self.name!r}: {err.args[0]}") from None
        object.__setattr__(self, "_engine", engine)
        try:
            head = FusionHead.from_arrays(self.weights)
        except ValueError as err:
            raise CalcompError(f"model {self.name!r}: {err}") from None
        if head is not None and head.n_inputs != len(CLASSES) + len(feature_names()):
            raise CalcompError(
                f"model {self.name!r}: its fusion head takes {head.n_inputs} inputs, this "
                f"version of calcomp_caiman makes {len(CLASSES) + len(feature_names())}; "
                f"use the calcomp_caiman version that trained it."
            )
        object.__setattr__(self, "_head", head)

    @property
    def uses_evidence(self) -> bool:
        """Whether the model reads the evidence features beside the patch (model v2)."""
        return self._head is not None

    @property
    def scale_rule(self) -> str:
        """``"footprints"``: crops sized by :func:`~calcomp_caiman.evidence.patches.crop_scale`;
        ``"gsig"``: by the user's ``gSig`` (models before v2)."""
        return str(self.config.get("scale_rule", "gsig"))

    @property
    def name(self) -> str:
        """The model's name (``config.json`` ``name``)."""
        return str(self.config.get("name", "unnamed"))

    @property
    def training_description(self) -> str:
        """What the model was trained on, as free text (``config.json`` ``training_data``:
        the text itself, or its ``description`` where it also lists held-out videos)."""
        data = self.config.get("training_data", "")
        return str(data.get("description", "") if isinstance(data, dict) else data)

    @property
    def patch_size(self) -> int:
        """Side length of the patches the model expects."""
        return int(self.config.get("patch_size", PATCH_SIZE))

    @property
    def flops_per_patch(self) -> int:
        """Floating-point operations of one forward pass (2 x multiply-adds)."""
        return self._engine.flops_per_patch(self.patch_size)

    @classmethod
    def load(cls, name_or_folder: str | os.PathLike = "default") -> CalcompModel:
        """Load a bundled model by name, or a model folder.

        Parameters
        ----------
        name_or_folder : str or path-like
            ``"default"`` (the bundled model), another bundled name, or the path of a
            folder written by :meth:`save`.

        Returns
        -------
        CalcompModel

        Raises
        ------
        FileNotFoundError
            Neither a bundled name nor an existing folder; the message lists the known names.
        CalcompError
            The weights do not match the SHA256 recorded in ``config.json``, or a file is
            missing or unreadable.
        """
        known = bundled_models()
        key = os.fspath(name_or_folder)
        if key in known:
            folder = known[key]
        elif Path(key).is_dir():
            folder = Path(key)
        else:
            raise FileNotFoundError(
                f"no model named or found at {key!r}; bundled models: {', '.join(known)}; "
                f"or pass the folder of a trained model (with config.json and weights.npz)."
            )
        try:
            config = json.loads((folder / "config.json").read_text())
            thresholds_path = folder / "thresholds.json"
            thresholds = (
                json.loads(thresholds_path.read_text()) if thresholds_path.is_file() else {}
            )
            weights_path = folder / "weights.npz"
            digest = _sha256(weights_path)
            expected = config.get("weights_sha256")
            if expected and digest != expected:
                raise CalcompError(
                    f"{weights_path}: SHA256 {digest} does not match {expected} in config.json; "
                    f"the model folder is damaged or was edited by hand."
                )
            with np.load(weights_path, allow_pickle=False) as data:
                weights = {key: data[key] for key in data.files}
        except (OSError, ValueError, KeyError) as err:
            raise CalcompError(f"{folder}: cannot read model folder: {err}") from err
        logger.debug("loaded model %s from %s", config.get("name"), folder)
        return cls(weights, config, thresholds, digest)

    def predict(
        self,
        patches: np.ndarray,
        features: np.ndarray | None = None,
        *,
        batch_size: int = 128,
        threads: int | None = None,
    ) -> np.ndarray:
        """Class probabilities of patches (and, for a model v2, their evidence features).

        Parameters
        ----------
        patches : (N, P, P) float ndarray
            Patches from :func:`calcomp_caiman.extract_patches` (``P == patch_size``).
        features : (N, F) ndarray, optional
            :func:`calcomp_caiman.evidence.features.evidence_features` of the same components, for
            a model with a fusion head (:attr:`uses_evidence`); ``None``: shape only, as
            if no other evidence were present. Ignored by models without a head.
        batch_size : int
            Patches per forward pass; memory grows with it, not with N.
        threads : int, optional
            At most this many threads run batches in parallel, and never more than the
            CPUs this process may use (:func:`available_cpus`, the default); ``1`` runs
            them in the calling thread. Worker processes (``--jobs``) pass their share
            of the CPUs. While any inference runs, BLAS uses one thread per batch; the
            caller's BLAS setting is restored afterwards, also when calls overlap.

        Returns
        -------
        (N, 4) float32 ndarray
            Calibrated probabilities in ``CLASSES`` order; rows sum to 1.
        """
        patches = self._check_patches(patches)
        temperature = float(self.thresholds.get("temperature", 1.0))
        if self._head is None:
            return self._run(
                patches,
                len(CLASSES),
                lambda batch: softmax(self._engine.logits(batch) / temperature),
                batch_size,
                threads,
            )
        if features is None:
            features = absent_features(len(patches))
        features = np.asarray(features, dtype=np.float64)
        if features.shape != (len(patches), len(feature_names())):
            raise ValueError(
                f"features must have shape ({len(patches)}, {len(feature_names())}), got "
                f"{features.shape}; make them with evidence_features."
            )
        shape_logits = self.shape_logits(patches, batch_size=batch_size, threads=threads)
        return self.fuse(shape_logits, features) if len(patches) else shape_logits

    def predict_with_embedding(
        self,
        patches: np.ndarray,
        features: np.ndarray | None = None,
        *,
        batch_size: int = 128,
        threads: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict` and :meth:`embed` from one pass through the network.

        Returns
        -------
        probs : (N, 4) float32 ndarray
        embedding : (N, D) float32 ndarray
        """
        patches = self._check_patches(patches)
        width = int(self._engine.dense[0].shape[0])
        embedding = self._run(patches, width, self._engine.pooled, batch_size, threads)
        logits = embedding @ self._engine.dense[0] + self._engine.dense[1]
        if self._head is None:
            temperature = float(self.thresholds.get("temperature", 1.0))
            return softmax(logits / temperature), embedding
        if features is None:
            features = absent_features(len(patches))
        return self.fuse(logits, features), embedding

    def shape_logits(
        self, patches: np.ndarray, *, batch_size: int = 128, threads: int | None = None
    ) -> np.ndarray:
        """The shape network's raw class logits (before any head or temperature)."""
        patches = self._check_patches(patches)
        return self._run(patches, len(CLASSES), self._engine.logits, batch_size, threads)

    def fuse(self, shape_logits: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Probabilities from the shape network's logits and the features (head models).

        The step after the network, exposed so that training and refitting can reuse
        the network's output instead of recomputing it. Components without traces are
        calibrated with ``thresholds.json``'s ``temperature_without_traces`` when present
        (masks from other pipelines), the others with ``temperature``.
        """
        if self._head is None:
            raise CalcompError(f"model {self.name!r} has no fusion head.")
        features = np.asarray(features, np.float64)
        temperature = np.full(len(features), float(self.thresholds.get("temperature", 1.0)))
        without = self.thresholds.get("temperature_without_traces")
        if without is not None and len(features):
            has_traces = features[:, feature_names().index("has_traces")] > 0
            temperature[~has_traces] = float(without)
        logits = self._head.logits(head_inputs(shape_logits, features))
        return softmax((logits / temperature[:, None]).astype(np.float32))

    @property
    def engine(self) -> Engine:
        """The NumPy network, batch norm folded into its convolutions (``stem``, ``blocks``,
        ``dense``): the numbers :meth:`predict` multiplies, e.g. for an ONNX export."""
        return self._engine

    @property
    def head(self) -> FusionHead | None:
        """The fusion head (model v2), or None."""
        return self._head

    def with_head(self, head: FusionHead, **config_changes) -> CalcompModel:
        """A copy with this fusion head (and ``config.json`` changes), not saved yet."""
        weights = {k: v for k, v in self.weights.items() if not k.startswith("head/")}
        weights.update({k: v.astype(np.float32) for k, v in head.to_arrays().items()})
        return CalcompModel(weights, {**self.config, **config_changes}, dict(self.thresholds))

    def embed(
        self, patches: np.ndarray, *, batch_size: int = 128, threads: int | None = None
    ) -> np.ndarray:
        """The network's embedding of patches: its globally pooled last-layer features.

        Parameters
        ----------
        patches : (N, P, P) float ndarray
            As for :meth:`predict`.
        batch_size, threads
            As for :meth:`predict`.

        Returns
        -------
        (N, D) float32 ndarray
            ``D`` is the width of the last block (96 for the bundled network); the
            class logits are an affine function of it.

        Examples
        --------
        >>> import numpy as np
        >>> CalcompModel.load().embed(np.zeros((2, 50, 50), np.float32)).shape
        (2, 96)
        """
        patches = self._check_patches(patches)
        width = int(self._engine.dense[0].shape[0])
        return self._run(patches, width, self._engine.pooled, batch_size, threads)

    def _check_patches(self, patches) -> np.ndarray:
        patches = np.asarray(patches, dtype=np.float32)
        size = self.patch_size
        if patches.ndim != 3 or patches.shape[1:] != (size, size):
            raise ValueError(
                f"patches must have shape (N, {size}, {size}), got {patches.shape}; "
                f"make them with extract_patches."
            )
        return patches

    @staticmethod
    def _run(patches, width: int, forward, batch_size: int, threads: int | None) -> np.ndarray:
        """``forward`` over batches of ``patches`` into one (N, width) float32 array."""
        out = np.empty((len(patches), width), dtype=np.float32)
        batch_size = max(1, int(batch_size))
        starts = range(0, len(patches), batch_size)

        def run(start: int) -> None:
            batch = patches[start : start + batch_size]
            out[start : start + len(batch)] = forward(batch)

        # small matrix products run best on one BLAS thread each, in parallel batches
        workers = min(len(starts), available_cpus())
        if threads is not None:
            workers = min(workers, max(1, int(threads)))
        with single_threaded_blas():
            if workers <= 1:
                for start in starts:
                    run(start)
            else:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    list(pool.map(run, starts))
        return out

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the model folder (``config.json``, ``thresholds.json``, ``weights.npz``).

        Returns the folder. ``config.json`` records the SHA256 of the weights, which
        :meth:`load` checks. Files are written to temporary names and renamed.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        weights_path = folder / "weights.npz"

        def write_weights(tmp: str) -> None:
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, **self.weights)

        atomic_replace(str(weights_path), write_weights, mode=0o644, original=None)
        config = dict(self.config, weights_sha256=_sha256(weights_path))
        for name, content in (("config.json", config), ("thresholds.json", self.thresholds)):
            atomic_write_text(folder / name, json.dumps(content, indent=2, sort_keys=True) + "\n")
        return folder

    def to_keras(self):
        """The Keras network with these weights (Keras 3, any backend), for training."""
        architecture = self.config["architecture"]
        net = build_resnet(
            patch_size=self.patch_size,
            widths=architecture["widths"],
            blocks=architecture["blocks"],
            dropout=float(architecture.get("dropout", 0.0)),
        )
        for layer in net.layers:
            names = [variable_name(variable) for variable in layer.weights]
            if names:
                layer.set_weights([self.weights[f"{layer.name}/{name}"] for name in names])
        return net

    @classmethod
    def from_keras(cls, net, *, config: dict, thresholds: dict | None = None) -> CalcompModel:
        """Wrap a network from :func:`build_resnet` (after training) as a model."""
        weights = {}
        for layer in net.layers:
            for variable in layer.weights:
                key = f"{layer.name}/{variable_name(variable)}"
                weights[key] = np.asarray(variable.numpy(), dtype=np.float32)
        return cls(weights, dict(config), dict(thresholds or {}))

    def with_thresholds(self, **changes) -> CalcompModel:
        """A copy with updated ``thresholds.json`` entries (e.g. a fitted temperature)."""
        return CalcompModel(self.weights, self.config, {**self.thresholds, **changes}, self.sha256)
