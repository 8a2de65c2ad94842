"""Tests of calcomp_caiman.research.train: the one entry (network and head paths), fine_tune,
run_training (``calcomp train``), and the held-out videos a model records."""

import dataclasses
import time

import numpy as np
import pytest
from labelled_data import write_archive, write_results_folder

from calcomp_caiman import CLASSES, CalcompModel, extract_patches
from calcomp_caiman.research.datasets import TrainingSet
from calcomp_caiman.research.labelled_results import load_simulated, split
from calcomp_caiman.research.simulate import simulate_footprints
from calcomp_caiman.research.train import (
    fine_tune,
    held_out_videos,
    run_training,
    train,
    training_record,
)

ARCH = {"widths": [4, 8], "blocks": [1, 1], "dropout": 0.0}


def simulated(n_per_class, seed):
    A, dims, labels, gsig = simulate_footprints(n_per_class, seed=seed)
    patches = extract_patches(A, dims, gSig=gsig)
    return TrainingSet(patches, np.asarray(labels, np.int64), np.full(len(labels), "sim", object))


def test_tiny_training_learns_and_is_reproducible(tmp_path):
    data, val = simulated(40, seed=1), simulated(15, seed=2)
    runs = []
    for _ in range(2):
        model, history = train(data, val, architecture=ARCH, epochs=3, augment=False, seed=5,
                               name="tiny")  # fmt: skip
        runs.append(model.predict(val.patches))
    np.testing.assert_allclose(runs[0], runs[1], atol=1e-5)
    assert history["loss"][-1] < history["loss"][0]
    assert model.config["classes"] == list(CLASSES) and model.name == "tiny"
    assert model.thresholds["temperature"] > 0
    assert model.config["training"]["epochs"] == 3 and model.config["training"]["seed"] == 5
    assert model.config["trained"] == time.strftime("%Y-%m-%d") and model.config["seed"] == 5
    folder = model.save(tmp_path / "tiny")
    np.testing.assert_allclose(CalcompModel.load(folder).predict(val.patches), runs[1], atol=1e-6)


def test_non_neuron_label_trains_process_plus_noise():
    """A non_neuron label must push P(process)+P(noise) up, not a fifth class."""
    data = simulated(30, seed=4)
    data = dataclasses.replace(data, labels=np.where(np.isin(data.labels, [2, 3]), 0, data.labels))
    model, _ = train(data, data, architecture=ARCH, epochs=4, augment=False, seed=0)
    probs = model.predict(data.patches)
    non_neuron = data.labels == 0
    assert (probs[non_neuron, 1] + probs[non_neuron, 2]).mean() > probs[~non_neuron, 1:3].sum(
        1
    ).mean()


def test_training_record_keeps_stated_lists_only(tiny_model):
    split_lists = {"description": "d", "real_validation_videos": ["a/1"], "real_test_videos": []}
    record = training_record("m", seed=2, data_description=split_lists)
    assert record["training_data"] == split_lists and record["name"] == "m"
    assert record["seed"] == 2 and record["calcomp_version"]
    base = dataclasses.replace(
        tiny_model, config={**tiny_model.config, "training_data": split_lists}
    )
    # free text, or the base's description: never the base's lists of held-out videos
    assert training_record("m", seed=0, base=base)["training_data"] == "d"
    assert training_record("m", seed=0, data_description="x", base=base)["training_data"] == "x"


