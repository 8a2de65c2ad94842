"""NWB in CaImAn's layout, checked against real CaImAn 1.12.1's own NWB reader (load_CNMF).

CaImAn's writer (``Estimates.save_NWB``) needs pynwb < 3, and the CaImAn environment of
``.ci/run`` has pynwb 4, so the file is written in its layout by ``conftest.write_caiman_nwb``
from a real CaImAn result; ``test_caiman_save_nwb_itself`` runs CaImAn's writer where it
works. Marked ``caiman``; skipped where CaImAn or pynwb is absent.
"""

from __future__ import annotations

import datetime

import numpy as np
import pytest
from conftest import CAIMAN_RESULTS, require, write_caiman_nwb

pytestmark = pytest.mark.caiman


@pytest.fixture(scope="module")
def caiman(caiman):
    """Real CaImAn (``tests/conftest.py``), here with pynwb."""
    pytest.importorskip("pynwb")
    return caiman


@pytest.fixture(scope="module")
def exported(caiman, tmp_path_factory):
    """A real CaImAn result (load_CNMF) in the NWB layout of CaImAn's save_NWB."""
    from caiman.source_extraction.cnmf.cnmf import load_CNMF

    cnm = load_CNMF(str(require(CAIMAN_RESULTS / "real_mouse2p_cnmf.hdf5").resolve()))
    est = cnm.estimates
    path = tmp_path_factory.mktemp("nwb") / "real_mouse2p.nwb"
    # no Cn: 1.12.1's load_CNMF fails on its own summary_images under pynwb 4
    write_caiman_nwb(
        path, est.A, est.dims, est.C, est.b, est.f, est.YrA, snr=est.SNR_comp, r=est.r_values
    )
    return est, path


def test_caiman_save_nwb_itself(caiman, tmp_path):
    from pynwb import NWBFile

    if not hasattr(NWBFile, "modules"):
        pytest.skip("CaImAn 1.12.1's save_NWB uses NWBFile.modules, gone from pynwb >= 3")
    from caiman.source_extraction.cnmf.cnmf import load_CNMF

    from calcomp_caiman.io.nwb import read_evidence

    est = load_CNMF(str(require(CAIMAN_RESULTS / "real_mouse2p_cnmf.hdf5").resolve())).estimates
    path = tmp_path / "saved.nwb"
    est.save_NWB(str(path), imaging_rate=30.0,
                 session_start_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc))  # fmt: skip
    assert abs(read_evidence(path).A - est.A).max() < 1e-6


def test_caiman_reads_the_layout_as_we_do(exported):
    from caiman.source_extraction.cnmf.cnmf import load_CNMF

    from calcomp_caiman.io.nwb import read_evidence

    est, path = exported
    theirs = load_CNMF(str(path)).estimates  # CaImAn's own NWB reader
    ev = read_evidence(path)
    assert ev.n == est.A.shape[1] and tuple(ev.dims) == tuple(est.dims)
    assert abs(theirs.A - est.A).max() < 1e-6  # CaImAn round-trips its layout...
    assert abs(ev.A - theirs.A).max() < 1e-6  # ...and we read the same pixels, not a transpose
    (_, chunk), *_ = list(ev.traces.chunks(ev.n))
    np.testing.assert_allclose(chunk["C"], theirs.C, rtol=1e-6)
    np.testing.assert_allclose(chunk["YrA"], theirs.YrA, rtol=1e-6)
    np.testing.assert_allclose(ev.SNR_comp, est.SNR_comp)


def test_classified_nwb_still_loads_in_caiman(exported, tmp_path):
    from caiman.source_extraction.cnmf.cnmf import load_CNMF

    from calcomp_caiman.apps.cli import main
    from calcomp_caiman.io.nwb import read_classification

    est, path = exported
    out = tmp_path / "classified.nwb"
    assert main(["classify", str(path), "--out", str(out), "-q"]) == 0
    columns, provenance = read_classification(out)
    n = est.A.shape[1]
    assert len(columns["class_labels"]) == n + est.b.shape[1]  # CaImAn's background rows
    assert set(columns["class_labels"][:n].tolist()) <= {1, 2, 3, 4}
    assert np.all(columns["class_labels"][n:] == 0) and len(provenance["model_sha256"]) == 64
    cnm = load_CNMF(str(out))  # CaImAn's reader still reads what it knows, unchanged
    assert abs(cnm.estimates.A - est.A).max() < 1e-6
    np.testing.assert_allclose(cnm.estimates.C, est.C, rtol=1e-6)
