"""Shared fixtures: data beside the project, a tiny model, disk footprints."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from calcomp_caiman import CLASSES

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CAIMAN_RESULTS = SHARED / "caiman_results"
REAL_ROIS = SHARED / "real_rois"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not available (the shared data lives beside the project)")
    return path


@pytest.fixture(scope="module")
def caiman():
    """Real CaImAn, its log quiet; skips the test where CaImAn is not installed.

    ``CAIMAN_DATA`` defaults to the environment's ``caiman_data`` folder.
    """
    os.environ.setdefault("CAIMAN_DATA", str(Path(sys.prefix) / "caiman_data"))
    try:
        import caiman
    except ImportError:
        pytest.skip("real CaImAn is not installed (see ../shared/caiman/README.md)")
    if not hasattr(caiman, "source_extraction"):  # the unrelated PyPI package 'caiman'
        pytest.skip("the 'caiman' installed is not CaImAn")
    logging.getLogger("caiman").setLevel(logging.WARNING)
    return caiman


@pytest.fixture(scope="session")
def caiman_files() -> list[Path]:
    return sorted(require(CAIMAN_RESULTS).glob("*.hdf5"))


@pytest.fixture
def caiman_copy(tmp_path):
    """Copy a shared CaImAn result file into tmp_path: ``caiman_copy("synthetic_cnmf.hdf5")``."""

    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copyfile(require(CAIMAN_RESULTS / name), target)
        return target

    return copy


@pytest.fixture(scope="session")
def tiny_model():
    """A 2-stage model with random weights (fast; not the bundled one)."""
    import keras

    from calcomp_caiman.model.folder import CalcompModel
    from calcomp_caiman.model.network import build_resnet

    keras.utils.set_random_seed(0)
    architecture = {"widths": [4, 8], "blocks": [1, 1], "dropout": 0.0}
    net = build_resnet(widths=architecture["widths"], blocks=architecture["blocks"], dropout=0.0)
    config = {"classes": list(CLASSES), "patch_size": 50, "architecture": architecture}
    return CalcompModel.from_keras(net, config=dict(config, name="tiny"))


V3_PATCH = 32
V3_FEATURES = ("log_area", "trace_snr", "rank_log_area", "has_traces", "has_image")


def v3_config(**changes) -> dict:
    """``config.json`` of a small model v3 (4 channels, 2 stages, 5 features)."""
    from calcomp_caiman.evidence.channels import CHANNELS
    from calcomp_caiman.evidence.transients import SAMPLES

    config = {
        "version": 3, "classes": list(CLASSES), "name": "random_v3", "patch_size": V3_PATCH,
        "scale_rule": "footprints", "inputs": ["channels", "profiles", "features"],
        "channels": list(CHANNELS), "feature_names": list(V3_FEATURES),
        "architecture": {"widths": [4, 8], "blocks": [1, 1], "dropout": 0.0, "channels": 4},
        "temporal": {"hidden": 5, "window": [-1.0, 4.0], "samples": SAMPLES, "peaks": 5},
    }  # fmt: skip
    return {**config, **changes}


def random_v3_net(seed: int = 0):
    """The Keras image branch of :func:`v3_config`, random weights and batch-norm statistics."""
    import keras

    from calcomp_caiman.model.network import build_resnet

    keras.utils.set_random_seed(seed)
    net = build_resnet(patch_size=V3_PATCH, widths=(4, 8), blocks=(1, 1), dropout=0.0, channels=4)
    rng = np.random.default_rng(seed)
    for layer in net.layers:  # batch norm with statistics other than 0 and 1
        if layer.name.endswith("_bn"):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([gamma * rng.uniform(0.5, 1.5, gamma.shape), beta + rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.2, mean.shape), rng.uniform(0.5, 2.0, var.shape)])  # fmt: skip
    return net


def random_perceptron(rng, inputs: int, hidden: int = 5):
    """A :class:`~calcomp_caiman.model.head.FusionHead` with random weights."""
    from calcomp_caiman.model.head import FusionHead

    return FusionHead(rng.normal(0, 1, inputs), rng.uniform(0.5, 2, inputs),
                      rng.normal(0, 0.5, (inputs, hidden)), rng.normal(0, 0.1, hidden),
                      rng.normal(0, 0.5, (hidden, 4)), rng.normal(0, 0.1, 4))  # fmt: skip


def random_v3_model(seed: int = 0):
    """A complete model v3 with random weights: image branch, temporal branch, fusion head."""
    from calcomp_caiman.evidence.transients import SAMPLES
    from calcomp_caiman.model.folder import CalcompModel

    rng = np.random.default_rng(seed + 1)
    net = random_v3_net(seed)
    weights = dict(CalcompModel.from_keras(net, config=v3_config(version=1, channels=None)).weights)
    weights.update(random_perceptron(rng, 2 * SAMPLES).to_arrays("temporal/"))
    weights.update(random_perceptron(rng, 8 + 3 + len(V3_FEATURES)).to_arrays())
    thresholds = {"temperature": 1.3, "temperature_without_traces": 0.8}
    return CalcompModel(weights, v3_config(), thresholds)


@pytest.fixture(scope="session")
def random_v3():
    """:func:`random_v3_model` (seed 0), shared by the tests of every module."""
    return random_v3_model()


def disk_footprints(dims=(64, 80), centres=((30, 40),), radius=5.0, dtype=np.float32):
    """Dense (pixels x N) Fortran-order footprints of filled disks."""
    rows, cols = np.mgrid[: dims[0], : dims[1]]
    columns = [
        ((rows - r) ** 2 + (cols - c) ** 2 <= radius**2).astype(dtype).ravel(order="F")
        for r, c in centres
    ]
    return np.stack(columns, axis=1) if columns else np.zeros((dims[0] * dims[1], 0), dtype)


def write_caiman_nwb(path, A, dims, C, b, f, YrA, *, snr=None, r=None, Cn=None):
    """An NWB file in the layout of CaImAn 1.12.1's ``Estimates.save_NWB`` (estimates.py),
    written with pynwb (CaImAn's own writer needs pynwb < 3): table description ``CNMF_ROIs``,
    ``image_mask = A[:, k].reshape(dims)`` in C order, the backgrounds ``b`` appended as rows,
    columns ``r``/``snr``/``accepted``/``rejected``, ``C`` and ``f`` as RoiResponseSeries of
    ``Fluorescence``, ``YrA`` as the TimeSeries ``residuals``, ``Cn`` as
    ``summary_images/local_correlations``, the movie as an external ``TwoPhotonSeries``
    ImageSeries (CaImAn's ``load_CNMF`` requires it)."""
    import datetime

    import scipy.sparse
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.base import TimeSeries
    from pynwb.ophys import Fluorescence, ImageSegmentation, OpticalChannel

    nwbfile = NWBFile(
        session_description="calcomp test", identifier="caiman-layout",
        session_start_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    )  # fmt: skip
    from pynwb.image import ImageSeries

    nwbfile.add_acquisition(ImageSeries(name="TwoPhotonSeries", external_file=["movie.tif"],
                                        format="external", rate=30.0, starting_frame=[0],
                                        num_samples=np.asarray(C).shape[1]))  # fmt: skip
    device = nwbfile.create_device(name="imaging_device")
    channel = OpticalChannel(
        name="OpticalChannel", description="main optical channel", emission_lambda=520.0
    )
    plane = nwbfile.create_imaging_plane(
        name="ImagingPlane", optical_channel=channel, description="plane", device=device,
        excitation_lambda=488.0, imaging_rate=30.0, indicator="OGB-1", location="brain",
    )  # fmt: skip
    module = nwbfile.create_processing_module("ophys", "contains caiman estimates")
    segmentation = ImageSegmentation()
    module.add(segmentation)
    fluorescence = Fluorescence()
    module.add(fluorescence)
    table = segmentation.create_plane_segmentation(
        name="PlaneSegmentation", description="CNMF_ROIs", imaging_plane=plane
    )
    for name, doc in (("r", "description of r values"), ("snr", "signal to noise ratio"),
                      ("accepted", "in accepted list"), ("rejected", "in rejected list")):  # fmt: skip
        table.add_column(name, doc)
    A = scipy.sparse.csc_matrix(A)
    n = A.shape[1]
    snr = np.full(n, np.nan) if snr is None else np.asarray(snr, float)
    r = np.full(n, np.nan) if r is None else np.asarray(r, float)
    for k in range(n):
        table.add_roi(image_mask=A[:, k].toarray().reshape(dims), r=r[k], snr=snr[k],
                      accepted=False, rejected=False)  # fmt: skip
    b = np.asarray(b)
    for bg in b.T:
        table.add_roi(image_mask=bg.reshape(dims), r=np.nan, snr=np.nan, accepted=False,
                      rejected=False)  # fmt: skip
    rois = table.create_roi_table_region("ROIs", region=list(range(n)))
    background = table.create_roi_table_region("Background", region=list(range(n, n + b.shape[1])))
    timestamps = np.arange(np.asarray(C).shape[1]) / 30.0
    fluorescence.create_roi_response_series(name="RoiResponseSeries", data=np.asarray(C).T,
                                            rois=rois, unit="lumens", timestamps=timestamps)  # fmt: skip
    fluorescence.create_roi_response_series(name="Background_Fluorescence_Response",
                                            data=np.asarray(f).T, rois=background, unit="lumens",
                                            timestamps=timestamps)  # fmt: skip
    module.add(TimeSeries(name="residuals", description="residuals", data=np.asarray(YrA).T,
                          timestamps=timestamps, unit="NA"))  # fmt: skip
    if Cn is not None:
        from pynwb.base import Images
        from pynwb.image import GrayscaleImage

        images = Images(name="summary_images")
        images.add_image(GrayscaleImage(name="local_correlations", data=np.asarray(Cn)))
        module.add(images)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path
