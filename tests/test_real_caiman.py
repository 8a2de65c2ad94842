"""Tests against real CaImAn 1.12.1 (marked ``caiman``; skipped where CaImAn is absent).

``.ci/run`` builds CaImAn with ``../shared/caiman/install_caiman.sh``, installs this project
into that environment with a plain ``pip install .`` and runs ``pytest -m caiman``.
"""

from __future__ import annotations

import copy
import importlib.util
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CAIMAN_RESULTS, require

pytestmark = pytest.mark.caiman
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    from calcomp_caiman import CalcompModel

    return CalcompModel.load()


# ------------------------------------------------------------------ small simulated movies


def write_movie(path: Path, *, seed: int = 0, size: int = 64, frames: int = 400) -> Path:
    """A few seconds of simulated two-photon data as a TIFF: Gaussian somata, spiking
    traces with exponential decay, a smooth background, shot and read noise, small shifts."""
    import tifffile

    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    centres = []
    while len(centres) < 12:
        c = rng.uniform(8, size - 8, 2)
        if all(np.hypot(*(c - o)) > 11 for o in centres):
            centres.append(c)
    footprints = np.stack(
        [np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * 3.0**2)) for r, c in centres]
    )
    spikes = rng.random((len(centres), frames)) < 0.02
    kernel = np.exp(-np.arange(60) / 12.0)
    traces = np.stack([np.convolve(s, kernel)[:frames] for s in spikes]) * 4.0
    background = 1.0 + 0.3 * np.exp(-((rows - size / 2) ** 2 + (cols - size / 3) ** 2) / 800.0)
    clean = np.tensordot(traces.T, footprints, axes=1) + background
    shifts = rng.integers(-1, 2, size=(frames, 2))
    clean = np.stack([np.roll(f, tuple(s), axis=(0, 1)) for f, s in zip(clean, shifts)])
    movie = rng.poisson(clean * 40.0) + rng.normal(0, 4.0, clean.shape)
    tifffile.imwrite(path, movie.astype(np.float32))
    return path


