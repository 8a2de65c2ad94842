"""Run real CaImAn (batch CNMF and OnACID) on a movie with ordinary user settings.

The settings follow CaImAn's demo scripts (``demo_pipeline.py``, ``demo_OnACID.py``): the user
gives ``gSig``, ``fr``, ``decay_time`` and an expected number of neurons per patch; everything
else is CaImAn's demo value. Motion correction is off (the simulated motion is sub-pixel to a
few pixels and rigid); CaImAn's CNN is off (``use_cnn=False``, ``sniper_mode=False``). No
component selection is done: every component, accepted or rejected by CaImAn's metrics, stays
in the saved file (``estimates.idx_components`` / ``idx_components_bad`` say which CaImAn
would keep). The correlation image is stored as ``estimates.Cn``.

CaImAn is imported inside the functions, so this module imports without it. Needs CaImAn
1.12 (``../shared/caiman/install_caiman.sh``) and ``CAIMAN_DATA`` set. Paths are made absolute
(CaImAn redirects bare file names to ``CAIMAN_DATA``). Files are written to a temporary name
in the target folder and moved into place with ``os.replace``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "cnmf_params",
    "motion_correct",
    "onacid_params",
    "quiet_caiman",
    "repack_hdf5",
    "run_cnmf",
    "run_onacid",
    "write_movie",
]


@contextlib.contextmanager
def quiet_caiman(level: int = logging.WARNING):
    """Quiet CaImAn's logger and swallow its stdout chatter inside the block."""
    caiman_logger = logging.getLogger("caiman")
    old = caiman_logger.level
    caiman_logger.setLevel(level)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        caiman_logger.setLevel(old)


def write_movie(movie: np.ndarray, path: str | Path) -> Path:
    """Write a (T, rows, cols) movie as a float32 TIFF that CaImAn reads; returns the path."""
    import tifffile

    path = Path(path).resolve()
    tifffile.imwrite(str(path), np.asarray(movie, dtype=np.float32))
    return path


def motion_correct(tif: str | Path, out: str | Path, *, max_shifts=(6, 6)):
    """Rigid motion correction as a user of a real recording runs it before CNMF/OnACID.

    CaImAn's ``MotionCorrect`` with ``pw_rigid=False``, ``border_nan='copy'`` (as for the
    shared ``real_mouse2p_*`` results); the corrected movie is written as a float32 TIFF to
    ``out`` and CaImAn's memory-mapped copy removed. Returns ``(out, shifts, seconds)`` with
    CaImAn's rigid shifts ``(T, 2)`` (the correcting shifts).
    """
    import caiman as cm
    from caiman.motion_correction import MotionCorrect

    tif, out = Path(tif).resolve(), Path(out).resolve()
    t0 = time.perf_counter()
    with quiet_caiman():
        mc = MotionCorrect(str(tif), dview=None, max_shifts=tuple(max_shifts), pw_rigid=False,
                           border_nan="copy")  # fmt: skip
        mc.motion_correct(save_movie=True)
        files = [mc.mmap_file] if isinstance(mc.mmap_file, str) else list(mc.mmap_file)
        try:
            write_movie(np.asarray(cm.load(files)), out)
        finally:
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(name)
    shifts = np.asarray(mc.shifts_rig, dtype=np.float32)
    return out, shifts, time.perf_counter() - t0


def patch_settings(gsig: int, n_per_patch: float) -> dict:
    """Patch half-size ``rf``, ``stride`` and ``K`` a user would pick for this ``gSig``.

    ``rf = 4 gSig`` (patches of about 8 neuron radii), overlap ``stride = 2 gSig``, and ``K``
    twice the expected number of neurons in a patch (users round up generously; the surplus
    becomes the junk components a classifier must reject), 4 to 15.
    """
    rf = int(4 * gsig)
    K = int(np.clip(np.ceil(2 * n_per_patch), 4, 15))
    return {"rf": rf, "stride": int(2 * gsig), "K": K}


