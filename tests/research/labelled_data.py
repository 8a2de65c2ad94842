"""Small labelled data on disk for the research tests (a helper module, not a test module).

* :func:`write_archive`: a labelled-footprint archive (``.npz``) in the ``real_rois``
  format of :func:`calcomp_caiman.research.datasets.load_roi_archive`;
* :func:`write_results_folder`: a folder laid out as ``recipes/build_caiman_sim_data.py``
  writes it. Its results are written by ``write_caiman_file`` from simulated sessions (not
  by CaImAn: ``tests/test_real_caiman_sim.py`` runs the real pipeline); the layout, split,
  rows and reports built from it are what the tests check.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.sparse

from calcomp_caiman import CLASSES
from calcomp_caiman.research.caiman_files import write_caiman_file
from calcomp_caiman.research.simulate import simulate_footprints, simulate_session

NAMES = ("non_neuron", *CLASSES)  # code -> label name (0 = non_neuron)


def write_archive(path: Path, *, per_class=3, seed=0, dataset="lab", video="v1", method="m"):
    """An archive of ``simulate_footprints(per_class, seed)``; returns its label codes."""
    A, dims, labels, _ = simulate_footprints(per_class, seed=seed)
    A = scipy.sparse.csc_matrix(A)
    arrays = {"A_data": A.data, "A_indices": A.indices, "A_indptr": A.indptr,
              "A_shape": np.array(A.shape), "dims": np.array(dims),
              "labels": np.array([NAMES[c] for c in labels])}  # fmt: skip
    named = {"dataset": dataset, "video": video, "method": method}
    arrays.update({key: np.array(value) for key, value in named.items() if value is not None})
    np.savez(path, **arrays)
    return np.asarray(labels, np.int64)


def write_results_folder(root: Path) -> Path:
    """Presets ``train_a`` (seeds 1-3) and ``heldout_b`` (seed 9, held out); CNMF results."""
    presets = {"train_a": [1, 2, 3], "heldout_b": [9]}
    root.mkdir(parents=True, exist_ok=True)
    for preset, seeds in presets.items():
        (root / preset).mkdir()
        for seed in seeds:
            session = simulate_session(n_components=(12, 4, 6, 3), n_frames=200, seed=seed)
            rng = np.random.default_rng(seed)
            residual = rng.normal(0, 0.05, session.C.shape)
            write_caiman_file(
                root / preset / f"s{seed:05d}_cnmf.hdf5", A=session.A, C=session.C,
                YrA=residual, dims=session.dims, gSig=(4, 4),
                extra_estimates={"SNR_comp": rng.random(len(session.labels)) * 5,
                                 "r_values": rng.random(len(session.labels)),
                                 "idx_components": np.arange(0, len(session.labels), 2)},
            )  # fmt: skip
            np.savez(
                root / preset / f"s{seed:05d}_labels.npz",
                cnmf_labels=session.labels,
                cnmf_caiman_accepted=np.arange(len(session.labels)) % 2 == 0,
            )
    (root / "MANIFEST.json").write_text(json.dumps({"held_out_presets": ["heldout_b"]}))
    return root
