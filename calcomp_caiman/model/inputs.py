"""What a model reads about the components of one result, a chunk at a time.

:func:`model_inputs` is the one place that makes a model's inputs from evidence: footprint
patches (models v1, v2) or channel stacks (model v3, :mod:`calcomp_caiman.evidence.channels`),
the evidence features (models with a head) and the transient profiles (model v3).
:func:`calcomp_caiman.classify.classify_evidence` classifies them and
:func:`calcomp_caiman.refit.labelled_inputs` keeps what the head reads of them, so that a
refit sees exactly what classifying sees.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

from calcomp_caiman.evidence.channels import ChannelSource
from calcomp_caiman.evidence.evidence import Evidence
from calcomp_caiman.evidence.features import evidence_inputs
from calcomp_caiman.evidence.patches import Footprints, crop_checked
from calcomp_caiman.model.cpus import available_cpus
from calcomp_caiman.model.folder import CalcompModel

__all__ = ["COMPONENTS_PER_CHUNK", "ModelInputs", "model_inputs"]

COMPONENTS_PER_CHUNK = 4096
"""Components cropped at once: 4096 x 50 x 50 x 4 B = 41 MB of patches."""


class ModelInputs(NamedTuple):
    """What a model reads about a chunk of components (:func:`model_inputs`)."""

    rows: slice
    """The components, as a slice of all of them."""
    patches: np.ndarray
    """(n, P, P) footprint patches (models v1, v2) or (n, P, P, C) channels (model v3)."""
    features: np.ndarray | None
    """(n, F) every column of :func:`~calcomp_caiman.evidence.features.feature_names`;
    None for a model without a head (unless asked for)."""
    profiles: np.ndarray | None
    """(n, 2, S) transient profiles (model v3), or None (no traces, or another model)."""


def model_inputs(
    evidence: Evidence,
    model: CalcompModel,
    footprints: Footprints,
    *,
    use: Sequence[str] | None = None,
    features: bool | None = None,
) -> Iterator[ModelInputs]:
    """Everything ``model`` reads about the components of ``evidence``, a chunk at a time.

    Parameters
    ----------
    evidence : Evidence
    model : CalcompModel
    footprints : Footprints
        :func:`~calcomp_caiman.evidence.patches.footprints_for` of ``evidence`` and ``model``.
    use : sequence of str, optional
        The optional kinds of evidence to use (``"neighbours"``, ``"image"``, ``"traces"``,
        ``"metrics"``); default all that are present.
    features : bool, optional
        Make the evidence features; default: when the model has a head.

    Yields
    ------
    ModelInputs
        Chunks of at most :data:`COMPONENTS_PER_CHUNK` components, in order (one empty
        chunk when there are no components).

    Examples
    --------
    >>> import numpy as np
    >>> from calcomp_caiman.evidence.patches import footprints_for
    >>> rr, cc = np.mgrid[:64, :64]
    >>> cell = ((rr - 30) ** 2 + (cc - 30) ** 2 <= 25).astype(np.float32)
    >>> ev = Evidence.build(cell.reshape(-1, 1, order="F"), (64, 64), gSig=5)
    >>> model = CalcompModel.load()
    >>> [part.patches.shape for part in model_inputs(ev, model, footprints_for(ev, "footprints"))]
    [(1, 32, 32, 4)]
    """
    flat, flat_dims, scale = footprints
    found = profiles = channels = None
    if model.uses_evidence if features is None else features:  # v3: profiles in the same pass
        found, profiles = evidence_inputs(
            evidence, flat, flat_dims, scale, use=use, profiles=model.version >= 3,
            profile_options=model.temporal_options, threads=available_cpus(),
        )  # fmt: skip
    if model.version >= 3:
        channels = ChannelSource.from_evidence(
            evidence, footprints, patch_size=model.patch_size, names=model.channel_names, use=use
        )
    n = flat.shape[1]
    for start in range(0, max(n, 1), COMPONENTS_PER_CHUNK):  # no components: one empty chunk
        stop = min(n, start + COMPONENTS_PER_CHUNK)
        if channels is None:
            patches = crop_checked(flat[:, start:stop], flat_dims, scale, model.patch_size)
        else:
            patches = channels.crop(start, stop)
        yield ModelInputs(
            slice(start, stop),
            patches,
            None if found is None else found[start:stop],
            None if profiles is None else profiles[start:stop],
        )
