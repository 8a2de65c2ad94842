"""The image network as a bioimage.io model package (ONNX), for Fiji/deepImageJ and other consumers.

Needs ``pip install "calcomp_caiman[bioimageio]"`` (``onnx``, ``bioimageio.spec``;
``onnxruntime`` to check the package). Everything is imported inside the functions.

The ONNX graph is written node by node with ``onnx.helper`` from the same folded
parameters the NumPy engine runs (batch norm folded into the convolutions), so the two give
the same numbers. Models v1 and v2: it takes ``(batch, 1, 50, 50)`` float32 crops and
returns ``(batch, 4)`` probabilities. The crop's own normalisation is inside the graph:
negative values clipped to 0, square root, unit L2 norm over the patch (an all-zero crop
stays zero), then the network, the logits divided by the calibration temperature and a
softmax. What the graph cannot do is the crop itself (centre of mass, window half-width
``4 * scale + 1`` with the scale of :func:`crop_rule`, zero padding, resampling to 50 x 50:
:func:`calcomp_caiman.extract_patches` with ``gSig=scale``), nor what a model v2 adds from
traces, images and neighbours: the package holds the shape network only.

Model v3: the package holds its **image branch** only, not the temporal branch nor the
fusion head (so not the probabilities ``calcomp classify`` reports). The graph takes
``(batch, C, P, P)`` float32 crops of the model's channels in ``channel_names`` order
(:mod:`calcomp_caiman.evidence.channels`), all read in the footprint's window and resampled
alike (:meth:`~calcomp_caiman.evidence.channels.ChannelSource.crop` with
``normalise=False``); each crop's own normalisation is inside the graph (the footprint as
above; the neighbours' square root over its peak; ``cn`` clipped to [-1, 1]; the mean
image's median and 99th percentile over every other pixel of every other row, then
clipped). It returns the softmax of the branch's logits, at ``shape_temperature`` where
``thresholds.json`` records one, else 1 (the fusion head reads the raw log-softmax).
:func:`crop_rule` says per channel what is prepared over the field of view before the
crop; a channel without its evidence is all zeros.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from calcomp_caiman._version import __version__
from calcomp_caiman.errors import CalcompError, InvalidFileError, OutputExistsError
from calcomp_caiman.evidence.channels import IMAGE_CLIP, IMAGE_FLAT, IMAGE_LEVELS
from calcomp_caiman.evidence.patches import GSIG_TO_SCALE, SCALE_MIN_COMPONENTS, crop_half_width
from calcomp_caiman.model.folder import CalcompModel, bundled_models
from calcomp_caiman.schema import CLASSES

logger = logging.getLogger(__name__)

__all__ = [
    "ONNX_OPSET",
    "build_onnx",
    "crop_rule",
    "export_bioimageio",
    "shape_probabilities",
    "sample_channels",
    "sample_crops",
]

ONNX_OPSET = 13
"""ONNX opset of the exported graph (old enough for the runtimes Fiji plugins bundle)."""

_NORM_FLOOR = 1e-30  # an all-zero crop: 0 / floor = 0, as extract_patches leaves it

_CHANNEL_RULES = {
    "footprint": (
        "the component's own footprint (non-negative values)",
        "0",
        "negative values clipped, square root, unit L2 norm (an all-zero crop stays zero)",
    ),
    "neighbours": (
        "every footprint of the result divided by its own maximum, summed (the component "
        "included); all zeros for a result of one component",
        "0",
        "negative values clipped, square root, divided by its maximum in the crop",
    ),
    "cn": (
        "the local correlation image Cn (CaImAn's estimates.Cn), as it is",
        "0",
        "clipped to [-1, 1]",
    ),
    "image": (
        "the mean (or max) image of the movie, as it is",
        "the median of the whole image",
        f"minus its {IMAGE_LEVELS[0]}th percentile (low), divided by its {IMAGE_LEVELS[1]}th "
        "percentile (top) minus low, both over the resampled crop's pixels of even (0-based) "
        "row and column index (numpy.percentile, linear interpolation); a top - low of at "
        f"most {IMAGE_FLAT[0]:g} x (|top| + |low|) + {IMAGE_FLAT[1]:g} gives zeros; clipped "
        f"to [-{IMAGE_CLIP:g}, {IMAGE_CLIP:g}]",
    ),
}
"""Per channel of a model v3 (:mod:`calcomp_caiman.evidence.channels`): the image prepared
over the whole field of view before the crop, its value outside the field of view, and
what the exported graph does to each crop."""


def _network(model: CalcompModel) -> str:
    """What the package holds, in two words."""
    return "shape CNN" if model.version < 3 else "image branch"


def _kind(model: CalcompModel) -> str:
    """What of the model the package holds, for the rdf and the card."""
    if model.version >= 3:
        return "image branch of a model v3 (the temporal branch and the fusion head are not exported)"  # fmt: skip
    if getattr(model, "head", None) is not None:
        return "shape CNN of a model v2 (the fusion head is not exported)"
    return "the whole model"


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"exporting to bioimage.io needs {module}: pip install 'calcomp_caiman[bioimageio]'"
        ) from None


def _engine(model: CalcompModel):
    # the folded parameters of the NumPy engine: the same numbers predict() multiplies
    return model.engine


def _temperature(model: CalcompModel) -> float:
    """Temperature of the shape network's own softmax.

    A model without a fusion head is calibrated on the shape logits (``temperature``); a
    model v2 or v3 calibrates its head, so the image network uses ``shape_temperature`` if
    recorded, else 1 (a model v3's head reads the raw log-softmax of the image branch).
    """
    if getattr(model, "head", None) is None:
        return float(model.thresholds.get("temperature", 1.0))
    return float(model.thresholds.get("shape_temperature", 1.0))


def shape_probabilities(model: CalcompModel, patches: np.ndarray) -> np.ndarray:
    """Probabilities of the image network alone, as the exported graph computes them.

    For a model without a fusion head this is ``model.predict(patches)``.

    Parameters
    ----------
    model : CalcompModel
    patches : (N, 50, 50) or (N, P, P, C) float ndarray
        From :func:`calcomp_caiman.extract_patches`; a model v3's channels from
        :class:`~calcomp_caiman.evidence.channels.ChannelSource` (normalised).

    Returns
    -------
    (N, 4) float32 ndarray

    Examples
    --------
    >>> import numpy as np
    >>> model = CalcompModel.load("calcomp_resnet_v1")  # a model without a fusion head
    >>> patches = np.zeros((1, 50, 50), np.float32); patches[0, 20:30, 20:30] = 0.1
    >>> bool(np.allclose(shape_probabilities(model, patches), model.predict(patches)))
    True
    """
    patches = np.asarray(patches, dtype=np.float32)
    logits = _engine(model).logits(patches).astype(np.float64) / _temperature(model)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)


def crop_rule(model: CalcompModel) -> dict:
    """How calcomp cuts the crop ``model`` classifies, for a user who crops elsewhere (Fiji).

    The numbers come from :mod:`calcomp_caiman.evidence.patches`, where the crop is made:
    a window of half-width ``half_width_per_scale * scale + half_width_plus`` px around the
    footprint's centre of mass. For a model whose ``scale_rule`` is ``"footprints"`` (model
    v2), the scale is the median spread of the file's footprints
    (:func:`calcomp_caiman.estimate_gsig`) when ``min_components`` or more are non-empty,
    else ``gsig_factor * gSig``; for an older model (``"gsig"``), the user's ``gSig``, else
    that median spread. ``calcomp classify`` records the scale it used (``crop_scale`` in
    the provenance; ``calcomp_crop_scale`` on ``estimates/class_probs`` of a CaImAn file).

    Parameters
    ----------
    model : CalcompModel

    A model v3 reads several channels (:mod:`calcomp_caiman.evidence.channels`), all in
    that window and resampled alike; ``channels`` says, in the model's order, what each is
    made from over the whole field of view, its value outside it, and what the model does
    to each crop. A channel without its evidence (no ``Cn``, no mean image, one component)
    is all zeros.

    Returns
    -------
    dict
        ``scale_rule``, ``scale`` (the rule in words), ``min_components`` and
        ``gsig_factor`` (None for ``"gsig"``), ``half_width_per_scale``,
        ``half_width_plus``, ``resample``, ``inside_the_model``; model v3: ``channels``
        (a list of dicts: ``name``, ``field_of_view``, ``outside_the_image``,
        ``inside_the_model``) and ``missing_channels``.

    Examples
    --------
    >>> rule = crop_rule(CalcompModel.load())
    >>> rule["half_width_per_scale"], rule["half_width_plus"], rule["min_components"], rule["gsig_factor"]
    (4.0, 1.0, 20, 1.7)
    """
    plus = crop_half_width(0.0)
    if model.scale_rule == "footprints":
        scale = (
            "the median spread of the file's footprints (calcomp_caiman.estimate_gsig) when "
            f"{SCALE_MIN_COMPONENTS} or more are non-empty, else {GSIG_TO_SCALE:g} x gSig"
        )
        least, factor = SCALE_MIN_COMPONENTS, GSIG_TO_SCALE
    else:
        scale = (
            "the user's gSig (CaImAn's params.init['gSig']), else the median spread of the "
            "file's footprints (calcomp_caiman.estimate_gsig)"
        )
        least, factor = None, None
    rule = {
        "scale_rule": model.scale_rule,
        "scale": scale,
        "min_components": least,
        "gsig_factor": factor,
        "half_width_per_scale": crop_half_width(1.0) - plus,
        "half_width_plus": plus,
        "resample": f"window to {model.patch_size}x{model.patch_size}, linear interpolation "
        "(area-averaged when shrinking); zero outside the image",
        "inside_the_model": "negative values clipped, square root, unit L2 norm",
    }
    if model.version < 3:
        return rule
    channels = [
        dict(zip(("name", "field_of_view", "outside_the_image", "inside_the_model"),
                 (name, *_CHANNEL_RULES[name])))
        for name in model.channel_names
    ]  # fmt: skip
    return {
        **rule,
        "resample": f"every channel read in the footprint's window and resampled alike to "
        f"{model.patch_size}x{model.patch_size}, linear interpolation (area-averaged when "
        "shrinking); outside the image: per channel",
        "inside_the_model": "per channel, see channels",
        "channels": channels,
        "missing_channels": "A channel without its evidence (no Cn, no mean image, a result "
        "of one component for neighbours) is all zeros.",
    }


def _half_width(rule: dict) -> str:
    return f"{rule['half_width_per_scale']:g} * scale + {rule['half_width_plus']:g}"


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """Output size and TensorFlow 'same' padding (before, after), as the NumPy engine."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def build_onnx(model: CalcompModel):
    """The model's image network, with the crop normalisation and softmax, as ONNX.

    Parameters
    ----------
    model : CalcompModel

    Returns
    -------
    onnx.ModelProto
        Input ``patches``: ``(batch, C, P, P)`` float32 crops, channels in
        ``model.channel_names`` order (models v1, v2: ``C = 1``, the footprint, any
        non-negative scale; model v3: :meth:`ChannelSource.crop
        <calcomp_caiman.evidence.channels.ChannelSource.crop>` with ``normalise=False``,
        channels last there); output ``probs``: ``(batch, 4)`` float32 in ``CLASSES`` order.

    Raises
    ------
    ImportError
        ``onnx`` is not installed.
    """
    onnx = _require("onnx")
    from onnx import TensorProto, helper, numpy_helper

    engine = _engine(model)
    size = model.patch_size
    names = model.channel_names
    nodes, weights = [], []

    def constant(name: str, value, dtype=np.float32) -> str:
        if name not in {weight.name for weight in weights}:
            weights.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def conv(x: str, kernel_bias, stride: int, in_size: int, name: str) -> tuple[str, int]:
        kernel, bias = kernel_bias  # HWIO, as the NumPy engine holds it
        k = int(kernel.shape[0])
        out, before, after = _same_pads(in_size, k, stride)
        nodes.append(
            helper.make_node(
                "Conv",
                [
                    x,
                    constant(f"{name}_w", kernel.transpose(3, 2, 0, 1)),
                    constant(f"{name}_b", bias),
                ],
                [name],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[before, before, after, after],
                name=name,
            )
        )
        return name, out

    def node(op: str, inputs: list[str], name: str, *, outputs=None, **attributes) -> str:
        nodes.append(helper.make_node(op, inputs, outputs or [name], name=name, **attributes))
        return name

    if len(names) == 1:  # models v1, v2: the footprint's nodes unprefixed
        x = _normalise_crop(names[0], "patches", "", node, constant, size)
    else:  # model v3: each channel's crops normalised on their own
        parts = [f"{name}_crop" for name in names]
        nodes.append(helper.make_node("Split", ["patches"], parts, axis=1, name="split"))
        parts = [
            _normalise_crop(name, part, f"{name}_", node, constant, size)
            for name, part in zip(names, parts)
        ]
        x = node("Concat", parts, "channels", axis=1)
    x, current = conv(x, engine.stem, 2, size, "stem")
    x = node("Relu", [x], "stem_relu")
    for index, (stride, conv_a, conv_b, skip) in enumerate(engine.blocks):
        y, out = conv(x, conv_a, stride, current, f"block{index}_a")
        y = node("Relu", [y], f"block{index}_a_relu")
        y, _ = conv(y, conv_b, 1, out, f"block{index}_b")
        shortcut = x if skip is None else conv(x, skip, stride, current, f"block{index}_skip")[0]
        x = node("Add", [y, shortcut], f"block{index}_add")
        x = node("Relu", [x], f"block{index}_out")
        current = out
    x = node("GlobalAveragePool", [x], "pool")
    x = node("Flatten", [x], "features", axis=1)
    x = node("MatMul", [x, constant("dense_w", engine.dense[0])], "dense")
    x = node("Add", [x, constant("dense_b", engine.dense[1])], "logits")
    x = node("Mul", [x, constant("inverse_temperature", 1.0 / _temperature(model))], "tempered")
    nodes.append(helper.make_node("Softmax", [x], ["probs"], axis=1, name="softmax"))
    graph = helper.make_graph(
        nodes,
        "calcomp_shape_cnn" if model.version < 3 else "calcomp_image_branch",
        [
            helper.make_tensor_value_info(
                "patches", TensorProto.FLOAT, ["batch", len(names), size, size]
            )
        ],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", len(CLASSES)])],
        initializer=weights,
    )
    proto = helper.make_model(
        graph,
        producer_name="calcomp_caiman",
        producer_version=__version__,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
    )
    proto.ir_version = 7  # readable by onnxruntime >= 1.8
    proto.doc_string = f"{model.name} {_network(model)} (weights SHA256 {model.sha256})"
    onnx.checker.check_model(proto)
    return proto


