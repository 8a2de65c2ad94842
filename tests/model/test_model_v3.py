"""Model v3 at run time: the multi-channel engine, the folder, classify on channels,
profiles and features (random weights here; training: tests/research/test_train_branches.py)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import V3_FEATURES, V3_PATCH, random_v3_model, random_v3_net, v3_config

from calcomp_caiman import CalcompModel
from calcomp_caiman.classify import classify, classify_evidence
from calcomp_caiman.errors import CalcompError
from calcomp_caiman.evidence import Evidence
from calcomp_caiman.evidence.channels import CHANNELS
from calcomp_caiman.evidence.features import feature_names
from calcomp_caiman.evidence.transients import SAMPLES
from calcomp_caiman.research.simulate import simulate_session

PATCH = V3_PATCH
FEATURES = V3_FEATURES
_config = v3_config


@pytest.fixture(scope="module")
def net():
    return random_v3_net()


@pytest.fixture(scope="module")
def model():
    return random_v3_model()


@pytest.fixture(scope="module")
def session():
    return simulate_session(n_components=(10, 3, 5, 3), n_frames=300, seed=11)


def _evidence(session, **extra):
    rng = np.random.default_rng(0)
    total = np.asarray(session.A.sum(axis=1)).reshape(session.dims, order="F")
    images = {"Cn": np.clip(total / total.max(), 0, 1), "image": 10 + total}
    residual = rng.normal(0, 0.05, session.C.shape)
    return Evidence.build(session.A, session.dims, C=session.C, YrA=residual, frame_rate=20.0,
                          **{**images, **extra})  # fmt: skip


def test_engine_reads_channels_as_keras_does(net):
    from calcomp_caiman.model.engine import Engine

    config = _config()
    engine = Engine.from_weights(CalcompModel.from_keras(net, config=_config(version=1)).weights,
                                 config["architecture"])  # fmt: skip
    x = np.random.default_rng(2).normal(size=(9, PATCH, PATCH, 4)).astype(np.float32)
    expected = np.asarray(net(x, training=False))
    np.testing.assert_allclose(_softmax(engine.logits(x)), expected, atol=1e-5)
    # any memory layout (the channels come as a view of (N, P, C, P))
    view = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    np.testing.assert_allclose(engine.logits(view), engine.logits(x), atol=1e-6)
    with pytest.raises(ValueError, match="4 channel"):
        engine.logits(x[..., 0])


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_folder_round_trip_and_predict(model, tmp_path):
    loaded = CalcompModel.load(model.save(tmp_path / "v3"))
    assert loaded.version == 3 and loaded.channel_names == CHANNELS
    assert loaded.feature_names == FEATURES and loaded.uses_evidence
    rng = np.random.default_rng(3)
    channels = rng.random((6, PATCH, PATCH, 4)).astype(np.float32)
    features = rng.normal(size=(6, len(feature_names()))).astype(np.float32)
    profiles = rng.normal(size=(6, 2, SAMPLES)).astype(np.float32)
    probs = loaded.predict(channels, features, profiles=profiles)
    assert probs.shape == (6, 4) and np.allclose(probs.sum(axis=1), 1, atol=1e-6)
    np.testing.assert_array_equal(probs, model.predict(channels, features, profiles=profiles))
    selected = features[:, [feature_names().index(n) for n in FEATURES]]
    np.testing.assert_array_equal(loaded.predict(channels, selected, profiles=profiles), probs)
    both, embedding = loaded.predict_with_embedding(channels, features, profiles=profiles)
    np.testing.assert_allclose(both, probs, atol=1e-6)
    assert embedding.shape == (6, 8)
    # every input may be missing
    for missing in ({"profiles": None}, {"features": None}):
        args = {"features": features, "profiles": profiles, **missing}
        out = loaded.predict(channels, args["features"], profiles=args["profiles"])
        assert np.allclose(out.sum(axis=1), 1, atol=1e-6) and not np.allclose(out, probs)
    for c in range(1, 4):
        dropped = channels.copy()
        dropped[..., c] = 0
        assert loaded.channel_presence(dropped)[:, c - 1].sum() == 0
        assert np.allclose(loaded.predict(dropped, features).sum(axis=1), 1, atol=1e-6)
    assert loaded.predict(channels[:0], features[:0]).shape == (0, 4)
    with pytest.raises(ValueError, match="channels must have shape"):
        loaded.predict(channels[..., :3])


def test_a_v3_folder_must_fit_together(model):
    weights = {k: v for k, v in model.weights.items() if not k.startswith("temporal/")}
    with pytest.raises(CalcompError, match="temporal"):
        CalcompModel(weights, model.config)
    with pytest.raises(CalcompError, match="head takes"):
        CalcompModel(model.weights, _config(feature_names=list(FEATURES[:2])))
    with pytest.raises(CalcompError, match="does not make"):
        CalcompModel(model.weights, _config(feature_names=[*FEATURES[:4], "nonsense"]))
    with pytest.raises(CalcompError, match="channels"):
        CalcompModel(model.weights, _config(channels=["footprint", "cn", "image"]))


def test_classify_a_v3_model_from_any_evidence(model, session):
    ev = _evidence(session)
    probs = classify_evidence(ev, model)
    assert probs.shape == (ev.n, 4) and np.allclose(probs.sum(axis=1), 1, atol=1e-6)
    record = classify(ev, model)
    np.testing.assert_array_equal(record.fields["class_probs"], probs)
    variants = [
        ev.without("traces"), ev.without("image"), ev.without("traces", "image", "metrics"),
        Evidence.build(session.A, session.dims, C=session.C),  # no frame rate, no residual
        Evidence.build(session.A[:, :1], session.dims),  # one footprint alone
    ]  # fmt: skip
    for other in variants:
        out = classify_evidence(other, model)
        assert out.shape == (other.n, 4) and np.allclose(out.sum(axis=1), 1, atol=1e-6)
    assert not np.allclose(classify_evidence(ev.without("traces"), model), probs)
    np.testing.assert_allclose(
        classify_evidence(ev, model, use=("neighbours", "metrics")),
        classify_evidence(ev.without("traces", "image"), model),
        atol=1e-6,
    )


def test_v1_and_v2_are_what_they_were():
    v1, v2 = CalcompModel.load("calcomp_resnet_v1"), CalcompModel.load("calcomp_v2")
    assert (v1.version, v2.version) == (1, 2)
    assert v1.channel_names == v2.channel_names == ("footprint",)
    assert v2.head_input_names[4:] == list(v2.feature_names)
    with pytest.raises(ValueError, match="patches must have shape"):
        v2.predict(np.zeros((1, 50, 50, 4), np.float32))


def test_the_neuron_shift_moves_components_without_traces_only(model, session):
    ev = _evidence(session)
    both = [ev, ev.without("traces")]
    before = [classify_evidence(e, model) for e in both]
    shifted = model.with_thresholds(neuron_shift_without_traces=1.5)
    after = [classify_evidence(e, shifted) for e in both]
    np.testing.assert_array_equal(after[0], before[0])  # traces: unchanged
    assert np.all(after[1][:, 0] > before[1][:, 0])  # masks: P(neuron) up, the order kept
    np.testing.assert_array_equal(np.argsort(after[1][:, 0]), np.argsort(before[1][:, 0]))
    np.testing.assert_allclose(after[1].sum(axis=1), 1, atol=1e-6)
