"""`calcomp montage` on the shipped demo result: what the figure says (issue 22: nothing said
the number was a probability or which components were accepted; no field-of-view map, no
trace). The figure object is inspected, not its pixels."""

from __future__ import annotations

import re
import shutil
from importlib import resources

import numpy as np
import pytest
from matplotlib.colors import to_hex

from calcomp_caiman import CLASSES
from calcomp_caiman.apps import montage
from calcomp_caiman.apps.cli import main
from calcomp_caiman.io.caiman_h5 import read_estimates, read_evidence

DEMO = resources.files("calcomp_caiman.data") / "demo_caiman_sim.hdf5"


@pytest.fixture
def drawn(monkeypatch):
    """The figures montage_figure made during a test."""
    figures = []
    original = montage.montage_figure

    def keep(*args, **kwargs):
        figures.append(original(*args, **kwargs))
        return figures[-1]

    monkeypatch.setattr(montage, "montage_figure", keep)
    return figures


def test_montage_of_the_demo_says_what_it_shows(tmp_path, drawn):
    source = tmp_path / "demo.hdf5"
    shutil.copyfile(DEMO, source)
    assert main(["classify", str(source), "--in-place", "-q"]) == 0
    stored = read_estimates(source)
    probs, accepted = stored.class_probs, np.zeros(stored.n_components, bool)
    accepted[stored.idx_components] = True
    png = tmp_path / "montage.png"
    assert main(["montage", str(source), "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (fig,) = drawn
    titles = {ax.get_title(loc="left") or ax.get_title(): ax for ax in fig.axes}

    legend = titles["how to read this figure"]
    text = " ".join(t.get_text() for t in legend.texts)
    # the rule the file was classified with: the default model's (calcomp_v3's min_prob)
    assert "P(neuron)" in text and "green = accepted" in text and "P(neuron) >= 0.17" in text
    evidence = read_evidence(source)
    seconds = evidence.traces.frames / evidence.frame_rate  # 800 frames at 30 Hz
    assert f"denoised trace C over the whole recording ({seconds:.1f} s)" in text

    (fov,) = [ax for title, ax in titles.items() if title.startswith("field of view")]
    assert fov.get_title().startswith("field of view: Cn (local correlation)")
    assert f"green = accepted ({accepted.sum()})" in fov.get_title()
    assert len(fov.get_images()) == 2  # Cn and the outlines
    numbers = {int(t.get_text()): to_hex(t.get_color()) for t in fov.texts}
    assert numbers == {k: montage.ACCEPTED_COLOUR if accepted[k] else montage.REJECTED_COLOUR
                       for k in range(len(probs))}  # fmt: skip

    tiles = {}
    for ax in fig.axes:
        match = re.fullmatch(r"#(\d+) P=(\d\.\d\d)", ax.get_title())
        if match:
            tiles[int(match.group(1))] = (float(match.group(2)), ax)
    assert sorted(tiles) == list(range(len(probs)))  # 36 components: every one shown
    for k, (shown, ax) in tiles.items():
        assert shown == pytest.approx(probs[k].max(), abs=0.005)  # P of its group's class
        frame = to_hex(ax.spines["left"].get_edgecolor())
        assert frame == (montage.ACCEPTED_COLOUR if accepted[k] else montage.REJECTED_COLOUR)
    headers = [t.get_text() for ax in fig.axes for t in ax.texts if t.get_text().split(":")[0] in CLASSES]  # fmt: skip
    # one group per most probable class; P(neuron) >= 0.17 also accepts some doubtful ones
    groups = probs.argmax(1)
    assert headers == [f"{name}: {int((groups == c).sum())} component(s), {int(accepted[groups == c].sum())} accepted"
                       for c, name in enumerate(CLASSES) if np.any(groups == c)]  # fmt: skip
    assert accepted[groups == CLASSES.index("doubtful")].any()

    traces = {ax.get_gid(): ax for ax in fig.axes if (ax.get_gid() or "").startswith("trace #")}
    assert set(traces) == {f"trace #{k}" for k in tiles}
    C = evidence.traces.take(np.arange(len(probs)))
    C = next(C.chunks(len(probs)))[1]["C"]
    for k in tiles:
        (line,) = traces[f"trace #{k}"].get_lines()
        np.testing.assert_allclose(line.get_ydata(), C[k], rtol=1e-6)


def test_the_demo_montage_marks_accepted_components_too(tmp_path, drawn):
    from calcomp_caiman import CalcompModel
    from calcomp_caiman.apps.demo import run_demo

    run_demo(tmp_path, model=CalcompModel.load())
    assert (tmp_path / "demo_montage.png").is_file()
    (fig,) = drawn
    stored = read_estimates(tmp_path / "demo_classified.hdf5")
    frames = {
        int(re.match(r"#(\d+)", ax.get_title()).group(1)): to_hex(ax.spines["left"].get_edgecolor())
        for ax in fig.axes
        if ax.get_title().startswith("#")
    }  # fmt: skip
    assert {k for k, colour in frames.items() if colour == montage.ACCEPTED_COLOUR} == set(stored.idx_components.tolist())  # fmt: skip
    assert any(ax.get_title().startswith("field of view") for ax in fig.axes)
