"""NWB files written with pynwb: PlaneSegmentation ROIs in, columns of the same table out."""

from __future__ import annotations

import datetime
import hashlib

import h5py
import numpy as np
import pytest
from conftest import REAL_ROIS, require, write_caiman_nwb

from calcomp_caiman import CLASSES, CalcompModel, InvalidFileError
from calcomp_caiman.apps.cli import main
from calcomp_caiman.apps.one_file import classify_file
from calcomp_caiman.classify import classify_evidence
from calcomp_caiman.evidence import Evidence
from calcomp_caiman.io.nwb import is_classified_by, list_planes, read_classification, read_evidence
from calcomp_caiman.research.datasets import load_roi_archive
from calcomp_caiman.research.simulate import simulate_session

pynwb = pytest.importorskip("pynwb")
pytestmark = pytest.mark.filterwarnings("ignore:The linked table for DynamicTableRegion")
from pynwb import NWBHDF5IO, NWBFile  # noqa: E402
from pynwb.ophys import (  # noqa: E402
    Fluorescence,
    ImageSegmentation,
    OpticalChannel,
    RoiResponseSeries,
    TwoPhotonSeries,
)


@pytest.fixture(scope="module")
def model():
    return CalcompModel.load()


@pytest.fixture(scope="module")
def session():
    return simulate_session(dims=(40, 56), n_components=(5, 2, 2, 1), n_frames=30, seed=7)


def new_nwbfile():
    nwbfile = NWBFile(
        session_description="calcomp test",
        identifier="calcomp-test",
        session_start_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    )
    device = nwbfile.create_device(name="microscope")
    channel = OpticalChannel(name="green", description="GCaMP", emission_lambda=510.0)
    plane = nwbfile.create_imaging_plane(
        name="ImagingPlane", optical_channel=channel, description="L2/3", device=device,
        excitation_lambda=920.0, indicator="GCaMP6f", location="V1", imaging_rate=30.0,
    )  # fmt: skip
    return nwbfile, plane


def write_nwb(path, A, dims, *, C=None, pixel_mask=False, planes=("PlaneSegmentation",)):
    """An NWB file as CaImAn's NWB export (image_mask) or Suite2p's (pixel_mask) lays it out."""
    nwbfile, imaging_plane = new_nwbfile()
    if pixel_mask:  # the image size then comes from the movie
        nwbfile.add_acquisition(TwoPhotonSeries(
            name="TwoPhotonSeries", data=np.zeros((2, *dims), np.uint16),
            imaging_plane=imaging_plane, rate=30.0, unit="a.u."))  # fmt: skip
    module = nwbfile.create_processing_module(name="ophys", description="optical physiology")
    segmentation = ImageSegmentation()
    module.add(segmentation)
    A = A.tocsc()
    for name in planes:
        table = segmentation.create_plane_segmentation(
            name=name, description="ROIs", imaging_plane=imaging_plane
        )
        for k in range(A.shape[1]):
            column = A[:, k].toarray().ravel()
            if pixel_mask:
                rows, cols = np.unravel_index(np.flatnonzero(column), dims, order="F")
                weights = column[np.flatnonzero(column)]
                table.add_roi(pixel_mask=[(int(r), int(c), float(w)) for r, c, w in zip(rows, cols, weights)])  # fmt: skip
            else:
                table.add_roi(image_mask=column.reshape(dims, order="F"))
        if C is not None:
            region = table.create_roi_table_region(
                region=list(range(A.shape[1])), description="all"
            )
            series = RoiResponseSeries(name=f"{name}_traces", data=np.asarray(C).T, rois=region,
                                       unit="a.u.", rate=30.0)  # fmt: skip
            module.add(Fluorescence(name=f"Fluorescence_{name}", roi_response_series=series))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path


def snapshot(path) -> dict:
    """Every dataset's bytes and every attribute of an HDF5 file, by path."""
    out = {}
    with h5py.File(path, "r") as handle:

        def visit(name, obj):
            attrs = {k: np.asarray(v).tobytes() if not isinstance(v, (str, h5py.Reference))
                     else str(v) for k, v in obj.attrs.items()}  # fmt: skip
            data = None
            if isinstance(obj, h5py.Dataset):
                value = obj[()]
                data = (
                    value.tobytes()
                    if isinstance(value, np.ndarray) and value.dtype.kind != "O"
                    else str(value)
                )
            out[name] = (attrs, data)

        handle.visititems(visit)
        out["/"] = ({k: str(v) for k, v in handle.attrs.items()}, None)
    return out


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_read_image_masks_and_traces(tmp_path, session):
    path = write_nwb(tmp_path / "s.nwb", session.A, session.dims, C=session.C)
    ev = read_evidence(path)
    assert ev.dims == session.dims and abs(ev.A - session.A).max() < 1e-7
    (_, chunk), *_ = list(ev.traces.chunks(100))
    np.testing.assert_allclose(chunk["C"], session.C, rtol=1e-6)


