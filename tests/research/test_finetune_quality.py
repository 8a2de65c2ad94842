"""Fine-tuning a bundled patch network on a few hundred labels of an unseen 'lab' must help.

``fine_tune`` trains a network that reads single-channel patches: calcomp_v2's (the default,
a model v3, reads channels and is adapted by ``calcomp_caiman.refit`` instead)."""

import time

import numpy as np

from calcomp_caiman import CalcompModel, extract_patches
from calcomp_caiman.research.simulate import SHIFTED_SETTINGS, simulate_footprints
from calcomp_caiman.research.train import fine_tune


def lab_data(n_per_class, seed):
    A, dims, labels, gsig = simulate_footprints(n_per_class, settings=SHIFTED_SETTINGS, seed=seed)
    return extract_patches(A, dims, gSig=gsig), labels


def accuracy(model, patches, labels):
    return float(np.mean(model.predict(patches).argmax(axis=1) + 1 == labels))


def test_few_hundred_labels_improve_held_out_accuracy():
    bundled = CalcompModel.load("calcomp_v2")
    patches, labels = lab_data(75, seed=101)  # 300 labelled components of the "lab"
    held_patches, held_labels = lab_data(100, seed=202)  # its other sessions
    before = accuracy(bundled, held_patches, held_labels)
    start = time.perf_counter()
    tuned, history = fine_tune(bundled, patches, labels, epochs=8, seed=0)
    minutes = (time.perf_counter() - start) / 60
    after = accuracy(tuned, held_patches, held_labels)
    assert after >= before + 0.05, f"held-out accuracy {before:.3f} -> {after:.3f}"
    assert minutes < 5
