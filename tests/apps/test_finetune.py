"""calcomp_caiman.apps.finetune: labels from CaImAn's manual curation; the v1/v2/v3 dispatch."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from calcomp_caiman.apps.finetune import curation_table, finetune
from calcomp_caiman.errors import CalcompError
from calcomp_caiman.model.folder import CalcompModel

ACCEPTED, REJECTED = [0, 2, 5, 7, 9, 11], [1, 3, 4]


def curated(path, accepted=ACCEPTED, rejected=REJECTED):
    """``path`` with CaImAn's manual curation lists, as ``cnm.save`` stores them."""
    with h5py.File(path, "r+") as handle:
        for name, values in (("accepted_list", accepted), ("rejected_list", rejected)):
            if name in handle["estimates"]:
                del handle["estimates"][name]
            handle["estimates"][name] = np.asarray(values, np.int64)
    return path


def test_curation_table_labels_accepted_neuron_rejected_non_neuron(caiman_copy):
    path = curated(caiman_copy("synthetic_cnmf.hdf5"))
    ((file, labelled),) = curation_table([path]).items()
    assert file == path.resolve()
    assert labelled.components.tolist() == ACCEPTED + REJECTED
    assert labelled.codes.tolist() == [1] * len(ACCEPTED) + [0] * len(REJECTED)


def test_curation_table_refuses_a_file_without_curation(caiman_copy):
    path = caiman_copy("synthetic_cnmf.hdf5")
    with pytest.raises(CalcompError, match="no accepted_list / rejected_list"):
        curation_table([path])


def test_finetune_refits_the_head_of_a_model_v2(caiman_copy):
    path = curated(caiman_copy("synthetic_cnmf.hdf5"))
    base = CalcompModel.load()
    assert base.uses_evidence
    report = finetune(base, curation=[path], name="curated")
    assert report.method == "refit" and report.files == 1
    assert report.labels == len(ACCEPTED) + len(REJECTED)
    assert report.model.name == "curated" and report.model.sha256 != base.sha256


def test_finetune_refits_the_head_of_a_model_v3(caiman_copy, random_v3):
    path = curated(caiman_copy("synthetic_cnmf.hdf5"))
    report = finetune(random_v3, curation=[path], name="curated_v3")
    assert report.method == "refit" and report.files == 1
    assert report.labels == len(ACCEPTED) + len(REJECTED)
    assert report.model is random_v3 or (report.applied and report.model.name == "curated_v3")
    assert report.validation == "cross-validated (5 folds)"


def test_finetune_needs_labels():
    with pytest.raises(CalcompError, match="labels"):
        finetune(CalcompModel.load())
