"""Files written by the real tools, read and classified (issue 22, "Real writers").

The fixtures in ``tests/data/real_writers/`` were written once by Suite2p 1.1.0, CaImAn 1.12.1
and pynwb from one simulated movie (64 x 80 px, 300 frames; ``make_fixtures.py`` and
``README.md`` there). Also here: the evidence sanity checks (an image, trace or coefficient
unfit for its role is left out and named in the provenance, never silently used).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from calcomp_caiman import CalcompModel
from calcomp_caiman.classify import classify
from calcomp_caiman.evidence.evidence import Evidence
from calcomp_caiman.evidence.traces import Traces
from calcomp_caiman.io import suite2p
from calcomp_caiman.io.sidecar import read_record

nwb = pytest.importorskip("calcomp_caiman.io.nwb")
pytest.importorskip("pynwb")

DATA = Path(__file__).resolve().parents[1] / "data" / "real_writers"
PLANE = DATA / "suite2p" / "plane0"
PLANE_NO_OPS = DATA / "suite2p_no_ops" / "plane0"
SUITE2P_NWB = DATA / "suite2p_ophys.nwb"
CAIMAN_NWB = DATA / "caiman_cnmf.nwb"
LAB_NWB = DATA / "lab_pixel_mask.nwb"
DIMS = (64, 80)


@pytest.fixture(scope="module")
def model():
    return CalcompModel.load()


def all_traces(evidence: Evidence) -> dict[str, np.ndarray]:
    (_, chunk), *rest = list(evidence.traces.chunks(evidence.n))
    assert not rest
    return chunk


def suite2p_settings(folder: Path, name: str) -> dict:
    return np.load(folder / name, allow_pickle=True).item()


# --------------------------------------------------------------------------- Suite2p 1.x


def test_suite2p_1x_plane_folder_without_ops_npy_reads_as_with_it():
    assert not (PLANE_NO_OPS / "ops.npy").exists() and (PLANE / "ops.npy").exists()
    assert suite2p.is_suite2p_folder(PLANE_NO_OPS)
    with_ops = suite2p.read_evidence(PLANE, allow_pickle=True)
    without = suite2p.read_evidence(PLANE_NO_OPS, allow_pickle=True)
    stat = np.load(PLANE / "stat.npy", allow_pickle=True)
    assert with_ops.n == without.n == len(stat) and with_ops.dims == without.dims == DIMS
    assert abs(with_ops.A - without.A).max() == 0
    # the registered mean image (reg_outputs.npy), as Suite2p merges it into ops.npy
    reg_outputs = suite2p_settings(PLANE_NO_OPS, "reg_outputs.npy")
    np.testing.assert_array_equal(without.image, reg_outputs["meanImg"])
    np.testing.assert_array_equal(with_ops.image, without.image)
    np.testing.assert_array_equal(all_traces(with_ops)["C"], all_traces(without)["C"])


def test_suite2p_1x_neuropil_coefficient_is_read_from_its_extraction_settings():
    ops = suite2p_settings(PLANE, "ops.npy")
    assert "neucoeff" not in ops and ops["extraction"]["neuropil_coefficient"] == 1.0  # not 0.7
    F, Fneu = np.load(PLANE / "F.npy"), np.load(PLANE / "Fneu.npy")
    for folder in (PLANE, PLANE_NO_OPS):
        evidence = suite2p.read_evidence(folder, allow_pickle=True)
        np.testing.assert_allclose(all_traces(evidence)["C"], F - 1.0 * Fneu, atol=1e-3)
        assert evidence.dropped == {}


def test_suite2p_footprints_are_its_stat_pixels():
    evidence = suite2p.read_evidence(PLANE, allow_pickle=True)
    for k, roi in enumerate(np.load(PLANE / "stat.npy", allow_pickle=True)):
        column = evidence.A[:, k].tocoo()
        expected = np.sort(roi["ypix"] + roi["xpix"] * DIMS[0])
        np.testing.assert_array_equal(np.sort(column.row), expected)


def test_suite2p_nwb_export_reads_as_its_plane_folder():
    folder = suite2p.read_evidence(PLANE, allow_pickle=True)
    exported = nwb.read_evidence(SUITE2P_NWB)  # refused before: "outside the (0, 0) image"
    assert exported.dims == DIMS and exported.n == folder.n
    assert abs(exported.A - folder.A).max() == 0
    # Vcorr (Suite2p's correlation map, values far above 1) is not CaImAn's Cn
    with h5py.File(SUITE2P_NWB, "r") as handle:
        images = handle["processing/ophys/Backgrounds_0"]
        assert set(images) >= {"Vcorr", "max_proj", "meanImg"}
        assert images["Vcorr"][()].max() > 1.5
        mean_image = images["meanImg"][()]
        series = {name: handle[f"processing/ophys/{name}/plane0/data"][()].T
                  for name in ("Fluorescence", "Neuropil", "Deconvolved")}  # fmt: skip
    assert exported.Cn is None and exported.dropped == {}
    np.testing.assert_array_equal(exported.image, mean_image)  # meanImg, not max_proj
    np.testing.assert_array_equal(exported.image, folder.image)
    C = all_traces(exported)["C"]  # the Fluorescence series, not Neuropil or Deconvolved
    np.testing.assert_allclose(C, series["Fluorescence"], rtol=1e-6)
    np.testing.assert_allclose(C, np.load(PLANE / "F.npy"), rtol=1e-6)
    assert not np.allclose(C, series["Neuropil"]) and not np.allclose(C, series["Deconvolved"])


def test_suite2p_outputs_classify_alike_and_keep_suite2ps_cells(model):
    records = {name: classify(evidence, model) for name, evidence in (
        ("folder", suite2p.read_evidence(PLANE, allow_pickle=True)),
        ("no_ops", suite2p.read_evidence(PLANE_NO_OPS, allow_pickle=True)),
        ("nwb", nwb.read_evidence(SUITE2P_NWB)),
    )}  # fmt: skip
    np.testing.assert_array_equal(
        records["folder"].fields["class_probs"], records["no_ops"].fields["class_probs"]
    )
    suite2p_cells = np.flatnonzero(np.load(PLANE / "iscell.npy")[:, 0] > 0)
    for record in records.values():
        assert "evidence_dropped" not in record.provenance
        kept = np.intersect1d(record.fields["idx_components"], suite2p_cells)
        assert len(kept) >= 0.6 * len(suite2p_cells)  # every ROI was rejected when misread


# --------------------------------------------------------------------------- CaImAn, a lab


def test_caiman_save_nwb_export_reads_components_traces_and_metrics():
    with h5py.File(CAIMAN_NWB, "r") as handle:
        module = handle["processing/ophys"]
        table = module["ImageSegmentation/PlaneSegmentation"]
        rows = len(table["id"])
        C = module["Fluorescence/RoiResponseSeries/data"][()].T
        YrA = module["residuals/data"][()].T
        snr, r = table["snr"][()], table["r"][()]
        n_background = module["Fluorescence/Background_Fluorescence_Response/data"].shape[1]
        # CaImAn 1.12.1's save_NWB builds summary_images (Cn) but never adds it to the file
        assert "summary_images" not in module
    evidence = nwb.read_evidence(CAIMAN_NWB)
    assert evidence.dims == DIMS and evidence.n == len(C) == rows - n_background
    traces = all_traces(evidence)
    assert evidence.traces.names == ("C", "YrA")
    np.testing.assert_allclose(traces["C"], C, rtol=1e-6)
    np.testing.assert_allclose(traces["YrA"], YrA, rtol=1e-6)
    np.testing.assert_allclose(evidence.SNR_comp, snr[: evidence.n])
    np.testing.assert_allclose(evidence.r_values, r[: evidence.n])
    assert evidence.Cn is None and evidence.dropped == {}


def test_lab_pixel_mask_file_with_an_external_series_reads(model):
    with h5py.File(LAB_NWB, "r") as handle:
        series = handle["acquisition/TwoPhotonSeries"]
        assert series["data"].shape == (0, 0, 0)  # external: a placeholder
        assert tuple(series["dimension"][()]) == DIMS
        table = handle["processing/ophys/ImageSegmentation/PlaneSegmentation"]
        masks = table["pixel_mask"][()]
        ends = table["pixel_mask_index"][()]
    evidence = nwb.read_evidence(LAB_NWB)  # refused before: "outside the (0, 0) image"
    assert evidence.dims == DIMS and evidence.n == len(ends)
    first = evidence.A[:, 0].tocoo()
    expected = masks[: ends[0]]
    np.testing.assert_array_equal(
        np.sort(first.row), np.sort(expected["x"] + expected["y"] * DIMS[0])
    )
    assert evidence.image is not None and evidence.traces is not None
    record = classify(evidence, model)
    assert record.n == evidence.n and "evidence_dropped" not in record.provenance


# --------------------------------------------------------------------------- sanity checks


def padded_vcorr() -> np.ndarray:
    """Suite2p's Vcorr as its NWB export pads it to the field of view."""
    ops = suite2p_settings(PLANE, "ops.npy")
    image = np.zeros(DIMS, np.float32)
    (y0, y1), (x0, x1) = ops["yrange"], ops["xrange"]
    image[y0:y1, x0:x1] = ops["Vcorr"]
    return image


