"""Several images at each component, cropped as its footprint is: the input of model v3.

A model v3 sees every component as a ``(P, P, C)`` stack of images, all read in the
window of :func:`~calcomp_caiman.evidence.patches.crop_windows` (centre of mass,
half-width ``4 * scale + 1``) and resampled with the same tent weights, so that their
pixels line up:

============ ==========================================================================
channel      content
============ ==========================================================================
footprint    the footprint itself, square-root compressed, unit L2 norm (the patch of
             :func:`~calcomp_caiman.evidence.patches.crop_checked`, to float rounding)
neighbours   all footprints of the result, each divided by its own maximum, summed,
             square root, scaled to maximum 1 in the crop: the component and the
             components around it (absent for a result of one component)
cn           the local correlation image ``Cn`` as it is (in [-1, 1])
image        the mean or max image, per crop ``(x - median) / (p99 - median)``,
             clipped to [-2, 2]
============ ==========================================================================

A channel whose evidence is absent (no ``Cn``, no image, or a kind left out with
``use``) is all zeros. The images are densified once per field of view, never per
component; components are cropped in chunks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from calcomp_caiman.evidence.evidence import Evidence
from calcomp_caiman.evidence.patches import (
    Footprints,
    compress_patches,
    crop_windows,
)

logger = logging.getLogger(__name__)

__all__ = ["CHANNELS", "ChannelSource", "component_channels"]

CHANNELS = ("footprint", "neighbours", "cn", "image")
"""The channels a model may read, in the order of the bundled model v3."""

IMAGE_CLIP = 2.0
"""The standardised mean/max image is clipped to [-IMAGE_CLIP, IMAGE_CLIP]."""

IMAGE_LEVELS = (50, 99)
"""Percentiles of a mean/max image crop that become its 0 and its 1 (median and top)."""

IMAGE_FLAT = (1e-6, 1e-12)
"""A mean/max image crop whose top minus median is at most ``IMAGE_FLAT[0] * (|top| +
|median|) + IMAGE_FLAT[1]`` is flat: all zeros."""

_KIND = {"footprint": "shape", "neighbours": "neighbours", "cn": "image", "image": "image"}
_CHUNK_ELEMENTS = 1 << 22  # window values held at once per chunk (16 MB of float32)


def _dense(values: np.ndarray, dims: tuple[int, int]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(dims, order="F")


@dataclass(frozen=True, eq=False)
class ChannelSource:
    """The images of one field of view that the channels are cropped from.

    Build it once per result (:meth:`from_evidence`), then :meth:`crop` chunks of components.

    Attributes
    ----------
    footprints : Footprints
        The projected footprints and the crop scale.
    names : tuple of str
        The channels, in output order (from :data:`CHANNELS`).
    patch_size : int
    present : tuple of bool
        Whether each channel has its evidence (absent channels are all zeros).
    images : (H + 2 pad, K, W + 2 pad) float32 ndarray or None
        The dense image channels (``neighbours``, ``cn``, ``image`` among ``names``, in
        that order), padded by ``pad`` px: 0 outside the field of view, the image's
        median for ``image``. Channels sit between rows and columns, so that one
        component's window is one slice in the layout of :meth:`crop`'s stack.
    pad : int
    """

    footprints: Footprints
    names: tuple[str, ...]
    patch_size: int
    present: tuple[bool, ...]
    images: np.ndarray | None
    pad: int

    @classmethod
    def from_evidence(
        cls,
        evidence: Evidence,
        footprints: Footprints,
        *,
        patch_size: int,
        names: Sequence[str] = CHANNELS,
        use: Sequence[str] | None = None,
    ) -> ChannelSource:
        """The channel images of ``evidence``, densified once.

        Parameters
        ----------
        evidence : Evidence
            ``Cn`` and ``image`` are read from it.
        footprints : Footprints
            :func:`~calcomp_caiman.evidence.patches.footprints_for` of ``evidence``.
        patch_size : int
        names : sequence of str
            Channels among :data:`CHANNELS`, in its order.
        use : sequence of str, optional
            Optional kinds of evidence to use (``"neighbours"``, ``"image"``); default all
            present. The channels of a kind left out are zeros.

        Raises
        ------
        ValueError
            An unknown channel name.
        """
        names = tuple(names)
        if not names or names != tuple(name for name in CHANNELS if name in names):
            raise ValueError(
                f"channels must be some of {CHANNELS}, in that order, each once; got {list(names)}."
            )
        allowed = set(evidence.kinds) if use is None else {"shape", *use} & set(evidence.kinds)
        flat, dims, scale = footprints
        dims = (int(dims[0]), int(dims[1]))
        window = crop_windows(flat[:, :0], dims, scale, patch_size).window  # no component
        layers, present = [], []
        for name in names:
            layer = None
            if _KIND[name] in allowed:
                layer = _image_channel(evidence, flat, dims, name)
            present.append(layer is not None or name == "footprint")
            if name != "footprint":
                layers.append(layer)
        images = None
        if layers:
            shape = (dims[0] + 2 * window, len(layers), dims[1] + 2 * window)
            images = np.zeros(shape, np.float32)
            for k, layer in enumerate(layers):
                if layer is None:
                    continue
                fill, values = layer
                images[:, k, :] = fill
                images[window : window + dims[0], k, window : window + dims[1]] = values
        return cls(footprints, names, int(patch_size), tuple(present), images, window)

    def crop(
        self, start: int = 0, stop: int | None = None, *, normalise: bool = True
    ) -> np.ndarray:
        """The channels of components ``start:stop``.

        Parameters
        ----------
        start, stop : int
        normalise : bool
            False: the resampled windows before each crop's own normalisation (the
            square root and norm of the footprint, the neighbours' peak, the clip of
            ``cn``, the percentiles of ``image``): the input of a model exported by
            ``calcomp export-bioimageio``, whose ONNX graph normalises each crop itself.

        Returns
        -------
        (n, P, P, C) float32 ndarray
            Channel ``c`` is ``names[c]``; absent channels are zeros. A view of a
            ``(n, P, C, P)`` array (the layout the resampling makes; copy it with
            ``np.ascontiguousarray`` where a contiguous array is needed).
        """
        flat, dims, scale = self.footprints
        stop = flat.shape[1] if stop is None else min(int(stop), flat.shape[1])
        start = min(int(start), stop)
        size = self.patch_size
        n_channels = len(self.names)
        out = np.empty((stop - start, size, n_channels, size), np.float32)
        window = self.pad
        chunk = max(1, _CHUNK_ELEMENTS // (window * window * n_channels))
        first_image = 1 if self.names[0] == "footprint" else 0  # CHANNELS order
        for first in range(start, stop, chunk):
            last = min(stop, first + chunk)
            windows = crop_windows(flat[:, first:last], dims, scale, size)
            stack = np.empty((last - first, window, n_channels, window), np.float32)
            if first_image:
                stack[:, :, 0, :] = windows.crops
            if self.images is not None:  # one slice per component: faster than a gather
                rows = (windows.origin_r + window).tolist()
                cols = (windows.origin_c + window).tolist()
                for i, (row, col) in enumerate(zip(rows, cols)):
                    stack[i, :, first_image:, :] = self.images[
                        row : row + window, :, col : col + window
                    ]
            resampled = windows.resample(stack)  # (n, P, P, C): a view of (n, P, C, P)
            for c, name in enumerate(self.names):
                if normalise and self.present[c]:
                    _finish(name, resampled[..., c])
            out[first - start : last - start] = resampled.transpose(0, 1, 3, 2)
        return out.transpose(0, 1, 3, 2)


def _image_channel(evidence: Evidence, flat, dims: tuple[int, int], name: str):
    """``(fill, (H, W) values)`` of an image channel, or None when its evidence is absent."""
    if name == "neighbours":
        if flat.shape[1] == 0:
            return None
        peak = np.zeros(flat.shape[1])
        counts = np.diff(flat.indptr)
        if flat.nnz:
            peak[counts > 0] = np.maximum.reduceat(flat.data, flat.indptr[:-1][counts > 0])
        summed = flat @ (1.0 / np.where(peak > 0, peak, 1.0))
        return 0.0, _dense(summed, dims)
    if name == "cn":
        return None if evidence.Cn is None else (0.0, np.asarray(evidence.Cn, np.float32))
    if evidence.image is None:
        return None
    image = np.asarray(evidence.image, np.float32)
    return float(np.median(image)), image


def _finish(name: str, patches: np.ndarray) -> None:
    """One channel's resampled crops, (n, P, P) float32 (a view), to what the model sees,
    in place."""
    if name == "footprint":
        compress_patches(patches)
    elif name == "neighbours":
        np.sqrt(np.maximum(patches, 0, out=patches), out=patches)
        peak = patches.max(axis=(1, 2), keepdims=True)
        patches /= np.where(peak > 0, peak, 1.0)
    elif name == "cn":
        np.clip(patches, -1.0, 1.0, out=patches)
    else:  # median and 99th percentile from every other pixel of every other row
        sample = patches[:, ::2, ::2].reshape(len(patches), -1)
        low, high = np.percentile(sample, IMAGE_LEVELS, axis=1)
        spread = high - low
        flat = IMAGE_FLAT[0] * (np.abs(high) + np.abs(low)) + IMAGE_FLAT[1]
        spread = np.where(spread > flat, spread, np.inf)
        patches -= low[:, None, None]
        patches /= spread[:, None, None]
        np.clip(patches, -IMAGE_CLIP, IMAGE_CLIP, out=patches)


def component_channels(
    evidence: Evidence,
    footprints: Footprints,
    *,
    patch_size: int,
    names: Sequence[str] = CHANNELS,
    use: Sequence[str] | None = None,
) -> np.ndarray:
    """The channels of every component of ``evidence`` (:class:`ChannelSource`).

    Parameters
    ----------
    evidence : Evidence
    footprints : Footprints
        :func:`~calcomp_caiman.evidence.patches.footprints_for` of ``evidence``.
    patch_size : int
    names : sequence of str
        Channels among :data:`CHANNELS`.
    use : sequence of str, optional
        Optional kinds of evidence to use; default all present.

    Returns
    -------
    (N, P, P, C) float32 ndarray
        ``N == 0`` gives shape ``(0, P, P, C)``.

    Examples
    --------
    >>> import numpy as np
    >>> from calcomp_caiman.evidence.patches import crop_checked, footprints_for
    >>> rr, cc = np.mgrid[:64, :64]
    >>> cell = ((rr - 30) ** 2 + (cc - 30) ** 2 <= 25).astype(np.float32)
    >>> ev = Evidence.build(cell.reshape(-1, 1, order="F"), (64, 64), Cn=cell * 0.5, gSig=5)
    >>> found = footprints_for(ev)
    >>> channels = component_channels(ev, found, patch_size=32)
    >>> channels.shape
    (1, 32, 32, 4)
    >>> bool(np.allclose(channels[..., 0], crop_checked(*found, 32), atol=1e-6))
    True
    >>> float(abs(channels[..., 3]).max())  # no mean image: zeros
    0.0
    """
    source = ChannelSource.from_evidence(
        evidence, footprints, patch_size=patch_size, names=names, use=use
    )
    return source.crop()
