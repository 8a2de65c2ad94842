"""Tests of calcomp_caiman.research.labelled_results: loading results, the whole-movie split."""

from __future__ import annotations

import numpy as np
from labelled_data import write_archive, write_results_folder

from calcomp_caiman.research.labelled_results import (
    LabelledResult,
    evaluation_sets,
    load_real_masks,
    load_simulated,
    split,
    split_hybrid,
)


def test_load_and_split_by_whole_movie(tmp_path):
    items = load_simulated(write_results_folder(tmp_path / "simdata"))
    assert len(items) == 4 and all(i.evidence.traces is not None for i in items)
    assert all(i.caiman_accepted is not None and i.method == "cnmf" for i in items)
    train, val, test = split(items, set(), set())
    assert [i.group for i in test] == ["heldout_b/s00009"]
    assert [i.group for i in val] == ["train_a/s00003"]  # the highest seed of a preset
    assert sorted(i.group for i in train) == ["train_a/s00001", "train_a/s00002"]
    assert test[0].held_out and not any(i.held_out for i in train + val)
    sets = evaluation_sets(val, test)
    assert sets["simulated_heldout_cnmf"] == test and sets["simulated_heldout_onacid"] == []
    assert sets["simulated_validation"] == val and sets["real_test_masks"] == []


def test_real_masks_are_split_by_video_key(tmp_path):
    for video, seed in (("a", 1), ("b", 2), ("c", 3)):
        write_archive(tmp_path / f"{video}.npz", seed=seed, dataset="lab", video=video)
    items = load_real_masks(tmp_path, {"lab/c"})
    assert [i.group for i in items] == ["lab/a", "lab/b", "lab/c"]
    assert [i.held_out for i in items] == [False, False, True]
    assert {i.setting for i in items} == {"lab"} and items[0].evidence.traces is None
    assert items[0].labels.dtype == np.int64
    train, val, test = split(items, validation_videos={"lab/b"}, test_videos={"lab/c"})
    assert [[i.group for i in part] for part in (train, val, test)] == [["lab/a"], ["lab/b"],
                                                                         ["lab/c"]]  # fmt: skip


def test_split_hybrid_holds_out_recordings_and_validates_on_each_recordings_last_movie(tmp_path):
    write_archive(tmp_path / "a.npz", seed=1)
    evidence = load_real_masks(tmp_path, set())[0].evidence
    groups = [("rec_a/f0_s2", False), ("rec_a/f0_s10", False), ("rec_a/f0_s1", False),
              ("rec_b/w0_s5", False), ("rec_c/w0_s1", True), ("rec_c/w1_s9", True)]  # fmt: skip
    items = [LabelledResult(evidence, np.ones(evidence.n, np.int64), group, "hybrid",
                            group.split("/")[0], held_out, method)
             for group, held_out in groups for method in ("cnmf", "onacid")]  # fmt: skip
    train, val, test = split_hybrid(items)
    assert sorted({i.group for i in test}) == ["rec_c/w0_s1", "rec_c/w1_s9"]
    assert sorted({i.group for i in val}) == ["rec_a/f0_s2", "rec_b/w0_s5"]  # last by name
    assert sorted({i.group for i in train}) == ["rec_a/f0_s1", "rec_a/f0_s10"]
    assert len(train) + len(val) + len(test) == len(items) and len(val) == 4
