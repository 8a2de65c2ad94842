"""Every reader gives the traces' frame rate (``Evidence.frame_rate``), which model v3's
transient profiles need.

The NWB and Suite2p files are those the real writers made (``tests/data/real_writers``:
CaImAn 1.12.1's ``save_NWB``, Suite2p 1.1.0, a lab's pynwb file); the CaImAn result files
are the shared ones CaImAn itself saved.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import CAIMAN_RESULTS, require

from calcomp_caiman.evidence import Evidence
from calcomp_caiman.io import caiman_h5, nwb, suite2p
from calcomp_caiman.research.caiman_files import write_caiman_file

WRITERS = Path(__file__).resolve().parents[1] / "data" / "real_writers"


def test_caiman_files_saved_by_caiman_give_params_data_fr():
    for path in sorted(require(CAIMAN_RESULTS).glob("*.hdf5")):
        with h5py.File(path, "r") as handle:
            stored = float(handle["params/data/fr"][()])
        assert caiman_h5.read_evidence(path).frame_rate == pytest.approx(stored)


@pytest.mark.parametrize("value, expected", [(15.5, 15.5), (0.0, None), (np.nan, None)])
def test_caiman_file_frame_rate_is_checked(tmp_path, value, expected):
    A = np.zeros((100, 2))
    A[:10, 0] = A[50:60, 1] = 1
    path = write_caiman_file(tmp_path / "r.hdf5", A=A, C=np.ones((2, 30)), dims=(10, 10))
    with h5py.File(path, "r+") as handle:
        handle["params/data"].create_dataset("fr", data=value)
    assert caiman_h5.read_evidence(path).frame_rate == expected
    without = write_caiman_file(tmp_path / "none.hdf5", A=A, C=np.ones((2, 30)), dims=(10, 10))
    assert caiman_h5.read_evidence(without).frame_rate is None


def test_nwb_files_give_the_series_rate():
    for name in ("caiman_cnmf.nwb", "suite2p_ophys.nwb", "lab_pixel_mask.nwb"):
        evidence = nwb.read_evidence(WRITERS / name)
        assert evidence.frame_rate == pytest.approx(30.0), name


def test_suite2p_folders_give_ops_fs():
    options = {}
    if "allow_pickle" in inspect.signature(suite2p.read_evidence).parameters:
        options["allow_pickle"] = True  # the fixtures are ours
    for name in ("suite2p", "suite2p_no_ops"):
        evidence = suite2p.read_evidence(WRITERS / name / "plane0", **options)
        assert evidence.frame_rate == pytest.approx(30.0), name


def test_estimates_give_params_data_fr():
    class Estimates:  # the attributes Evidence.from_estimates reads
        A = np.eye(4)[:, :2]
        dims = (2, 2)

    assert Evidence.from_estimates(Estimates(), {"data": {"fr": 7.5}}).frame_rate == 7.5
    assert Evidence.from_estimates(Estimates(), {"data": {"fr": "fast"}}).frame_rate is None
    assert Evidence.from_estimates(Estimates()).frame_rate is None