def test_fine_tune_splits_by_group_and_keeps_architecture(tiny_model):
    data = simulated(12, seed=7)
    groups = np.repeat(["a", "b", "c", "d"], len(data.labels) // 4)
    model, history = fine_tune(tiny_model, data.patches, data.labels, groups=groups, epochs=1,
                               seed=0)  # fmt: skip
    held_out = set(groups[history["val_index"]])
    assert held_out and held_out < {"a", "b", "c", "d"}
    assert model.config["architecture"] == tiny_model.config["architecture"]
    assert model.name.endswith("finetuned")
    with pytest.raises(ValueError, match="at least 8"):
        fine_tune(tiny_model, data.patches[:3], data.labels[:3])


def test_fine_tune_makes_no_claim_about_held_out_videos(tiny_model):
    data = simulated(4, seed=8)
    lists = {"description": "base", "real_validation_videos": ["a/1"], "real_test_videos": ["a/2"]}
    base = dataclasses.replace(tiny_model, config={**tiny_model.config, "training_data": lists})
    assert held_out_videos(base) == ({"a/1"}, {"a/2"})
    model, _ = fine_tune(base, data.patches, data.labels, epochs=1, seed=0)
    # the labels it was tuned on may come from the base's test videos: no lists inherited
    assert model.config["training_data"].startswith("fine-tuned from tiny")
    with pytest.raises(ValueError, match="no held-out videos"):
        held_out_videos(model)


V1_VALIDATION = {"caiman_paper_yst/YST_part21", "neurofinder_train/02.01"}
V1_TEST = {
    "caiman_paper_yst/YST_part22",
    "neurofinder_test/01.01",
    "neurofinder_test/02.01",
    "neurofinder_test/04.01",
}


def test_held_out_videos_come_from_the_model_folder(tiny_model, tmp_path):
    for name in ("calcomp_resnet_v1", "calcomp_v2", "default"):
        assert held_out_videos(CalcompModel.load(name)) == (V1_VALIDATION, V1_TEST)
    recorded = {"real_validation_videos": ["a/1"], "real_test_videos": ["a/2", "b/1"]}
    model = dataclasses.replace(tiny_model, config={**tiny_model.config, "training_data": recorded})
    validation, test = held_out_videos(CalcompModel.load(model.save(tmp_path / "m")))
    assert (validation, test) == ({"a/1"}, {"a/2", "b/1"}) and isinstance(test, frozenset)
    for training_data in (None, "free text", {"real_test_videos": ["a/2"]},
                          {"real_validation_videos": "a/1", "real_test_videos": []}):  # fmt: skip
        config = {**tiny_model.config, "training_data": training_data}
        with pytest.raises(ValueError, match="'tiny' records no held-out videos.*config.json"):
            held_out_videos(dataclasses.replace(tiny_model, config=config))


def test_run_training_on_archives_and_simulated_fields(tiny_model, tmp_path):
    codes = write_archive(tmp_path / "train.npz", per_class=2, seed=1, video="t")
    write_archive(tmp_path / "val.npz", per_class=2, seed=2, video="v")
    model, history = run_training(tmp_path / "train.npz", [tmp_path / "val.npz"], simulated=1,
                                  simulated_fields=2, base=tiny_model, name="lab", epochs=1)  # fmt: skip
    assert model.name == "lab" and len(history["loss"]) == 1
    n = len(codes) + 2 * len(CLASSES)  # the archive, then one footprint per class in 2 fields
    assert model.config["training_samples"] == n
    assert model.config["training_data"] == f"calcomp train on {n} patches"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="validation archives.*held-out videos"):
        run_training(tmp_path / "train.npz", empty, base=tiny_model, epochs=1)


def test_head_path_needs_a_network_and_records_provenance(tmp_path):
    items = load_simulated(write_results_folder(tmp_path / "simdata"))
    data, val, _ = split(items, set(), set())
    with pytest.raises(ValueError, match="base"):
        train(data, val, fusion_head=True)
    network = CalcompModel.load("calcomp_resnet_v1")
    model, history = train(data, val, base=network, fusion_head=True, name="tiny_v2", seed=1,
                           data_description={"simulated": ["train_a"]},
                           head_grid=((8, 1e-3),))  # fmt: skip
    assert model.uses_evidence and model.name == "tiny_v2" and model.scale_rule == "footprints"
    assert model.config["training_data"] == {"simulated": ["train_a"]}
    assert model.config["shape_network"].startswith(f"calcomp_resnet_v1 ({network.sha256[:12]})")
    assert model.config["fusion_head"]["hidden"] == history["hidden"] == 8
    assert model.thresholds["min_prob"] == history["min_prob"]
    assert model.thresholds["shape_temperature"] == network.thresholds["temperature"]
    np.testing.assert_array_equal(
        model.weights["stem_conv/kernel"], network.weights["stem_conv/kernel"]
    )  # network unchanged
