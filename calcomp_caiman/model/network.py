"""The shape network's definition in Keras (imported only on demand, for training).

Built from built-in layers only, so a saved network loads in Keras 2 (CaImAn <= 1.12,
TensorFlow) and Keras 3 (CaImAn >= 1.13, torch backend). Classification never needs it:
:mod:`calcomp_caiman.model.engine` runs the same network in NumPy.
"""

from __future__ import annotations

from collections.abc import Sequence

from calcomp_caiman.schema import CLASSES, PATCH_SIZE

BN_EPSILON = 1e-3  # Keras' BatchNormalization default

__all__ = ["DEFAULT_ARCHITECTURE", "build_resnet", "layer_names", "variable_name"]

DEFAULT_ARCHITECTURE = {"widths": [24, 48, 96], "blocks": [1, 1, 1], "dropout": 0.2}
"""Architecture of the bundled model: stage widths, residual blocks per stage, head dropout."""


def layer_names(architecture: dict) -> list[tuple[str, int, int]]:
    """(block prefix, width, stride) of every residual block, in order."""
    blocks = []
    for stage, (width, count) in enumerate(zip(architecture["widths"], architecture["blocks"])):
        for index in range(count):
            stride = 2 if index == 0 else 1
            blocks.append((f"s{stage}b{index}", int(width), stride))
    return blocks


def build_resnet(
    *,
    patch_size: int = PATCH_SIZE,
    num_classes: int = len(CLASSES),
    widths: Sequence[int] = tuple(DEFAULT_ARCHITECTURE["widths"]),
    blocks: Sequence[int] = tuple(DEFAULT_ARCHITECTURE["blocks"]),
    dropout: float = DEFAULT_ARCHITECTURE["dropout"],
    channels: int = 1,
):
    """Build the classifier network as a Keras functional model (built-in layers only).

    A strided 3x3 stem (50 -> 25 px), then one stage per entry of ``widths``: residual
    blocks of two 3x3 convolutions with batch norm; the first block of every stage halves
    the resolution (25 -> 13 -> 7 -> 4 px) and projects its shortcut with a strided 1x1
    convolution. About 11 MFLOP per patch with the default widths. Global average pooling,
    dropout, and a softmax over the classes.

    Parameters
    ----------
    patch_size : int
        Input patches are ``(patch_size, patch_size, channels)``.
    num_classes : int
        Output units (4: ``CLASSES``).
    widths, blocks : sequences of int
        Channels and number of residual blocks per stage.
    dropout : float
        Dropout rate before the output layer (training only).
    channels : int
        Input channels: 1 for a footprint patch (models v1, v2), 4 for model v3's stack
        (:data:`calcomp_caiman.evidence.channels.CHANNELS`).

    Returns
    -------
    keras.Model
        Softmax probabilities ``(batch, num_classes)``. Every layer has a stable name, so
        weights map one-to-one onto ``weights.npz``.

    Examples
    --------
    >>> net = build_resnet(widths=(4, 8), blocks=(1, 1))  # doctest: +SKIP
    >>> net.output_shape  # doctest: +SKIP
    (None, 4)
    """
    import keras
    from keras import layers

    def conv_bn(x, width, kernel, stride, name, relu=True):
        x = layers.Conv2D(
            width, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
        )(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
        return layers.Activation("relu", name=f"{name}_relu")(x) if relu else x

    architecture = {"widths": list(widths), "blocks": list(blocks)}
    inputs = keras.Input(shape=(patch_size, patch_size, int(channels)), name="patches")
    x = conv_bn(inputs, int(widths[0]), 3, 2, "stem")
    channels = int(widths[0])
    for prefix, width, stride in layer_names(architecture):
        y = conv_bn(x, width, 3, stride, f"{prefix}_a")
        y = conv_bn(y, width, 3, 1, f"{prefix}_b", relu=False)
        if stride != 1 or channels != width:
            x = conv_bn(x, width, 1, stride, f"{prefix}_skip", relu=False)
        x = layers.Activation("relu", name=f"{prefix}_out")(
            layers.add([y, x], name=f"{prefix}_add")
        )
        channels = width
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="calcomp_resnet")


def variable_name(variable) -> str:
    """``kernel``, ``gamma``, ...: a Keras variable's name without its layer (Keras 2 and 3)."""
    return str(getattr(variable, "path", variable.name)).split("/")[-1].split(":")[0]
