"""A standard CaImAn one-photon (CNMF-E) pipeline that ends with the four-class classifier.

Needs CaImAn (conda-forge: ``conda install -c conda-forge caiman``, or from source; not the
PyPI package named ``caiman``) and calcomp_caiman in the same environment::

    python example_pipelines/caiman_cnmfe_pipeline.py /abs/path/MOVIE.tif [--gsig 3] [--fr 10]

The steps of CaImAn's own CNMF-E demo (``demos/general/demo_pipeline_cnmfE.py`` with
``params_demo_pipeline_cnmfE.json``): rigid motion correction with a high-pass filter
(``gSig_filt``), the correlation and peak-to-noise images (``correlation_pnr``), CNMF-E on
patches (``method_init='corr_pnr'``, ``center_psf=True``, ring background ``nb=0``,
``low_rank_background=None``, ``only_init=True``, ``ssub_B=2``), CaImAn's trace-quality
metrics (SNR, spatial correlation; CaImAn's CNN off, as the demo keeps it for 1p data), then
our classification, CaImAn's ``select_components`` and ``align_classes``. The result file
keeps each kept component's class probabilities, labels and flags (``estimates.class_probs``
...) and the correlation image as ``estimates.Cn``.

The classification uses the bundled one-photon model ``calcomp_v3_1p`` (CaImAn's params say
CNMF-E: ``center_psf``), fitted on CNMF-E results of simulated one-photon movies; it was
never trained or tested on a real one-photon recording. The test suite runs
this very file on a small simulated one-photon movie with real CaImAn
(``tests/test_real_caiman_cnmfe.py``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import caiman as cm
import numpy as np
from caiman.motion_correction import MotionCorrect
from caiman.source_extraction.cnmf import cnmf, params
from caiman.summary_images import correlation_pnr

from calcomp_caiman import align_classes, evaluate_components_4class


def run_pipeline(
    movie: str | Path,
    out: str | Path,
    *,
    gsig: int = 3,
    fr: float = 10.0,
    decay_time: float = 0.4,
    min_corr: float = 0.8,
    min_pnr: float = 10.0,
    rf: int = 40,
    stride: int = 20,
    processes: int | None = None,
    min_prob: float | None = None,
):
    """Motion correction, CNMF-E, CaImAn's metrics, four classes, selection, save.

    Defaults are those of ``params_demo_pipeline_cnmfE.json`` (``gSiz = 4 gSig + 1``).
    ``min_prob``: the P(neuron) a component needs to be kept (default: the model's
    ``thresholds.json``; higher is stricter).
    Returns ``(cnm, images)``: the fitted CNMF object (its estimates selected) and the
    motion-corrected movie (T, *dims), memory-mapped.
    """
    movie = str(Path(movie).resolve())  # CaImAn redirects bare file names to CAIMAN_DATA
    gsig = int(gsig)
    opts = params.CNMFParams(
        params_dict={
            "data": {"fnames": [movie], "fr": fr, "decay_time": decay_time},
            "motion": {
                "pw_rigid": False,
                "max_shifts": (5, 5),
                "gSig_filt": (gsig, gsig),
                "strides": (48, 48),
                "overlaps": (24, 24),
                "max_deviation_rigid": 3,
                "border_nan": "copy",
            },
            "init": {
                "method_init": "corr_pnr",  # CNMF-E's initialisation
                "K": None,
                "gSig": (gsig, gsig),
                "gSiz": (4 * gsig + 1, 4 * gsig + 1),
                "ssub": 1,
                "tsub": 2,
                "nb": 0,  # 0: the ring model of the background (CNMF-E)
                "min_corr": min_corr,
                "min_pnr": min_pnr,
                "normalize_init": False,
                "center_psf": True,
                "ssub_B": 2,
                "ring_size_factor": 1.4,
            },
            "preprocess": {"p": 1},
            "temporal": {"p": 1, "method_deconvolution": "oasis"},
            "spatial": {"update_background_components": True},
            "patch": {
                "rf": rf,
                "stride": stride,
                "only_init": True,
                "nb_patch": 0,
                "low_rank_background": None,
                "del_duplicates": True,
            },
            "merging": {"merge_thr": 0.7},
            # CaImAn's trace metrics, without CaImAn's two-class CNN (not for 1p data)
            "quality": {"min_SNR": 2.5, "rval_thr": 0.85, "use_cnn": False},
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
        memmap = cm.save_memmap(motion.mmap_file, base_name="memmap_", order="C", border_to_0=0)
        Yr, dims, T = cm.load_memmap(memmap)
        images = Yr.T.reshape((T,) + dims, order="F")
        opts.change_params(params_dict={"dims": dims, "border_pix": 0})
        correlation, _ = correlation_pnr(images, gSig=gsig, swap_dim=False)

        cnm = cnmf.CNMF(n_processes=n_processes, dview=dview, params=opts)
        cnm.fit(images)  # CNMF-E: fills cnm.estimates
        cnm.estimates.evaluate_components(images, cnm.params, dview=dview)  # SNR, r-values
        cnm.estimates.Cn = np.nan_to_num(correlation).astype(np.float32)

        # four classes; accept neurons that also pass CaImAn's SNR / r-value test
        evaluate_components_4class(cnm.estimates, cnm.params, use_metrics=True, min_prob=min_prob)
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
    parser.add_argument("--gsig", type=int, default=3, help="Gaussian width of a neuron, px")
    parser.add_argument("--fr", type=float, default=10.0, help="frame rate, Hz")
    parser.add_argument("--decay-time", type=float, default=0.4, help="transient decay, s")
    parser.add_argument("--min-corr", type=float, default=0.8, help="seed pixels' correlation")
    parser.add_argument("--min-pnr", type=float, default=10.0, help="seed pixels' peak/noise")
    parser.add_argument("--rf", type=int, default=40, help="half-size of a patch, px")
    parser.add_argument("--stride", type=int, default=20, help="overlap of patches, px")
    parser.add_argument("--processes", type=int, default=None, help="CPU processes (1: none)")
    parser.add_argument("--min-prob", type=float, default=None,
                        help="P(neuron) to keep a component (default: the model's)")  # fmt: skip
    parser.add_argument("--out", default="caiman_cnmfe_4class_results.hdf5")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    cnm, _ = run_pipeline(
        args.movie,
        args.out,
        gsig=args.gsig,
        fr=args.fr,
        decay_time=args.decay_time,
        min_corr=args.min_corr,
        min_pnr=args.min_pnr,
        rf=args.rf,
        stride=args.stride,
        processes=args.processes,
        min_prob=args.min_prob,
    )
    est = cnm.estimates
    print(f"kept {est.A.shape[1]} components")
    print("class counts:", dict(zip(*np.unique(est.class_labels, return_counts=True))))
    print(f"saved {Path(args.out).resolve()}")


if __name__ == "__main__":
    main()
