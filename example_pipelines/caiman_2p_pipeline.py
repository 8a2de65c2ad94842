"""A standard CaImAn two-photon pipeline that ends with the four-class classifier.

Needs CaImAn (conda-forge: ``conda install -c conda-forge caiman``; not the PyPI package
named ``caiman``) and calcomp_caiman in the same environment::

    python example_pipelines/caiman_2p_pipeline.py MOVIE.tif [--gsig 4] [--fr 30]

Motion correction, CNMF on patches, refit on the whole field, CaImAn's trace-quality
metrics (SNR, spatial correlation; CaImAn's own CNN off), then our classification and
CaImAn's ``select_components``. The result file keeps every component's class
probabilities, labels and flags (``estimates.class_probs`` ...).
"""

import argparse
import logging

import caiman as cm
import numpy as np
from caiman.motion_correction import MotionCorrect
from caiman.source_extraction.cnmf import cnmf, params

from calcomp_caiman import evaluate_components_4class


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("movie", help="TIFF (or any format CaImAn reads) of one session")
    parser.add_argument("--gsig", type=float, default=4.0, help="half-size of a neuron, px")
    parser.add_argument("--fr", type=float, default=30.0, help="frame rate, Hz")
    parser.add_argument("--decay-time", type=float, default=0.4, help="transient decay, s")
    parser.add_argument("--out", default="caiman_4class_results.hdf5")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)

    opts = params.CNMFParams(
        params_dict={
            "data": {"fnames": [args.movie], "fr": args.fr, "decay_time": args.decay_time},
            "motion": {"pw_rigid": False, "max_shifts": (6, 6), "border_nan": "copy"},
            "init": {"gSig": (args.gsig, args.gsig), "K": 6, "nb": 2, "method_init": "greedy_roi"},
            "patch": {"rf": 20, "stride": 10, "only_init": True},
            "temporal": {"p": 1},
            "merging": {"merge_thr": 0.85},
            # CaImAn's trace metrics, without CaImAn's two-class CNN: ours replaces it
            "quality": {"min_SNR": 2.0, "rval_thr": 0.85, "use_cnn": False},
        }
    )
    _, dview, n_processes = cm.cluster.setup_cluster(backend="multiprocessing", single_thread=False)
    try:
        motion = MotionCorrect([args.movie], dview=dview, **opts.get_group("motion"))
        motion.motion_correct(save_movie=True)
        memmap = cm.save_memmap(motion.mmap_file, base_name="memmap_", order="C", dview=dview)
        Yr, dims, T = cm.load_memmap(memmap)
        images = np.reshape(Yr.T, [T] + list(dims), order="F")

        cnm = cnmf.CNMF(n_processes, params=opts, dview=dview).fit(images)
        cnm = cnm.refit(images, dview=dview)
        cnm.estimates.evaluate_components(images, cnm.params, dview=dview)  # SNR_comp, r_values

        # four classes; accept neurons that also pass CaImAn's SNR / r-value test
        evaluate_components_4class(cnm.estimates, cnm.params, use_metrics=True)
        est = cnm.estimates
        print(f"{len(est.idx_components)} of {est.A.shape[1]} components accepted")
        print("class counts:", dict(zip(*np.unique(est.class_labels, return_counts=True))))
        est.select_components(use_object=True)  # class_probs etc. follow the selection
        cnm.save(args.out)
        print(f"saved {args.out}")
    finally:
        cm.stop_server(dview=dview)


if __name__ == "__main__":
    main()
