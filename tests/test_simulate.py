import dataclasses

import numpy as np
import pytest
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st

from calcomp_caiman.research.simulate import (
    SHIFTED_SETTINGS,
    TRAIN_SETTINGS,
    Session,
    SimulationSettings,
    simulate_footprints,
    simulate_session,
)


@pytest.fixture(scope="module")
def train_set():
    return simulate_footprints(150, seed=3)


def column(A, k, dims):
    """Pixel rows, cols and values of component k (Fortran pixel order)."""
    start, stop = A.indptr[k], A.indptr[k + 1]
    idx, values = A.indices[start:stop], A.data[start:stop].astype(float)
    return idx % dims[0], idx // dims[0], values


def elongation(A, dims, k):
    rows, cols, values = column(A, k, dims)
    if values.size < 3:
        return 1.0
    eig = np.linalg.eigvalsh(np.cov(np.stack([rows, cols]), aweights=values) + 1e-3 * np.eye(2))
    return eig[1] / eig[0]


def concentration(A, dims, k, radius):
    """Fraction of a footprint's mass within ``radius`` px of its centre of mass."""
    rows, cols, values = column(A, k, dims)
    weights = values / values.sum()
    distance = np.hypot(rows - weights @ rows, cols - weights @ cols)
    return weights[distance <= radius].sum()


def is_binary(A):
    return np.array([np.all(A.data[A.indptr[k] : A.indptr[k + 1]] == 1) for k in range(A.shape[1])])


def test_shapes_dtypes_and_labels(train_set):
    A, dims, labels, gSig = train_set
    assert isinstance(A, scipy.sparse.csc_matrix) and A.dtype == np.float32
    assert isinstance(dims, tuple) and len(dims) == 2 and all(isinstance(d, int) for d in dims)
    assert A.shape == (dims[0] * dims[1], 600)
    assert labels.dtype == np.int64 and labels.shape == (600,)
    assert np.bincount(labels, minlength=5).tolist() == [0, 150, 150, 150, 150]
    assert not np.all(np.diff(labels) >= 0), "labels should be shuffled"
    lo, hi = TRAIN_SETTINGS.zoom
    assert isinstance(gSig, float)
    assert lo * 5.0 <= gSig <= hi * 5.0  # zoom * mean(soma_radius)
    assert A.has_sorted_indices


def test_values_max_and_no_empty_column(train_set):
    A = train_set[0]
    assert np.diff(A.indptr).min() >= 4
    assert A.data.min() > 0 and A.data.max() <= 1
    np.testing.assert_array_equal(A.max(axis=0).toarray().ravel(), 1.0)


def test_counts_per_class_sequence_and_zero():
    A, dims, labels, _ = simulate_footprints((3, 0, 2, 1), seed=1)
    assert np.bincount(labels, minlength=5).tolist() == [0, 3, 0, 2, 1]
    assert A.shape[1] == 6
    A, dims, labels, gSig = simulate_footprints(0, seed=1)
    assert A.shape == (dims[0] * dims[1], 0) and labels.shape == (0,) and gSig > 0


def test_fortran_order_each_component_inside_its_tile():
    # 5 components: a 2 x 3 grid of tiles, so dims are not square and a C-order or
    # transposed layout would put pixels in the wrong tiles
    A, dims, labels, gSig = simulate_footprints((2, 1, 1, 1), seed=4, fov_tile=41)
    assert dims == (2 * 41, 3 * 41)
    dense = A.toarray()
    for k in range(5):
        tile_row, tile_col = divmod(k, 3)
        image = dense[:, k].reshape(dims, order="F")
        rows, cols = np.nonzero(image)
        assert rows.min() >= tile_row * 41 and rows.max() < (tile_row + 1) * 41
        assert cols.min() >= tile_col * 41 and cols.max() < (tile_col + 1) * 41
        # same pixels as the index arithmetic r + c * dims[0]
        r, c, _ = column(A, k, dims)
        np.testing.assert_array_equal(np.sort(r + c * dims[0]), np.sort(rows + cols * dims[0]))


def test_reproducible_and_seed_dependent():
    first = simulate_footprints(5, seed=7)
    again = simulate_footprints(5, seed=7)
    other = simulate_footprints(5, seed=8)
    assert first[1] == again[1] and first[3] == again[3]
    np.testing.assert_array_equal(first[2], again[2])
    assert (first[0] != again[0]).nnz == 0
    assert first[1] != other[1] or (first[0] != other[0]).nnz > 0


def test_binary_fraction_follows_setting(train_set):
    A = train_set[0]
    assert 0.15 < is_binary(A).mean() < 0.35  # TRAIN_SETTINGS.p_binary = 0.25
    none = simulate_footprints(20, seed=2, settings=dataclasses.replace(TRAIN_SETTINGS, p_binary=0))
    assert not is_binary(none[0]).any()
    masks = simulate_footprints(
        20, seed=2, settings=dataclasses.replace(TRAIN_SETTINGS, p_binary=1)
    )
    assert is_binary(masks[0]).all()


def test_border_components_are_cut_at_the_fov_edge():
    def touching(p_border):
        A, dims, _, _ = simulate_footprints(
            25, seed=5, settings=dataclasses.replace(TRAIN_SETTINGS, p_border=p_border)
        )
        count = 0
        for k in range(A.shape[1]):
            rows, cols, _ = column(A, k, dims)
            count += bool(
                rows.min() == 0
                or cols.min() == 0
                or rows.max() == dims[0] - 1
                or cols.max() == dims[1] - 1
            )
        return count

    assert touching(0.0) == 0
    assert touching(1.0) >= 15  # 36 of the 100 tiles are on the edge


