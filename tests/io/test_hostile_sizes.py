"""Sizes declared in a file are checked before reading (issue 22, "Sizes declared in a file
are trusted").

An HDF5 dataset can declare a shape far beyond what the file stores (chunked and never
written: a few KB on disk), a ``.npy`` header or TIFF tags can state any shape. Every reader
must answer such a file with one line (:class:`InvalidFileError` naming the file) and stay
within memory: the fuzz below runs the readers and ``classify_file`` in a child process on
files declaring random huge sizes and measures its peak RSS (``resource.getrusage``).
"""

from __future__ import annotations

import json
import logging
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from calcomp_caiman import InvalidFileError
from calcomp_caiman.io import caiman_h5, limits, masks

DIMS = (16, 20)
N = 3
FRAMES = 50
RSS_LIMIT_KB = 1 << 20  # 1 GiB


def write_caiman(path: Path, declare: dict[str, tuple[int, ...]] | None = None) -> Path:
    """A small CaImAn-layout result file; each field in ``declare`` is instead a chunked
    dataset of that shape that stores nothing (what a forged or damaged file looks like)."""
    declare = declare or {}
    rng = np.random.default_rng(0)
    A = np.zeros((DIMS[0] * DIMS[1], N))
    for k in range(N):
        A[k * 40 : k * 40 + 30, k] = rng.random(30) + 0.5
    parts = {"data": A[A > 0], "indices": np.nonzero(A.T)[1], "shape": np.array(A.shape),
             "indptr": np.concatenate([[0], np.cumsum((A > 0).sum(axis=0))])}  # fmt: skip
    fields = {
        "dims": np.array(DIMS),
        "C": rng.random((N, FRAMES)),
        "YrA": rng.random((N, FRAMES)),
        "Cn": rng.random(DIMS) * 0.5,
        "SNR_comp": np.full(N, 3.0),
        "r_values": np.full(N, 0.9),
        "idx_components": np.arange(N),
        "cnn_preds": np.full(N, 0.5),
    }
    with h5py.File(path, "w") as handle:
        estimates = handle.create_group("estimates")
        group = estimates.create_group("A")
        for name, value in parts.items():
            if f"A/{name}" in declare:
                shape = declare[f"A/{name}"]
                group.create_dataset(name, shape=shape, dtype="f8", chunks=(1,) * len(shape))
            else:
                group[name] = value
        for name, value in fields.items():
            if name in declare:
                shape = declare[name]
                estimates.create_dataset(name, shape=shape, dtype="f8", chunks=(1,) * len(shape))
            else:
                estimates[name] = value
        handle["params/init/gSig"] = np.array([3, 3])
    return path


def dims_file(path: Path, dims: tuple[int, int]) -> Path:
    """Consistent but impossible: A declares prod(dims) pixel rows and dims says so too."""
    write_caiman(path)
    with h5py.File(path, "r+") as handle:
        handle["estimates/A/shape"][...] = [dims[0] * dims[1], N]
        del handle["estimates/dims"]
        handle["estimates/dims"] = np.array(dims)
    return path


def forged_tiff(path: Path, height: int, width: int) -> Path:
    """A 16 x 16 zlib TIFF whose tags are rewritten to declare ``height`` x ``width``."""
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(path, np.zeros((16, 16), np.uint8), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        offsets = {name: tags[name].valueoffset
                   for name in ("ImageWidth", "ImageLength", "RowsPerStrip")}  # fmt: skip
    with open(path, "r+b") as handle:
        for name, value in (("ImageWidth", width), ("ImageLength", height),
                            ("RowsPerStrip", height)):  # fmt: skip
            handle.seek(offsets[name])
            handle.write(struct.pack("<I", value))
    return path


def forged_npy(path: Path, shape: tuple[int, ...]) -> Path:
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": "<f8", "fortran_order": False, "shape": shape}
        )
        handle.write(bytes(1024))
    return path


def one_line_error(call, path: Path) -> str:
    with pytest.raises(InvalidFileError) as caught:
        call()
    text = str(caught.value)
    assert "\n" not in text and text.startswith(str(path))
    return text


# --------------------------------------------------------------------------- each case


def test_declared_traces_far_beyond_the_file_are_refused(tmp_path):
    path = write_caiman(tmp_path / "c.hdf5", {"C": (N, 4_000_000_000)})
    assert path.stat().st_size < 64_000
    text = one_line_error(lambda: caiman_h5.read_evidence(path), path)
    assert "estimates/C declares shape (3, 4000000000)" in text and "stores 0 B" in text


@pytest.mark.parametrize("part", ["A/data", "A/indices", "A/indptr"])
def test_declared_footprint_parts_are_refused(tmp_path, part):
    path = write_caiman(tmp_path / "a.hdf5", {part: (2_000_000_000,)})
    text = one_line_error(lambda: caiman_h5.read_estimates(path), path)
    assert f"estimates/{part} declares" in text


def test_huge_dims_are_one_line_not_bad_alloc(tmp_path):
    path = dims_file(tmp_path / "dims.hdf5", (200_000, 200_000))
    text = one_line_error(lambda: caiman_h5.read_evidence(path), path)
    assert "40000000000 pixels" in text