def test_a_cn_outside_minus_one_one_is_left_out_and_recorded(model, caplog):
    folder = suite2p.read_evidence(PLANE, allow_pickle=True)
    vcorr = padded_vcorr()
    with caplog.at_level(logging.WARNING, logger="calcomp_caiman"):  # a CLI test may quiet it
        evidence = Evidence.build(folder.A, folder.dims, Cn=vcorr, source="vcorr test")
    assert evidence.Cn is None and "image" not in evidence.kinds
    assert "outside [-1, 1]" in evidence.dropped["Cn"]
    assert f"max {vcorr.max():.4g}" in evidence.dropped["Cn"]
    assert "leaving out Cn" in caplog.text
    record = classify(evidence, model)
    assert json.loads(record.provenance["evidence_dropped"]) == evidence.dropped
    assert "image" not in json.loads(record.provenance["evidence"])
    # a real correlation image passes, its NaN pixels (flat pixels in CaImAn's Cn) set to 0
    cn = np.clip(vcorr / vcorr.max(), 0, 1)
    cn[0, 0] = np.nan
    kept = Evidence.build(folder.A, folder.dims, Cn=cn)
    assert kept.dropped == {} and kept.Cn[0, 0] == 0 and kept.Cn[5, 5] == cn[5, 5]