def test_processes_are_elongated_and_noise_diffuse(train_set):
    A, dims, labels, gSig = train_set
    ratio = np.array([elongation(A, dims, k) for k in range(A.shape[1])])
    assert np.median(ratio[labels == 2]) > 2 * np.median(ratio[labels == 1])
    spread = np.array([concentration(A, dims, k, gSig) for k in range(A.shape[1])])
    assert spread[labels == 3].mean() < spread[labels == 1].mean() - 0.15
    assert spread[labels == 3].mean() < spread[labels == 4].mean() < spread[labels == 1].mean()
    real_valued = ~is_binary(A)
    mean = np.asarray(A.sum(axis=0)).ravel() / np.diff(A.indptr)
    assert mean[(labels == 3) & real_valued].mean() < mean[(labels == 1) & real_valued].mean()


def test_shifted_settings_differ_from_train():
    def neuron_area(settings):
        areas, gsigs = [], []
        for seed in range(3):
            A, _, labels, gSig = simulate_footprints(30, seed=seed, settings=settings)
            areas.append(np.diff(A.indptr)[labels == 1].mean())
            gsigs.append(gSig)
        return np.mean(areas), np.mean(gsigs)

    train_area, train_gsig = neuron_area(TRAIN_SETTINGS)
    shifted_area, shifted_gsig = neuron_area(SHIFTED_SETTINGS)
    assert shifted_area < 0.75 * train_area and shifted_gsig < train_gsig
    assert SHIFTED_SETTINGS.snr[1] < TRAIN_SETTINGS.snr[1]
    assert SHIFTED_SETTINGS.zoom[1] <= TRAIN_SETTINGS.zoom[0]


@settings(max_examples=10, deadline=None)
@given(
    counts=st.lists(st.integers(0, 4), min_size=4, max_size=4),
    seed=st.integers(0, 2**31),
    shifted=st.booleans(),
)
def test_invariants_hold_for_any_counts(counts, seed, shifted):
    config = SHIFTED_SETTINGS if shifted else TRAIN_SETTINGS
    A, dims, labels, gSig = simulate_footprints(counts, seed=seed, settings=config)
    assert A.shape == (dims[0] * dims[1], sum(counts))
    assert np.bincount(labels, minlength=5)[1:].tolist() == counts
    if sum(counts):
        assert np.diff(A.indptr).min() > 0
        np.testing.assert_array_equal(A.max(axis=0).toarray().ravel(), 1.0)
        assert A.data.min() > 0


def test_input_errors():
    with pytest.raises(ValueError, match="n_per_class"):
        simulate_footprints((1, 2, 3))
    with pytest.raises(ValueError, match="n_per_class"):
        simulate_footprints(2.5)
    with pytest.raises(ValueError, match="negative"):
        simulate_footprints((1, -1, 1, 1))
    with pytest.raises(ValueError, match="fov_tile"):
        simulate_footprints(1, fov_tile=5)
    with pytest.raises(TypeError, match="SimulationSettings"):
        simulate_footprints(1, settings={"zoom": (1, 2)})
    with pytest.raises(ValueError, match="zoom"):
        SimulationSettings(zoom=(2.0, 1.0))
    with pytest.raises(ValueError, match="p_binary"):
        SimulationSettings(p_binary=1.5)
    with pytest.raises(ValueError, match="threshold"):
        SimulationSettings(threshold=(0.1, 1.0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        TRAIN_SETTINGS.p_binary = 0.5


def test_session_shapes_and_traces():
    session = simulate_session(seed=0)
    assert isinstance(session, Session)
    n = 46
    assert session.dims == (128, 128) and session.gSig == 4.0 and session.frame_rate == 30.0
    assert isinstance(session.A, scipy.sparse.csc_matrix) and session.A.dtype == np.float32
    assert session.A.shape == (128 * 128, n)
    assert np.diff(session.A.indptr).min() > 0
    np.testing.assert_allclose(session.A.max(axis=0).toarray().ravel(), 1.0, rtol=1e-6)
    assert session.C.shape == (n, 500) and session.C.dtype == np.float32
    assert session.C.min() >= 0
    assert session.b.shape == (128 * 128, 1) and session.b.dtype == np.float32
    assert session.f.shape == (1, 500) and session.f.dtype == np.float32
    assert session.b.min() > 0 and session.f.min() > 0
    assert np.bincount(session.labels, minlength=5).tolist() == [0, 30, 6, 6, 4]
    peak = session.C.max(axis=1)
    assert peak[session.labels == 1].mean() > 3 * peak[session.labels == 3].mean()


def test_session_reproducible_and_custom():
    first = simulate_session(dims=(60, 90), n_components=(4, 1, 1, 1), n_frames=40, seed=3)
    again = simulate_session(dims=(60, 90), n_components=(4, 1, 1, 1), n_frames=40, seed=3)
    assert first.A.shape == (60 * 90, 7) and first.C.shape == (7, 40)
    assert (first.A != again.A).nnz == 0
    np.testing.assert_array_equal(first.C, again.C)
    with pytest.raises(ValueError, match="n_frames"):
        simulate_session(n_frames=0)
    with pytest.raises(ValueError, match="gSig"):
        simulate_session(gSig=-1)
