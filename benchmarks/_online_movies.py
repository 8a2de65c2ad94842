"""Simulated movies with ground truth, and OnACID settings, for the online benchmarks.

``simulated_movie`` uses ``calcomp_caiman.research.movies`` (somata, donut somata,
dendrites, axons, out-of-focus, border-cut and dim cells, neuropil, motion, photon noise)
where it is installed, and otherwise a small built-in simulator (Gaussian somata and thin
active dendrite segments on a flat background with photon and read noise). Both give the
movie, the ground-truth footprints and their class codes (1 neuron, 2 process, 3 noise,
4 doubtful, as ``calcomp_caiman.CLASSES``).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse

__all__ = ["Movie", "simulated_movie", "onacid_for", "match_components"]


@dataclass
class Movie:
    movie: np.ndarray  # (T, rows, cols) float32
    A: scipy.sparse.csc_matrix  # ground-truth footprints, Fortran pixel order
    gt_class: np.ndarray  # (K,) class codes 1-4
    gSig: int
    fr: float
    decay_time: float
    source: str


def _builtin_movie(seed: int, dims: tuple[int, int], frames: int) -> Movie:
    """Gaussian somata (gSig 3) and thin dendrite segments, spiking, with noise."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: dims[0], : dims[1]]
    gsig = 3
    footprints, classes = [], []
    centres: list[np.ndarray] = []
    n_cells = int(dims[0] * dims[1] / 400)
    while len(centres) < n_cells:
        c = rng.uniform(5, np.array(dims) - 5)
        if all(np.hypot(*(c - o)) > 9 for o in centres):
            centres.append(c)
            s = gsig * rng.uniform(0.8, 1.2, 2)
            footprints.append(
                np.exp(
                    -((rows - c[0]) ** 2) / (2 * s[0] ** 2) - (cols - c[1]) ** 2 / (2 * s[1] ** 2)
                )
            )
            classes.append(1)
    for _ in range(max(2, n_cells // 4)):  # dendrites: 1.2 px wide curved lines
        start = rng.uniform(0, np.array(dims))
        angle = rng.uniform(0, np.pi)
        t = np.linspace(0, rng.uniform(15, 30), 200)
        bend = rng.uniform(-0.03, 0.03)
        path_r = start[0] + t * np.sin(angle + bend * t)
        path_c = start[1] + t * np.cos(angle + bend * t)
        dist = np.min(np.hypot(rows[..., None] - path_r, cols[..., None] - path_c), axis=-1)
        footprints.append(np.exp(-(dist**2) / (2 * 0.6**2)))
        classes.append(2)
    F = np.stack(footprints)
    F[F < 0.02] = 0
    rates = rng.uniform(0.01, 0.05, len(F))
    spikes = rng.random((len(F), frames)) < rates[:, None]
    kernel = np.exp(-np.arange(60) / 8.0)
    traces = np.stack([np.convolve(s, kernel)[:frames] for s in spikes])
    amplitude = rng.uniform(1.5, 4.0, len(F))[:, None]
    clean = np.tensordot((amplitude * traces).T, F, axes=1) + 1.0
    movie = rng.poisson(clean * 30.0) + rng.normal(0, 3.0, clean.shape)
    A = scipy.sparse.csc_matrix(F.reshape(len(F), -1, order="F").T.astype(np.float32))
    return Movie(
        movie.astype(np.float32), A, np.array(classes, np.int8), gsig, 30.0, 0.3, "builtin"
    )


def simulated_movie(seed: int, dims=(96, 96), frames: int = 600, *, builtin: bool = False) -> Movie:
    """A seeded movie with ground truth (research simulator where installed)."""
    if not builtin:
        try:
            from calcomp_caiman.research.movies import MovieSettings, simulate_movie
        except ImportError:
            builtin = True
    if builtin:
        return _builtin_movie(seed, tuple(dims), frames)
    n_area = dims[0] * dims[1] / (128 * 128)
    settings = MovieSettings(
        name="online_benchmark",
        dims=tuple(dims),
        frames=frames,
        n_somata=(max(4, int(30 * n_area)), max(5, int(40 * n_area))),
        n_dendrites=(max(1, int(6 * n_area)), max(2, int(10 * n_area))),
        n_axons=(max(1, int(4 * n_area)), max(2, int(8 * n_area))),
        max_motion_px=0.0,  # OnACID runs without motion correction here
    )
    sim = simulate_movie(settings, seed)
    return Movie(
        sim.movie.astype(np.float32),
        scipy.sparse.csc_matrix(sim.A),
        np.asarray(sim.gt_class),
        int(round(float(np.mean(sim.gSig)))),
        float(sim.fr),
        float(sim.decay_time),
        "calcomp_caiman.research.movies",
    )


def write_tif(movie: Movie, folder: Path, name: str) -> Path:
    import tifffile

    path = (Path(folder) / f"{name}.tif").resolve()
    tifffile.imwrite(path, movie.movie)
    return path


def onacid_for(path: Path, movie: Movie, **online):
    """An OnACID object for ``path`` (bare init, no motion correction, one epoch)."""
    os.environ.setdefault("CAIMAN_DATA", str(Path(sys.prefix) / "caiman_data"))
    logging.getLogger("caiman").setLevel(logging.ERROR)
    from caiman.source_extraction.cnmf import online_cnmf, params

    settings = {
        "init_batch": 200,
        "init_method": "bare",
        "normalize": True,
        "motion_correct": False,
        "min_num_trial": 5,
        "epochs": 1,
    }
    settings.update(online)
    opts = params.CNMFParams(
        params_dict={
            "data": {"fnames": [str(path)], "fr": movie.fr, "decay_time": movie.decay_time},
            "init": {"gSig": (movie.gSig, movie.gSig), "K": 2, "nb": 1},
            "preprocess": {"p": 1},
            "online": settings,
        }
    )
    return online_cnmf.OnACID(params=opts)


def match_components(A, movie: Movie, *, min_cosine: float = 0.5) -> dict:
    """Match found footprints to the ground truth by cosine similarity.

    Returns counts: ``components``; ``neurons`` (distinct true neurons found) of
    ``true_neurons``; ``doubtful`` (distinct true doubtful cells found); ``junk``
    (components matching a process, nothing, or a true object found already).
    """
    A = scipy.sparse.csc_matrix(A, dtype=np.float64)
    truth = movie.A.astype(np.float64)
    norms = np.sqrt(np.asarray(A.multiply(A).sum(axis=0))).ravel()
    true_norms = np.sqrt(np.asarray(truth.multiply(truth).sum(axis=0))).ravel()
    cosine = (A.T @ truth).toarray() / np.maximum(norms[:, None] * true_norms[None, :], 1e-12)
    best = cosine.argmax(axis=1) if cosine.size else np.zeros(0, int)
    matched = cosine[np.arange(len(best)), best] >= min_cosine if cosine.size else best > 0
    seen: set[int] = set()
    neurons = doubtful = junk = 0
    for j in np.argsort(-cosine.max(axis=1)) if cosine.size else []:
        i = int(best[j])
        if not matched[j] or i in seen or movie.gt_class[i] in (2, 3):
            junk += 1
            continue
        seen.add(i)
        neurons += movie.gt_class[i] == 1
        doubtful += movie.gt_class[i] == 4
    return {
        "components": int(A.shape[1]),
        "neurons": int(neurons),
        "true_neurons": int(np.sum(movie.gt_class == 1)),
        "doubtful": int(doubtful),
        "junk": int(junk),
    }
