"""Tests of calcomp_caiman.research.train_network: weights, augmentation, calibration, the loop."""

import numpy as np
import pytest

from calcomp_caiman import extract_patches
from calcomp_caiman.research.simulate import simulate_footprints
from calcomp_caiman.research.train_network import (
    TrainConfig,
    augment_patches,
    balanced_weights,
    calibrate_temperature,
    train_network,
)
from calcomp_caiman.schema import label_masks


def simulated(n_per_class, seed):
    A, dims, labels, gsig = simulate_footprints(n_per_class, seed=seed)
    return extract_patches(A, dims, gSig=gsig), labels


def test_label_masks_and_weights():
    masks = label_masks(np.array([0, 1, 2, 3, 4]))
    assert masks.tolist()[0] == [0, 1, 1, 0] and masks[1:].tolist() == np.eye(4).tolist()
    assert label_masks(["neuron", "non_neuron"]).tolist() == [[1, 0, 0, 0], [0, 1, 1, 0]]
    weights = balanced_weights(np.array([1, 1, 1, 0]))
    assert np.isclose(weights[:3].sum(), weights[3]) and np.isclose(weights.mean(), 1)
    with pytest.raises(ValueError):
        label_masks(np.array([7]))


def test_augmentation_keeps_invariants():
    patches, _ = simulated(5, seed=3)
    rng = np.random.default_rng(0)
    out = augment_patches(patches, rng, binarize_prob=0.5)
    assert out.shape == patches.shape and out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=(1, 2)), 1, atol=1e-4)
    assert not np.allclose(out, patches)
    again = augment_patches(patches, np.random.default_rng(0), binarize_prob=0.5)
    np.testing.assert_array_equal(out, again)  # seeded


def test_calibration_temperature_reduces_overconfidence(tiny_model):
    patches, labels = simulated(10, seed=6)
    sharp = tiny_model.with_thresholds(temperature=0.05)
    assert calibrate_temperature(sharp, patches, labels) > 0.05 * 1.5


def test_train_network_records_settings_and_record_only(tiny_model):
    patches, labels = simulated(6, seed=9)
    settings = TrainConfig(epochs=1, augment=False, seed=3)
    model, history = train_network(
        patches, labels, val_patches=patches, val_labels=labels, base=tiny_model,
        settings=settings, record={"name": "given"},
    )  # fmt: skip
    assert model.config["training"] == {**TrainConfig().__dict__, "epochs": 1, "augment": False,
                                        "seed": 3}  # fmt: skip
    assert model.name == "given" and model.config["epochs_run"] == len(history["loss"]) == 1
    assert model.config["training_samples"] == len(patches)
    assert "trained" not in model.config  # provenance is the caller's record (train.train)
    with pytest.raises(ValueError, match="empty"):
        train_network(patches[:0], labels[:0], val_patches=patches, val_labels=labels,
                      base=tiny_model, settings=settings)  # fmt: skip
