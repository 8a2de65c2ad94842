"""Tests of calcomp_caiman.research.baselines: shape features, the shape baseline, the CaImAn CNN,
CaImAn's own selection rule.

``disks_and_lines_data`` and ``small_cnn_baseline`` are cached (computed once per
session) and shared with ``test_evaluate.py``, which imports them.
"""

import functools

import numpy as np
import pytest
import scipy.sparse

from calcomp_caiman import extract_patches
from calcomp_caiman.research.baselines import (
    SHAPE_FEATURES,
    KerasBaseline,
    ShapeBaseline,
    build_caiman_cnn,
    caiman_rule_probs,
    fit_baselines,
    shape_features,
    train_caiman_cnn_baseline,
)
from calcomp_caiman.research.metrics import evaluation_metrics

DIMS = (64, 64)


def shapes(n_disks, n_lines, seed=0, dims=DIMS):
    """Sparse footprints of filled disks (radius 3-7 px) then lines (15-40 px long)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: dims[0], : dims[1]]
    columns = []
    for _ in range(n_disks):
        r, c = rng.uniform(20, dims[0] - 20, 2)
        radius = rng.uniform(3, 7)
        blob = np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * (radius / 2) ** 2))
        disk = ((rows - r) ** 2 + (cols - c) ** 2 <= radius**2) * blob
        columns.append(disk.ravel(order="F"))
    for _ in range(n_lines):
        r, c = rng.uniform(24, dims[0] - 24, 2)
        angle, length = rng.uniform(0, np.pi), rng.uniform(15, 40)
        along = (rows - r) * np.cos(angle) + (cols - c) * np.sin(angle)
        across = -(rows - r) * np.sin(angle) + (cols - c) * np.cos(angle)
        line = (np.abs(along) <= length / 2) & (np.abs(across) <= rng.uniform(0.6, 1.5))
        columns.append(line.astype(float).ravel(order="F"))
    return scipy.sparse.csc_matrix(np.stack(columns, axis=1).astype(np.float32))


@functools.cache
def disks_and_lines_data():
    """Patches, labels (disk: neuron 1, line: process 2) and features; 120 + 120."""
    A = shapes(120, 120, seed=3)
    labels = np.r_[np.ones(120, np.int64), np.full(120, 2, np.int64)]
    return extract_patches(A, DIMS, gSig=5), labels, shape_features(A, DIMS, gSig=5)


@functools.cache
def small_cnn_baseline():
    """The CaImAn CNN trained for one epoch on half of :func:`disks_and_lines_data`."""
    patches, labels, _ = disks_and_lines_data()
    return train_caiman_cnn_baseline(
        patches[::2], labels[::2], val_patches=patches[1::2], val_labels=labels[1::2], epochs=1
    )


def test_shape_features_disk_vs_line():
    rows, cols = np.mgrid[:64, :64]
    disk = ((rows - 30) ** 2 + (cols - 30) ** 2 <= 25).ravel(order="F")
    line = ((rows == 30) & (cols >= 10) & (cols < 50)).ravel(order="F")
    big = ((rows - 30) ** 2 + (cols - 30) ** 2 <= 100).ravel(order="F")
    A = np.stack([disk, line, big, np.zeros_like(disk)], axis=1).astype(np.float32)
    features = shape_features(scipy.sparse.csc_matrix(A), (64, 64), gSig=5)
    assert features.shape == (4, len(SHAPE_FEATURES)) and np.all(np.isfinite(features))
    get = {name: features[:, i] for i, name in enumerate(SHAPE_FEATURES)}
    assert get["log_elongation"][1] > get["log_elongation"][0] + 1
    assert get["eccentricity"][1] > 0.95 > 0.1 > get["eccentricity"][0]
    assert get["compactness"][0] == pytest.approx(1.0, abs=0.05)
    assert get["compactness"][1] > 2.5
    assert get["solidity"][0] > 0.8 and get["central_fraction"][0] == 1.0
    assert get["log_area"][0] == pytest.approx(np.log(81 / (np.pi * 25)), abs=1e-6)
    np.testing.assert_array_equal(features[3], 0)  # empty footprint
    # scale-free: twice the disk with twice the gSig looks the same
    twice = shape_features(big[:, None].astype(float), (64, 64), gSig=10)[0]
    np.testing.assert_allclose(twice[[2, 3, 4]], features[0, [2, 3, 4]], atol=0.1)
    assert shape_features(np.zeros((64 * 64, 0)), (64, 64)).shape == (0, len(SHAPE_FEATURES))


def test_shape_baseline_separates_disks_from_lines():
    _, labels, features = disks_and_lines_data()
    train = np.arange(len(labels)) % 2 == 0
    baseline = ShapeBaseline().fit(features[train], labels[train])
    probs = baseline.predict_proba(features[~train])
    assert probs.shape == (int((~train).sum()), 4) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert np.mean(probs.argmax(axis=1) + 1 == labels[~train]) > 0.9
    # lines labelled non_neuron (process or noise) are learned through the set loss
    coarse = np.where(labels == 2, 0, 1)
    probs = ShapeBaseline().fit(features[train], coarse[train]).predict_proba(features[~train])
    assert evaluation_metrics(probs, coarse[~train])["set_accuracy"] > 0.9
    with pytest.raises(RuntimeError, match="fit"):
        ShapeBaseline().predict_proba(features)
    with pytest.raises(ValueError, match="columns"):
        baseline.predict_proba(features[:, :3])


def test_caiman_cnn_architecture_and_training():
    cnn_baseline = small_cnn_baseline()
    net = build_caiman_cnn()
    assert net.output_shape == (None, 4)
    assert [layer.name for layer in net.layers if "conv" in layer.name] == [
        "conv1", "conv2", "conv3", "conv4"
    ]  # fmt: skip
    assert net.get_layer("dense").units == 512 and net.get_layer("flatten").output.shape[-1] == 6400
    probs = cnn_baseline.predict(disks_and_lines_data()[0][:10])
    assert isinstance(cnn_baseline, KerasBaseline) and probs.shape == (10, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert cnn_baseline.history["best_epoch"] == 1 and len(cnn_baseline.history["loss"]) == 1
    assert cnn_baseline.predict(np.zeros((0, 50, 50))).shape == (0, 4)


def test_fit_baselines_trains_both_alike():
    patches, labels, features = disks_and_lines_data()
    fitted, seconds = fit_baselines(patches, features, labels, val_patches=None, val_labels=None,
                                    cnn=False)  # fmt: skip
    assert list(fitted) == ["shape_baseline"] and list(seconds) == ["shape_baseline"]
    alone = ShapeBaseline().fit(features, labels)
    np.testing.assert_array_equal(
        fitted["shape_baseline"].predict_proba(features), alone.predict_proba(features)
    )


def test_caiman_rule_as_probabilities():
    probs = caiman_rule_probs(np.array([True, False]))
    assert probs.tolist() == [[1, 0, 0, 0], [0, 0, 1, 0]]  # accepted: neuron, rejected: noise
    assert caiman_rule_probs(None) is None
