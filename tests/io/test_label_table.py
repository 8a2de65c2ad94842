"""The labels CSV of ``calcomp curate`` and ``calcomp finetune --labels`` (io.label_table)."""

from __future__ import annotations

import pytest

from calcomp_caiman.io.label_table import read_label_table


def test_label_table_last_row_wins(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("file,component,label\na.hdf5,3,neuron\na.hdf5,3,noise\nb.hdf5,0,non_neuron\n")
    table = read_label_table(csv)
    assert {p.name: (c.tolist(), l.tolist()) for p, (c, l) in table.items()} == {
        "a.hdf5": ([3], [3]),
        "b.hdf5": ([0], [0]),
    }
    (tmp_path / "bad.csv").write_text("file,component,label\na.hdf5,1,cat\n")
    with pytest.raises(ValueError, match="line 2"):
        read_label_table(tmp_path / "bad.csv")
