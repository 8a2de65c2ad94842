"""What the curation page tells a newcomer, checked in a real headless Chromium (issue 22):
captions on each card's panels, a colour legend, a time axis under the traces (seconds when
the frame rate is known, else frames), what "uncertainty" means and why that order, and
CaImAn's own accept and SNR per component. Needs Debian's chromium."""

from __future__ import annotations

import re
import shutil
from importlib import resources

import numpy as np
import pytest

pytest.importorskip("flask")
sync_api = pytest.importorskip("playwright.sync_api")

from calcomp_caiman.apps.curate import serve  # noqa: E402
from calcomp_caiman.io.caiman_h5 import read_evidence  # noqa: E402
from calcomp_caiman.research.simulate import simulate_session  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium chromium-driver)"
)
DEMO = resources.files("calcomp_caiman.data") / "demo_caiman_sim.hdf5"


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


def _page(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=20_000)
    page.locator(".card.loaded").first.wait_for(timeout=20_000)  # drawn: images and traces
    return page


def _visible_text(locator) -> str:
    assert locator.is_visible(), locator
    return locator.inner_text()


def test_demo_cards_explain_themselves(tmp_path, browser):
    path = tmp_path / "demo.hdf5"
    shutil.copyfile(DEMO, path)
    evidence = read_evidence(path)
    server = serve([path], labels=tmp_path / "labels.csv", model="calcomp_resnet_v1")
    try:
        page = _page(browser, server.url)
        legend = _visible_text(page.locator("#legend"))
        for words in ("this component", "neighbours", "raw trace (C + YrA)", "denoised trace C",
                      "labelled", "contradicts the model"):  # fmt: skip
            assert words in legend, legend
        why = _visible_text(page.locator("#uncertainty-help"))
        assert "entropy" in why and "0" in why and "1" in why and "first" in why, why

        cards = page.locator(".card.loaded")
        for i in range(min(cards.count(), 6)):
            card = cards.nth(i)
            component = int(card.get_attribute("data-component"))
            captions = [_visible_text(c) for c in card.locator("figcaption").all()]
            assert captions[0].startswith("footprint") and "outline" in captions[0]
            assert captions[1].startswith("Cn (local correlation)"), captions
            assert "red" in captions[1] and "blue" in captions[1]
            assert "uncertainty" in card.locator(".uncertainty").get_attribute("title")

            axis = card.locator("svg.trace .axis")
            assert axis.is_visible()
            labels = [t.text_content() for t in axis.locator("text").all()]
            assert labels[-1] == "time (s)", labels
            ticks = [float(t) for t in labels[:-1]]
            duration = (evidence.traces.frames - 1) / evidence.frame_rate
            assert len(ticks) >= 3 and ticks == sorted(ticks) and 0 <= ticks[0] and ticks[-1] <= duration  # fmt: skip

            caiman = _visible_text(card.locator(".caiman"))
            kept = "kept" if evidence.caiman_accepted[component] else "rejected"
            snr = round(float(evidence.SNR_comp[component]), 1)
            assert re.fullmatch(rf"CaImAn: {kept}, SNR {snr:.1f}", caiman), caiman
    finally:
        server.stop()


def test_without_frame_rate_or_caimans_fields(tmp_path, browser):
    from calcomp_caiman.research.caiman_files import write_caiman_file

    sim = simulate_session(dims=(64, 64), n_components=(4, 1, 1, 1), n_frames=120, seed=2)
    path = write_caiman_file(tmp_path / "plain.hdf5", A=sim.A, C=sim.C, dims=sim.dims)
    assert read_evidence(path).frame_rate is None
    server = serve([path], labels=tmp_path / "labels.csv", model="calcomp_resnet_v1")
    try:
        page = _page(browser, server.url)
        card = page.locator(".card.loaded").first
        labels = [t.text_content() for t in card.locator("svg.trace .axis text").all()]
        assert labels[-1] == "frame" and float(labels[-2]) <= 119 and np.all(np.diff([float(t) for t in labels[:-1]]) > 0)  # fmt: skip
        assert card.locator(".caiman").count() == 0 or not card.locator(".caiman").is_visible()
        assert "sum of footprints" in card.locator("figcaption").nth(1).inner_text()
    finally:
        server.stop()