def test_an_all_nan_image_is_left_out_not_zeros():
    folder = suite2p.read_evidence(PLANE, allow_pickle=True)
    nan = np.full(DIMS, np.nan)
    evidence = Evidence.build(folder.A, folder.dims, Cn=nan, image=nan)
    assert evidence.Cn is None and evidence.image is None
    assert evidence.dropped == {"Cn": "all NaN/Inf", "image": "all NaN/Inf"}


def test_nan_or_inf_traces_are_left_out(model):
    folder = suite2p.read_evidence(PLANE, allow_pickle=True)
    C = np.load(PLANE / "F.npy").astype(np.float64)
    C[3, 10] = np.nan
    C[5, 0] = np.inf
    evidence = Evidence.build(folder.A, folder.dims, traces=Traces.from_arrays(C))
    assert evidence.traces is None and "traces" not in evidence.kinds
    assert evidence.dropped == {"traces": f"C has NaN/Inf in 2 of {folder.n} components"}
    record = classify(evidence, model)
    assert "traces" not in json.loads(record.provenance["evidence"])
    assert "traces" in json.loads(record.provenance["evidence_dropped"])


@pytest.mark.parametrize("value", [float("nan"), -0.5, "0.7x"])
def test_an_unfit_neuropil_coefficient_is_left_out_and_recorded(tmp_path, model, value):
    from calcomp_caiman.apps.one_file import classify_file

    folder = tmp_path / "plane0"
    shutil.copytree(PLANE_NO_OPS, folder)
    settings = suite2p_settings(folder, "settings.npy")
    settings["extraction"]["neuropil_coefficient"] = value
    np.save(folder / "settings.npy", settings, allow_pickle=True)
    evidence = suite2p.read_evidence(folder, allow_pickle=True)
    assert "neuropil not subtracted" in evidence.dropped["neucoeff"]
    np.testing.assert_allclose(all_traces(evidence)["C"], np.load(folder / "F.npy"), rtol=1e-6)
    # the record written beside Suite2p's files says so
    classify_file(folder, model=model, allow_pickle=True)
    _, provenance = read_record(folder / suite2p.RECORD_FILE)
    assert json.loads(provenance["evidence_dropped"]) == evidence.dropped
