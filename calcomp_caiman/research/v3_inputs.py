"""What every stage of model v3's training starts from: its settings, what it reads per
component, the label and weight conventions.

* :class:`V3Settings`: the hyperparameters of a training, written into
  ``config.json["training"]``;
* :func:`branch_inputs`: the channels, features and transient profiles of every component
  of a result, made with the same functions as
  :func:`calcomp_caiman.classify.classify_evidence` makes them at run time;
* :data:`UNLABELLED`: the label of a component that takes part as a neighbour but teaches
  nothing; :data:`OPTIONAL_KINDS`: the kinds of evidence a model v3 does without;
* :func:`source_weights`: every source weighs the same, and the classes within it.

The branches are fitted by :mod:`calcomp_caiman.research.train_branches`, the fusion head
and its calibration by :mod:`calcomp_caiman.research.train_v3_head`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from calcomp_caiman.evidence.channels import CHANNELS, component_channels
from calcomp_caiman.evidence.evidence import EVIDENCE_KINDS, Evidence
from calcomp_caiman.evidence.features import evidence_inputs
from calcomp_caiman.evidence.patches import footprints_for

__all__ = [
    "OPTIONAL_KINDS",
    "UNLABELLED",
    "BranchInputs",
    "V3Settings",
    "branch_inputs",
    "source_weights",
]

UNLABELLED = -1
"""Label of a component that is a neighbour only (no class known). Not 0, which means
``non_neuron`` in memory; the hybrid label files store it as
:data:`calcomp_caiman.research.gt_labels.UNLABELLED` (0), and
:func:`~calcomp_caiman.research.train_branches.load_hybrid_results` maps it here."""

OPTIONAL_KINDS = EVIDENCE_KINDS[1:]
"""Kinds of evidence the head is trained to do without (``neighbours``, ``image``,
``traces``, ``metrics``), as :func:`~calcomp_caiman.classify.classify_evidence`'s ``use``."""


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
