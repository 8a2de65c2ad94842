"""Regenerate the real-writer fixtures of this folder (see README.md beside this file).

Each fixture is written by the tool itself (Suite2p, CaImAn, pynwb) from one small simulated
movie. The tools live in environments of their own, so the script runs in steps, each with the
interpreter that has the tool::

    python tests/data/real_writers/make_fixtures.py all \\
        --suite2p-python /tmp/venv-s2p/bin/python \\
        --caiman-python /tmp/venv-caiman-nwb/bin/python

``all`` runs ``movie`` and ``lab`` here (the dev environment: calcomp_caiman, tifffile, pynwb),
``suite2p`` with ``--suite2p-python`` and ``caiman`` with ``--caiman-python`` (the repository
on ``PYTHONPATH``, ``CAIMAN_DATA`` as set or the CaImAn venv's). Nothing is imported at module
level but the standard library and NumPy, so pytest's doctest collection imports it safely.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SEED = 22
START = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)  # fixed session start
NEUROPIL_COEFFICIENT = 1.0  # not Suite2p's default 0.7, so a reader that falls back is caught


def movie_settings():
    """The simulated movie: 64 x 80 px, 300 frames at 30 Hz, GCaMP6f, about 12 somata."""
    from calcomp_caiman.research.movies import TRAIN_PRESETS

    return dataclasses.replace(
        TRAIN_PRESETS["train_gcamp6f_standard"],
        name="real_writers_fixture",
        dims=(64, 80),
        frames=300,
        n_somata=(11, 13),
        n_dendrites=(2, 3),
        n_axons=(1, 2),
        n_out_of_focus=(1, 1),
        n_border_cut=(1, 2),
        n_dim=(1, 1),
        spike_rate_hz=(0.5, 2.0),
        photons_per_unit=(30.0, 40.0),
    )


def step_movie(work: Path) -> None:
    """The movie as an int16 TIFF (as a microscope writes it) and its ground truth (npz)."""
    import tifffile

    from calcomp_caiman.research.movies import simulate_movie

    settings = movie_settings()
    sim = simulate_movie(settings, seed=SEED)
    (work / "movie").mkdir(parents=True, exist_ok=True)
    movie = np.clip(np.round(sim.movie), 0, np.iinfo(np.int16).max).astype(np.int16)
    tifffile.imwrite(work / "movie" / "movie.tif", movie)
    A = sim.A.tocsc()
    np.savez(
        work / "truth.npz",
        dims=np.array(sim.dims),
        A_data=A.data, A_indices=A.indices, A_indptr=A.indptr,
        F=sim.F, gt_class=sim.gt_class, fr=sim.fr, decay_time=sim.decay_time,
        gSig=np.array(sim.gSig), mean_image=movie.mean(axis=0).astype(np.float32),
    )  # fmt: skip
    meta = {"settings": json.loads(settings.to_json()), "seed": SEED, "frames": movie.shape[0],
            "dims": list(sim.dims), "objects": len(sim.gt_kind)}  # fmt: skip
    (work / "movie.json").write_text(json.dumps(meta, indent=1))


def _truth(work: Path) -> dict:
    return dict(np.load(work / "truth.npz"))


def step_suite2p(work: Path, out: Path) -> None:
    """Suite2p twice: with ops.npy and with save_ops_orig=False; its own NWB export of the first.

    Default settings but the movie's ``fs`` and ``tau``, the CPU, a neuropil coefficient of
    :data:`NEUROPIL_COEFFICIENT` and rigid registration only (non-rigid needs a field of at
    least one 128 px block: Suite2p 1.1.0 fails on a smaller one).
    """
    from suite2p import default_db, default_settings, run_s2p
    from suite2p.io import save_nwb

    truth = _truth(work)
    for name, save_ops in (("suite2p", True), ("suite2p_no_ops", False)):
        root = work / name
        shutil.rmtree(root, ignore_errors=True)
        settings = default_settings()
        settings.update(torch_device="cpu", fs=float(truth["fr"]), tau=float(truth["decay_time"]))
        settings["extraction"]["neuropil_coefficient"] = NEUROPIL_COEFFICIENT
        settings["registration"]["nonrigid"] = False  # the 64 x 80 field is under one 128 px block
        settings["io"]["save_ops_orig"] = save_ops
        db = default_db()
        db.update(data_path=[str(work / "movie")], save_path0=str(root))
        run_s2p(db=db, settings=settings)
        plane = root / "suite2p" / "plane0"
        target = out / name / "plane0"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for path in sorted(plane.iterdir()):
            if path.is_file() and path.suffix != ".bin":  # data.bin: the registered movie
                shutil.copy2(path, target / path.name)
        if save_ops:
            save_nwb(str(root / "suite2p"))
            shutil.copy2(root / "suite2p" / "ophys.nwb", out / "suite2p_ophys.nwb")


def step_caiman(work: Path, out: Path) -> None:
    """CaImAn 1.12.1 batch CNMF (the project's user settings) and ``Estimates.save_NWB``."""
    from calcomp_caiman.research.caiman_runs import patch_settings, run_cnmf

    truth = _truth(work)
    gsig = tuple(int(g) for g in truth["gSig"])
    cnm, _ = run_cnmf(
        work / "movie" / "movie.tif", work / "caiman_cnmf.hdf5", fr=float(truth["fr"]),
        decay_time=float(truth["decay_time"]), gSig=gsig, **patch_settings(gsig[0], 2.0),
    )  # fmt: skip
    if cnm.estimates.cnn_preds is not None and len(cnm.estimates.cnn_preds) == 0:
        cnm.estimates.cnn_preds = None  # CNN off: 1.12.1's save_NWB indexes the empty list
    target = out / "caiman_cnmf.nwb"
    target.unlink(missing_ok=True)
    cnm.estimates.save_NWB(str(target), imaging_rate=float(truth["fr"]), session_start_time=START,
                           identifier="calcomp-real-writers", raw_data_file="movie.tif")  # fmt: skip


def step_lab(work: Path, out: Path) -> None:
    """A lab's own pynwb file: ``pixel_mask`` ROIs (the ground-truth footprints), an external
    TwoPhotonSeries (no data, ``dimension`` set), ``Fluorescence`` and a mean image."""
    import scipy.sparse
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.base import Images
    from pynwb.image import GrayscaleImage
    from pynwb.ophys import Fluorescence, ImageSegmentation, OpticalChannel, TwoPhotonSeries

    truth = _truth(work)
    dims = tuple(int(d) for d in truth["dims"])
    A = scipy.sparse.csc_matrix((truth["A_data"], truth["A_indices"], truth["A_indptr"]),
                                shape=(dims[0] * dims[1], len(truth["A_indptr"]) - 1))  # fmt: skip
    nwbfile = NWBFile(session_description="calcomp lab-style file", identifier="calcomp-lab",
                      session_start_time=START)  # fmt: skip
    device = nwbfile.create_device(name="Microscope")
    channel = OpticalChannel(name="Green", description="GCaMP", emission_lambda=520.0)
    plane = nwbfile.create_imaging_plane(
        name="ImagingPlane", optical_channel=channel, imaging_rate=float(truth["fr"]),
        description="layer 2/3", device=device, excitation_lambda=920.0, indicator="GCaMP6f",
        location="V1",
    )  # fmt: skip
    series = TwoPhotonSeries(name="TwoPhotonSeries", imaging_plane=plane, external_file=["movie.tif"],
                             format="external", starting_frame=[0], dimension=list(dims),
                             rate=float(truth["fr"]), num_samples=truth["F"].shape[1])  # fmt: skip
    nwbfile.add_acquisition(series)
    module = nwbfile.create_processing_module(name="ophys", description="lab segmentation")
    segmentation = ImageSegmentation()
    module.add(segmentation)
    table = segmentation.create_plane_segmentation(
        name="PlaneSegmentation", description="hand-curated ROIs", imaging_plane=plane,
        reference_images=series,
    )  # fmt: skip
    for k in range(A.shape[1]):
        column = A[:, k]
        rows, cols = np.unravel_index(column.indices, dims, order="F")
        table.add_roi(pixel_mask=[(int(r), int(c), float(w))
                                  for r, c, w in zip(rows, cols, column.data)])  # fmt: skip
    region = table.create_roi_table_region(region=list(range(A.shape[1])), description="all ROIs")
    fluorescence = Fluorescence(name="Fluorescence")
    module.add(fluorescence)
    fluorescence.create_roi_response_series(name="RoiResponseSeries",
                                            data=truth["F"].T.astype(np.float32), rois=region,
                                            unit="a.u.", rate=float(truth["fr"]))  # fmt: skip
    images = Images(name="Backgrounds")
    images.add_image(GrayscaleImage(name="mean_image", data=truth["mean_image"]))
    module.add(images)
    with NWBHDF5IO(str(out / "lab_pixel_mask.nwb"), "w") as io:
        io.write(nwbfile)


def _run(python: str, step: str, work: Path, out: Path, extra_env: dict | None = None) -> None:
    env = dict(os.environ, **(extra_env or {}))
    subprocess.run([python, str(Path(__file__).resolve()), step, "--work", str(work), "--out",
                    str(out)], check=True, env=env)  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("all", "movie", "suite2p", "caiman", "lab"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/calcomp_real_writers"))
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--suite2p-python", default="/tmp/venv-s2p/bin/python")
    parser.add_argument("--caiman-python", default="/tmp/venv-caiman-nwb/bin/python")
    args = parser.parse_args(argv)
    work, out = args.work.resolve(), args.out.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.step == "movie":
        step_movie(work)
    elif args.step == "suite2p":
        step_suite2p(work, out)
    elif args.step == "caiman":
        step_caiman(work, out)
    elif args.step == "lab":
        step_lab(work, out)
    else:
        step_movie(work)
        _run(args.suite2p_python, "suite2p", work, out)
        caiman_data = str(Path(REPO, ".venv-caiman", "caiman_data"))
        _run(args.caiman_python, "caiman", work, out,
             {"PYTHONPATH": str(REPO), "CAIMAN_DATA": os.environ.get("CAIMAN_DATA", caiman_data)})  # fmt: skip
        step_lab(work, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
