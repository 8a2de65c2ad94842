"""The ground-truth labelling rule of calcomp_caiman.research.gt_labels, on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from calcomp_caiman.research.gt_labels import label_components

DIMS = (40, 48)
T = 400
NEURON, PROCESS, NOISE, DOUBTFUL = 1, 2, 3, 4


def disc(centre, radius=4.0):
    rows, cols = np.mgrid[: DIMS[0], : DIMS[1]]
    return ((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2).astype(float)


def line(row, col0, col1, width=1):
    img = np.zeros(DIMS)
    img[row : row + width, col0:col1] = 1.0
    return img


def vec(img):
    return img.ravel(order="F")


def spiking(seed):
    rng = np.random.default_rng(seed)
    spikes = rng.random(T) < 0.03
    return np.convolve(spikes, np.exp(-np.arange(40) / 8.0))[:T]


@pytest.fixture(scope="module")
def gt():
    images = [
        disc((10, 10)),  # 0 soma
        disc((10, 19)),  # 1 soma, touching 0
        line(32, 5, 40),  # 2 dendrite
        disc((25, 38), 9.0),  # 3 out of focus
        disc((28, 12)),  # 4 dim
    ]
    kinds = ("soma", "soma", "dendrite", "out_of_focus", "dim")
    return {
        "A": scipy.sparse.csc_matrix(np.stack([vec(i) for i in images], axis=1)),
        "C": np.stack([spiking(k) for k in range(len(images))]),
        "gt_kind": kinds,
    }


def label(gt, columns, traces):
    A = np.stack(columns, axis=1) if columns else np.zeros((DIMS[0] * DIMS[1], 0))
    C = np.stack(traces) if traces else np.zeros((0, T))
    return label_components(A, C, DIMS, gt)


def noisy(trace, seed, level=0.2):
    return trace + level * trace.std() * np.random.default_rng(seed).standard_normal(T)


def test_exact_soma_match_is_neuron(gt):
    out = label(gt, [vec(disc((10, 10)))], [noisy(gt["C"][0], 1)])
    assert out["labels"][0] == NEURON and out["matched"][0] == 0
    assert out["spatial"][0] > 0.99 and out["temporal"][0] > 0.9
    assert out["reason"][0].startswith("neuron")


def test_shifted_and_partial_somata_score_lower(gt):
    exact = vec(disc((10, 10)))
    shifted = vec(disc((8, 8)))
    half = vec(disc((10, 10)) * (np.arange(DIMS[1]) < 10)[None, :])
    sliver = vec(disc((10, 10)) * (np.arange(DIMS[1]) < 8)[None, :])
    trace = noisy(gt["C"][0], 2)
    out = label(gt, [exact, shifted, half, sliver], [trace] * 4)
    s = out["spatial"]
    assert s[0] > s[1] and s[0] > s[2] > s[3]
    assert out["labels"][3] in (DOUBTFUL, NOISE)
    assert out["labels"][2] == DOUBTFUL or out["duplicate_of"][2] >= 0


def test_partial_soma_alone_is_doubtful(gt):
    sliver = vec(disc((10, 10)) * (np.arange(DIMS[1]) < 9)[None, :])
    out = label(gt, [sliver], [noisy(gt["C"][0], 3)])
    assert 0.4 <= out["spatial"][0] < 0.6
    assert out["labels"][0] == DOUBTFUL and "partial" in out["reason"][0]


def test_bad_trace_on_a_soma_is_not_a_neuron(gt):
    out = label(gt, [vec(disc((10, 10)))], [np.random.default_rng(4).standard_normal(T)])
    assert out["labels"][0] == NOISE


def test_merge_of_two_somata_is_doubtful(gt):
    merged = vec(disc((10, 10)) + disc((10, 19)))
    out = label(gt, [merged], [gt["C"][0] + gt["C"][1]])
    assert out["labels"][0] == DOUBTFUL and "merge" in out["reason"][0]
    assert out["matched"][0] in (0, 1)


def test_neuropil_only_is_noise(gt):
    rows, cols = np.mgrid[: DIMS[0], : DIMS[1]]
    smooth = np.exp(-((rows - 20) ** 2 + (cols - 24) ** 2) / (2 * 15.0**2))
    slow = np.sin(np.arange(T) / 60.0) + 2
    out = label(gt, [vec(smooth)], [slow])
    assert out["labels"][0] == NOISE
    far = np.zeros(DIMS)
    far[0:3, 44:47] = 1.0  # a fragment where there is no object at all
    out = label(gt, [vec(far)], [np.random.default_rng(5).standard_normal(T)])
    assert out["labels"][0] == NOISE and out["matched"][0] == -1


def test_dendrite_piece_is_process(gt):
    piece = vec(line(32, 12, 22))
    out = label(gt, [piece], [noisy(gt["C"][2], 6)])
    assert out["labels"][0] == PROCESS and out["matched"][0] == 2
    assert out["spatial"][0] > 0.8  # local cosine (whole-field cosine: 0.53)
    out = label(gt, [piece], [np.random.default_rng(7).standard_normal(T)])
    assert out["labels"][0] == NOISE


def test_duplicates_keep_one_neuron(gt):
    a = vec(disc((10, 10)))
    b = vec(disc((10, 10), 3.5))
    out = label(gt, [b, a], [noisy(gt["C"][0], 8), noisy(gt["C"][0], 9, 0.05)])
    assert sorted(out["labels"].tolist()) == [NEURON, DOUBTFUL]
    kept = int(np.flatnonzero(out["labels"] == NEURON)[0])
    other = 1 - kept
    assert out["duplicate_of"][other] == kept and out["duplicate_of"][kept] == -1
    assert "duplicate" in out["reason"][other]


def test_doubtful_kinds_are_doubtful(gt):
    out = label(
        gt,
        [vec(disc((28, 12))), vec(disc((25, 38), 9.0))],
        [noisy(gt["C"][4], 10), noisy(gt["C"][3], 11)],
    )
    np.testing.assert_array_equal(out["labels"], [DOUBTFUL, DOUBTFUL])
    np.testing.assert_array_equal(out["matched"], [4, 3])


def test_late_onacid_component_is_still_matched(gt):
    trace = noisy(gt["C"][1], 12)
    trace[:150] = 0.0  # OnACID found it at frame 150
    out = label(gt, [vec(disc((10, 19)))], [trace])
    assert out["labels"][0] == NEURON and out["temporal"][0] > 0.9


def test_zero_components_and_empty_footprint(gt):
    out = label(gt, [], [])
    assert out["labels"].shape == (0,) and out["reason"].shape == (0,)
    out = label(gt, [np.zeros(DIMS[0] * DIMS[1])], [np.ones(T)])
    assert out["labels"][0] == NOISE and "empty" in out["reason"][0]


def test_sparse_and_dense_inputs_agree(gt):
    columns = [vec(disc((10, 10))), vec(line(32, 12, 22))]
    traces = [noisy(gt["C"][0], 13), noisy(gt["C"][2], 14)]
    dense = label(gt, columns, traces)
    sparse = label_components(
        scipy.sparse.csc_matrix(np.stack(columns, axis=1)), np.stack(traces), DIMS, gt
    )
    for key in dense:
        np.testing.assert_array_equal(dense[key], sparse[key])


def test_shape_errors(gt):
    with pytest.raises(ValueError, match="dims"):
        label_components(np.zeros((10, 1)), np.zeros((1, T)), DIMS, gt)
    with pytest.raises(ValueError, match="rows"):
        label_components(np.zeros((DIMS[0] * DIMS[1], 2)), np.zeros((1, T)), DIMS, gt)
    with pytest.raises(ValueError, match="frames"):
        label_components(np.zeros((DIMS[0] * DIMS[1], 1)), np.zeros((1, T + 1)), DIMS, gt)


def test_packaged_demo_labels_match_its_file():
    """The demo CaImAn result in calcomp_caiman/data and its ground-truth labels agree."""
    from importlib.resources import files

    import h5py

    from calcomp_caiman.io.caiman_h5 import read_estimates

    data = files("calcomp_caiman") / "data"
    path = data / "demo_caiman_sim.hdf5"
    result = read_estimates(str(path))
    with np.load(str(data / "demo_caiman_sim_labels.npz")) as saved:
        saved = dict(saved)
    with h5py.File(str(path), "r") as handle:
        C = handle["estimates/C"][()]
        Cn = handle["estimates/Cn"][()]
    n = result.A.shape[1]
    assert result.dims == (96, 96) and Cn.shape == (96, 96) and n == len(saved["cnmf_labels"])
    gt = {
        "A": scipy.sparse.csc_matrix(
            (saved["gt_A_data"], saved["gt_A_indices"], saved["gt_A_indptr"]),
            shape=tuple(saved["gt_A_shape"]),
        ),
        "C": saved["gt_C"].astype(float),
        "gt_kind": tuple(saved["gt_kind"]),
    }
    again = label_components(result.A, C, result.dims, gt)
    agree = np.mean(again["labels"] == saved["cnmf_labels"])
    assert agree >= 0.9  # gt_C is stored as float16: a borderline score may cross a threshold
    assert set(np.unique(saved["cnmf_labels"])) == {1, 2, 3, 4}