def load_pipeline_module():
    spec = importlib.util.spec_from_file_location(
        "caiman_2p_pipeline", ROOT / "example_pipelines" / "caiman_2p_pipeline.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pipeline_run(caiman, tmp_path_factory):
    """The README's CaImAn script (example_pipelines/caiman_2p_pipeline.py), end to end."""
    folder = tmp_path_factory.mktemp("pipeline")
    movie = write_movie(folder / "movie.tif")
    out = folder / "result.hdf5"
    cnm, images = load_pipeline_module().run_pipeline(
        movie, out, gsig=3.0, fr=30.0, K=4, rf=16, stride=8, processes=1
    )
    return cnm, np.asarray(images), out


# ------------------------------------------------------------------ helpers


def class_by_column(estimates) -> dict[tuple, np.ndarray]:
    """Our fields' row for each column of A, keyed by the column's content."""
    from scipy.sparse import csc_matrix

    A = csc_matrix(estimates.A)
    table = {}
    for j in range(A.shape[1]):
        column = A[:, j]
        key = (tuple(column.indices), tuple(np.round(column.data, 6)))
        table.setdefault(key, []).append(
            (estimates.class_probs[j], estimates.class_labels[j], estimates.class_flags[j])
        )
    return table


def assert_aligned(estimates, table: dict[tuple, list], step: str) -> None:
    """One row of class_probs/labels/flags per column of A, each the row of that column."""
    from scipy.sparse import csc_matrix

    A = csc_matrix(estimates.A)
    n = A.shape[1]
    for name in ("class_probs", "class_labels", "class_flags"):
        assert len(getattr(estimates, name)) == n, f"{step}: {name} has wrong length"
    for j in range(n):
        column = A[:, j]
        rows = table[(tuple(column.indices), tuple(np.round(column.data, 6)))]
        assert any(
            np.array_equal(estimates.class_probs[j], probs)
            and estimates.class_labels[j] == label
            and estimates.class_flags[j] == flag
            for probs, label, flag in rows
        ), f"{step}: column {j} carries another component's class"


# ------------------------------------------------------------------ 1. shared files


@pytest.mark.parametrize(
    "name",
    [
        "real_mouse2p_cnmf.hdf5",
        "real_mouse2p_cnmf_unevaluated.hdf5",
        "real_mouse2p_onacid.hdf5",
        "synthetic_cnmf.hdf5",
        "synthetic_seeded_cnmf.hdf5",
    ],
)
def test_classified_shared_file_loads_in_caiman(caiman, tmp_path, name):
    from caiman.source_extraction.cnmf.cnmf import load_CNMF
    from caiman.source_extraction.cnmf.online_cnmf import load_OnlineCNMF

    source = require(CAIMAN_RESULTS / name)
    out = tmp_path / name
    calcomp = Path(sys.executable).with_name("calcomp")
    done = subprocess.run(
        [str(calcomp), "classify", str(source), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    loader = load_OnlineCNMF if "onacid" in name else load_CNMF
    est = loader(str(out)).estimates
    n = est.A.shape[1]
    assert est.class_probs.shape == (n, 4) and est.class_probs.dtype == np.float32
    np.testing.assert_allclose(est.class_probs.sum(axis=1), 1, atol=1e-5)
    assert est.class_labels.dtype == np.int8 and set(np.unique(est.class_labels)) <= {1, 2, 3, 4}
    assert est.class_flags.shape == (n,) and est.class_flags.dtype == np.uint8
    assert est.class_fingerprint.shape == (n, 3)
    np.testing.assert_array_equal(est.cnn_preds, est.class_probs[:, 0])
    both = np.sort(np.concatenate([est.idx_components, est.idx_components_bad]))
    np.testing.assert_array_equal(both, np.arange(n))
    # CaImAn's own selection of a loaded file, then our fields brought in line
    from calcomp_caiman import align_classes

    table = class_by_column(est)
    # load_OnlineCNMF leaves discarded_components a dict, on which CaImAn's own selection
    # fails: CaImAn's workaround is not to keep discarded components
    est.select_components(use_object=True, save_discarded_components="onacid" not in name)
    align_classes(est)
    assert_aligned(est, table, "select after load")


# ------------------------------------------------------------------ 2. selection sequences


def test_fields_realign_after_every_caiman_selection(caiman, model, tmp_path):
    from caiman.source_extraction.cnmf.cnmf import load_CNMF
    from caiman.source_extraction.cnmf.estimates import Estimates

    from calcomp_caiman import align_classes, evaluate_components_4class
    from calcomp_caiman.io.caiman_h5 import is_classified_by, read_estimates

    cnm = load_CNMF(str(require(CAIMAN_RESULTS / "real_mouse2p_cnmf.hdf5")))
    est = cnm.estimates
    n = est.A.shape[1]
    evaluate_components_4class(est, cnm.params, model=model)
    assert type(est) is Estimates  # the user's object keeps CaImAn's class and methods
    table = class_by_column(est)
    assert_aligned(est, table, "classified")

    est.select_components(use_object=True)
    assert len(est.class_probs) == n  # CaImAn's selection leaves our fields alone ...
    assert_aligned(align_classes(est), table, "select use_object")  # ... until realigned
    est.select_components(idx_components=np.arange(0, est.A.shape[1], 2))
    assert_aligned(align_classes(est), table, "select index list")
    # several CaImAn steps, one realignment at the end
    est.select_components(idx_components=[0, 2, 3, 5])
    est.restore_discarded_components()
    est.select_components(idx_components=[4, 1])
    est.restore_discarded_components()
    assert est.A.shape[1] == n
    assert_aligned(align_classes(est), table, "two selections and restores")

    est.threshold_spatial_components()  # remove_duplicates needs A_thr
    est.remove_duplicates(select_comp=True)
    assert_aligned(align_classes(est), table, "remove_duplicates(select_comp=True)")
    est.restore_discarded_components()
    assert est.A.shape[1] == n
    assert_aligned(align_classes(est), table, "restore after remove_duplicates")

    # CaImAn 1.12.1's load_CNMF returns a saved A_thr as a dict, on which its own
    # select_components fails: drop it before saving, as a CaImAn user must
    est.A_thr = None
    est.select_components(idx_components=np.arange(10, 40))  # saved without realigning
    path = tmp_path / "saved.hdf5"
    cnm.save(str(path))
    loaded = load_CNMF(str(path)).estimates
    assert_aligned(align_classes(loaded), table, "save/load")
    # our file reader matches the stored rows to the saved A too, and knows the rows are
    # not in A's order any more (so `calcomp reprocess` classifies the file again)
    np.testing.assert_array_equal(read_estimates(path).class_probs, loaded.class_probs)
    assert not is_classified_by(path, model.sha256)
    loaded.select_components(idx_components=[1, 4, 7])
    assert_aligned(align_classes(loaded), table, "select after load")
    loaded.restore_discarded_components()
    assert loaded.A.shape[1] == n
    assert_aligned(align_classes(loaded), table, "restore after load")

    # footprints that changed since the classification: say what to do, change nothing
    changed = load_CNMF(str(path)).estimates
    changed.A = changed.A * 2.0
    before = changed.class_probs.copy()
    with pytest.raises(ValueError, match="evaluate_components_4class"):
        align_classes(changed)
    np.testing.assert_array_equal(changed.class_probs, before)


def test_classify_after_an_earlier_selection_keeps_discarded_aligned(caiman, model):
    from caiman.source_extraction.cnmf.cnmf import load_CNMF

    from calcomp_caiman import align_classes, evaluate_components_4class

    cnm = load_CNMF(str(require(CAIMAN_RESULTS / "real_mouse2p_cnmf.hdf5")))
    est = cnm.estimates
    n = est.A.shape[1]
    est.select_components(idx_components=np.arange(0, n, 3))  # before classifying
    evaluate_components_4class(est, cnm.params, model=model)
    table = class_by_column(est)
    table.update(class_by_column(est.discarded_components))
    est.select_components(idx_components=[0, 1, 2])
    est.restore_discarded_components()
    assert est.A.shape[1] == n
    assert_aligned(align_classes(est), table, "restore of components set aside before")


def test_pickle_and_deepcopy_stay_caimans_own(caiman, model, tmp_path):
    from caiman.source_extraction.cnmf.cnmf import load_CNMF

    from calcomp_caiman import align_classes, evaluate_components_4class

    est = load_CNMF(str(require(CAIMAN_RESULTS / "synthetic_cnmf.hdf5"))).estimates
    evaluate_components_4class(est, model=model)
    table = class_by_column(est)
    clone = copy.deepcopy(est)
    clone.select_components(idx_components=[2, 0])
    assert_aligned(align_classes(clone), table, "deepcopy")
    path = tmp_path / "est.pkl"
    path.write_bytes(pickle.dumps(clone))
    code = (
        "import sys, pickle; sys.modules['calcomp_caiman'] = None\n"  # as if not installed
        f"est = pickle.load(open({str(path)!r}, 'rb'))\n"
        "assert type(est).__module__.startswith('caiman'), type(est)\n"
        "est.restore_discarded_components()\n"
        "pickle.dump(est, open(sys.argv[1], 'wb'))\n"
    )
    back = tmp_path / "restored.pkl"
    done = subprocess.run([sys.executable, "-c", code, str(back)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    restored = pickle.loads(back.read_bytes())
    assert_aligned(align_classes(restored), table, "pickled, restored without calcomp")


def test_source_tree_has_the_bundled_model(caiman):
    """From the repository root the source tree shadows the installed package; it must
    still find the bundled model."""
    code = (
        "import calcomp_caiman, numpy as np\n"
        "from calcomp_caiman import classify_footprints\n"
        "A = np.zeros((32 * 32, 1), np.float32); A[500:506, 0] = 1\n"
        "print(calcomp_caiman.__file__, classify_footprints(A, (32, 32), gSig=3).shape)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert str(ROOT) in done.stdout and "(1, 4)" in done.stdout


# ------------------------------------------------------------------ 3./4. the pipeline


def test_readme_pipeline_end_to_end(pipeline_run):
    from caiman.source_extraction.cnmf.cnmf import load_CNMF

    cnm, _, out = pipeline_run
    est = cnm.estimates
    assert est.A.shape[1] >= 1
    loaded = load_CNMF(str(out)).estimates
    assert loaded.A.shape[1] == est.A.shape[1]
    for name in ("class_probs", "class_labels", "class_flags"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(est, name))
    assert len(loaded.SNR_comp) == est.A.shape[1]


def test_caiman_or_rule_and_our_and_rule(pipeline_run):
    from calcomp_caiman import evaluate_components_4class

    cnm, images, _ = pipeline_run
    est = cnm.estimates
    est.restore_discarded_components()
    n = est.A.shape[1]
    evaluate_components_4class(est, cnm.params, min_prob=0.0)  # accept all by class
    probs = est.class_probs[:, 0].copy()
    snr, rval = np.asarray(est.SNR_comp), np.asarray(est.r_values)

    # the AND rule: class AND CaImAn's SNR / r-value test, on CaImAn's own metrics
    quality = cnm.params.quality
    passes = (snr >= quality["min_SNR"]) | (rval >= quality["rval_thr"])
    passes &= (snr >= quality["SNR_lowest"]) & (rval >= quality["rval_lowest"])
    evaluate_components_4class(est, cnm.params, use_metrics=True, min_prob=0.0)
    np.testing.assert_array_equal(est.idx_components, np.flatnonzero(passes))

    # CaImAn's OR rule with our P(neuron) as its CNN score
    threshold = float(np.median(probs))
    est.filter_components(
        images,
        cnm.params,
        new_dict={
            "use_cnn": True,
            "min_cnn_thr": threshold,
            "cnn_lowest": 0.0,
            "min_SNR": 1e9,
            "rval_thr": 2.0,
        },  # fmt: skip
    )
    np.testing.assert_array_equal(est.cnn_preds, probs)  # CaImAn kept our score
    np.testing.assert_array_equal(np.sort(est.idx_components), np.flatnonzero(probs >= threshold))
    assert len(est.class_probs) == n


# ------------------------------------------------------------------ 5. OnACID


def test_onacid_then_four_classes(caiman, tmp_path):
    from caiman.source_extraction import cnmf
    from caiman.source_extraction.cnmf.online_cnmf import load_OnlineCNMF

    from calcomp_caiman import align_classes, evaluate_components_4class

    movie = write_movie(tmp_path / "online.tif", seed=1, frames=300)
    opts = cnmf.params.CNMFParams(
        params_dict={
            "data": {"fnames": [str(movie)], "fr": 30, "decay_time": 0.4},
            "init": {"gSig": (3, 3), "K": 2, "nb": 1},
            "online": {
                "init_batch": 100,
                "init_method": "bare",
                "sniper_mode": False,
                "epochs": 1,
                "motion_correct": False,
                "show_movie": False,
                "min_num_trial": 5,
                "save_online_movie": False,
            },  # fmt: skip
        }
    )
    onacid = cnmf.online_cnmf.OnACID(params=opts)
    onacid.fit_online()
    est = onacid.estimates
    n = est.A.shape[1]
    assert n >= 1
    evaluate_components_4class(est, onacid.params)
    table = class_by_column(est)
    keep = est.idx_components if len(est.idx_components) else [0]
    # CaImAn 1.12.1 cannot keep discarded OnACID components (its own workaround)
    est.select_components(idx_components=keep, save_discarded_components=False)
    assert_aligned(align_classes(est), table, "OnACID selection")
    path = tmp_path / "onacid.hdf5"
    onacid.save(str(path))
    loaded = align_classes(load_OnlineCNMF(str(path)).estimates)
    assert_aligned(loaded, table, "OnACID save/load")
