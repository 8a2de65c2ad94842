import numpy as np
import pytest
import scipy.sparse
from conftest import disk_footprints

from calcomp_caiman import estimate_gsig, extract_patches
from calcomp_caiman.evidence.patches import crop_half_width, project_footprints


def centre_of_mass(patch):
    rows, cols = np.mgrid[: patch.shape[0], : patch.shape[1]]
    total = patch.sum()
    return (rows * patch).sum() / total, (cols * patch).sum() / total


def test_shape_dtype_norm_and_centring():
    A = disk_footprints(centres=[(30, 40), (12, 60), (50, 10)])
    patches = extract_patches(scipy.sparse.csc_matrix(A), (64, 80), gSig=4)
    assert patches.shape == (3, 50, 50) and patches.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(patches, axis=(1, 2)), 1, rtol=1e-5)
    for patch in patches:
        np.testing.assert_allclose(centre_of_mass(patch), (24.5, 24.5), atol=0.3)


def test_fortran_order_is_respected():
    # a horizontal bar (along columns): in the patch it must stay horizontal
    dims = (40, 60)
    image = np.zeros(dims, np.float32)
    image[20, 15:45] = 1
    patch = extract_patches(image.reshape(-1, 1, order="F"), dims, gSig=4)[0]
    assert patch.sum(axis=0).std() < patch.sum(axis=1).std()  # mass concentrated in rows


def test_same_cell_same_patch_at_any_zoom():
    small = disk_footprints(dims=(100, 100), centres=[(50, 50)], radius=5)
    large = disk_footprints(dims=(200, 200), centres=[(100, 100)], radius=10)
    p_small = extract_patches(small, (100, 100), gSig=5)[0]
    p_large = extract_patches(large, (200, 200), gSig=10)[0]
    assert np.corrcoef(p_small.ravel(), p_large.ravel())[0, 1] > 0.97


def test_border_component_stays_centred_and_is_zero_padded():
    A = disk_footprints(dims=(64, 64), centres=[(1, 1)], radius=5)
    patch = extract_patches(A, (64, 64), gSig=4)[0]
    np.testing.assert_allclose(centre_of_mass(patch), (24.5, 24.5), atol=1.0)
    assert np.all(patch[:10, :10] == 0)  # outside the FOV: zeros


def test_fov_smaller_than_window():
    A = disk_footprints(dims=(12, 10), centres=[(6, 5)], radius=3)
    patch = extract_patches(A, (12, 10), gSig=6)[0]
    assert np.isfinite(patch).all() and np.isclose(np.linalg.norm(patch), 1, atol=1e-5)


def test_dense_csr_csc_float64_int_and_unsorted_indices_agree():
    A = disk_footprints(centres=[(30, 40), (10, 10)]).astype(np.float64)
    reference = extract_patches(A, (64, 80), gSig=4)
    csc = scipy.sparse.csc_matrix(A)
    order = np.arange(csc.nnz)[::-1]  # reverse row indices inside each column
    unsorted = csc.copy()
    for j in range(csc.shape[1]):
        lo, hi = csc.indptr[j], csc.indptr[j + 1]
        unsorted.indices[lo:hi] = csc.indices[lo:hi][::-1]
        unsorted.data[lo:hi] = csc.data[lo:hi][::-1]
    assert not unsorted.has_sorted_indices or order is None
    for variant in (csc, scipy.sparse.csr_matrix(A), unsorted, A.astype(np.int32)):
        np.testing.assert_allclose(extract_patches(variant, (64, 80), gSig=4), reference, atol=1e-6)


def test_zero_components_and_empty_footprint():
    assert extract_patches(np.zeros((64 * 80, 0)), (64, 80)).shape == (0, 50, 50)
    patches = extract_patches(np.zeros((64 * 80, 2)), (64, 80), gSig=4)
    assert np.all(patches == 0)


def test_negative_values_are_clipped():
    A = disk_footprints()
    negative = A.copy()
    negative[:5, 0] = -3.0
    np.testing.assert_allclose(
        extract_patches(negative, (64, 80), gSig=4), extract_patches(A, (64, 80), gSig=4)
    )


def test_3d_uses_max_projection():
    plane = disk_footprints(dims=(40, 50), centres=[(20, 25)], radius=5)[:, 0]
    volume = np.zeros((40 * 50, 3), np.float32)
    volume[:, 1] = plane
    volume[:, 2] = 0.5 * plane
    A3 = volume.reshape(-1, order="F")[:, None]  # pixel (r, c, z) -> r + c*d1 + z*d1*d2
    flat, dims2 = project_footprints(A3, (40, 50, 3))
    assert dims2 == (40, 50)
    np.testing.assert_allclose(flat.toarray()[:, 0], plane)
    np.testing.assert_allclose(
        extract_patches(A3, (40, 50, 3), gSig=4), extract_patches(plane[:, None], (40, 50), gSig=4)
    )


def test_gsig_estimate_and_non_integer_gsig():
    A = disk_footprints(dims=(100, 100), centres=[(30, 30), (70, 70)], radius=6)
    assert 5.0 < estimate_gsig(A, (100, 100)) < 7.0
    assert np.isfinite(extract_patches(A, (100, 100), gSig=(3.7, 4.2))).all()
    assert crop_half_width(4) == 17


@pytest.mark.parametrize(
    "A, dims, error, match",
    [
        (np.zeros((10, 1)), (4, 4), ValueError, "16"),
        (np.zeros((16, 1)), (4,), ValueError, "dims"),
        (np.full((16, 1), np.nan), (4, 4), ValueError, "NaN"),
        ("not an array", (4, 4), TypeError, "sparse"),
    ],
)
def test_errors(A, dims, error, match):
    with pytest.raises(error, match=match):
        extract_patches(A, dims)


def test_bad_gsig():
    with pytest.raises(ValueError, match="gSig"):
        extract_patches(np.ones((16, 1)), (4, 4), gSig=-1)
