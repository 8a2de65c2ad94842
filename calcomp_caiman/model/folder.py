"""The classifier: a small Keras ResNet, stored as a folder and run with NumPy.

A model folder holds

* ``config.json``: classes, patch size, architecture, normalisation, versions, and the
  SHA256 of the weights;
* ``thresholds.json``: the default acceptance rule and the calibration temperature;
* ``weights.npz``: every Keras variable, keyed ``<layer name>/<variable>``, and the
  perceptrons after the network (``head/*``: the fusion head of models v2 and v3;
  ``temporal/*``: model v3's temporal branch).

Three kinds of model share the folder (``config.json`` ``version``):

* v1: the image network over a footprint patch ``(N, P, P)``;
* v2: the same network and a fusion head over its log-probabilities and the evidence
  features (:func:`~calcomp_caiman.evidence.features.evidence_features`);
* v3: the network over a stack of channels ``(N, P, P, C)``
  (:mod:`calcomp_caiman.evidence.channels`), a temporal branch over the transient
  profiles (:mod:`calcomp_caiman.evidence.transients`), and a fusion head over both
  branches' log-probabilities, the channels' presence and the features.

A model with a head reads the feature columns named in its ``config.json``
(``feature_names``, or v2's ``fusion_head.inputs``) and selects them by name from
whatever :func:`~calcomp_caiman.evidence.features.evidence_features` makes, so features
added later never change an older model's output.

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
from calcomp_caiman.evidence.transients import SAMPLES
from calcomp_caiman.io.atomic import atomic_replace, atomic_write_text
from calcomp_caiman.model.cpus import available_cpus
from calcomp_caiman.model.defaults import BUNDLED_DEFAULT, model_modality, resolve
from calcomp_caiman.model.engine import Engine
from calcomp_caiman.model.head import FusionHead, head_inputs, softmax
from calcomp_caiman.model.network import build_resnet, variable_name
from calcomp_caiman.model.threads import single_threaded_blas
from calcomp_caiman.schema import CLASSES, PATCH_SIZE

logger = logging.getLogger(__name__)

__all__ = ["CalcompModel", "bundled_models", "folder_file"]


_BUNDLED_PACKAGE = "calcomp_caiman.models"
_V2_GROUPS = ("shape", "neighbours", "image", "traces", "metrics")  # before "relative"
_TEMPORAL = "temporal/"  # weights of model v3's temporal branch
_PROFILE_OPTIONS = ("window", "samples", "peaks")  # transient_profiles' keywords


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_file(path: str | os.PathLike, name: str, what: str) -> Path:
    """A file a model folder holds beside its weights (``ood.npz``, ``reliability.json``):
    ``path`` itself, or ``path / name`` when ``path`` is a folder.

    Raises
    ------
    FileNotFoundError
        No such file; the message names it and ``what`` it should have been.

    Examples
    --------
    >>> folder_file(bundled_models()["calcomp_v3"], "ood.npz", "out-of-distribution reference").name
    'ood.npz'
    """
    path = Path(path)
    if path.is_dir():
        path = path / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what}")
    return path


def bundled_models() -> dict[str, Path]:
    """Names and folders of the models installed with the package (``"default"`` included)."""
    root = resources.files(_BUNDLED_PACKAGE)
    found = {}
    for entry in root.iterdir():
        if entry.is_dir() and entry.joinpath("config.json").is_file():
            found[entry.name] = Path(str(entry))
    if BUNDLED_DEFAULT in found:
        found["default"] = found[BUNDLED_DEFAULT]
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
    folder : Path, optional
        The folder :meth:`load` read it from (None for a model made in memory): where
        files that describe this very model, such as ``reliability.json``
        (:mod:`calcomp_caiman.model.reliability`), are found.

    Models compare and hash by identity (``eq=False``): two loads of one folder are two
    objects; compare ``sha256`` to tell whether two models have the same weights.

    Examples
    --------
    >>> import numpy as np
    >>> model = CalcompModel.load()          # the bundled model, hash-checked
    >>> model.channel_names, model.patch_size  # model v3 reads channels at each component
    (('footprint', 'neighbours', 'cn', 'image'), 32)
    >>> model.predict(np.zeros((2, 32, 32, 4), np.float32)).shape
    (2, 4)
    """

    weights: dict
    config: dict
    thresholds: dict = field(default_factory=dict)
    sha256: str = ""
    folder: Path | None = None

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
            temporal = FusionHead.from_arrays(self.weights, prefix=_TEMPORAL)
        except ValueError as err:
            raise CalcompError(f"model {self.name!r}: {err}") from None
        object.__setattr__(self, "_head", head)
        object.__setattr__(self, "_temporal", temporal)
        version = self.config.get("version", 2 if head is not None else 1)
        object.__setattr__(self, "_version", int(version))
        object.__setattr__(self, "_modality", model_modality(self.config))
        names = self._recorded_feature_names(head)
        object.__setattr__(self, "_feature_names", names)
        object.__setattr__(self, "_columns", np.array([feature_names().index(n) for n in names]))
        self._check_branches(engine, head, temporal)

    def _recorded_feature_names(self, head: FusionHead | None) -> tuple[str, ...]:
        """The feature columns the head reads: as ``config.json`` records them, else (a head
        fitted without recording them) by the head's width."""
        if head is None:
            return ()
        names = self.config.get("feature_names")
        fusion = self.config.get("fusion_head")
        if names is None and isinstance(fusion, dict) and fusion.get("inputs"):  # model v2
            names = [name for name in fusion["inputs"] if not name.startswith("log_p_")]
        if names is None and self.version < 3:
            width = head.n_inputs - len(CLASSES)
            for candidate in (feature_names(), feature_names(_V2_GROUPS)):
                if len(candidate) == width:
                    names = candidate
        if names is None:
            raise CalcompError(
                f"model {self.name!r}: config.json names no feature columns for its fusion "
                f"head of {head.n_inputs} inputs; use the calcomp_caiman version that trained it."
            )
        unknown = [name for name in names if name not in feature_names()]
        if unknown:
            raise CalcompError(
                f"model {self.name!r} reads features this version of calcomp_caiman does not "
                f"make ({', '.join(unknown[:5])}); use the calcomp_caiman version that trained it."
            )
        return tuple(names)

    def _check_branches(self, engine: Engine, head, temporal) -> None:
        """The parts fit together: inputs of the head, channels of the network."""
        if self.version < 3:
            expected = len(CLASSES) + len(self._feature_names)
            if head is not None and head.n_inputs != expected:
                raise CalcompError(
                    f"model {self.name!r}: its fusion head takes {head.n_inputs} inputs, but "
                    f"{len(CLASSES)} log-probabilities and the {len(self._feature_names)} "
                    f"features its config.json names make {expected}."
                )
            return
        problems = []
        if head is None or temporal is None:
            problems.append("a model v3 needs head/* and temporal/* weights")
        if engine.channels != len(self.channel_names):
            problems.append(
                f"its network reads {engine.channels} channels, config.json names "
                f"{len(self.channel_names)}"
            )
        if head is not None and head.n_inputs != len(self.head_input_names):
            problems.append(
                f"its head takes {head.n_inputs} inputs, config.json makes "
                f"{len(self.head_input_names)}"
            )
        width = 2 * int(self.temporal_options.get("samples", SAMPLES))
        if temporal is not None and temporal.n_inputs != width:
            problems.append(f"its temporal branch takes {temporal.n_inputs} inputs, not {width}")
        if problems:
            raise CalcompError(f"model {self.name!r}: {'; '.join(problems)}.")

    @property
    def version(self) -> int:
        """1: network only; 2: network and fusion head; 3: channels, temporal branch, head
        (``config.json`` ``version``; older folders: 2 when they have a head, else 1)."""
        return self._version

    @property
    def modality(self) -> str:
        """The imaging the model was trained on: ``"1p"`` (one-photon, CNMF-E) or ``"2p"``
        (``config.json`` ``modality``; absent: two-photon)."""
        return self._modality

    @property
    def channel_names(self) -> tuple[str, ...]:
        """The channels the network reads (model v3, :data:`~calcomp_caiman.evidence.channels.CHANNELS`);
        ``("footprint",)`` for models v1 and v2."""
        return tuple(self.config.get("channels", ("footprint",)))

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The feature columns the fusion head reads (empty without a head)."""
        return self._feature_names

    @property
    def temporal_options(self) -> dict:
        """``window``, ``samples``, ``peaks`` of the transient profiles (model v3)."""
        temporal = self.config.get("temporal") or {}
        return {key: temporal[key] for key in _PROFILE_OPTIONS if key in temporal}

    @property
    def head_input_names(self) -> list[str]:
        """The fusion head's input columns, in order."""
        if self.version < 3:
            return [f"log_p_{c}" for c in CLASSES] + list(self._feature_names)
        return (
            [f"log_p_image_{c}" for c in CLASSES]
            + [f"log_p_temporal_{c}" for c in CLASSES]
            + [f"has_channel_{name}" for name in self.channel_names if name != "footprint"]
            + list(self._feature_names)
        )

    @property
    def uses_evidence(self) -> bool:
        """Whether the model reads the evidence features beside the patch (models v2, v3)."""
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
    def load(
        cls, name_or_folder: str | os.PathLike = "default", *, modality: str | None = None
    ) -> CalcompModel:
        """Load a bundled model by name, or a model folder.

        Parameters
        ----------
        name_or_folder : str or path-like
            ``"default"`` (the lab's default model when one is set, else the bundled
            ``calcomp_v3``: :mod:`calcomp_caiman.model.defaults`), a bundled name, or the
            path of a folder written by :meth:`save`.
        modality : {"1p", "2p"}, optional
            The imaging of the results to classify: for ``"1p"``, ``"default"`` means the
            bundled one-photon model when it is installed
            (:func:`~calcomp_caiman.model.defaults.resolve`). A named model is loaded as it is.

        Returns
        -------
        CalcompModel

        Raises
        ------
        FileNotFoundError
            Neither a bundled name nor an existing folder; the message lists the known names
            (for ``"default"``: says where the lab's default was set).
        CalcompError
            The weights do not match the SHA256 recorded in ``config.json``, or a file is
            missing or unreadable.
        """
        known = bundled_models()
        key = resolve(name_or_folder, known, modality=modality)  # "default": lab's, else bundled
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
        return cls(weights, config, thresholds, digest, folder)

    def predict(
        self,
        patches: np.ndarray,
        features: np.ndarray | None = None,
        *,
        profiles: np.ndarray | None = None,
        batch_size: int = 128,
        threads: int | None = None,
    ) -> np.ndarray:
        """Class probabilities of patches (and, for a model with a head, their evidence).

        Parameters
        ----------
        patches : (N, P, P) or (N, P, P, C) float ndarray
            Models v1, v2: patches from :func:`calcomp_caiman.extract_patches`
            (``P == patch_size``). Model v3: the channels of
            :func:`calcomp_caiman.evidence.channels.component_channels`
            (``C == len(channel_names)``; a missing channel is all zeros).
        features : (N, F) ndarray, optional
            :func:`calcomp_caiman.evidence.features.evidence_features` of the same
            components (all its columns, or only the model's :attr:`feature_names`), for a
            model with a fusion head (:attr:`uses_evidence`); ``None``: as if no other
            evidence were present. Ignored by models without a head.
        profiles : (N, 2, S) ndarray, optional
            Model v3: :func:`calcomp_caiman.evidence.transients.transient_profiles` of the
            same components (with the model's :attr:`temporal_options`); ``None`` or an
            all-zero row: no traces. Ignored by models v1 and v2.
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
        self.select_features(features, len(patches))  # checks the shape before the network
        shape_logits = self.shape_logits(patches, batch_size=batch_size, threads=threads)
        if not len(patches):
            return shape_logits
        return self.fuse(
            shape_logits, features, profiles=profiles, presence=self.channel_presence(patches)
        )

    def predict_with_embedding(
        self,
        patches: np.ndarray,
        features: np.ndarray | None = None,
        *,
        profiles: np.ndarray | None = None,
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
        if not len(patches):
            return logits, embedding
        presence = self.channel_presence(patches)
        return self.fuse(logits, features, profiles=profiles, presence=presence), embedding

    def shape_logits(
        self, patches: np.ndarray, *, batch_size: int = 128, threads: int | None = None
    ) -> np.ndarray:
        """The image network's raw class logits (before any head or temperature)."""
        patches = self._check_patches(patches)
        return self._run(patches, len(CLASSES), self._engine.logits, batch_size, threads)

    def select_features(self, features: np.ndarray, n: int | None = None) -> np.ndarray:
        """The columns of ``features`` the head reads (:attr:`feature_names`), float64.

        ``features`` holds every column of :func:`~calcomp_caiman.evidence.features.evidence_features`
        (or only the model's, taken as they are); ``n``: the rows expected.
        """
        features = np.asarray(features, np.float64)
        n = len(features) if n is None else n
        if features.ndim == 2 and len(features) == n:
            if features.shape[1] == len(feature_names()):
                return features[:, self._columns] if len(self._columns) else features[:, :0]
            if features.shape[1] == len(self._feature_names):
                return features
        raise ValueError(
            f"features must have shape ({n}, {len(feature_names())}) (evidence_features) or "
            f"({n}, {len(self._feature_names)}) (the model's feature_names), got "
            f"{features.shape}; make them with evidence_features."
        )

    def channel_presence(self, patches: np.ndarray) -> np.ndarray:
        """(N, C - 1) float: 1 where an optional channel (all but the footprint) has any
        non-zero pixel; (N, 0) for models v1, v2."""
        if patches.ndim != 4:
            return np.zeros((len(patches), 0))
        optional = [c for c, name in enumerate(self.channel_names) if name != "footprint"]
        present = np.empty((len(patches), len(optional)))
        for k, c in enumerate(optional):
            present[:, k] = np.abs(patches[..., c]).max(axis=(1, 2), initial=0.0) > 0
        return present

    def temporal_logits(self, profiles: np.ndarray | None, n: int) -> np.ndarray:
        """(N, 4) logits of model v3's temporal branch; 0 where a profile is all zero or
        ``profiles`` is None (no traces)."""
        out = np.zeros((n, len(CLASSES)))
        if profiles is None or self._temporal is None or not n:
            return out
        flat = np.asarray(profiles, np.float64).reshape(n, -1)
        has = np.abs(flat).max(axis=1) > 0
        if has.any():
            out[has] = self._temporal.logits(flat[has])
        return out

    def head_inputs(
        self,
        shape_logits: np.ndarray,
        features: np.ndarray,
        *,
        profiles: np.ndarray | None = None,
        presence: np.ndarray | None = None,
    ) -> np.ndarray:
        """The fusion head's input columns (:attr:`head_input_names`).

        Model v2: the network's log-probabilities and the selected features. Model v3:
        the image and temporal log-probabilities, ``presence`` (required: (N, C - 1), as
        :meth:`channel_presence` makes it) and the selected features.
        """
        n = len(shape_logits)
        selected = self.select_features(features, n)
        if self.version < 3:
            return head_inputs(shape_logits, selected)
        if presence is None:
            raise ValueError("a model v3's head needs the channels' presence (channel_presence).")
        # log_softmax(image), log_softmax(temporal), presence, features
        rest = head_inputs(self.temporal_logits(profiles, n), np.asarray(presence, np.float64))
        return np.concatenate([head_inputs(shape_logits, rest), selected], axis=1)

    def fuse(
        self,
        shape_logits: np.ndarray,
        features: np.ndarray,
        *,
        profiles: np.ndarray | None = None,
        presence: np.ndarray | None = None,
    ) -> np.ndarray:
        """Probabilities from the network's logits and the other evidence (head models).

        The step after the network, exposed so that training and refitting can reuse
        the network's output instead of recomputing it. Components without traces are
        calibrated with ``thresholds.json``'s ``temperature_without_traces`` when present
        (masks from other pipelines), the others with ``temperature``; for them
        ``neuron_shift_without_traces`` (model v3), when present, is added to the calibrated
        neuron logit, so that the one acceptance cut ``min_prob`` (chosen on results with
        traces) keeps as many true neurons of masks as of CaImAn results. ``profiles`` and
        ``presence``: model v3 (:meth:`head_inputs`).
        """
        if self._head is None:
            raise CalcompError(f"model {self.name!r} has no fusion head.")
        inputs = self.head_inputs(shape_logits, features, profiles=profiles, presence=presence)
        temperature = np.full(len(inputs), float(self.thresholds.get("temperature", 1.0)))
        without = self.thresholds.get("temperature_without_traces")
        shift = self.thresholds.get("neuron_shift_without_traces")
        no_traces = (
            ~self._has_traces(features, profiles)
            if len(inputs) and (without is not None or shift)
            else np.zeros(len(inputs), bool)
        )
        if without is not None:
            temperature[no_traces] = float(without)
        logits = self._head.logits(inputs) / temperature[:, None]
        if shift:
            logits[no_traces, CLASSES.index("neuron")] += float(shift)
        return softmax(logits.astype(np.float32))

    def _has_traces(self, features: np.ndarray, profiles: np.ndarray | None) -> np.ndarray:
        features = np.asarray(features)
        if features.shape[1] == len(feature_names()):
            return features[:, feature_names().index("has_traces")] > 0
        if "has_traces" in self._feature_names:
            return features[:, self._feature_names.index("has_traces")] > 0
        if profiles is None:
            return np.zeros(len(features), bool)
        return np.abs(np.asarray(profiles)).reshape(len(features), -1).max(axis=1) > 0

    @property
    def engine(self) -> Engine:
        """The NumPy network, batch norm folded into its convolutions (``stem``, ``blocks``,
        ``dense``): the numbers :meth:`predict` multiplies, e.g. for an ONNX export."""
        return self._engine

    @property
    def head(self) -> FusionHead | None:
        """The fusion head (models v2, v3), or None."""
        return self._head

    @property
    def temporal(self) -> FusionHead | None:
        """Model v3's temporal branch (a perceptron over the flattened profiles), or None."""
        return self._temporal

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
            ``D`` is the width of the last block (64 for the bundled model v3, 96 for
            ``calcomp_resnet_v1``); the class logits are an affine function of it.

        Examples
        --------
        >>> import numpy as np
        >>> CalcompModel.load().embed(np.zeros((2, 32, 32, 4), np.float32)).shape
        (2, 64)
        """
        patches = self._check_patches(patches)
        width = int(self._engine.dense[0].shape[0])
        return self._run(patches, width, self._engine.pooled, batch_size, threads)

    def _check_patches(self, patches) -> np.ndarray:
        patches = np.asarray(patches, dtype=np.float32)
        size = self.patch_size
        if self.version >= 3:
            expected = (size, size, len(self.channel_names))
            if patches.ndim != 4 or patches.shape[1:] != expected:
                raise ValueError(
                    f"channels must have shape (N, {size}, {size}, {expected[2]}), got "
                    f"{patches.shape}; make them with component_channels."
                )
            return patches
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
            channels=int(architecture.get("channels", 1)),
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
