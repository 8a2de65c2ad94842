"""The curation labels CSV (atomic, locked, merged) and the fitted acceptance cut."""

from __future__ import annotations

import multiprocessing
import os
import stat

import numpy as np
import pytest

from calcomp_caiman.apps.curate.order import contradicts, uncertainty
from calcomp_caiman.apps.curate.store import LabelStore, label_name
from calcomp_caiman.apps.curate.threshold import best_cut, fit_min_prob
from calcomp_caiman.errors import InvalidFileError
from calcomp_caiman.research.datasets import labels_from_csv


def test_labels_round_trip_in_the_finetune_format(tmp_path, caiman_copy):
    path = caiman_copy("synthetic_cnmf.hdf5")
    store = LabelStore(tmp_path / "labels.csv")
    assert store.set(path, 3, "neuron") is None
    assert store.set(path, 0, "2") is None
    assert store.set(path, 5, "non_neuron") is None
    assert store.set(path, 3, "doubtful") == "neuron"
    assert store.set(path, 0, None) == "process"
    text = (tmp_path / "labels.csv").read_text().splitlines()
    assert text == ["file,component,label", "synthetic_cnmf.hdf5,3,doubtful",
                    "synthetic_cnmf.hdf5,5,non_neuron"]  # fmt: skip
    data = labels_from_csv(tmp_path / "labels.csv")  # what `calcomp finetune --labels` reads
    assert sorted(data.labels.tolist()) == [0, 4]
    assert LabelStore(tmp_path / "labels.csv").labels() == {
        (str(path), 3): "doubtful",
        (str(path), 5): "non_neuron",
    }
    assert not [p for p in os.listdir(tmp_path) if "calcomp-tmp" in p]  # no temporary left


def test_rows_of_other_files_and_extra_columns_are_kept(tmp_path):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("file,component,label,note\nother.hdf5,7,noise,checked by AB\n")
    store = LabelStore(csv_path)
    store.set(tmp_path / "mine.hdf5", 1, "neuron")
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "file,component,label,note"
    assert "mine.hdf5,1,neuron," in lines and "other.hdf5,7,noise,checked by AB" in lines


@pytest.mark.parametrize(
    "content, match",
    [
        ("file,index,label\na.hdf5,1,neuron\n", "missing component"),
        ("file,component,label\na.hdf5,x,neuron\n", "line 2"),
        ("file,component,label\na.hdf5,1,cell\n", "line 2: unknown label"),
    ],
)
def test_bad_csv_is_reported_and_left_untouched(tmp_path, content, match):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(content)
    with pytest.raises(InvalidFileError, match=match) as err:
        LabelStore(csv_path)
    assert str(csv_path) in str(err.value)
    assert csv_path.read_text() == content


def test_the_csv_keeps_its_permissions(tmp_path):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("file,component,label\na.hdf5,1,neuron\n")
    os.chmod(csv_path, 0o600)  # private labels stay private
    LabelStore(csv_path).set(tmp_path / "a.hdf5", 2, "noise")
    assert stat.S_IMODE(os.stat(csv_path).st_mode) == 0o600
    assert csv_path.read_text().splitlines()[1:] == ["a.hdf5,1,neuron", "a.hdf5,2,noise"]
    os.chmod(csv_path, 0o664)  # and a shared one stays shared
    LabelStore(csv_path).set(tmp_path / "a.hdf5", 3, "noise")
    assert stat.S_IMODE(os.stat(csv_path).st_mode) == 0o664
    before = os.umask(0o077)  # a new CSV is made as any new file (the umask)
    try:
        LabelStore(tmp_path / "new.csv").set(tmp_path / "a.hdf5", 1, "neuron")
    finally:
        os.umask(before)
    assert stat.S_IMODE(os.stat(tmp_path / "new.csv").st_mode) == 0o600


def test_a_symlinked_csv_is_written_through_to_its_target(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "work").mkdir()
    target = tmp_path / "shared" / "labels.csv"
    target.write_text("file,component,label\n../work/a.hdf5,1,neuron\n")
    os.chmod(target, 0o640)
    link = tmp_path / "work" / "labels.csv"
    link.symlink_to(target)
    store, other = LabelStore(link), LabelStore(target)
    assert store.set(tmp_path / "work" / "a.hdf5", 2, "noise") is None
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text().splitlines()[1:] == ["../work/a.hdf5,1,neuron", "a.hdf5,2,noise"]
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    other.set(tmp_path / "elsewhere.hdf5", 0, "neuron")  # the target itself: the same lock
    assert len(store.labels()) == 3 and link.is_symlink()
    left = [p for folder in ("shared", "work") for p in os.listdir(tmp_path / folder)]
    assert not [p for p in left if "calcomp-tmp" in p]


def _label_many(csv_path: str, file: str, start: int, count: int) -> None:
    store = LabelStore(csv_path)
    for k in range(start, start + count):
        store.set(file, k, "neuron" if k % 2 else "noise")


def test_two_writers_at_once_lose_nothing(tmp_path):
    """Two processes (two tabs, two servers) labelling the same CSV concurrently."""
    csv_path, file = str(tmp_path / "labels.csv"), str(tmp_path / "a.hdf5")
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_label_many, args=(csv_path, file, s, 40)) for s in (0, 40)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(30)
    assert [w.exitcode for w in writers] == [0, 0]
    labels = LabelStore(csv_path).labels()
    assert sorted(k for _, k in labels) == list(range(80))


def test_label_names_and_disagreements():
    assert label_name(1) == "neuron" and label_name("NON_NEURON") == "non_neuron"
    with pytest.raises(ValueError, match="unknown label"):
        label_name("glia")
    assert contradicts("non_neuron", 1) and contradicts("non_neuron", 4)
    assert not contradicts("non_neuron", 2) and not contradicts("process", 2)
    probs = np.array([[0.97, 0.01, 0.01, 0.01], [0.4, 0.3, 0.2, 0.1]])
    assert uncertainty(probs)[0] < uncertainty(probs)[1] < 1


def test_fitted_cut_matches_the_decisions_and_is_cross_validated():
    rng = np.random.default_rng(0)
    p = rng.random(400)
    accepted = p + rng.normal(0, 0.08, 400) > 0.62  # the lab accepts above about 0.62
    fit = fit_min_prob(p, accepted)
    assert 0.55 < fit["min_prob"] < 0.69
    assert fit["cv_folds"] == 5 and 0.8 < fit["cv_agreement"] <= fit["agreement"] + 0.02
    assert best_cut(np.array([0.2, 0.9]), np.array([True, True])) == 0.0
    with pytest.raises(ValueError, match="accepted and rejected"):
        fit_min_prob(p, np.ones(400, bool))
    assert fit_min_prob(np.array([0.1, 0.9]), np.array([False, True]))["cv_agreement"] is None
