"""One-photon or two-photon, from CaImAn's params (issue 23): CNMF-E's ``center_psf`` and
``method_init='corr_pnr'`` say one-photon; results without params say nothing."""

from __future__ import annotations

from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from conftest import CAIMAN_RESULTS, disk_footprints, require

from calcomp_caiman.evidence.evidence import Evidence
from calcomp_caiman.evidence.modality import detect_modality, modality_used
from calcomp_caiman.io.caiman_h5 import read_evidence


class FakeCNMFParams:
    """CaImAn's ``CNMFParams`` as far as reading goes: groups as attributes, ``get`` raises
    ``KeyError`` for a missing key (CaImAn 1.12.1)."""

    def __init__(self, **groups):
        for name, values in groups.items():
            setattr(self, name, dict(values))

    def get(self, group, key):
        if not hasattr(self, group) or key not in getattr(self, group):
            raise KeyError(f"No key {key} in group {group}")
        return getattr(self, group)[key]


# CaImAn's CNMF-E demo settings (demos/notebooks/demo_pipeline_cnmfE.ipynb) and its defaults
CNMFE_INIT = {"method_init": "corr_pnr", "center_psf": True, "ring_size_factor": 1.4,
              "nb": 0, "normalize_init": False, "gSig": (3, 3)}  # fmt: skip
CNMF_INIT = {"method_init": "greedy_roi", "center_psf": False, "ring_size_factor": 1.5,
             "nb": 2, "normalize_init": True, "gSig": (4, 4)}  # fmt: skip


@pytest.mark.parametrize("holder", [dict, lambda **groups: FakeCNMFParams(**groups)])
def test_cnmfe_params_are_one_photon_cnmf_params_two_photon(holder):
    assert detect_modality(holder(init=CNMFE_INIT)) == "1p"
    assert detect_modality(holder(init=CNMF_INIT)) == "2p"
    # either switch alone says one-photon (a file keeps center_psf, not the string)
    assert detect_modality(holder(init={"center_psf": np.True_})) == "1p"
    assert detect_modality(holder(init={"method_init": "corr_pnr", "center_psf": False})) == "1p"
    assert detect_modality(holder(init={"method_init": "greedy_roi"})) == "2p"
    assert detect_modality(holder(init={"center_psf": np.array(False)})) == "2p"


@pytest.mark.parametrize(
    "params",
    [
        None,
        {},
        {"data": {"fr": 30}},
        # what CNMF-E also sets, but two-photon users set too (nb=0) or every params has
        {"init": {"nb": 0, "ring_size_factor": 1.5}, "patch": {"low_rank_background": None}},
        {"init": {"center_psf": "NoneType", "method_init": None}},  # CaImAn's stored None
        FakeCNMFParams(data={"fr": 10}),
    ],
)
def test_params_that_do_not_say(params):
    assert detect_modality(params) is None


def test_the_mode_used_asked_detected_else_two_photon():
    assert [modality_used("auto", d) for d in ("1p", "2p", None)] == ["1p", "2p", "2p"]
    assert [modality_used(m, "1p") for m in ("1p", "2p")] == ["1p", "2p"]
    with pytest.raises(ValueError, match="modality must be one of"):
        modality_used("3p", None)


def test_evidence_from_estimates_carries_the_modality_and_checks_it():
    A = disk_footprints()
    estimates = SimpleNamespace(A=A, dims=(64, 80))
    assert Evidence.from_estimates(estimates, {"init": CNMFE_INIT}).modality == "1p"
    assert Evidence.from_estimates(estimates, FakeCNMFParams(init=CNMF_INIT)).modality == "2p"
    assert Evidence.from_estimates(estimates).modality is None
    ev = Evidence.build(A, (64, 80), modality="1p")
    assert ev.take([0]).modality == ev.without("traces").modality == "1p"
    with pytest.raises(ValueError, match="modality must be one of"):
        Evidence.build(A, (64, 80), modality="auto")  # what the data is, not a request


def test_shared_two_photon_file_is_two_photon_and_center_psf_makes_it_one_photon(tmp_path):
    source = require(CAIMAN_RESULTS / "real_mouse2p_cnmf.hdf5")
    assert read_evidence(source).modality == "2p"
    copy = tmp_path / "as_cnmfe.hdf5"
    copy.write_bytes(source.read_bytes())
    with h5py.File(copy, "r+") as handle:  # CaImAn writes CNMF-E's params like this
        handle["params/init/center_psf"][()] = True
    assert read_evidence(copy).modality == "1p"
    with h5py.File(copy, "r+") as handle:  # no params: nothing says
        del handle["params"]
    assert read_evidence(copy).modality is None