def cnmf_params(fname: str, *, fr: float, decay_time: float, gSig, K: int, rf: int, stride: int):
    """CaImAn ``CNMFParams`` for batch CNMF, as in ``demo_pipeline.py`` (CNN off)."""
    from caiman.source_extraction.cnmf import params

    return params.CNMFParams(
        params_dict={
            "data": {"fnames": [fname], "fr": fr, "decay_time": decay_time},
            "init": {
                "gSig": tuple(int(g) for g in gSig),
                "K": int(K),
                "nb": 2,
                "method_init": "greedy_roi",
                "ssub": 1,
                "tsub": 1,
            },
            "patch": {"rf": int(rf), "stride": int(stride), "only_init": True},
            "temporal": {"p": 1},
            "merging": {"merge_thr": 0.85},
            "quality": {"min_SNR": 2.0, "rval_thr": 0.85, "use_cnn": False},
        }
    )


def onacid_params(fname: str, *, fr: float, decay_time: float, gSig, init_batch: int = 200):
    """CaImAn ``CNMFParams`` for OnACID, as in ``demo_OnACID.py`` (sniper mode off, one epoch)."""
    from caiman.source_extraction.cnmf import params

    return params.CNMFParams(
        params_dict={
            "data": {"fnames": [fname], "fr": fr, "decay_time": decay_time},
            "init": {"gSig": tuple(int(g) for g in gSig), "K": 2, "nb": 2},
            "temporal": {"p": 1},
            "quality": {"min_SNR": 1.5, "rval_thr": 0.9, "use_cnn": False},
            "online": {
                "init_batch": int(init_batch),
                "init_method": "bare",
                "normalize": True,
                "sniper_mode": False,
                "epochs": 1,
                "motion_correct": False,
                "ds_factor": 1,
                "dist_shape_update": True,
                "min_num_trial": 10,
                "show_movie": False,
                "save_online_movie": False,
            },
        }
    )


def repack_hdf5(
    source: str | Path,
    destination: str | Path,
    *,
    min_bytes: int = 1 << 16,
    float32: bool = False,
    level: int = 1,
) -> None:
    """Copy an HDF5 file, gzip-compressing (shuffled) every numeric dataset of at least
    ``min_bytes``; everything else (groups, attributes, strings, CaImAn's ``None`` markers) is
    copied as is. Lossless unless ``float32`` (float64 datasets of that size stored as float32,
    for small packaged files): readers (``load_CNMF``, ``load_OnlineCNMF``, h5py) see the same
    values. OnACID's saved state (``Ab_dense``, ``CY``, buffers) shrinks about threefold."""
    import h5py

    def copy(src, dst):
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for name, item in src.items():
            if isinstance(item, h5py.Group):
                copy(item, dst.create_group(name))
            elif item.shape and item.nbytes >= min_bytes and item.dtype.kind in "fiub":
                data = item[()]
                if float32 and data.dtype == np.float64:
                    data = data.astype(np.float32)
                new = dst.create_dataset(name, data=data, compression="gzip",
                                         compression_opts=level, shuffle=True)  # fmt: skip
                for key, value in item.attrs.items():
                    new.attrs[key] = value
            else:
                src.copy(item, dst, name=name)

    with h5py.File(source, "r") as src, h5py.File(destination, "w") as dst:
        copy(src, dst)


def _atomic_save(obj, out: Path) -> None:
    """``obj.save`` to a temporary file, repack compressed, then ``os.replace`` into ``out``."""
    temps = []
    try:
        for _ in range(2):
            fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".hdf5", dir=out.parent)
            os.close(fd)
            temps.append(tmp)
        obj.save(str(Path(temps[0]).resolve()))
        repack_hdf5(temps[0], temps[1])
        os.chmod(temps[1], 0o644)
        os.replace(temps[1], out)
    finally:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)


def correlation_image(images: np.ndarray) -> np.ndarray:
    """CaImAn's local correlation image of a (T, rows, cols) movie, NaN set to 0."""
    from caiman.summary_images import local_correlations

    Cn = local_correlations(np.asarray(images, dtype=np.float32), swap_dim=False)
    return np.nan_to_num(Cn).astype(np.float32)


