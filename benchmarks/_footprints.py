"""Simulated CNMF-like spatial footprints for the benchmarks (sparse, never densified).

Each component is an elliptical Gaussian blob with radii of ``radius`` px (CaImAn's
``gSig`` convention: the radius is 2 standard deviations), a random orientation and
amplitude, centred at a random sub-pixel position anywhere in the field of view, and
thresholded at 10 % of its peak like a CNMF footprint. Components near the border are cut
by the FOV edge, as in real data.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

__all__ = ["simulate_footprints"]

_THRESHOLD = 0.1  # pixels below this fraction of the peak are dropped
_CHUNK = 4096  # components generated at once (bounds the generator's memory)


def simulate_footprints(
    n: int,
    dims: tuple[int, int],
    *,
    radius: tuple[float, float] = (4.0, 6.0),
    seed: int = 0,
) -> scipy.sparse.csc_matrix:
    """Return ``n`` random blob footprints as a ``(dims[0] * dims[1], n)`` float32 CSC matrix.

    Pixel ``(row, col)`` is matrix row ``row + col * dims[0]`` (Fortran order, as
    ``estimates.A``). Row indices are sorted within each column. Built chunk by chunk
    straight into CSC arrays: memory is O(nnz), never O(n * prod(dims)).
    """
    n_rows, n_cols = int(dims[0]), int(dims[1])
    rng = np.random.default_rng(seed)
    half = int(np.ceil(1.5 * radius[1]))
    # stencil in Fortran order (col offset outer, row offset inner), so that the
    # pixel indices of one component come out sorted
    d_col, d_row = np.meshgrid(np.arange(-half, half + 1), np.arange(-half, half + 1))
    d_row, d_col = d_row.ravel(order="F"), d_col.ravel(order="F")

    data, indices, counts = [], [], []
    for start in range(0, n, _CHUNK):
        m = min(_CHUNK, n - start)
        centre_r = rng.uniform(0, n_rows - 1, m)
        centre_c = rng.uniform(0, n_cols - 1, m)
        radius_a = rng.uniform(*radius, m)
        radius_b = rng.uniform(*radius, m)
        angle = rng.uniform(0, np.pi, m)
        amplitude = rng.uniform(0.5, 1.5, m).astype(np.float32)

        base_r = np.round(centre_r).astype(np.int64)
        base_c = np.round(centre_c).astype(np.int64)
        rows = base_r[:, None] + d_row[None, :]
        cols = base_c[:, None] + d_col[None, :]
        dr = rows - centre_r[:, None]
        dc = cols - centre_c[:, None]
        cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
        u = (dr * cos + dc * sin) / (radius_a[:, None] / 2)
        v = (-dr * sin + dc * cos) / (radius_b[:, None] / 2)
        value = np.exp(-0.5 * (u * u + v * v)).astype(np.float32)
        keep = (value >= _THRESHOLD) & (rows >= 0) & (rows < n_rows) & (cols >= 0) & (cols < n_cols)
        data.append((value * amplitude[:, None])[keep])
        indices.append((rows + cols * n_rows)[keep].astype(np.int32))
        counts.append(keep.sum(axis=1))

    counts = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    A = scipy.sparse.csc_matrix(
        (
            np.concatenate(data) if data else np.zeros(0, np.float32),
            np.concatenate(indices) if indices else np.zeros(0, np.int32),
            indptr,
        ),
        shape=(n_rows * n_cols, n),
    )
    A.has_sorted_indices = True
    return A