def test_optional_fields_are_read_only_when_used(tmp_path):
    path = write_caiman(tmp_path / "idx.hdf5", {"idx_components": (3_000_000_000,)})
    evidence = caiman_h5.read_evidence(path)  # classifying never reads idx_components
    assert evidence.n == N and evidence.traces is not None
    one_line_error(lambda: caiman_h5.read_estimates(path), path)  # reading it is refused


def test_a_declared_cn_beyond_the_file_is_left_out(tmp_path, caplog):
    path = write_caiman(tmp_path / "cn.hdf5", {"Cn": (100_000, 100_000)})
    with caplog.at_level(logging.WARNING, logger="calcomp_caiman"):  # a CLI test may quiet it
        evidence = caiman_h5.read_evidence(path)  # an unreadable optional image: left out
    assert evidence.Cn is None and evidence.traces is not None
    assert "estimates/Cn declares shape (100000, 100000)" in caplog.text


def test_a_tiff_declaring_gigabytes_is_refused(tmp_path):
    path = forged_tiff(tmp_path / "masks.tif", 100_000, 100_000)
    assert path.stat().st_size < 4096
    text = one_line_error(lambda: masks.read_masks(path), path)
    assert "the image declares shape (100000, 100000)" in text


def test_a_npy_header_declaring_more_than_the_file_is_refused(tmp_path):
    path = forged_npy(tmp_path / "masks.npy", (100_000, 100_000))
    one_line_error(lambda: masks.read_masks(path), path)


def test_a_real_file_passes(tmp_path):
    evidence = caiman_h5.read_evidence(write_caiman(tmp_path / "ok.hdf5"))
    assert evidence.n == N and evidence.Cn is not None and evidence.traces is not None


def test_limits_say_how_much():
    limits.check_declared("f", "x", (1000, 1000), 8, stored=8_000_000)
    with pytest.raises(InvalidFileError, match="to read at once"):
        limits.check_declared("f", "x", (8, 1 << 30), 8, stored=1 << 36)
    limits.check_declared("f", "x", (1 << 20, 1 << 10), 8, stored=1 << 33, row_axis=0)


# --------------------------------------------------------------------------- NWB


def nwb_file(path: Path, *, dimension=None, traces_shape=None, mask_shape=None) -> Path:
    """A lab-style pixel_mask file (or an image_mask one when ``mask_shape``), then forged."""
    pytest.importorskip("pynwb")
    import datetime

    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ophys import Fluorescence, ImageSegmentation, OpticalChannel, TwoPhotonSeries

    nwbfile = NWBFile(session_description="forged", identifier="forged",
                      session_start_time=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc))  # fmt: skip
    device = nwbfile.create_device(name="Microscope")
    channel = OpticalChannel(name="Green", description="green", emission_lambda=520.0)
    plane = nwbfile.create_imaging_plane(
        name="ImagingPlane", optical_channel=channel, imaging_rate=30.0, description="p",
        device=device, excitation_lambda=920.0, indicator="GCaMP6f", location="V1",
    )  # fmt: skip
    nwbfile.add_acquisition(TwoPhotonSeries(
        name="TwoPhotonSeries", imaging_plane=plane, external_file=["movie.tif"],
        format="external", starting_frame=[0], dimension=list(DIMS), rate=30.0,
        num_samples=FRAMES,
    ))  # fmt: skip
    module = nwbfile.create_processing_module(name="ophys", description="ophys")
    segmentation = ImageSegmentation()
    module.add(segmentation)
    table = segmentation.create_plane_segmentation(name="PlaneSegmentation", description="ROIs",
                                                   imaging_plane=plane)  # fmt: skip
    for k in range(N):
        if mask_shape is None:
            table.add_roi(
                pixel_mask=[(2 + 4 * k + i, 3 + j, 1.0) for i in range(3) for j in range(3)]
            )
        else:
            image = np.zeros(DIMS)
            image[2 + 4 * k : 5 + 4 * k, 3:6] = 1
            table.add_roi(image_mask=image)
    region = table.create_roi_table_region(region=list(range(N)), description="all")
    fluorescence = Fluorescence(name="Fluorescence")
    module.add(fluorescence)
    fluorescence.create_roi_response_series(name="RoiResponseSeries", rois=region, unit="a.u.",
                                            data=np.random.default_rng(0).random((FRAMES, N)),
                                            rate=30.0)  # fmt: skip
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    with h5py.File(path, "r+") as handle:
        forged = {"acquisition/TwoPhotonSeries/dimension": dimension,
                  "processing/ophys/Fluorescence/RoiResponseSeries/data": traces_shape,
                  "processing/ophys/ImageSegmentation/PlaneSegmentation/image_mask": mask_shape}  # fmt: skip
        for name, value in forged.items():
            if value is None:
                continue
            attrs = dict(handle[name].attrs)
            del handle[name]
            if name.endswith("dimension"):
                handle[name] = np.array(value)
            else:
                handle.create_dataset(name, shape=value, dtype="f8", chunks=(1,) * len(value))
            handle[name].attrs.update(attrs)
    return path


