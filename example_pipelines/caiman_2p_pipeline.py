"""A standard CaImAn two-photon pipeline that ends with the four-class classifier.

Needs CaImAn (conda-forge: ``conda install -c conda-forge caiman``, or from source; not the
PyPI package named ``caiman``) and calcomp_caiman in the same environment::

    python example_pipelines/caiman_2p_pipeline.py /abs/path/MOVIE.tif [--gsig 4] [--fr 30]

Motion correction, CNMF on patches, refit on the whole field, CaImAn's trace-quality
metrics (SNR, spatial correlation; CaImAn's own CNN off), then our classification and
CaImAn's ``select_components`` (then ``align_classes``). The result file keeps each kept component's class
probabilities, labels and flags (``estimates.class_probs`` ...). The test suite runs this
very file on a simulated movie with real CaImAn (``tests/test_real_caiman.py``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import caiman as cm
import numpy as np
from caiman.motion_correction import MotionCorrect
from caiman.source_extraction.cnmf import cnmf, params

from calcomp_caiman import align_classes, evaluate_components_4class


def run_pipeline(
    movie: str | Path,
    out: str | Path,
    *,
    gsig: float = 4.0,
    fr: float = 30.0,
    decay_time: float = 0.4,
    K: int = 6,
    rf: int = 20,
    stride: int = 10,
    processes: int | None = None,
):
    """Motion correction, CNMF, refit, CaImAn's metrics, four classes, selection, save.

    Returns ``(cnm, images)``: the fitted CNMF object (its estimates selected) and the
    motion-corrected movie (T, *dims), memory-mapped.
    """
    movie = str(Path(movie).resolve())  # CaImAn redirects bare file names to CAIMAN_DATA
    opts = params.CNMFParams(
        params_dict={
            "data": {"fnames": [movie], "fr": fr, "decay_time": decay_time},
            "motion": {"pw_rigid": False, "max_shifts": (6, 6), "border_nan": "copy"},
            "init": {"gSig": (gsig, gsig), "K": K, "nb": 2, "method_init": "greedy_roi"},
            "patch": {"rf": rf, "stride": stride, "only_init": True},
            "temporal": {"p": 1},
            "merging": {"merge_thr": 0.85},
            # CaImAn's trace metrics, without CaImAn's two-class CNN: ours replaces it
            "quality": {"min_SNR": 2.0, "rval_thr": 0.85, "use_cnn": False},
        }
    )
    if processes == 1:
        dview, n_processes = None, 1
    else:
        _, dview, n_processes = cm.cluster.setup_cluster(
            backend="multiprocessing", n_processes=processes, single_thread=False
        )
    try:
        motion = MotionCorrect([movie], dview=dview, **opts.get_group("motion"))
        motion.motion_correct(save_movie=True)
        memmap = cm.save_memmap(motion.mmap_file, base_name="memmap_", order="C", dview=dview)
        Yr, dims, T = cm.load_memmap(memmap)
        images = np.reshape(Yr.T, [T] + list(dims), order="F")

        cnm = cnmf.CNMF(n_processes, params=opts, dview=dview)
        cnm.fit(images)  # fills cnm.estimates; returns None
        cnm = cnm.refit(images, dview=dview)  # a new CNMF object
        cnm.estimates.evaluate_components(images, cnm.params, dview=dview)  # SNR_comp, r_values

        # four classes; accept neurons that also pass CaImAn's SNR / r-value test
        evaluate_components_4class(cnm.estimates, cnm.params, use_metrics=True)
        est = cnm.estimates
        logging.info("%d of %d components accepted", len(est.idx_components), est.A.shape[1])
        est.select_components(use_object=True)  # CaImAn's own selection ...
        align_classes(est)  # ... and our fields brought in line with it
        cnm.save(str(Path(out).resolve()))
    finally:
        if dview is not None:
            cm.stop_server(dview=dview)
    return cnm, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("movie", help="TIFF (or any format CaImAn reads) of one session")
    parser.add_argument("--gsig", type=float, default=4.0, help="half-size of a neuron, px")
    parser.add_argument("--fr", type=float, default=30.0, help="frame rate, Hz")
    parser.add_argument("--decay-time", type=float, default=0.4, help="transient decay, s")
    parser.add_argument("--processes", type=int, default=None, help="CPU processes (1: none)")
    parser.add_argument("--out", default="caiman_4class_results.hdf5")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    cnm, _ = run_pipeline(
        args.movie,
        args.out,
        gsig=args.gsig,
        fr=args.fr,
        decay_time=args.decay_time,
        processes=args.processes,
    )
    est = cnm.estimates
    print(f"kept {est.A.shape[1]} components")
    print("class counts:", dict(zip(*np.unique(est.class_labels, return_counts=True))))
    print(f"saved {Path(args.out).resolve()}")


if __name__ == "__main__":
    main()
