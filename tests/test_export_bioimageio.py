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
