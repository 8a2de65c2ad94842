"""The bioimage.io package: valid for bioimageio.spec, ONNX == NumPy engine to 1e-4."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from conftest import REAL_ROIS, require

from calcomp_caiman import CalcompModel, extract_patches
from calcomp_caiman.apps.cli import main
from calcomp_caiman.apps.export_bioimageio import export_bioimageio
from calcomp_caiman.research.datasets import load_roi_archive

onnxruntime = pytest.importorskip("onnxruntime")
spec = pytest.importorskip("bioimageio.spec")


@pytest.fixture(scope="module")
def model():
    return CalcompModel.load("calcomp_resnet_v1")


@pytest.fixture(scope="module")
def package(tmp_path_factory, model):
    return export_bioimageio(model, tmp_path_factory.mktemp("bioimageio") / "calcomp_resnet.zip")


@pytest.fixture(scope="module")
def session(package):
    with zipfile.ZipFile(package) as archive:
        weights = archive.read("weights.onnx")
    return onnxruntime.InferenceSession(weights, providers=["CPUExecutionProvider"])


def test_package_validates_with_bioimageio_spec(package, model):
    descr = spec.load_description(package)
    assert isinstance(descr, spec.ModelDescr), descr.validation_summary.format()
    assert descr.validation_summary.status in ("valid-format", "passed")
    assert str(descr.format_version) == spec.ModelDescr.implemented_format_version
    assert [str(a.id) for a in descr.inputs[0].axes] == ["batch", "channel", "y", "x"]
    assert list(descr.outputs[0].axes[1].channel_names) == [
        "neuron",
        "process",
        "noise",
        "doubtful",
    ]
    config = descr.config.model_dump()["calcomp_caiman"]
    assert config["model"] == "calcomp_resnet_v1" and config["model_sha256"] == model.sha256
    with zipfile.ZipFile(package) as archive:
        assert {"rdf.yaml", "weights.onnx", "test_input.npy", "test_output.npy", "cover.png",
                "README.md"} <= set(archive.namelist())  # fmt: skip
        card = archive.read("README.md").decode()
    assert "half-width `4 * scale + 1`" in card and "Model card: `calcomp_resnet_v1`" in card
    assert "the user's gSig" in card  # v1 crops at gSig (calcomp_v2 at the footprints' spread)


def test_test_tensors_run_in_onnxruntime(package, session, model, tmp_path):
    with zipfile.ZipFile(package) as archive:
        archive.extractall(tmp_path)
    crops = np.load(tmp_path / "test_input.npy")
    expected = np.load(tmp_path / "test_output.npy")
    assert crops.shape == (4, 1, 50, 50) and expected.shape == (4, 4)
    got = session.run(["probs"], {"patches": crops})[0]
    assert np.abs(got - expected).max() < 1e-4
    patches = np.sqrt(crops[:, 0])
    patches /= np.linalg.norm(patches, axis=(1, 2), keepdims=True)
    assert np.abs(model.predict(patches) - expected).max() < 1e-4


def test_onnx_matches_numpy_engine_on_real_components(session, model):
    archive = load_roi_archive(require(REAL_ROIS / "neurofinder_test_02.00_caiman_batch.npz"))
    patches = extract_patches(archive.A, archive.dims, gSig=4.0)
    crops = (patches**2)[:, None]  # a non-normalised crop: the graph applies sqrt and L2 norm
    got = session.run(["probs"], {"patches": crops.astype(np.float32)})[0]
    expected = model.predict(patches)
    assert len(patches) > 100 and np.abs(got - expected).max() < 1e-4
    scaled = session.run(["probs"], {"patches": (crops * 37.5).astype(np.float32)})[0]
    assert np.abs(scaled - expected).max() < 1e-4  # the crop's intensity scale does not matter
    negative = crops.copy()
    negative[:, :, 20:30, :8] = -1.0  # clipped inside the graph, as extract_patches clips
    clipped = np.sqrt(np.maximum(negative[:, 0], 0))
    clipped /= np.linalg.norm(clipped, axis=(1, 2), keepdims=True)
    got = session.run(["probs"], {"patches": negative.astype(np.float32)})[0]
    assert np.abs(got - model.predict(clipped)).max() < 1e-4


def test_cli_export_and_refuse_overwrite(tmp_path, capsys):
    out = tmp_path / "m.zip"
    assert main(["export-bioimageio", "--model", "default", "--out", str(out), "-q"]) == 0
    assert zipfile.is_zipfile(out)
    before = out.read_bytes()
    assert main(["export-bioimageio", "--out", str(out), "-q"]) == 1
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before


def test_model_v2_exports_its_shape_network_only(tmp_path, model):
    from calcomp_caiman.evidence.features import feature_names
    from calcomp_caiman.model.head import FusionHead

    rng = np.random.default_rng(0)
    width = 4 + len(feature_names())
    head = FusionHead(np.zeros(width), np.ones(width), rng.normal(size=(width, 8)), np.zeros(8),
                      rng.normal(size=(8, 4)), np.zeros(4))  # fmt: skip
    v2 = model.with_head(head, name="v2_test")
    v2 = CalcompModel(v2.weights, v2.config, {**v2.thresholds, "temperature": 3.0,
                                               "shape_temperature": 1.5})  # fmt: skip
    package = export_bioimageio(v2, tmp_path / "v2.zip")
    descr = spec.load_description(package)
    config = descr.config.model_dump()["calcomp_caiman"]
    assert "fusion head is not exported" in config["exported"] and config["temperature"] == 1.5
    with zipfile.ZipFile(package) as archive:
        session = onnxruntime.InferenceSession(archive.read("weights.onnx"))
        archive.extractall(tmp_path / "v2")
    crops = np.load(tmp_path / "v2" / "test_input.npy")
    patches = np.sqrt(crops[:, 0])
    patches /= np.linalg.norm(patches, axis=(1, 2), keepdims=True)
    logits = v2.shape_logits(patches) / 1.5  # the shape network alone, its own temperature
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    got = session.run(["probs"], {"patches": crops})[0]
    assert np.abs(got - expected).max() < 1e-4


# --- model v3: the image branch, channels in the model's order -------------------------


def _v3_evidence(variant: str):
    """The bundled demo's footprints with its Cn and a drawn mean image ("all"), without
    the mean image ("no_image"), or one component alone ("one": no neighbours, no Cn)."""
    from importlib import resources

    from calcomp_caiman.evidence import Evidence
    from calcomp_caiman.io.caiman_h5 import read_evidence

    demo = read_evidence(str(resources.files("calcomp_caiman.data") / "demo_caiman_sim.hdf5"))
    if variant == "one":
        return Evidence.build(demo.A[:, :1], demo.dims, gSig=4.0)
    if variant == "no_image":
        return Evidence.build(demo.A, demo.dims, Cn=demo.Cn)
    rng = np.random.default_rng(1)
    cells = np.asarray(demo.A.sum(axis=1)).reshape(demo.dims, order="F")
    image = 500.0 + 80.0 * cells / cells.max() + rng.normal(0, 5.0, demo.dims)
    return Evidence.build(demo.A, demo.dims, Cn=demo.Cn, image=image)


def _v3_inputs(model, evidence):
    """The graph's input (raw crops, channels first) and the engine's (normalised channels),
    both from ChannelSource: the crop calcomp classify makes."""
    from calcomp_caiman.evidence.channels import ChannelSource
    from calcomp_caiman.evidence.patches import footprints_for

    found = footprints_for(evidence, model.scale_rule)
    source = ChannelSource.from_evidence(evidence, found, patch_size=model.patch_size, names=model.channel_names)  # fmt: skip
    raw = np.ascontiguousarray(source.crop(normalise=False).transpose(0, 3, 1, 2))
    return raw, np.ascontiguousarray(source.crop()), source.present


def _logits_and_probs(model):
    """The exported graph with its logits as a second output."""
    onnx = pytest.importorskip("onnx")
    from calcomp_caiman.apps.export_bioimageio import build_onnx

    proto = build_onnx(model)
    proto.graph.output.append(onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 4]))  # fmt: skip
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])  # fmt: skip
    return lambda crops: session.run(["logits", "probs"], {"patches": crops})


def _softmax(logits):
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def v3_package(tmp_path_factory, random_v3):
    return export_bioimageio(random_v3, tmp_path_factory.mktemp("v3") / "v3.zip")


def test_model_v3_exports_its_image_branch_with_its_channels(v3_package, random_v3):
    descr = spec.load_description(v3_package)
    assert isinstance(descr, spec.ModelDescr), descr.validation_summary.format()
    assert descr.validation_summary.status in ("valid-format", "passed")
    names = ["footprint", "neighbours", "cn", "image"]
    assert list(random_v3.channel_names) == names
    axes = descr.inputs[0].axes
    assert [str(a.id) for a in axes] == ["batch", "channel", "y", "x"]
    assert [str(n) for n in axes[1].channel_names] == names
    assert [a.size for a in axes[2:]] == [random_v3.patch_size] * 2
    config = descr.config.model_dump()["calcomp_caiman"]
    assert config["channels"] == names and config["model_sha256"] == random_v3.sha256
    assert "image branch" in config["exported"] and "temporal branch" in config["exported"]
    assert "fusion head" in config["exported"]
    # no image-branch temperature recorded: 1, not the fusion head's 1.3
    assert random_v3.thresholds["temperature"] == 1.3 and config["temperature"] == 1.0
    crop = config["crop"]
    assert [c["name"] for c in crop["channels"]] == names and "zeros" in crop["missing_channels"]
    assert crop["channels"][3]["outside_the_image"] == "the median of the whole image"
    with zipfile.ZipFile(v3_package) as archive:
        card = archive.read("README.md").decode()
        crops = np.load(archive.open("test_input.npy"))
    assert "image branch of a calcomp_caiman model v3" in card and "temporal branch" in card
    assert card.index("`footprint` (input channel 0)") < card.index("`image` (input channel 3)")
    assert crops.shape == (4, 4, random_v3.patch_size, random_v3.patch_size)
    assert (crops[:, 2].min() < 0) and np.abs(crops).max(axis=(0, 2, 3)).min() > 0  # all 4 drawn


def test_model_v3_test_tensors_are_the_engines_answer(v3_package, random_v3, tmp_path):
    from calcomp_caiman.apps.export_bioimageio import sample_channels

    with zipfile.ZipFile(v3_package) as archive:
        archive.extractall(tmp_path)
        session = onnxruntime.InferenceSession(archive.read("weights.onnx"), providers=["CPUExecutionProvider"])  # fmt: skip
    crops, expected = np.load(tmp_path / "test_input.npy"), np.load(tmp_path / "test_output.npy")
    raw, channels = sample_channels(random_v3)
    assert np.array_equal(crops, raw)
    assert np.abs(expected - _softmax(random_v3.shape_logits(channels))).max() < 1e-5
    assert np.abs(session.run(["probs"], {"patches": crops})[0] - expected).max() < 1e-5


@pytest.mark.parametrize("variant", ["all", "no_image", "one"])
@pytest.mark.parametrize("patch_size", [32, 50])  # 16 x 16 and 25 x 25 pixels for the percentiles
def test_model_v3_graph_is_the_engine_on_the_crops_classify_makes(random_v3, variant, patch_size):
    from conftest import v3_config

    model = CalcompModel(random_v3.weights, v3_config(patch_size=patch_size), random_v3.thresholds)
    crops, channels, present = _v3_inputs(model, _v3_evidence(variant))
    expected = {"all": (True,) * 4, "no_image": (True, True, True, False),
                "one": (True, False, False, False)}[variant]  # fmt: skip
    assert present == expected
    assert all(not np.any(crops[:, c]) for c in range(4) if not present[c])  # missing: zeros
    run = _logits_and_probs(model)
    logits, probs = run(crops)
    reference = model.shape_logits(channels)
    assert np.abs(logits - reference).max() < 1e-5
    assert np.abs(probs - _softmax(reference.astype(np.float64))).max() < 1e-5
    scaled = crops.copy()
    scaled[:, 0] *= 37.5  # the footprint's intensity scale does not matter
    assert np.abs(run(scaled)[0] - reference).max() < 1e-5
    if variant == "all":  # each channel is read as itself: a swap changes the answer
        swapped = crops[:, [0, 1, 3, 2]]
        assert np.abs(run(np.ascontiguousarray(swapped))[0] - reference).max() > 1e-3


def test_cli_exports_a_model_v3_folder(tmp_path, random_v3):
    folder = random_v3.save(tmp_path / "v3")
    out = tmp_path / "v3.zip"
    assert main(["export-bioimageio", "--model", str(folder), "--out", str(out), "-q"]) == 0
    assert isinstance(spec.load_description(out), spec.ModelDescr)