def test_classify_in_place_adds_columns_and_keeps_everything_else(tmp_path, session, model):
    path = write_nwb(tmp_path / "s.nwb", session.A, session.dims, C=session.C)
    before = snapshot(path)
    result, fields = classify_file(path, model=model)
    assert result.format == "nwb"
    after = snapshot(path)
    table = "processing/ophys/ImageSegmentation/PlaneSegmentation"
    new = sorted(set(after) - set(before))
    assert new == [
        f"{table}/{name}"
        for name in ("class_accepted", "class_flags", "class_labels", "class_probs")
    ]
    changed = [name for name in before if before[name] != after[name]]
    assert changed == [table]  # only its colnames attribute
    assert {k for k in before[table][0] if before[table][0][k] != after[table][0][k]} == {
        "colnames"
    }
    with NWBHDF5IO(str(path), "r") as io:  # pynwb reads the new columns back
        plane = io.read().processing["ophys"]["ImageSegmentation"]["PlaneSegmentation"]
        np.testing.assert_array_equal(plane["class_probs"].data[:], fields["class_probs"])
        np.testing.assert_array_equal(plane["class_labels"].data[:], fields["class_labels"])
        accepted = np.asarray(plane["class_accepted"].data[:], dtype=bool)
        frame = plane.to_dataframe()
    np.testing.assert_array_equal(np.flatnonzero(accepted), fields["idx_components"])
    assert list(frame.columns[-4:]) == [
        "class_probs",
        "class_labels",
        "class_flags",
        "class_accepted",
    ]
    columns, provenance = read_classification(path)
    assert provenance["model_sha256"] == model.sha256 and is_classified_by(path, model.sha256)
    assert set(columns) == {"class_probs", "class_labels", "class_flags", "class_accepted"}
    assert [CLASSES[c - 1] for c in columns["class_labels"]] == [
        CLASSES[i] for i in fields["class_probs"].argmax(1)
    ]
    assert list(pynwb.validate(path=str(path))) == []  # still valid NWB


def test_classify_twice_overwrites_values(tmp_path, session, model):
    path = write_nwb(tmp_path / "s.nwb", session.A, session.dims)
    classify_file(path, model=model)
    first = snapshot(path)
    classify_file(path, model=model, accept=("neuron", "doubtful", "process"), min_prob="argmax")
    with NWBHDF5IO(str(path), "r") as io:
        plane = io.read().processing["ophys"]["ImageSegmentation"]["PlaneSegmentation"]
        assert list(plane.colnames).count("class_probs") == 1
        accepted = np.asarray(plane["class_accepted"].data[:], dtype=bool)
    labels = first["processing/ophys/ImageSegmentation/PlaneSegmentation/class_labels"][1]
    assert accepted.sum() == np.isin(np.frombuffer(labels, np.int8), (1, 2, 4)).sum()
    assert read_classification(path)[1]["accept"] == '["neuron", "doubtful", "process"]'


def test_real_rois_as_pixel_masks(tmp_path, model):
    archive = load_roi_archive(require(REAL_ROIS / "yst_part21_caiman_batch.npz"))
    path = write_nwb(tmp_path / "real.nwb", archive.A, archive.dims, pixel_mask=True)
    ev = read_evidence(path)
    assert ev.dims == archive.dims and abs(ev.A - archive.A).max() == 0  # x is the row
    reference = classify_evidence(Evidence.build(archive.A, archive.dims), model)
    np.testing.assert_array_equal(classify_evidence(ev, model), reference)