def run_cnmf(
    tif: str | Path,
    out: str | Path,
    *,
    fr: float,
    decay_time: float,
    gSig,
    K: int,
    rf: int,
    stride: int,
    refit: bool = True,
    work_dir: str | Path | None = None,
):
    """Batch CNMF on a movie file: memmap, fit on patches, refit, CaImAn's metrics, ``Cn``, save.

    Parameters
    ----------
    tif : path
        Movie file CaImAn can read (TIFF).
    out : path
        ``.hdf5`` result (written with ``cnm.save``; loads with ``load_CNMF``).
    fr, decay_time, gSig, K, rf, stride
        User settings (see ``cnmf_params``).
    refit : bool
        Run ``cnm.refit`` after the patch fit, as the demo does.
    work_dir : path, optional
        Folder for the memory-mapped copy (default: the movie's folder); removed afterwards.

    Returns
    -------
    cnm : caiman CNMF object (all components kept)
    timings : dict of seconds per step
    """
    import caiman as cm
    from caiman.source_extraction.cnmf import cnmf

    tif = Path(tif).resolve()
    out = Path(out).resolve()
    work = Path(work_dir).resolve() if work_dir else tif.parent
    timings = {}
    t0 = time.perf_counter()
    with quiet_caiman():
        opts = cnmf_params(
            str(tif), fr=fr, decay_time=decay_time, gSig=gSig, K=K, rf=rf, stride=stride
        )
        memmap = cm.save_memmap([str(tif)], base_name=str(work / f"{tif.stem}_memmap_"), order="C")
        try:
            Yr, dims, T = cm.load_memmap(memmap)
            images = np.reshape(Yr.T, [T] + list(dims), order="F")
            timings["memmap"] = time.perf_counter() - t0
            cnm = cnmf.CNMF(1, params=opts, dview=None)
            cnm.fit(images)
            timings["fit"] = time.perf_counter() - t0 - sum(timings.values())
            if refit:
                cnm = cnm.refit(images, dview=None)
                timings["refit"] = time.perf_counter() - t0 - sum(timings.values())
            cnm.estimates.evaluate_components(images, cnm.params, dview=None)
            cnm.estimates.Cn = correlation_image(images)
            timings["evaluate"] = time.perf_counter() - t0 - sum(timings.values())
            del Yr, images
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(memmap)
        _atomic_save(cnm, out)
    timings["total"] = time.perf_counter() - t0
    logger.info(
        "CNMF %s: %d components in %.0f s", out.name, cnm.estimates.A.shape[1], timings["total"]
    )
    return cnm, timings


def run_onacid(
    tif: str | Path,
    out: str | Path,
    *,
    fr: float,
    decay_time: float,
    gSig,
    init_batch: int = 200,
    Cn: np.ndarray | None = None,
):
    """OnACID (``fit_online``, sniper mode off) on a movie file, ``Cn`` stored, saved.

    ``Cn`` (rows, cols) may be given (the same movie's correlation image); otherwise it is
    computed from the file. Returns ``(onacid, timings)``; all components kept.
    """
    import caiman as cm
    from caiman.source_extraction.cnmf import online_cnmf

    tif = Path(tif).resolve()
    out = Path(out).resolve()
    t0 = time.perf_counter()
    with quiet_caiman():
        opts = onacid_params(str(tif), fr=fr, decay_time=decay_time, gSig=gSig,
                             init_batch=init_batch)  # fmt: skip
        onacid = online_cnmf.OnACID(params=opts)
        onacid.fit_online()
        if Cn is None:
            Cn = correlation_image(cm.load(str(tif)))
        onacid.estimates.Cn = np.asarray(Cn, dtype=np.float32)
        _atomic_save(onacid, out)
    timings = {"total": time.perf_counter() - t0}
    logger.info(
        "OnACID %s: %d components in %.0f s",
        out.name, onacid.estimates.A.shape[1], timings["total"],
    )  # fmt: skip
    return onacid, timings
