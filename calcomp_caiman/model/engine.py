"""The image network's inference in NumPy: batch-norm folded into the convolutions.

The network reads ``(N, P, P)`` patches (one channel: models v1 and v2) or
``(N, P, P, C)`` stacks of channels (model v3, :mod:`calcomp_caiman.evidence.channels`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calcomp_caiman.model.network import BN_EPSILON, layer_names

__all__ = ["BRANCH_PREFIXES", "Engine"]

BRANCH_PREFIXES = ("head/", "temporal/")
"""Weights of the parts after the image network (fusion head, temporal branch): not the
engine's."""


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """Output size and (before, after) padding of a 'same' convolution, TensorFlow's rule."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def _conv2d(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, stride: int) -> np.ndarray:
    """'same' 2-D convolution of NHWC ``x`` with an HWIO ``kernel``, as one matrix product."""
    n, height, width, channels = x.shape
    k_rows, k_cols, _, filters = kernel.shape
    out_h, top, bottom = _same_padding(height, k_rows, stride)
    out_w, left, right = _same_padding(width, k_cols, stride)
    if k_rows == 1 and k_cols == 1:
        columns = x[:, : out_h * stride : stride, : out_w * stride : stride, :]
        columns = columns.reshape(-1, channels)
    else:
        padded = np.zeros((n, height + top + bottom, width + left + right, channels), np.float32)
        padded[:, top : top + height, left : left + width] = x
        # im2col: the channels of each (row, col) kernel tap side by side, HWIO order
        columns = np.empty((n, out_h, out_w, k_rows * k_cols * channels), dtype=np.float32)
        for tap in range(k_rows * k_cols):
            row, col = divmod(tap, k_cols)
            columns[..., tap * channels : (tap + 1) * channels] = padded[
                :, row : row + out_h * stride : stride, col : col + out_w * stride : stride, :
            ]
        columns = columns.reshape(-1, k_rows * k_cols * channels)
    out = columns @ kernel.reshape(-1, filters)
    out += bias
    return out.reshape(n, out_h, out_w, filters)


def _fold_batch_norm(weights: dict[str, np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Kernel and bias of ``<name>_conv`` followed by ``<name>_bn`` as one convolution."""
    kernel = weights[f"{name}_conv/kernel"].astype(np.float64)
    gamma = weights[f"{name}_bn/gamma"].astype(np.float64)
    beta = weights[f"{name}_bn/beta"].astype(np.float64)
    mean = weights[f"{name}_bn/moving_mean"].astype(np.float64)
    var = weights[f"{name}_bn/moving_variance"].astype(np.float64)
    scale = gamma / np.sqrt(var + BN_EPSILON)
    return (kernel * scale).astype(np.float32), (beta - mean * scale).astype(np.float32)


@dataclass(frozen=True)
class Engine:
    """The network with batch norm folded: a list of convolutions and the dense head."""

    stem: tuple[np.ndarray, np.ndarray]
    blocks: list[tuple[int, tuple, tuple, tuple | None]]
    dense: tuple[np.ndarray, np.ndarray]

    @classmethod
    def from_weights(cls, weights: dict[str, np.ndarray], architecture: dict) -> Engine:
        """Fold the network's weights; weights the architecture does not use are an error."""
        layers = ["stem"] + [
            f"{prefix}_{part}"
            for prefix, _, _ in layer_names(architecture)
            for part in ("a", "b", "skip")
        ]
        known = {"probs/kernel", "probs/bias"} | {
            f"{layer}{suffix}"
            for layer in layers
            for suffix in ("_conv/kernel", "_conv/bias", "_bn/gamma", "_bn/beta",
                           "_bn/moving_mean", "_bn/moving_variance")
        }  # fmt: skip
        unexpected = sorted(
            k for k in weights if k not in known and not k.startswith(BRANCH_PREFIXES)
        )
        if unexpected:
            raise KeyError(
                f"weights not used by the {architecture.get('widths')} network: "
                f"{', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}"
            )
        blocks = []
        for prefix, _, stride in layer_names(architecture):
            skip = None
            if f"{prefix}_skip_conv/kernel" in weights:
                skip = _fold_batch_norm(weights, f"{prefix}_skip")
            blocks.append(
                (
                    stride,
                    _fold_batch_norm(weights, f"{prefix}_a"),
                    _fold_batch_norm(weights, f"{prefix}_b"),
                    skip,
                )
            )
        dense = (
            weights["probs/kernel"].astype(np.float32),
            weights["probs/bias"].astype(np.float32),
        )
        return cls(_fold_batch_norm(weights, "stem"), blocks, dense)

    @property
    def channels(self) -> int:
        """Input channels the network reads (1: patches ``(N, P, P)``)."""
        return int(self.stem[0].shape[2])

    def logits(self, patches: np.ndarray) -> np.ndarray:
        """(N, classes) logits of ``(N, P, P)`` patches or ``(N, P, P, C)`` channels."""
        return self.pooled(patches) @ self.dense[0] + self.dense[1]

    def pooled(self, patches: np.ndarray) -> np.ndarray:
        """The globally pooled features the dense head reads (the network's embedding).

        ``patches``: ``(N, P, P)`` for a one-channel network, else ``(N, P, P, C)`` (any
        memory layout).
        """
        x = patches[..., None] if patches.ndim == 3 else patches
        if x.ndim != 4 or x.shape[3] != self.channels:
            raise ValueError(
                f"the network reads {self.channels} channel(s) per pixel, got an input of "
                f"shape {patches.shape}."
            )
        x = x.astype(np.float32, copy=False)
        x = np.maximum(_conv2d(x, *self.stem, 2), 0)
        for stride, conv_a, conv_b, skip in self.blocks:
            y = np.maximum(_conv2d(x, *conv_a, stride), 0)
            y = _conv2d(y, *conv_b, 1)
            shortcut = x if skip is None else _conv2d(x, *skip, stride)
            x = np.maximum(y + shortcut, 0, out=y)
        return x.mean(axis=(1, 2))

    def flops_per_patch(self, patch_size: int) -> int:
        """Multiply-adds x 2 of one forward pass (convolutions and dense layer)."""
        total = 0
        size = -(-patch_size // 2)
        convs = [(self.stem[0], 2, patch_size)]
        for stride, conv_a, conv_b, skip in self.blocks:
            out = -(-size // stride)
            convs += [(conv_a[0], stride, size), (conv_b[0], 1, out)]
            if skip is not None:
                convs.append((skip[0], stride, size))
            size = out
        for kernel, stride, in_size in convs:
            out = -(-in_size // stride)
            total += 2 * out * out * int(np.prod(kernel.shape))
        return total + 2 * int(np.prod(self.dense[0].shape))
