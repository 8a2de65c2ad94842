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


# ------------------------------------------------------------------ model v3


def _v3_field(seed, per_class=6, empty=False):
    """A simulated field with the evidence a v3 reads: footprints, neighbours, Cn, an image."""
    A, dims, labels, gsig = simulate_footprints(per_class, seed=seed)
    A = np.asarray(A.toarray() if hasattr(A, "toarray") else A, dtype=np.float32)
    if empty:
        A[:, 0] = 0.0  # an all-zero footprint: left out of the reference and the score
    rng = np.random.default_rng(seed)
    image = A.sum(axis=1).reshape(dims, order="F") + rng.normal(0, 0.1, dims)
    Cn = np.clip(image / image.max(), -1, 1)
    evidence = Evidence.build(A, dims, gSig=gsig, Cn=Cn, image=image, source=f"v3sim{seed}")
    return evidence, np.asarray(labels)


def test_v3_reference_embeds_the_channels_as_classify_does(random_v3, tmp_path):
    """fit_evidence_reference and ood_score embed a v3's channels, the embedding that
    classify_with_embedding computes; the reference is found in a v3 folder."""
    from calcomp_caiman.classify import classify_with_embedding
    from calcomp_caiman.model.ood import component_distances, fit_evidence_reference

    fields = [_v3_field(seed, empty=seed == 1) for seed in (1, 2, 3)]
    evidence = [ev for ev, _ in fields]
    labels = [lab for _, lab in fields]
    reference = fit_evidence_reference(random_v3, evidence, labels, sources=["a", "a", "b"])
    n_nonempty = sum(int(np.count_nonzero(np.diff(ev.A.indptr))) for ev in evidence)
    assert reference.n_patches == n_nonempty == sum(map(len, labels)) - 1
    groups = {f"{s}/{c}" for s, lab in zip("aab", labels) for c in np.unique(lab)}
    assert reference.means.shape == (len(groups), random_v3.engine.dense[0].shape[0])
    assert reference.network_sha256 == network_fingerprint(random_v3)
    # the score's embedding is classify's (channels with Cn, image, neighbours), not a footprint's
    test, _ = _v3_field(7, empty=True)
    _, embedding = classify_with_embedding(test, random_v3)
    nonempty = np.diff(test.A.indptr) > 0
    expected = component_distances(embedding[nonempty], reference)
    np.testing.assert_allclose(evidence_distances(test, random_v3, reference), expected, rtol=1e-5)
    without_image = component_distances(
        classify_with_embedding(test.without("image"), random_v3)[1][nonempty], reference
    )
    assert not np.allclose(without_image, expected)  # the channels reach the embedding
    # calibrated and saved into a v3 folder: found there, and a file far off is flagged
    scores = [file_score(evidence_distances(ev, random_v3, reference)) for ev in evidence]
    calibrated = calibrate_ood_threshold(reference, scores)
    folder = random_v3.save(tmp_path / "v3")
    save_ood_reference(calibrated, folder)
    found = find_ood_reference(random_v3, folder)
    assert found is not None and found.threshold == calibrated.threshold
    score, is_ood = ood_score(evidence[1], random_v3, reference=folder)
    assert score == pytest.approx(scores[1]) and not is_ood
    low = calibrate_ood_threshold(reference, [0.5 * min(scores)], margin=1.0)
    with pytest.warns(UserWarning, match="v3sim7: components unlike the training data"):
        assert ood_score(test, random_v3, reference=low, embedding=embedding).is_ood


def test_v3_fingerprint_is_the_image_branchs(random_v3):
    """A new temporal branch or head keeps the reference valid; a new image network does not."""
    from conftest import random_perceptron, random_v3_model

    rng = np.random.default_rng(5)
    weights = dict(random_v3.weights)
    weights.update(random_perceptron(rng, random_v3.temporal.n_inputs).to_arrays("temporal/"))
    weights.update(random_perceptron(rng, random_v3.head.n_inputs).to_arrays())
    other_branches = CalcompModel(weights, random_v3.config, random_v3.thresholds)
    assert network_fingerprint(other_branches) == network_fingerprint(random_v3)
    assert network_fingerprint(random_v3_model(1)) != network_fingerprint(random_v3)


def test_v3_fit_ood_reference_takes_channels(random_v3):
    from calcomp_caiman.model.ood import fit_evidence_reference

    channels = np.random.default_rng(0).random((6, 32, 32, 4), np.float32)
    reference = fit_ood_reference(random_v3, channels, np.arange(6) % 2)
    assert reference.means.shape == (2, 8) and reference.n_patches == 6
    with pytest.raises(ValueError, match=r"\(N, P, P, C\)"):
        fit_ood_reference(random_v3, channels[..., 0])
    evidence, labels = _v3_field(1)
    with pytest.raises(ValueError, match="one entry per result"):
        fit_evidence_reference(random_v3, [evidence], [labels, labels])
    with pytest.raises(ValueError, match=r"labels\[0\] must have one code per component"):
        fit_evidence_reference(random_v3, [evidence], [labels[1:]])