def test_nwb_declared_sizes_are_refused(tmp_path):
    nwb = pytest.importorskip("calcomp_caiman.io.nwb")
    assert nwb.read_evidence(nwb_file(tmp_path / "ok.nwb")).n == N
    path = nwb_file(tmp_path / "dimension.nwb", dimension=[1_000_000, 1_000_000])
    assert "1000000000000 pixels" in one_line_error(lambda: nwb.read_evidence(path), path)
    path = nwb_file(tmp_path / "traces.nwb", traces_shape=(4_000_000_000, N))
    assert "traces of RoiResponseSeries" in one_line_error(lambda: nwb.read_evidence(path), path)
    path = nwb_file(tmp_path / "masks.nwb", mask_shape=(N, 100_000, 100_000))
    one_line_error(lambda: nwb.read_evidence(path), path)


# --------------------------------------------------------------------------- the fuzz

_CHILD = textwrap.dedent(
    """
    import json, logging, resource, sys, warnings
    from calcomp_caiman import CalcompModel, InvalidFileError
    from calcomp_caiman.apps.batch import classify_file
    from calcomp_caiman.io import caiman_h5, masks
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    model = CalcompModel.load()
    outcomes = []
    for path in json.loads(sys.argv[1]):
        for step in ("read_estimates", "classify_file") if path.endswith(".hdf5") else ("read_masks",):
            try:
                if step == "read_estimates":
                    caiman_h5.read_estimates(path)
                elif step == "classify_file":
                    classify_file(path, model=model, out_path=path + ".out.hdf5", overwrite=True)
                else:
                    masks.read_masks(path)
                outcomes.append([path, step, "ok", ""])
            except InvalidFileError as err:
                outcomes.append([path, step, "InvalidFileError", str(err)])
            except BaseException as err:
                outcomes.append([path, step, type(err).__name__, str(err)])
    # this process's own peak (VmHWM): ru_maxrss carries over the parent's across fork + exec
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
    peak = int(status["VmHWM"].split()[0]) if "VmHWM" in status else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"outcomes": outcomes, "peak_kb": peak}))
    """
)

_FUZZ_FIELDS = ("C", "YrA", "Cn", "A/data", "A/indices", "A/indptr", "SNR_comp", "r_values",
                "idx_components", "cnn_preds", "dims")  # fmt: skip
_REFUSED = {
    # what each step reads, so must refuse; it may leave the others unread (YrA of another
    # length than C and a Cn that cannot be read are left out with a warning)
    "read_estimates": ("A/data", "A/indices", "A/indptr", "SNR_comp", "r_values",
                       "idx_components", "cnn_preds", "dims"),
    "classify_file": ("C", "A/data", "A/indices", "A/indptr", "SNR_comp", "r_values", "dims"),
    "read_masks": ("mask",),
}  # fmt: skip


def fuzz_files(folder: Path, seed: int = 22, count: int = 24) -> tuple[list[Path], dict]:
    """Files that each declare one random huge size (10^8 to 10^12 values)."""
    rng = np.random.default_rng(seed)
    files, fields = [], {}
    for i in range(count):
        field = _FUZZ_FIELDS[i % len(_FUZZ_FIELDS)]
        values = int(10 ** rng.uniform(8, 12))
        path = folder / f"fuzz_{i:02d}.hdf5"
        fields[path.name] = field
        if field == "dims":
            side = int(np.sqrt(values))
            files.append(dims_file(path, (side, side + int(rng.integers(0, 7)))))
        elif field in ("C", "YrA"):
            files.append(write_caiman(path, {field: (N, values // N)}))
        elif field == "Cn":
            side = int(np.sqrt(values))
            files.append(write_caiman(path, {field: (side, side)}))
        else:
            files.append(write_caiman(path, {field: (values,)}))
    side = int(10 ** rng.uniform(4.5, 5.5))
    files.append(forged_tiff(folder / "fuzz_mask.tif", side, side + 3))
    files.append(forged_npy(folder / "fuzz_mask.npy", (side, side)))
    fields.update({"fuzz_mask.tif": "mask", "fuzz_mask.npy": "mask"})
    return files, fields


@pytest.mark.slow
def test_fuzz_of_declared_sizes_stays_under_1_gb_with_one_line_errors(tmp_path):
    files, fields = fuzz_files(tmp_path)
    assert max(path.stat().st_size for path in files) < 64_000
    run = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps([str(path) for path in files])],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["peak_kb"] < RSS_LIMIT_KB, report["peak_kb"]
    assert len(report["outcomes"]) == 2 * (len(files) - 2) + 2
    for path, step, outcome, message in report["outcomes"]:
        assert outcome in ("ok", "InvalidFileError"), (path, step, outcome, message)
        if outcome == "InvalidFileError":
            assert "\n" not in message and message.startswith(path), message
        if fields[Path(path).name] in _REFUSED[step]:
            assert outcome == "InvalidFileError", (path, step, message)
