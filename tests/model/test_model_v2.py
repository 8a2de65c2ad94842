"""Model v2: evidence, features, fusion head, crop scale, refit (tiny heads trained here)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.sparse

from calcomp_caiman import CalcompModel
from calcomp_caiman.classify import classify_evidence, evidence_used
from calcomp_caiman.errors import CalcompError
from calcomp_caiman.evidence import Evidence
from calcomp_caiman.evidence.features import (
    OPTIONAL_GROUPS,
    evidence_features,
    feature_names,
    group_columns,
)
from calcomp_caiman.evidence.patches import project_footprints
from calcomp_caiman.evidence.traces import Traces
from calcomp_caiman.io.caiman_h5 import read_evidence
from calcomp_caiman.model.head import fit_head, head_inputs, set_nll
from calcomp_caiman.refit import labelled_inputs, refit
from calcomp_caiman.research.caiman_files import write_caiman_file
from calcomp_caiman.research.simulate import simulate_session
from calcomp_caiman.schema import label_masks


@pytest.fixture(scope="module")
def v1():
    return CalcompModel.load("calcomp_resnet_v1")


@pytest.fixture(scope="module")
def session():
    return simulate_session(n_components=(20, 5, 8, 4), n_frames=300, seed=3)


def _evidence(session, **extra):
    rng = np.random.default_rng(0)
    residual = rng.normal(0, 0.05, session.C.shape)
    return Evidence.build(session.A, session.dims, C=session.C, YrA=residual, **extra)


def _tiny_v2(v1, evidence, labels, seed=0):
    """A v2 model whose head is fitted here, on one simulated session (seconds)."""
    shell = CalcompModel(v1.weights, {**v1.config, "scale_rule": "footprints"}, {})
    logits, features = labelled_inputs(shell, evidence, np.arange(evidence.n))[:2]
    head = fit_head(
        head_inputs(logits, features), label_masks(labels).astype(bool), hidden=8, seed=seed
    )
    return shell.with_head(head, name="tiny_v2")


def test_features_mark_absent_groups(session):
    ev = _evidence(session)
    flat, dims = project_footprints(ev.A, ev.dims)
    x = evidence_features(ev, flat, dims, 5.0)
    columns = group_columns()
    names = feature_names()
    assert x.shape == (ev.n, len(names)) and np.isfinite(x).all()
    assert (x[:, names.index("has_traces")] == 1).all()
    for group in ("image", "metrics"):  # no Cn, no SNR_comp in this evidence
        assert (x[:, columns[group]] == 0).all()
    without = evidence_features(ev, flat, dims, 5.0, use=("neighbours",))
    assert (without[:, columns["traces"]] == 0).all()
    assert np.array_equal(without[:, columns["neighbours"]], x[:, columns["neighbours"]])


def test_trace_features_do_not_depend_on_chunking(session, monkeypatch):
    import calcomp_caiman.evidence.features as features

    ev = _evidence(session)
    flat, dims = project_footprints(ev.A, ev.dims)
    whole = evidence_features(ev, flat, dims, 5.0)
    reads = []
    read = ev.traces._read
    ev.traces._read = lambda a, b: reads.append((a, b)) or read(a, b)
    monkeypatch.setattr(features, "_TRACE_ELEMENTS", 7 * ev.traces.frames)
    chunked = evidence_features(ev, flat, dims, 5.0)
    assert len(reads) == -(-ev.n // 7) and max(b - a for a, b in reads) == 7
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)


def test_trace_features_separate_transients_from_noise():
    rng = np.random.default_rng(1)
    t = np.arange(1000)
    spikes = (rng.random((2, 1000)) < 0.01).astype(float)
    kernel = np.exp(-np.arange(60) / 15.0)
    calcium = np.array([np.convolve(s, kernel)[:1000] for s in spikes])
    noise_only = rng.normal(0, 1, (2, 1000)) * 0.1 + np.sin(t / 200.0) * 0.05
    C = np.vstack([calcium, noise_only])
    YrA = rng.normal(0, 0.1, C.shape)
    A = scipy.sparse.random(400, 4, density=0.1, random_state=0, format="csc")
    ev = Evidence.build(A, (20, 20), C=C, YrA=YrA)
    flat, dims = project_footprints(ev.A, ev.dims)
    x = evidence_features(ev, flat, dims, 3.0)
    names = feature_names()
    snr, diff_skew = x[:, names.index("trace_snr")], x[:, names.index("diff_skew")]
    assert snr[:2].min() > snr[2:].max()
    assert diff_skew[:2].min() > diff_skew[2:].max()  # fast rise, slow decay


def test_hdf5_traces_are_read_lazily_and_match(tmp_path, session):
    ev = _evidence(session)
    path = write_caiman_file(
        tmp_path / "r.hdf5", A=session.A, C=session.C, YrA=np.asarray(ev.traces._read(0, ev.n)["YrA"]),
        dims=session.dims, gSig=(4, 4),
    )  # fmt: skip
    loaded = read_evidence(path)
    assert loaded.kinds == ("shape", "neighbours", "traces")
    chunks = list(loaded.traces.chunks(10))
    assert [start for start, _ in chunks] == list(range(0, ev.n, 10))
    np.testing.assert_allclose(np.concatenate([c["C"] for _, c in chunks]), session.C, rtol=1e-6)


def test_head_learns_and_anchor_keeps_it_close():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    y = np.where(x[:, 0] > 0, 0, 2)
    allowed = np.eye(4, dtype=bool)[y]
    head = fit_head(x, allowed, hidden=6)
    assert (head.logits(x).argmax(axis=1) == y).mean() > 0.95
    flipped = np.eye(4, dtype=bool)[2 - y]
    stiff = fit_head(x, flipped, start=head, anchor=10.0)
    loose = fit_head(x, flipped, start=head, anchor=1e-6)
    assert np.abs(stiff.w1 - head.w1).max() < np.abs(loose.w1 - head.w1).max()
    assert set_nll(loose.logits(x), flipped) < set_nll(stiff.logits(x), flipped)


def test_set_labels_allow_either_class():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    allowed = np.zeros((200, 4), bool)
    allowed[:, 1] = allowed[:, 2] = True  # non_neuron: process or noise
    head = fit_head(x, allowed, hidden=4)
    assert set(head.logits(x).argmax(axis=1)) <= {1, 2}


def test_v2_model_round_trip_and_checks(tmp_path, v1, session):
    ev = _evidence(session)
    model = _tiny_v2(v1, ev, session.labels)
    assert model.uses_evidence and not v1.uses_evidence
    probs = classify_evidence(ev, model)
    assert probs.shape == (ev.n, 4) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    loaded = CalcompModel.load(model.save(tmp_path / "m"))
    np.testing.assert_allclose(classify_evidence(ev, loaded), probs, atol=1e-5)
    assert evidence_used(ev, loaded) == ("shape", "neighbours", "traces")
    broken = dict(model.weights)
    broken["head/w1"] = broken["head/w1"][:-1]
    with pytest.raises(CalcompError, match="fusion head"):
        CalcompModel(broken, model.config, {})
    # the shape-only call (OnACID candidates) is a trained condition, not an error
    assert model.predict(np.zeros((2, 50, 50), np.float32)).shape == (2, 4)


def test_v2_class_does_not_depend_on_gsig(v1, session):
    model = _tiny_v2(v1, _evidence(session), session.labels)
    base = _evidence(session)
    for gsig in (2.0, 4.0, 9.0):
        other = _evidence(session, gSig=gsig)
        np.testing.assert_array_equal(
            classify_evidence(other, model), classify_evidence(base, model)
        )
    # v1 keeps its old rule: the user's gSig sizes the crop
    assert not np.allclose(
        classify_evidence(_evidence(session, gSig=2.0), v1),
        classify_evidence(_evidence(session, gSig=9.0), v1),
    )


def test_classify_evidence_uses_traces(v1, session):
    ev = _evidence(session)
    model = _tiny_v2(v1, ev, session.labels)
    with_traces = classify_evidence(ev, model)
    without = classify_evidence(ev.without("traces"), model)
    assert not np.allclose(with_traces, without)
    np.testing.assert_allclose(
        classify_evidence(ev, model, use=("neighbours",)), without, atol=1e-6
    )


def test_refit_improves_on_a_lab_with_other_labels(v1, session):
    ev = _evidence(session)
    model = _tiny_v2(v1, ev, session.labels)
    other = simulate_session(n_components=(20, 5, 8, 4), n_frames=300, seed=11)
    ev2 = _evidence(other)
    # a lab that calls every doubtful cell a neuron
    lab = np.where(other.labels == 4, 1, other.labels)
    lab1 = np.where(session.labels == 4, 1, session.labels)
    new, report = refit(
        model, [ev, ev2], [lab1, lab], [np.arange(ev.n), np.arange(ev2.n)], anchor=1e-4
    )
    assert report["labels"] == ev.n + ev2.n and 0 < report["held_out"] < report["labels"]
    assert report["after"] >= report["before"]
    assert new.name == "tiny_v2-refit" and new.config["refit_labels"] == report["labels"]
    with pytest.raises(CalcompError, match="no fusion head"):
        refit(v1, [ev], [lab1], [np.arange(ev.n)])
    with pytest.raises(ValueError, match="at least"):
        refit(model, [ev], [lab1[:3]], [np.arange(3)])


def test_traces_take_keeps_order():
    traces = Traces.from_arrays(np.arange(12.0).reshape(4, 3))
    taken = traces.take([2, 0])
    assert next(taken.chunks(10))[1]["C"].tolist() == [[6, 7, 8], [0, 1, 2]]


def test_evidence_from_estimates_ignores_fields_that_do_not_fit(session, caplog):
    from types import SimpleNamespace

    est = SimpleNamespace(
        A=session.A, dims=session.dims, C=session.C[:-1], YrA=None, Cn=np.zeros((3, 3)),
        SNR_comp=np.ones(session.A.shape[1]),
    )  # fmt: skip
    est.g = [np.array([0.9]), np.array([0.8, 0.1])] + [np.array([0.9])] * (session.A.shape[1] - 2)
    ev = Evidence.from_estimates(est)  # CaImAn's g may be a ragged list
    assert ev.traces is None and ev.Cn is None and ev.kinds == ("shape", "neighbours", "metrics")
    assert ev.g is None
    assert all(group in OPTIONAL_GROUPS for group in ev.kinds[1:])


def test_model_rejects_unexpected_weights_and_compares_by_identity(v1):
    weights = dict(v1.weights, **{"extra/kernel": np.zeros(3, np.float32)})
    with pytest.raises(CalcompError, match="extra/kernel"):
        CalcompModel(weights, v1.config, {})
    again = CalcompModel.load("calcomp_resnet_v1")
    assert again != v1 and again.sha256 == v1.sha256 and len({again, v1}) == 2


def test_finetune_cli_refits_a_v2_head_from_labelled_files(tmp_path, v1, session, capsys):
    from calcomp_caiman.apps.cli import main

    ev = _evidence(session)
    model_dir = _tiny_v2(v1, ev, session.labels).save(tmp_path / "v2")
    files = []
    for seed in (3, 4):
        other = simulate_session(n_components=(20, 5, 8, 4), n_frames=300, seed=seed)
        files.append(
            write_caiman_file(
                tmp_path / f"s{seed}.hdf5", A=other.A, C=other.C, dims=other.dims, gSig=(4, 4)
            )  # fmt: skip
        )
        rows = [f"s{seed}.hdf5,{i},{label}" for i, label in enumerate(other.labels)]
        mode = "w" if seed == 3 else "a"
        with open(tmp_path / "labels.csv", mode) as handle:
            handle.write("file,component,label\n" * (mode == "w") + "\n".join(rows) + "\n")
    out = tmp_path / "refitted"
    assert main(["finetune", "--model", str(model_dir), "--labels", str(tmp_path / "labels.csv"),
                 "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert printed.startswith("refitted ") and re.search(r"\((held out|cross-validated)", printed)
    refitted = CalcompModel.load(out)
    assert refitted.uses_evidence and refitted.config["refit_labels"] == 74
    assert classify_evidence(read_evidence(files[0]), refitted).shape == (37, 4)
