"""Out-of-distribution score (calcomp_caiman.model.ood): reference, calibration, bundled reference."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from calcomp_caiman import CalcompModel
from calcomp_caiman.errors import CalcompError, InvalidFileError
from calcomp_caiman.evidence import Evidence
from calcomp_caiman.evidence.patches import extract_patches
from calcomp_caiman.io.caiman_h5 import read_evidence
from calcomp_caiman.model.ood import (
    OodReference,
    calibrate_ood_threshold,
    evidence_distances,
    file_score,
    find_ood_reference,
    fit_ood_reference,
    load_ood_reference,
    network_fingerprint,
    ood_score,
    save_ood_reference,
)
from calcomp_caiman.research.simulate import SHIFTED_SETTINGS, TRAIN_SETTINGS, simulate_footprints


@pytest.fixture(scope="module")
def v1():
    return CalcompModel.load("calcomp_resnet_v1")


def _field(settings, seed, per_class=20):
    A, dims, labels, gsig = simulate_footprints(per_class, settings=settings, seed=seed)
    return Evidence.build(A, dims, gSig=gsig, source=f"sim{seed}"), labels, gsig


def test_shifted_fields_score_higher_than_training_like_ones(v1, tmp_path):
    """A reference fitted here on TRAIN_SETTINGS: held-out TRAIN fields pass, SHIFTED ones
    score higher (the bundled reference's measured ROC-AUC is in the module's notes)."""
    patches, groups = [], []
    for seed in range(4):
        A, dims, labels, gsig = simulate_footprints(60, settings=TRAIN_SETTINGS, seed=seed)
        patches.append(extract_patches(A, dims, gSig=gsig))
        groups.append(labels)
    reference = fit_ood_reference(v1, np.concatenate(patches), np.concatenate(groups))
    held_out = [file_score(evidence_distances(_field(TRAIN_SETTINGS, s)[0], v1, reference))
                for s in (100, 101, 102)]  # fmt: skip
    shifted = [file_score(evidence_distances(_field(SHIFTED_SETTINGS, s)[0], v1, reference))
               for s in (200, 201, 202)]  # fmt: skip
    assert np.mean(shifted) > np.mean(held_out)
    reference = calibrate_ood_threshold(reference, held_out)
    assert reference.threshold == pytest.approx(1.02 * max(held_out), abs=1e-5)
    path = save_ood_reference(reference, tmp_path / "model")
    loaded = load_ood_reference(path.parent)
    assert np.array_equal(loaded.means, reference.means) and loaded.threshold == reference.threshold
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # in distribution: no warning
        score, is_ood = ood_score(_field(TRAIN_SETTINGS, 100)[0], v1, reference=loaded)
    assert not is_ood and score == pytest.approx(held_out[0])


def test_bundled_reference_flags_a_shifted_file_with_advice_and_passes_a_real_one(v1, caiman_copy):
    reference = find_ood_reference(v1)
    assert reference is not None and np.isfinite(reference.threshold)
    assert reference.network_sha256 == network_fingerprint(v1)
    real = read_evidence(caiman_copy("real_mouse2p_cnmf.hdf5"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        score, is_ood = ood_score(real, v1)
    assert not is_ood and score < reference.threshold
    rng = np.random.default_rng(0)  # speckle: nothing like a footprint
    speckle = Evidence.build((rng.random((64 * 64, 40)) > 0.97).astype(float), (64, 64), gSig=4,
                             source="speckle.hdf5")  # fmt: skip
    with pytest.warns(UserWarning, match=r"speckle\.hdf5: .*label ~30 components with `calcomp curate`"):  # fmt: skip
        score, is_ood = ood_score(speckle, v1)
    assert is_ood and score > reference.threshold


def test_reference_of_another_network_or_none_is_refused(v1, tmp_path):
    other = OodReference(np.zeros((1, 96)), np.eye(96), 1.0, "0" * 64, 10)
    ev = _field(TRAIN_SETTINGS, 5, per_class=2)[0]
    with pytest.raises(CalcompError, match="recompute it"):
        ood_score(ev, v1, reference=other)
    (tmp_path / "ood.npz").write_bytes(b"not an npz")
    with pytest.raises(InvalidFileError, match="ood.npz"):
        load_ood_reference(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_ood_reference(tmp_path / "missing")
    empty = Evidence.build(np.zeros((100, 0)), (10, 10))
    found = ood_score(empty, v1)
    assert np.isnan(found.score) and found.is_ood is False