def test_several_planes_need_plane(tmp_path, session, capsys):
    path = write_nwb(tmp_path / "two.nwb", session.A, session.dims, planes=("cells", "dendrites"))
    assert list_planes(path) == [
        "ophys/ImageSegmentation/cells",
        "ophys/ImageSegmentation/dendrites",
    ]
    out = tmp_path / "out.nwb"
    assert main(["classify", str(path), "--out", str(out), "-q"]) == 1
    assert "--plane" in capsys.readouterr().err
    assert main(["classify", str(path), "--out", str(out), "--plane", "dendrites", "-q"]) == 0
    assert read_classification(out, plane="dendrites") is not None
    assert read_classification(out, plane="cells") is None
    assert main(["classify", str(path), "--out", str(out), "--plane", "axons", "-q"]) == 1
    assert "no PlaneSegmentation named 'axons'" in capsys.readouterr().err


def test_no_segmentation_and_not_nwb_untouched(tmp_path, model):
    nwbfile, _ = new_nwbfile()
    empty = tmp_path / "empty.nwb"
    with NWBHDF5IO(str(empty), "w") as io:
        io.write(nwbfile)
    plain = tmp_path / "plain.nwb"
    with h5py.File(plain, "w") as handle:
        handle["x"] = np.arange(3)
    for path, message in ((empty, "no ImageSegmentation"), (plain, "cannot be read as NWB")):
        before = digest(path)
        with pytest.raises(InvalidFileError, match=message) as err:
            classify_file(path, model=model)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
        assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.nwb", "plain.nwb"]


def test_wrong_mask_shape_untouched(tmp_path, session, model):
    path = write_nwb(tmp_path / "flat.nwb", session.A, session.dims)
    name = "processing/ophys/ImageSegmentation/PlaneSegmentation/image_mask"
    with h5py.File(path, "r+") as handle:  # a damaged file: masks flattened to (ROIs, pixels)
        attrs = dict(handle[name].attrs)
        flat = handle[name][()].reshape(session.A.shape[1], -1)
        del handle[name]
        handle[name] = flat
        handle[name].attrs.update(attrs)
    before = digest(path)
    with pytest.raises(InvalidFileError, match=r"expected \(ROIs, H, W\)") as err:
        classify_file(path, model=model, format="nwb")
    assert "\n" not in str(err.value) and digest(path) == before


def test_caiman_save_nwb_layout(tmp_path, session, model):
    rng = np.random.default_rng(0)
    yra, snr = rng.normal(size=session.C.shape), np.linspace(1, 5, session.A.shape[1])
    cn = rng.random(session.dims)
    path = write_caiman_nwb(tmp_path / "caiman.nwb", session.A, session.dims, session.C,
                            session.b, session.f, yra, snr=snr, Cn=cn)  # fmt: skip
    ev = read_evidence(path)
    n = session.A.shape[1]
    assert ev.n == n and abs(ev.A - session.A).max() < 1e-7  # C order undone, background left out
    (_, chunk), *_ = list(ev.traces.chunks(100))
    np.testing.assert_allclose(chunk["C"], session.C, rtol=1e-6)
    np.testing.assert_allclose(chunk["YrA"], yra)
    np.testing.assert_allclose(ev.SNR_comp, snr)
    np.testing.assert_array_equal(ev.Cn, cn)  # an image: not reshaped like image_mask
    assert "metrics" in ev.kinds and "image" in ev.kinds
    result, fields = classify_file(path, model=model)
    assert result.components == n
    columns, _ = read_classification(path)
    np.testing.assert_array_equal(columns["class_probs"][:n], fields["class_probs"])
    assert np.isnan(columns["class_probs"][n]).all() and columns["class_labels"][n] == 0
    assert not columns["class_accepted"][n]
    with NWBHDF5IO(str(path), "r") as io:  # CaImAn's own 'accepted' column is untouched
        plane = io.read().processing["ophys"]["ImageSegmentation"]["PlaneSegmentation"]
        assert not np.any(plane["accepted"].data[:])


def test_truncated_nwb_is_not_reported_as_locked(tmp_path):
    """h5py says "sblock" for a truncated file: that is damage, not a lock (issue 22)."""
    from calcomp_caiman.io.nwb import read_evidence

    path = tmp_path / "truncated.nwb"
    with h5py.File(path, "w") as handle:
        handle["data"] = np.arange(100_000.0)
    with open(path, "r+b") as handle:
        handle.truncate(1000)
    with pytest.raises(InvalidFileError) as caught:
        read_evidence(path)
    message = str(caught.value)
    assert "lock" not in message.replace("sblock", "") and "truncated" in message
    assert "\n" not in message