def _normalise_crop(name: str, x: str, prefix: str, node, constant, size: int) -> str:
    """Nodes of one channel's per-crop normalisation (:mod:`calcomp_caiman.evidence.channels`,
    ``_CHANNEL_RULES``) on ``x`` ``(batch, 1, P, P)``; returns the output's name."""
    if name == "cn":
        return node("Clip", [x, constant("minus_one", -1.0), constant("one", 1.0)], f"{prefix}clip")
    if name == "image":
        return _normalise_image(x, prefix, node, constant, size)
    # footprint: clip, sqrt, unit L2 norm (compress_patches); neighbours: clip, sqrt, / peak
    x = node("Relu", [x], f"{prefix}clip_negative")
    x = node("Sqrt", [x], f"{prefix}sqrt")
    if name == "footprint":
        norm = node("ReduceSumSquare", [x], f"{prefix}sum_squares", axes=[1, 2, 3], keepdims=1)
        norm = node("Sqrt", [norm], f"{prefix}l2_norm")
        norm = node("Max", [norm, constant("norm_floor", _NORM_FLOOR)], f"{prefix}l2_norm_floor")
        return node("Div", [x, norm], f"{prefix}unit_norm")
    peak = node("ReduceMax", [x], f"{prefix}peak", axes=[1, 2, 3], keepdims=1)
    peak = node("Max", [peak, constant("norm_floor", _NORM_FLOOR)], f"{prefix}peak_floor")
    return node("Div", [x, peak], f"{prefix}unit_peak")


