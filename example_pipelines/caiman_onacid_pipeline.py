"""CaImAn's online pipeline (OnACID) with our model screening new components, then four classes.

Needs CaImAn (conda-forge: ``conda install -c conda-forge caiman``, or from source; not the
PyPI package named ``caiman``) and calcomp_caiman in the same environment::

    python example_pipelines/caiman_onacid_pipeline.py /abs/path/MOVIE.tif [--gsig 4] [--fr 30]

OnACID initialises on the first ``--init-batch`` frames, then processes the movie frame by
frame. Every new candidate component is screened by our model (``use_calcomp_screening``:
CaImAn's ``sniper_mode`` with our NumPy classifier in place of CaImAn's online CNN, which
is neither loaded nor needed). After the run, every component is classified into the four
classes, the accepted ones are selected, and the result is saved in CaImAn's format with
the class probabilities, labels and flags (``estimates.class_probs`` ...). The test suite
runs this very file on a simulated movie with real CaImAn
(``tests/test_real_caiman_online.py``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from caiman.source_extraction.cnmf import online_cnmf, params

from calcomp_caiman import align_classes, evaluate_components_4class
from calcomp_caiman.integrations.onacid import use_calcomp_screening


def run_pipeline(
    movie: str | Path,
    out: str | Path,
    *,
    gsig: int = 4,
    fr: float = 30.0,
    decay_time: float = 0.4,
    init_batch: int = 200,
    K: int = 2,
    threshold: float = 0.5,
    motion_correct: bool = True,
):
    """OnACID with our screening, four classes, selection, save.

    Returns the fitted ``OnACID`` object (its estimates selected).
    """
    movie = str(Path(movie).resolve())  # CaImAn redirects bare file names to CAIMAN_DATA
    opts = params.CNMFParams(
        params_dict={
            "data": {"fnames": [movie], "fr": fr, "decay_time": decay_time},
            "init": {"gSig": (gsig, gsig), "K": K, "nb": 2},
            "preprocess": {"p": 1},
            "online": {
                "init_batch": init_batch,
                "init_method": "bare",
                "normalize": True,
                "motion_correct": motion_correct,
                "min_num_trial": 5,
                "epochs": 1,
            },
        }
    )
    onacid = online_cnmf.OnACID(params=opts)
    # new candidates: kept when P(neuron) + P(doubtful) > threshold (instead of CaImAn's
    # correlation test); the four-class evaluation below decides which to accept
    use_calcomp_screening(onacid, threshold=threshold)
    onacid.fit_online()

    # four classes for every component, as for batch CNMF results
    est = evaluate_components_4class(onacid.estimates, onacid.params)
    logging.info("%d of %d components accepted", len(est.idx_components), est.A.shape[1])
    # OnACID's init leaves discarded components CaImAn 1.12 cannot append to: don't keep them
    est.select_components(use_object=True, save_discarded_components=False)
    align_classes(est)  # our fields: one row per remaining component
    onacid.save(str(Path(out).resolve()))  # load back with load_OnlineCNMF
    return onacid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("movie", help="TIFF (or any format CaImAn reads) of one session")
    parser.add_argument("--gsig", type=int, default=4, help="half-size of a neuron, px")
    parser.add_argument("--fr", type=float, default=30.0, help="frame rate, Hz")
    parser.add_argument("--decay-time", type=float, default=0.4, help="transient decay, s")
    parser.add_argument("--init-batch", type=int, default=200, help="frames to initialise on")
    parser.add_argument(
        "--threshold", type=float, default=0.5, help="P(neuron) + P(doubtful) to add a candidate"
    )
    parser.add_argument("--no-motion-correction", action="store_true")
    parser.add_argument("--out", default="onacid_4class_results.hdf5")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    onacid = run_pipeline(
        args.movie,
        args.out,
        gsig=args.gsig,
        fr=args.fr,
        decay_time=args.decay_time,
        init_batch=args.init_batch,
        threshold=args.threshold,
        motion_correct=not args.no_motion_correction,
    )
    est = onacid.estimates
    screen = onacid.loaded_model
    print(f"screened {screen.candidates} candidates in {screen.calls} frames")
    print(f"kept {est.A.shape[1]} components")
    print("class counts:", dict(zip(*np.unique(est.class_labels, return_counts=True))))
    print(f"saved {Path(args.out).resolve()}")


if __name__ == "__main__":
    main()
