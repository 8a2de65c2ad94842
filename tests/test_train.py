import csv
import dataclasses

import numpy as np
import pytest

from calcomp_caiman import CLASSES, CalcompModel, extract_patches
from calcomp_caiman.research.evaluate import held_out_videos
from calcomp_caiman.research.simulate import simulate_footprints
from calcomp_caiman.research.train import (
    TrainingSet,
    augment_patches,
    balanced_weights,
    calibrate_temperature,
    fine_tune,
    label_masks,
    labels_from_csv,
    train_model,
)


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


def test_tiny_training_learns_and_is_reproducible(tmp_path):
    patches, labels = simulated(40, seed=1)
    val_patches, val_labels = simulated(15, seed=2)
    arch = {"widths": [4, 8], "blocks": [1, 1], "dropout": 0.0}
    runs = []
    for _ in range(2):
        model, history = train_model(
            patches, labels, val_patches=val_patches, val_labels=val_labels,
            architecture=arch, epochs=3, augment=False, seed=5, name="tiny",
        )  # fmt: skip
        runs.append(model.predict(val_patches))
    np.testing.assert_allclose(runs[0], runs[1], atol=1e-5)
    assert history["loss"][-1] < history["loss"][0]
    assert model.config["classes"] == list(CLASSES) and model.name == "tiny"
    assert model.thresholds["temperature"] > 0
    assert model.config["training"]["epochs"] == 3 and model.config["training"]["seed"] == 5
    folder = model.save(tmp_path / "tiny")
    np.testing.assert_allclose(CalcompModel.load(folder).predict(val_patches), runs[1], atol=1e-6)


def test_non_neuron_label_trains_process_plus_noise():
    """A non_neuron label must push P(process)+P(noise) up, not a fifth class."""
    patches, labels = simulated(30, seed=4)
    labels = np.where(np.isin(labels, [2, 3]), 0, labels)  # hide which one
    arch = {"widths": [4, 8], "blocks": [1, 1], "dropout": 0.0}
    model, _ = train_model(patches, labels, val_patches=patches, val_labels=labels,
                           architecture=arch, epochs=4, augment=False, seed=0)  # fmt: skip
    probs = model.predict(patches)
    non_neuron = labels == 0
    assert (probs[non_neuron, 1] + probs[non_neuron, 2]).mean() > probs[~non_neuron, 1:3].sum(
        1
    ).mean()


def test_calibration_temperature_reduces_overconfidence(tiny_model):
    patches, labels = simulated(10, seed=6)
    sharp = tiny_model.with_thresholds(temperature=0.05)
    assert calibrate_temperature(sharp, patches, labels) > 0.05 * 1.5


def test_labels_from_csv(tmp_path, caiman_copy):
    path = caiman_copy("synthetic_cnmf.hdf5")
    table = tmp_path / "labels.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "component", "label"])
        writer.writerows(
            [[path.name, 0, "neuron"], [path.name, 3, "2"], [path.name, 5, "non_neuron"]]
        )
    data = labels_from_csv(table)
    assert data.patches.shape == (3, 50, 50) and data.labels.tolist() == [1, 2, 0]
    with open(table, "a", newline="") as handle:
        csv.writer(handle).writerow([path.name, 1, "cell"])
    with pytest.raises(ValueError, match="line 5"):
        labels_from_csv(table)


def test_fine_tune_splits_by_group_and_keeps_architecture(tiny_model):
    patches, labels = simulated(12, seed=7)
    groups = np.repeat(["a", "b", "c", "d"], len(labels) // 4)
    model, history = fine_tune(tiny_model, patches, labels, groups=groups, epochs=1, seed=0)
    held_out = set(groups[history["val_index"]])
    assert held_out and held_out < {"a", "b", "c", "d"}
    assert model.config["architecture"] == tiny_model.config["architecture"]
    assert model.name.endswith("finetuned")
    with pytest.raises(ValueError, match="at least 8"):
        fine_tune(tiny_model, patches[:3], labels[:3])


def test_fine_tune_makes_no_claim_about_held_out_videos(tiny_model):
    patches, labels = simulated(4, seed=8)
    split = {"description": "base", "real_validation_videos": ["a/1"], "real_test_videos": ["a/2"]}
    base = dataclasses.replace(tiny_model, config={**tiny_model.config, "training_data": split})
    assert held_out_videos(base) == ({"a/1"}, {"a/2"})
    model, _ = fine_tune(base, patches, labels, epochs=1, seed=0)
    # the labels it was tuned on may come from the base's test videos: no lists inherited
    assert model.config["training_data"].startswith("fine-tuned from tiny")
    with pytest.raises(ValueError, match="no held-out videos"):
        held_out_videos(model)


def test_training_set_concatenate_and_select():
    a = TrainingSet(
        np.zeros((2, 50, 50), np.float32), np.array([1, 2]), np.array(["x", "x"], object)
    )
    b = TrainingSet(np.ones((1, 50, 50), np.float32), np.array([0]), np.array(["y"], object))
    both = TrainingSet.concatenate([a, b])
    assert both.labels.tolist() == [1, 2, 0] and both.select(
        both.groups == "y"
    ).labels.tolist() == [0]