def _normalise_image(x: str, prefix: str, node, constant, size: int) -> str:
    """The image channel: ``(x - median) / (p99 - median)`` over every other pixel of every
    other row (sorted with TopK, the percentiles as numpy's linear interpolation), clipped."""
    side = -(-size // 2)
    count = side * side
    sample = node("Slice", [x, constant("even_starts", [0, 0], np.int64),
                            constant("even_ends", [size, size], np.int64),
                            constant("even_axes", [2, 3], np.int64),
                            constant("even_steps", [2, 2], np.int64)], f"{prefix}sample")  # fmt: skip
    sample = node("Flatten", [sample], f"{prefix}sample_flat", axis=1)
    ordered = node("TopK", [sample, constant("sample_count", [count], np.int64)], f"{prefix}sorted",
                   outputs=[f"{prefix}sorted", f"{prefix}sorted_index"], axis=1, largest=0,
                   sorted=1)  # fmt: skip
    # numpy's virtual index of each percentile; its linear interpolation as a matrix product
    where = np.percentile(np.arange(count, dtype=np.float64), IMAGE_LEVELS)
    lower = np.minimum(np.floor(where).astype(np.int64), count - 2)
    columns = np.arange(len(where))
    weight = np.zeros((count, len(where)))
    weight[lower, columns] = 1.0 - (where - lower)
    weight[lower + 1, columns] += where - lower
    levels = node("MatMul", [ordered, constant("percentile_weights", weight)], f"{prefix}levels")
    levels = node("Reshape", [levels, constant("level_shape", [-1, 2, 1, 1], np.int64)],
                  f"{prefix}levels_4d")  # fmt: skip
    low, high = f"{prefix}median", f"{prefix}top"
    node("Split", [levels], f"{prefix}split_levels", outputs=[low, high], axis=1)
    spread = node("Sub", [high, low], f"{prefix}spread")
    magnitude = node("Add", [node("Abs", [high], f"{prefix}abs_top"),
                             node("Abs", [low], f"{prefix}abs_median")], f"{prefix}magnitude")  # fmt: skip
    relative, absolute = IMAGE_FLAT
    floor = node("Mul", [magnitude, constant("flat_relative", relative)], f"{prefix}flat_scaled")
    floor = node("Add", [floor, constant("flat_absolute", absolute)], f"{prefix}flat_floor")
    spread = node("Where", [node("Greater", [spread, floor], f"{prefix}not_flat"), spread,
                            constant("infinity", np.inf)], f"{prefix}spread_or_inf")  # fmt: skip
    x = node("Div", [node("Sub", [x, low], f"{prefix}centred"), spread], f"{prefix}scaled")
    return node("Clip", [x, constant("image_clip_min", -IMAGE_CLIP),
                         constant("image_clip_max", IMAGE_CLIP)], f"{prefix}clip")  # fmt: skip


def sample_crops(patch_size: int = 50) -> np.ndarray:
    """Four crops of drawn footprints, before normalisation: a soma, a ring, a dendrite, specks.

    Returns
    -------
    (4, 1, P, P) float32 ndarray
        Non-negative crops, as a user resamples them (the graph normalises them).

    Examples
    --------
    >>> sample_crops().shape
    (4, 1, 50, 50)
    """
    from calcomp_caiman.evidence.patches import extract_patches

    size = 96
    rows, cols = np.mgrid[:size, :size].astype(np.float64)
    rng = np.random.default_rng(0)
    drawn = [_drawn_footprint(kind, rows, cols, (48, 48), rng) for kind in range(4)]
    footprints = np.stack([image.ravel(order="F") for image in drawn], 1)
    patches = extract_patches(footprints, (size, size), gSig=4.0, patch_size=patch_size)
    return (patches**2)[:, None].astype(np.float32)  # undo sqrt: a crop of the footprint


def _drawn_footprint(kind: int, rows, cols, centre, rng) -> np.ndarray:
    """A soma (0), a ring (1), a dendrite (2) or specks (3) drawn around ``centre``."""
    row, col = centre
    radius = np.hypot(rows - row, cols - col)
    if kind == 0:
        return np.exp(-(radius**2) / (2 * 4.0**2))
    if kind == 1:
        return np.exp(-((radius - 6.0) ** 2) / 2.0)
    if kind == 2:
        return np.exp(-((rows - row - 0.3 * (cols - col)) ** 2) / 1.5) * (np.abs(cols - col) < 30)
    return rng.random(rows.shape) ** 8 * (radius < 18)


def sample_channels(model: CalcompModel) -> tuple[np.ndarray, np.ndarray]:
    """Four drawn components of one field of view, as a model v3's channels.

    A soma, a ring, a dendrite and specks, 40 px apart (the dendrite reaches into the
    last one's window), with a correlation image and a mean image drawn from them, cropped
    at scale 4 by :class:`~calcomp_caiman.evidence.channels.ChannelSource`.

    Parameters
    ----------
    model : CalcompModel
        Its ``channel_names`` and ``patch_size``.

    Returns
    -------
    crops : (4, C, P, P) float32 ndarray
        The resampled windows before each crop's normalisation: the exported graph's input.
    channels : (4, P, P, C) float32 ndarray
        The same, normalised: what the NumPy engine reads at run time.
    """
    from calcomp_caiman.evidence.channels import ChannelSource
    from calcomp_caiman.evidence.evidence import Evidence
    from calcomp_caiman.evidence.patches import footprints_for

    dims = (130, 130)
    rows, cols = np.mgrid[: dims[0], : dims[1]].astype(np.float64)
    rng = np.random.default_rng(0)
    centres = ((45, 45), (45, 85), (85, 45), (85, 85))
    drawn = [_drawn_footprint(kind, rows, cols, centres[kind], rng) for kind in range(4)]
    cells = sum(image / image.max() for image in drawn)
    Cn = np.clip(0.9 * np.minimum(cells, 1.0) - 0.1 + rng.normal(0.0, 0.05, dims), -1.0, 1.0)
    image = 100.0 + 0.2 * rows + 40.0 * cells + rng.normal(0.0, 3.0, dims)
    A = np.stack([footprint.ravel(order="F") for footprint in drawn], 1)
    evidence = Evidence.build(A, dims, Cn=Cn, image=image)
    found = footprints_for(evidence, model.scale_rule, scale=4.0)
    source = ChannelSource.from_evidence(
        evidence, found, patch_size=model.patch_size, names=model.channel_names
    )
    crops = np.ascontiguousarray(source.crop(normalise=False).transpose(0, 3, 1, 2))
    return crops, np.ascontiguousarray(source.crop())


def _model_card(model: CalcompModel, kind: str) -> str:
    card = ""
    folder = bundled_models().get(model.name)
    if folder is not None and (folder.parent / "README.md").is_file():
        card = (folder.parent / "README.md").read_text()
    if model.version >= 3:
        return _image_branch_card(model, card)
    rule = crop_rule(model)
    return f"""# {model.name}: shape CNN of calcomp_caiman ({kind})

Classifies one calcium-imaging component (a CaImAn/CNMF footprint, a Suite2p ROI or a
binary mask) as **neuron, process, noise or doubtful** from a 50 x 50 crop around it.
Exported by `calcomp export-bioimageio` (calcomp_caiman {__version__}) from the weights with
SHA256 `{model.sha256}`; ONNX built from the same folded parameters as the NumPy engine.

## Input: what you must do before the model

1. The crop scale of the file, `scale` in px: {rule["scale"]}.
   `calcomp classify` records the scale it used: `calcomp_crop_scale`, an attribute of
   `estimates/class_probs` in a CaImAn file (`crop_scale` in the provenance of the other
   formats' outputs).
2. Centre of mass of the footprint (weighted by its values), in pixels.
3. A square window of half-width `{_half_width(rule)}` pixels around it. Pixels outside
   the image are zero (the component stays centred).
4. Resample the window to {model.patch_size} x {model.patch_size} (linear interpolation,
   area-averaged when shrinking).

The model itself then clips negative values, takes the square root and scales the crop to
unit L2 norm, so intensity units do not matter. Input: `(batch, 1, 50, 50)` float32
(axes b, c, y, x; y = rows).

## Output

`(batch, 4)` probabilities of neuron, process, noise, doubtful (rows sum to 1), calibrated
with the temperature {_temperature(model):.4f}.

## Limits

It sees one footprint's shape only: no traces, no brightness, no neighbours. A crop made
another way (e.g. a fixed 50 px window whatever the cell size, or a mean image instead of
a footprint) is out of distribution and gives unreliable classes. An all-zero crop gives
meaningless probabilities (calcomp_caiman calls such a component noise). For whole result
files (CaImAn, NWB, Suite2p, masks) use `calcomp classify`, which makes the crop.

{card}
"""


def _image_branch_card(model: CalcompModel, card: str) -> str:
    """The model card of a model v3's image branch."""
    rule = crop_rule(model)
    size, names = model.patch_size, model.channel_names
    channels = "\n".join(
        f"   - `{c['name']}` (input channel {k}): {c['field_of_view']}; outside the image: "
        f"{c['outside_the_image']}. Inside the model: {c['inside_the_model']}."
        for k, c in enumerate(rule["channels"])
    )
    return f"""# {model.name}: image branch of a calcomp_caiman model v3

Classifies one calcium-imaging component (a CaImAn/CNMF footprint, a Suite2p ROI or a
binary mask) as **neuron, process, noise or doubtful** from {size} x {size} crops of
{len(names)} images around it ({", ".join(names)}). This is the image branch of a model v3
only: its temporal branch (over the component's transients) and its fusion head (over both
branches, the channels' presence and the file's features) are not in this package, so its
probabilities are not those `calcomp classify` reports.
Exported by `calcomp export-bioimageio` (calcomp_caiman {__version__}) from the weights with
SHA256 `{model.sha256}`; ONNX built from the same folded parameters as the NumPy engine.

## Input: what you must do before the model

1. The crop scale of the file, `scale` in px: {rule["scale"]}.
   `calcomp classify` records the scale it used: `calcomp_crop_scale`, an attribute of
   `estimates/class_probs` in a CaImAn file (`crop_scale` in the provenance of the other
   formats' outputs).
2. Centre of mass of the footprint (weighted by its values), in pixels.
3. A square window of half-width `{_half_width(rule)}` pixels around it, the same window
   for every channel, read from these images of the whole field of view:
{channels}
4. Resample each channel's window to {size} x {size} (linear interpolation, area-averaged
   when shrinking), with the same weights for every channel so that pixels line up.

{rule["missing_channels"]} Input: `(batch, {len(names)}, {size}, {size})` float32 (axes b, c, y,
x; y = rows), channels in the order above; calcomp_caiman makes these crops with
`calcomp_caiman.evidence.channels.ChannelSource.crop(normalise=False)` (channels last there).

## Output

`(batch, 4)` probabilities of neuron, process, noise, doubtful (rows sum to 1): the image
branch's logits through a softmax at temperature {_temperature(model):.4f} (a model v3
calibrates its fusion head, not this branch).

## Limits

It sees the images at one component only: no traces and none of the file's features. A
crop made another way (a fixed window whatever the cell size, channels in another order or
prepared otherwise) is out of distribution and gives unreliable classes. For whole result
files (CaImAn, NWB, Suite2p, masks) use `calcomp classify`, which makes the crops and runs
the whole model.

{card}
"""


def _cover(path: Path, crops: np.ndarray) -> None:
    """A grid of the test crops: one row per component, one column per channel (models v1,
    v2: 2 x 2 footprints), each tile scaled to its own range."""
    from matplotlib.image import imsave

    if crops.shape[1] == 1:
        tiles = [np.sqrt(crop[0]) / max(float(np.sqrt(crop[0]).max()), 1e-12) for crop in crops]
        grid = np.block([[tiles[0], tiles[1]], [tiles[2], tiles[3]]])
    else:
        low = crops.min(axis=(2, 3), keepdims=True)
        tiles = (crops - low) / np.maximum(crops.max(axis=(2, 3), keepdims=True) - low, 1e-12)
        grid = np.block([[tile for tile in row] for row in tiles])
    imsave(path, np.kron(grid, np.ones((4, 4))), cmap="magma", vmin=0, vmax=1)


def _rdf(model: CalcompModel, kind: str, opset: int, format_version: str) -> dict:
    size = model.patch_size
    rule = crop_rule(model)
    half = f"{rule['half_width_per_scale']:g}*scale+{rule['half_width_plus']:g}"
    names = list(model.channel_names)
    description = (
        "Four-class classification (neuron, process, noise, doubtful) of one "
        "calcium-imaging component from a 50x50 crop of its footprint; the shape CNN of "
        f"calcomp_caiman ({kind})."
    )
    seen = (
        f"footprint crop: half-width {half} px around its centre of mass "
        "(scale: config.calcomp_caiman.crop), sqrt+L2 norm inside"
    )
    preprocessing = [
        {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
        {"id": "clip", "kwargs": {"min": 0.0}},
    ]
    crop_text = (
        f"half-width {half} px around the centre of mass, scale: "
        f"{rule['scale']}; zero padding, resampled to {size}x{size} "
        "(calcomp_caiman.extract_patches(A, dims, gSig=scale) before its sqrt); "
        "calcomp classify records the scale as crop_scale"
    )
    if model.version >= 3:
        description = (
            "Four-class classification (neuron, process, noise, doubtful) of one "
            f"calcium-imaging component from {size}x{size} crops of {len(names)} images "
            f"({', '.join(names)}); calcomp_caiman's {kind}."
        )
        seen = (
            f"{len(names)} channels, one window of half-width {half} px at the footprint's "
            "centre of mass; absent: zeros (config.calcomp_caiman.crop)"
        )
        preprocessing = preprocessing[:1]  # cn and image are signed
        crop_text = (
            f"half-width {half} px around the footprint's centre of mass, scale: "
            f"{rule['scale']}; every channel in that window, resampled alike to {size}x{size} "
            "(calcomp_caiman.evidence.channels.ChannelSource.crop(normalise=False)); "
            "channels: as listed; calcomp classify records the scale as crop_scale"
        )
    return {
        "format_version": format_version,
        "type": "model",
        "name": f"calcomp {model.name} {_network(model)}",
        "description": description,
        "version": __version__,
        "authors": [{"name": "calcomp_caiman maintainers"}],
        "cite": [
            {
                "text": "Giovannucci et al. (2019) CaImAn an open source tool for scalable "
                "calcium imaging data analysis. eLife 8:e38173 (the crop rule).",
                "doi": "10.7554/eLife.38173",
            }
        ],
        "license": "GPL-2.0-or-later",
        "tags": [
            "calcium-imaging",
            "classification",
            "2d",
            "onnx",
            "fluorescence-light-microscopy",
            "neurons",
            "caiman",
            "suite2p",
        ],  # fmt: skip
        "documentation": {"source": "README.md"},
        "covers": [{"source": "cover.png"}],
        "inputs": [
            {
                "id": "patches",
                "description": seen,
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": names},
                    {"type": "space", "id": "y", "size": size},
                    {"type": "space", "id": "x", "size": size},
                ],
                "test_tensor": {"source": "test_input.npy"},
                "data": {"type": "float32"},
                "preprocessing": preprocessing,
            }
        ],
        "outputs": [
            {
                "id": "probs",
                "description": "probabilities of " + ", ".join(CLASSES),
                "axes": [{"type": "batch"}, {"type": "channel", "channel_names": list(CLASSES)}],
                "test_tensor": {"source": "test_output.npy"},
                "data": {"type": "float32", "range": [0.0, 1.0]},
            }
        ],
        "weights": {"onnx": {"source": "weights.onnx", "opset_version": opset}},
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": {
            "calcomp_caiman": {
                "model": model.name,
                "model_sha256": model.sha256,
                "exported": kind,
                "classes": list(CLASSES),
                **({"channels": names} if model.version >= 3 else {}),
                "temperature": _temperature(model),
                "crop": {**rule, "text": crop_text},
            }
        },
    }


