import json
import subprocess
import sys

import numpy as np
import pytest

from calcomp_caiman import CLASSES, CalcompError, CalcompModel
from calcomp_caiman.model.folder import bundled_models


def test_numpy_engine_matches_keras(tiny_model):
    net = tiny_model.to_keras()
    rng = np.random.default_rng(1)
    # give batch norm non-trivial statistics so folding is exercised
    for layer in net.layers:
        if layer.name.endswith("_bn"):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [gamma * 1.3, beta + 0.1, mean + rng.normal(0, 0.1, mean.shape), var * 2.0]
            )
    model = CalcompModel.from_keras(net, config=tiny_model.config)
    patches = rng.random((37, 50, 50)).astype(np.float32)
    expected = np.asarray(net.predict(patches[..., None], verbose=0))
    got = model.predict(patches, batch_size=8)
    np.testing.assert_allclose(got, expected, atol=2e-5)
    np.testing.assert_allclose(got.sum(axis=1), 1, atol=1e-5)


def test_save_load_round_trip_and_hash_check(tiny_model, tmp_path):
    folder = tiny_model.with_thresholds(temperature=1.5).save(tmp_path / "m")
    loaded = CalcompModel.load(folder)
    assert loaded.sha256 == json.loads((folder / "config.json").read_text())["weights_sha256"]
    patches = np.random.default_rng(0).random((5, 50, 50)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(patches), tiny_model.with_thresholds(
        temperature=1.5).predict(patches), atol=1e-6)  # fmt: skip
    with open(folder / "weights.npz", "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(CalcompError, match="SHA256"):
        CalcompModel.load(folder)


def test_unknown_model_name_lists_known_ones():
    with pytest.raises(FileNotFoundError, match="default"):
        CalcompModel.load("no-such-model")


def test_wrong_patch_shape(tiny_model):
    with pytest.raises(ValueError, match="50, 50"):
        tiny_model.predict(np.zeros((2, 32, 32)))


def test_temperature_softens(tiny_model):
    patches = np.random.default_rng(0).random((20, 50, 50)).astype(np.float32)
    sharp = tiny_model.with_thresholds(temperature=0.5).predict(patches).max(axis=1)
    soft = tiny_model.with_thresholds(temperature=4.0).predict(patches).max(axis=1)
    assert np.all(soft <= sharp + 1e-6)


def test_bundled_model_loads_and_is_real():
    model = CalcompModel.load()
    assert model.config["classes"] == list(CLASSES)
    assert model.sha256 and "default" in bundled_models()
    assert model.config.get("training_samples", 0) > 1000  # trained, not a placeholder
    assert 1e6 < model.flops_per_patch < 5e7


def test_inference_never_imports_a_deep_learning_framework():
    code = (
        "import sys, numpy as np, calcomp_caiman as cc\n"
        "A = np.zeros((64 * 64, 1), np.float32); A[2000:2010, 0] = 1\n"
        "p = cc.classify_footprints(A, (64, 64))\n"
        "assert p.shape == (1, 4)\n"
        "bad = [m for m in ('keras', 'tensorflow', 'torch', 'jax') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
