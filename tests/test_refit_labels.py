"""refit takes labels as class names, codes or both (issue 22: names raised ValueError)."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest

from calcomp_caiman import CalcompModel
from calcomp_caiman.io.caiman_h5 import read_evidence
from calcomp_caiman.refit import refit

DEMO = resources.files("calcomp_caiman.data") / "demo_caiman_sim.hdf5"
NAMES = ["neuron", "neuron", "noise", "doubtful", "neuron", "process", "non_neuron", "neuron",
         "noise", "neuron", "process", "neuron"]  # fmt: skip
CODES = [1, 1, 3, 4, 1, 2, 0, 1, 3, 1, 2, 1]


@pytest.fixture(scope="module")
def demo():
    return CalcompModel.load(), read_evidence(str(DEMO))


def test_names_codes_and_text_codes_give_the_same_refit(demo):
    model, evidence = demo
    components = np.arange(len(NAMES))
    by_code = refit(model, [evidence], [np.array(CODES)], [components])
    for labels in (NAMES, np.array(NAMES), [str(c) if c else "non_neuron" for c in CODES]):
        new, report = refit(model, [evidence], [labels], [components])
        assert report["labels"] == len(NAMES)
        assert new.sha256 == by_code[0].sha256 and report["after"] == by_code[1]["after"]


def test_an_unknown_label_is_named(demo):
    model, evidence = demo
    labels = NAMES[:3] + ["neurone"] + NAMES[4:]
    with pytest.raises(ValueError, match=r"result 0: unknown label 'neurone' at position 3"):
        refit(model, [evidence], [labels], [np.arange(len(labels))])
    with pytest.raises(
        ValueError, match=r"result 0: label codes must be 0-4, got values in \[0, 7\]"
    ):
        refit(model, [evidence], [[7] + CODES[1:]], [np.arange(len(CODES))])
