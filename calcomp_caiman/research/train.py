"""Training a model: one entry for the shape network (v1), the fusion head (v2) and model v3.

* :func:`train`: a model from labelled data: the shape network on patches
  (:class:`~calcomp_caiman.research.datasets.TrainingSet`, model v1;
  :mod:`~calcomp_caiman.research.train_network`) or, with ``fusion_head=True``, a fusion
  head over a network on labelled CaImAn results
  (:class:`~calcomp_caiman.research.labelled_results.LabelledResult`, model v2;
  :mod:`~calcomp_caiman.research.train_head`), or, with ``v3_settings``, model v3 on
  labelled results (:mod:`~calcomp_caiman.research.train_branches`). All record the same
  provenance in ``config.json`` (:func:`training_record`).
* :func:`fine_tune`: a network adapted to a lab's own labelled patches.
* :func:`run_training`: the job behind ``calcomp train``: archives in, a model out.
* :func:`held_out_videos`: the real videos a model was validated and tested on, as its
  ``config.json`` records them (:func:`training_record` writes them there).

The recipes of the bundled models (``recipes/train_calcomp_resnet_v1.py``,
``recipes/train_calcomp_v2.py``, ``recipes/train_calcomp_v3.py``) call :func:`train`. Training the network needs Keras 3;
the head needs only NumPy and SciPy.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np

from calcomp_caiman._version import __version__
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.refit import LabelledInputs
from calcomp_caiman.research.datasets import (
    TrainingSet,
    load_training_set,
    simulated_training_set,
)
from calcomp_caiman.research.train_branches import train_v3
from calcomp_caiman.research.train_head import HEAD_GRID, train_head
from calcomp_caiman.research.train_network import TrainConfig, train_network
from calcomp_caiman.research.v3_inputs import V3Settings
from calcomp_caiman.schema import class_codes

logger = logging.getLogger(__name__)

__all__ = ["fine_tune", "held_out_videos", "run_training", "train", "training_record"]

_HELD_OUT_KEYS = ("real_validation_videos", "real_test_videos")


def training_record(
    name: str, *, seed: int, data_description: str | Mapping = "", base: CalcompModel | None = None
) -> dict:
    """The ``config.json`` entries that say what a newly trained model is.

    Parameters
    ----------
    name : str
        The model's name.
    seed : int
        The seed it was trained with.
    data_description : str or dict
        Stored as ``training_data``. A dict is stored as it is: a recipe records there the
        real videos it held out (``real_validation_videos``, ``real_test_videos``, read
        by :func:`held_out_videos`) beside a description. Free text is stored as it is; empty: ``base``'s description.
        Lists of held-out videos are never inherited from ``base``: the new training
        data may include them.
    base : CalcompModel, optional
        The model training started from.

    Returns
    -------
    dict
        ``name``, ``calcomp_version``, ``trained`` (``YYYY-MM-DD``), ``seed``,
        ``training_data``.
    """
    if isinstance(data_description, Mapping):
        training_data: str | dict = dict(data_description)
    else:
        training_data = data_description or (base.training_description if base is not None else "")
    return {
        "name": name,
        "calcomp_version": __version__,
        "trained": time.strftime("%Y-%m-%d"),
        "seed": seed,
        "training_data": training_data,
    }


def held_out_videos(model: CalcompModel) -> tuple[frozenset[str], frozenset[str]]:
    """The real videos a model was validated and tested on, from its ``config.json``.

    Parameters
    ----------
    model : CalcompModel
        A model whose ``config.json`` ``training_data`` records
        ``real_validation_videos`` and ``real_test_videos`` (``"<dataset>/<video>"``
        keys of the ``real_rois`` archives), as the bundled models do (a model trained
        further or refitted records none: its new labels may come from those videos).

    Returns
    -------
    validation : frozenset of str
        Videos used for early stopping and calibration: never trained on.
    test : frozenset of str
        Videos held out for testing: never used for any choice.

    Raises
    ------
    ValueError
        The model's ``config.json`` records no such lists (e.g. a model a lab trained
        with ``calcomp train``), or they are not lists of video keys.

    Examples
    --------
    >>> from calcomp_caiman.model.folder import CalcompModel
    >>> validation, test = held_out_videos(CalcompModel.load())
    >>> sorted(validation)
    ['caiman_paper_yst/YST_part21', 'neurofinder_train/02.01']
    >>> sorted(test)  # doctest: +NORMALIZE_WHITESPACE
    ['caiman_paper_yst/YST_part22', 'neurofinder_test/01.01', 'neurofinder_test/02.01',
     'neurofinder_test/04.01']
    """
    data = model.config.get("training_data")
    lists = []
    for key in _HELD_OUT_KEYS:
        videos = data.get(key) if isinstance(data, Mapping) else None
        if not isinstance(videos, (list, tuple)) or not all(isinstance(v, str) for v in videos):
            raise ValueError(
                f"model {model.name!r} records no held-out videos: its config.json "
                f"training_data has no {key!r} list of video keys (models trained outside "
                f"the bundled recipes may not). Name the videos to evaluate yourself "
                f"(calcomp evaluate without --test-videos, or run_evaluation(videos=...)), "
                f"or add 'real_validation_videos' and 'real_test_videos' to its config.json."
            )
        lists.append(frozenset(videos))
    return lists[0], lists[1]


def train(
    data,
    validation,
    *,
    base: CalcompModel | None = None,
    fusion_head: bool = False,
    name: str = "custom",
    seed: int = 0,
    data_description: str | Mapping = "",
    architecture: Mapping | None = None,
    epochs: int = TrainConfig.epochs,
    batch_size: int = TrainConfig.batch_size,
    learning_rate: float = TrainConfig.learning_rate,
    patience: int = TrainConfig.patience,
    augment: bool = TrainConfig.augment,
    inputs: Mapping[int, LabelledInputs] | None = None,
    head_grid: Sequence[tuple[int, float]] = HEAD_GRID,
    v3_settings: V3Settings | None = None,
) -> tuple[CalcompModel, dict]:
    """Train a model: the shape network (v1), a fusion head over one (v2), or model v3.

    Parameters
    ----------
    data, validation
        Without ``fusion_head``: :class:`~calcomp_caiman.research.datasets.TrainingSet`
        patches (validation: whole held-out videos, for early stopping and the
        temperature). With it, or with ``v3_settings``: sequences of
        :class:`~calcomp_caiman.research.labelled_results.LabelledResult` (validation:
        for the head's size, temperatures and ``min_prob``; model v3: also the image
        branch's early stopping, every source weighing the same).
    base : CalcompModel, optional
        Network path: start from this model's weights (fine-tuning). Head path
        (required): the shape network the head sits on, kept unchanged.
    fusion_head : bool
        Train the fusion head of model v2
        (:func:`~calcomp_caiman.research.train_head.train_head`) instead of the network
        (:func:`~calcomp_caiman.research.train_network.train_network`).
    name : str
        Name recorded in the model's ``config.json``.
    seed : int
        Seeds everything random: the same data and seed give the same model.
    data_description : str or dict
        ``training_data`` of ``config.json`` (:func:`training_record`).
    architecture : dict, optional
        Network path, new model: ``widths``, ``blocks``, ``dropout`` (default: the
        bundled network's).
    epochs, batch_size, learning_rate, patience, augment
        Network path: :class:`~calcomp_caiman.research.train_network.TrainConfig`.
    inputs : mapping, optional
        Head path: precomputed ``{id(result): (logits, features)}``.
    head_grid : sequence of (int, float)
        Head path: the ``(hidden, l2)`` candidates.
    v3_settings : V3Settings, optional
        Train model v3 (:func:`~calcomp_caiman.research.train_branches.train_v3`: image
        branch over channels, temporal branch, fusion head, calibration) with these
        settings (``V3Settings()`` for the defaults; its ``seed`` is set to ``seed``);
        the network options above are not used.

    Returns
    -------
    model : CalcompModel
        Calibrated, not saved yet.
    history : dict
        Network: per-epoch losses and accuracy, ``best_epoch``, ``temperature``. Head:
        the candidates' validation NLL, the chosen size, temperatures and ``min_prob``.

    Raises
    ------
    ValueError
        ``fusion_head`` without ``base``; empty training or validation data.
    """
    record = training_record(name, seed=seed, data_description=data_description, base=base)
    if v3_settings is not None:
        settings = dataclasses.replace(v3_settings, seed=seed)
        return train_v3(data, validation, settings=settings, record=record)
    if fusion_head:
        if base is None:
            raise ValueError(
                "fusion_head=True fits a head over base's shape network; pass base "
                "(e.g. CalcompModel.load('calcomp_resnet_v1'))."
            )
        return train_head(
            base, data, validation, inputs=inputs, grid=head_grid, seed=seed, record=record
        )
    settings = TrainConfig(epochs, batch_size, learning_rate, patience, augment, seed)
    return train_network(
        data.patches,
        data.labels,
        val_patches=validation.patches,
        val_labels=validation.labels,
        base=base,
        architecture=architecture,
        settings=settings,
        record=record,
    )


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
    """Adapt a trained network to a lab's own labelled components.

    Parameters
    ----------
    model : CalcompModel
        Starting point: a model whose network reads footprint patches (``calcomp_v2``,
        ``calcomp_resnet_v1``). A model v3 (the bundled default) is adapted to a lab by
        :func:`~calcomp_caiman.refit.refit` instead (``calcomp finetune`` does so).
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
        As in :func:`train`; the small learning rate keeps what the model knew.
    name : str, optional
        Name of the new model (default: ``<model name>-finetuned``).

    Returns
    -------
    model : CalcompModel
    history : dict
        As :func:`train`, plus ``val_index`` (positions held out).

    Examples
    --------
    >>> from calcomp_caiman import CalcompModel, extract_patches
    >>> from calcomp_caiman.research.simulate import simulate_footprints
    >>> A, dims, labels, gSig = simulate_footprints(10, seed=1)
    >>> new, history = fine_tune(CalcompModel.load("calcomp_v2"), extract_patches(A, dims, gSig=gSig),
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
    sessions = np.asarray(groups if groups is not None else [""] * len(codes), object)
    data = TrainingSet(patches, codes, sessions)
    new, history = train(
        data.select(~val),
        data.select(val),
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


def run_training(
    data_paths,
    validation_paths,
    *,
    simulated: int = 0,
    simulated_fields: int = 12,
    base: CalcompModel | None = None,
    name: str = "custom",
    epochs: int = TrainConfig.epochs,
    seed: int = 0,
) -> tuple[CalcompModel, dict]:
    """Train a shape network on labelled archives: the job behind ``calcomp train``.

    Parameters
    ----------
    data_paths, validation_paths : path-like or sequence of path-likes
        Labelled-footprint archives or folders of them
        (:func:`~calcomp_caiman.research.datasets.load_training_set`): the training
        videos, and the held-out videos for early stopping and calibration.
    simulated : int
        Simulated footprints per class in each of ``simulated_fields`` simulated fields
        of view added to the training data
        (:func:`~calcomp_caiman.research.datasets.simulated_training_set`; 0: none).
    simulated_fields : int
    base : CalcompModel, optional
        Start from this model (as :func:`train`).
    name, epochs, seed
        As in :func:`train`.

    Returns
    -------
    model : CalcompModel
        Not saved yet.
    history : dict
        As :func:`train`.

    Raises
    ------
    FileNotFoundError
        A path does not exist.
    ValueError
        ``validation_paths`` hold no labelled components.
    """
    data = load_training_set(data_paths)
    validation = load_training_set(validation_paths)
    if simulated:
        sim = simulated_training_set(simulated, fields=simulated_fields, seed=seed)
        data = TrainingSet.concatenate([data, sim]) if len(data.labels) else sim
    if len(validation.labels) == 0:
        raise ValueError(
            f"no labelled components in the validation archives {validation_paths}: name "
            f"the archives of held-out videos (calcomp train --val-data)."
        )
    return train(
        data,
        validation,
        base=base,
        name=name,
        epochs=epochs,
        seed=seed,
        data_description=f"calcomp train on {len(data.labels)} patches",
    )
