"""OnACID with our candidate screen, against real CaImAn 1.12.1 (marked ``caiman``).

One short OnACID run on a small simulated movie (64 x 64 px, 400 frames, a few cells)
with ``use_calcomp_screening``; then what CaImAn passed to the screen, the four-class
evaluation of the result, ``OnACID.save`` / ``load_OnlineCNMF``, and the errors raised
before a run starts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.caiman
pytest.importorskip("caiman")

from calcomp_caiman import (  # noqa: E402
    CLASSES,
    CalcompError,
    CalcompModel,
    align_classes,
    evaluate_components_4class,
)
from calcomp_caiman.integrations.onacid import use_calcomp_screening  # noqa: E402
from calcomp_caiman.integrations.onacid_screen import CandidateScreen  # noqa: E402

GSIG = 3


def write_movie(path: Path, *, seed: int = 0, size: int = 64, frames: int = 400) -> np.ndarray:
    """Gaussian somata with spiking traces, a flat background, shot and read noise; returns
    the cell centres (rows, cols)."""
    import tifffile

    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    centres: list[np.ndarray] = []
    while len(centres) < 8:
        c = rng.uniform(6, size - 6, 2)
        if all(np.hypot(*(c - o)) > 11 for o in centres):
            centres.append(c)
    footprints = np.stack(
        [np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * GSIG**2)) for r, c in centres]
    )
    spikes = rng.random((len(centres), frames)) < 0.03
    traces = np.stack([np.convolve(s, np.exp(-np.arange(60) / 8.0))[:frames] for s in spikes])
    clean = np.tensordot(3.0 * traces.T, footprints, axes=1) + 1.0
    movie = rng.poisson(clean * 30.0) + rng.normal(0, 3.0, clean.shape)
    tifffile.imwrite(path, movie.astype(np.float32))
    return np.array(centres)


def onacid_for(caiman, movie: Path, **online):
    from caiman.source_extraction.cnmf import online_cnmf, params

    settings = {"init_batch": 100, "init_method": "bare", "motion_correct": False}
    settings.update(online)
    opts = params.CNMFParams(
        params_dict={
            "data": {"fnames": [str(movie)], "fr": 30, "decay_time": 0.3},
            "init": {"gSig": (GSIG, GSIG), "K": 2, "nb": 1},
            "online": settings,
            "preprocess": {"p": 1},
        }
    )
    return online_cnmf.OnACID(params=opts)


@pytest.fixture(scope="module")
def movie(tmp_path_factory):
    path = tmp_path_factory.mktemp("online") / "movie.tif"
    return path, write_movie(path)


@pytest.fixture(scope="module")
def run(caiman, movie):
    """One screened OnACID run; every predict call CaImAn made is recorded."""
    onacid = onacid_for(caiman, movie[0])
    screen = use_calcomp_screening(onacid)
    calls = []
    predict = screen.predict

    def recording(X, batch_size=None, verbose=0):
        out = predict(X, batch_size=batch_size, verbose=verbose)
        calls.append((np.array(X), batch_size, out))
        if len(calls) % 25 == 0 and len(X) > 1:  # the first candidate alone, same frame
            before = screen.remapped
            alone = predict(X[:1], batch_size=batch_size, verbose=verbose)
            prefixes.append((out[0], alone[0], screen.remapped - before))
        return out

    prefixes = []
    screen.predict = recording  # this instance only
    onacid.fit_online()
    return onacid, screen, calls, prefixes


def test_run_screens_candidates_with_our_crop(run):
    onacid, screen, calls, _ = run
    assert onacid.params.get("online", "sniper_mode") is True
    assert onacid.loaded_model is screen and onacid.tf_in is None
    assert screen.calls == len(calls) + len(run[3]) > 50  # about one per frame after init
    # every candidate was found again and cropped from the residual buffer by us
    assert screen.candidates > screen.calls and screen.remapped == 0
    n = onacid.estimates.A.shape[1]
    assert 2 < n < 40


def test_first_candidates_alone_are_found_and_scored_alike(run):
    prefixes = run[3]
    assert len(prefixes) >= 3
    for full, alone, remapped in prefixes:
        assert remapped == 0
        np.testing.assert_allclose(alone, full, atol=1e-5)


def test_what_caiman_passes_and_gets_back(run):
    onacid, _, calls, _ = run
    trials = onacid.params.get("online", "min_num_trial")
    for X, batch_size, out in calls:
        assert X.ndim == 4 and X.shape[1:] == (50, 50, 1) and 1 <= len(X) <= trials
        assert batch_size == trials
        assert out.shape == (len(X), 2) and out.dtype == np.float32
        assert np.all((out >= 0) & (out <= 1))
        np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    kept = np.concatenate([out[:, 0] for _, _, out in calls])
    threshold = onacid.params.get("online", "thresh_CNN_noisy")
    assert 0 < np.mean(kept > threshold) < 1  # the screen does decide


def test_a_v3_model_screens_caimans_candidates(caiman, movie, random_v3):
    """A model v3 (random weights: the plumbing, not the decisions) as OnACID's screen: every
    candidate found again and cropped by us, its footprint the one channel present."""
    onacid = onacid_for(caiman, movie[0])
    screen = use_calcomp_screening(onacid, model=random_v3)
    answers = []
    predict = screen.predict

    def recording(X, batch_size=None, verbose=0):
        answers.append(predict(X, batch_size=batch_size, verbose=verbose))
        return answers[-1]

    screen.predict = recording
    onacid.fit_online()
    assert screen.calls == len(answers) > 50 and screen.candidates > screen.calls
    assert screen.remapped == 0
    kept = np.concatenate(answers)
    assert np.all((kept >= 0) & (kept <= 1))
    np.testing.assert_allclose(kept.sum(axis=1), 1.0, atol=1e-5)


def test_screened_run_finds_the_cells(run, movie):
    onacid, _, _, _ = run
    A = onacid.estimates.A.toarray()
    dims = onacid.estimates.dims
    rows, cols = np.mgrid[: dims[0], : dims[1]]
    mass = A.sum(axis=0)
    centre_r = (rows.ravel(order="F") @ A) / mass
    centre_c = (cols.ravel(order="F") @ A) / mass
    found = [np.min(np.hypot(centre_r - r, centre_c - c)) < GSIG for r, c in movie[1]]
    assert np.mean(found) >= 0.75


def test_four_classes_and_selection_after_fit_online(run):
    onacid, _, _, _ = run
    est = evaluate_components_4class(onacid.estimates, onacid.params)
    n = est.A.shape[1]
    assert est.class_probs.shape == (n, len(CLASSES))
    assert len(est.idx_components) + len(est.idx_components_bad) == n
    kept_probs = est.class_probs[est.idx_components].copy()
    kept_A = est.A[:, est.idx_components].toarray()
    # OnACID's own discarded_components (from its init batch) breaks CaImAn's default
    # selection (see the next test): select without keeping the discarded ones
    est.select_components(use_object=True, save_discarded_components=False)
    np.testing.assert_array_equal(align_classes(est).class_probs, kept_probs)
    np.testing.assert_array_equal(est.A.toarray(), kept_A)


def test_caiman_default_selection_fails_on_onacid_results(caiman, movie):
    """CaImAn 1.12.1 itself, without this package: why the selection above passes
    save_discarded_components=False."""
    onacid = onacid_for(caiman, movie[0])
    onacid.fit_online()
    assert onacid.estimates.discarded_components.C.shape[1] == 100  # init_batch frames
    with pytest.raises(ValueError, match="concatenation axis"):
        onacid.estimates.select_components(idx_components=[0, 1])


def test_save_and_load_online_keep_our_fields(caiman, movie, tmp_path):
    from caiman.source_extraction.cnmf.online_cnmf import load_OnlineCNMF

    onacid = onacid_for(caiman, movie[0])
    use_calcomp_screening(onacid)
    onacid.fit_online()
    est = evaluate_components_4class(onacid.estimates, onacid.params)
    path = tmp_path / "online_4class.hdf5"
    onacid.save(str(path))  # CaImAn skips loaded_model: the screen is not saved
    loaded = load_OnlineCNMF(str(path))
    assert not isinstance(getattr(loaded, "loaded_model", None), CandidateScreen)
    align_classes(loaded.estimates)
    for name in ("class_probs", "class_labels", "class_flags", "cnn_preds", "idx_components"):
        np.testing.assert_array_equal(getattr(loaded.estimates, name), getattr(est, name))
    keep = np.asarray(loaded.estimates.idx_components)
    probs = loaded.estimates.class_probs[keep].copy()
    # load_OnlineCNMF leaves a saved discarded_components as a dict: select without it
    loaded.estimates.select_components(use_object=True, save_discarded_components=False)
    np.testing.assert_array_equal(align_classes(loaded.estimates).class_probs, probs)
    assert loaded.estimates.A.shape[1] == len(keep)


def _untouched(onacid) -> bool:
    return (
        type(onacid).__name__ == "OnACID"
        and not getattr(type(onacid), "_calcomp_screening", False)
        and onacid.params.get("online", "sniper_mode") is False
        and not hasattr(onacid, "loaded_model")
    )


def test_missing_model_fails_at_the_call(caiman, movie, tmp_path):
    onacid = onacid_for(caiman, movie[0])
    with pytest.raises(FileNotFoundError, match="no model named or found"):
        use_calcomp_screening(onacid, model=tmp_path / "no_such_model")
    assert _untouched(onacid)


def test_damaged_model_fails_at_the_call(caiman, movie, tmp_path):
    folder = CalcompModel.load().save(tmp_path / "model")
    weights = folder / "weights.npz"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    onacid = onacid_for(caiman, movie[0])
    with pytest.raises(CalcompError, match="SHA256"):
        use_calcomp_screening(onacid, model=folder)
    assert _untouched(onacid)


def test_model_failing_on_a_patch_fails_at_the_call(caiman, movie, tmp_path):
    model = CalcompModel.load()
    broken = {key: value for key, value in model.weights.items()}
    name = next(key for key in broken if key.startswith("probs/") and key.endswith("kernel"))
    broken[name] = np.full_like(broken[name], np.nan)
    folder = CalcompModel(broken, model.config, model.thresholds).save(tmp_path / "nan")
    onacid = onacid_for(caiman, movie[0])
    with pytest.raises(CalcompError, match="non-finite"):
        use_calcomp_screening(onacid, model=folder)
    assert _untouched(onacid)


def test_bad_arguments_fail_at_the_call(caiman, movie):
    onacid = onacid_for(caiman, movie[0])
    with pytest.raises(ValueError, match="threshold must be in"):
        use_calcomp_screening(onacid, threshold=1.5)
    onacid.params.set("init", {"gSig": (3, 6)})
    with pytest.raises(ValueError, match="non-square candidate crops"):
        use_calcomp_screening(onacid)
    assert _untouched(onacid)


def test_bundled_name_unknown_lists_known(caiman, movie):
    onacid = onacid_for(caiman, movie[0])
    with pytest.raises(FileNotFoundError, match="bundled models: .*calcomp_resnet_v1"):
        use_calcomp_screening(onacid, model="calcomp_resnet_v9")


def test_example_onacid_pipeline_end_to_end(caiman, movie, tmp_path):
    """The README's online script (example_pipelines/caiman_onacid_pipeline.py)."""
    import importlib.util

    from caiman.source_extraction.cnmf.online_cnmf import load_OnlineCNMF

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(
        "caiman_onacid_pipeline", root / "example_pipelines" / "caiman_onacid_pipeline.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "online.hdf5"
    onacid = module.run_pipeline(
        movie[0], out, gsig=GSIG, fr=30.0, decay_time=0.3, init_batch=100, motion_correct=False
    )
    est = onacid.estimates
    assert onacid.loaded_model.calls > 0
    # what select_components kept is what the default rule accepts: P(neuron) >= min_prob
    # (the most probable class of a kept component may be doubtful)
    cut = CalcompModel.load().thresholds["min_prob"]
    assert est.A.shape[1] > 0 and np.all(est.class_probs[:, 0] >= cut - 1e-6)
    loaded = load_OnlineCNMF(str(out))
    align_classes(loaded.estimates)
    np.testing.assert_array_equal(loaded.estimates.class_probs, est.class_probs)


def test_screened_onacid_pickles_and_still_screens(caiman, movie):
    import pickle

    onacid = onacid_for(caiman, movie[0])
    use_calcomp_screening(onacid)
    clone = pickle.loads(pickle.dumps(onacid))
    assert type(clone) is type(onacid) and clone.loaded_model._onacid is clone
    clone.fit_online()
    assert clone.loaded_model.calls > 0 and clone.loaded_model.remapped == 0
    assert onacid.loaded_model.calls == 0  # the original is untouched