def export_bioimageio(
    model: CalcompModel, out: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Write ``model``'s image network as a bioimage.io model package (a ``.zip``).

    Parameters
    ----------
    model : CalcompModel
        The bundled model (``CalcompModel.load()``) or another. For a model v2 (with a
        fusion head) only its shape network is exported, for a model v3 only its image
        branch (not the temporal branch nor the fusion head), and the rdf says so.
    out : path-like
        The package to write, e.g. ``calcomp_resnet.zip``.
    overwrite : bool
        Allow replacing an existing ``out``.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    ImportError
        ``onnx`` or ``bioimageio.spec`` missing.
    InvalidFileError
        ``out`` exists and ``overwrite`` is False, or its folder is missing.
    CalcompError
        bioimageio.spec rejects the description (a bug here: the message says why), or
        the ONNX graph does not reproduce the NumPy engine on the test tensors.

    Notes
    -----
    The package holds ``rdf.yaml`` (bioimage.io model spec 0.5), ``weights.onnx``,
    ``test_input.npy`` (four crops: :func:`sample_crops`; model v3: :func:`sample_channels`)
    and ``test_output.npy`` (the NumPy engine's answer to them), ``cover.png`` and ``README.md`` (how to crop, limits, the model card). When
    ``onnxruntime`` is installed the graph is run on the test input and must match the
    NumPy engine to 1e-4 before anything is written.
    """
    onnx = _require("onnx")
    spec = _require("bioimageio.spec")
    from calcomp_caiman.io.sidecar import write_atomically

    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(out)
    if not out.resolve().parent.is_dir():
        raise InvalidFileError(out, f"cannot be written: no folder {out.resolve().parent}.")
    kind = _kind(model)
    proto = build_onnx(model)
    if model.version >= 3:
        crops, channels = sample_channels(model)
        expected = shape_probabilities(model, channels)
    else:
        crops = sample_crops(model.patch_size)
        expected = shape_probabilities(model, np.sqrt(crops[:, 0]) / np.linalg.norm(np.sqrt(crops[:, 0]), axis=(1, 2), keepdims=True))  # fmt: skip
    _check_with_onnxruntime(proto, crops, expected)
    with tempfile.TemporaryDirectory(prefix="calcomp-bioimageio-") as folder:
        root = Path(folder)
        onnx.save(proto, root / "weights.onnx")
        np.save(root / "test_input.npy", crops)
        np.save(root / "test_output.npy", expected)
        _cover(root / "cover.png", crops)
        (root / "README.md").write_text(_model_card(model, kind))
        from bioimageio.spec.model.v0_5 import ModelDescr

        rdf = _rdf(model, kind, ONNX_OPSET, ModelDescr.implemented_format_version)
        (root / "rdf.yaml").write_text(json.dumps(rdf, indent=2))  # JSON is YAML
        descr = spec.load_description(root / "rdf.yaml", format_version="discover")
        if not isinstance(descr, spec.ModelDescr):
            summary = descr.validation_summary
            errors = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in summary.errors[:5])
            raise CalcompError(f"bioimageio.spec rejects the package description: {errors}")
        package = root / "package.zip"
        spec.save_bioimageio_package(descr, output_path=package)
        write_atomically(out, package.read_bytes(), label=str(out))
    logger.info("wrote bioimage.io package %s (%s)", out, model.name)
    return out


def _check_with_onnxruntime(proto, crops: np.ndarray, expected: np.ndarray) -> None:
    try:
        import onnxruntime
    except ImportError:
        logger.warning("onnxruntime is not installed: the ONNX graph was not run before export")
        return
    session = onnxruntime.InferenceSession(
        proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    got = session.run(["probs"], {"patches": crops})[0]
    difference = float(np.abs(got - expected).max())
    if difference > 1e-4:
        raise CalcompError(
            f"the ONNX graph differs from the NumPy engine by {difference:.2e} on the test "
            "tensors (> 1e-4); not exporting."
        )
    logger.debug("ONNX vs NumPy engine on the test tensors: max difference %.2e", difference)
