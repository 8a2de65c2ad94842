"""The crop rule a Fiji/bioimage.io user is told (rdf.yaml, the package's model card, the
README) is the rule calcomp crops with (issue 22: they said half-width 4*gSig+1 while the
package crops at a scale measured from the footprints, ~24 px instead of 17 px).

The rule is read from the exported rdf and checked against what the package does: where
the crop window ends, the scale ``footprints_for`` picks (what ``calcomp classify`` records
as ``crop_scale``), with many and with few components. A rule changed in one place only
fails here.
"""

from __future__ import annotations

import shutil
import zipfile
from importlib import resources
from pathlib import Path

import h5py
import numpy as np
import pytest

from calcomp_caiman import PATCH_SIZE, CalcompModel, estimate_gsig, extract_patches
from calcomp_caiman.apps.cli import main
from calcomp_caiman.evidence import Evidence
from calcomp_caiman.evidence.patches import footprints_for
from calcomp_caiman.io.caiman_h5 import read_evidence

pytest.importorskip("onnx")
pytest.importorskip("bioimageio.spec")
yaml = pytest.importorskip("yaml")  # comes with bioimageio.spec

from calcomp_caiman.apps.export_bioimageio import export_bioimageio  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEMO = Path(str(resources.files("calcomp_caiman.data") / "demo_caiman_sim.hdf5"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """rdf.yaml and the model card of the default model's package."""
    model = CalcompModel.load()
    package = export_bioimageio(model, tmp_path_factory.mktemp("export") / "m.zip")
    with zipfile.ZipFile(package) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
        card = archive.read("README.md").decode()
    return {"model": model, "rdf": rdf, "card": card, "crop": rdf["config"]["calcomp_caiman"]["crop"]}  # fmt: skip


def _marker_offset(scale: float, distance: int) -> float:
    """Rows, in patch pixels, between the patch centre and a pixel ``distance`` px from the
    footprint's centre of mass, in the patch extract_patches cuts at ``scale``."""
    dims = (200, 200)
    image = np.zeros(dims)
    image[100 - distance, 100] = image[100 + distance, 100] = 1.0  # centre of mass (100, 100)
    patch = extract_patches(image.reshape(-1, 1, order="F"), dims, gSig=scale)[0] ** 2
    top = patch[: PATCH_SIZE // 2]
    row = (top.sum(axis=1) * (np.arange(len(top)) + 0.5)).sum() / top.sum()
    return PATCH_SIZE / 2 - row


@pytest.mark.parametrize("scale", [2.5, 4.0, 5.81])
def test_the_stated_half_width_is_where_the_window_ends(exported, scale):
    half = exported["crop"]["half_width_per_scale"] * scale + exported["crop"]["half_width_plus"]
    distance = int(half * 0.8)
    expected = distance * (PATCH_SIZE / 2) / half  # the marker's place in a 2*half window
    assert abs(_marker_offset(scale, distance) - expected) < 0.3


def test_the_stated_scale_is_the_scale_calcomp_crops_at(exported, tmp_path):
    crop, model = exported["crop"], exported["model"]
    assert crop["scale_rule"] == model.scale_rule == "footprints"
    evidence = read_evidence(DEMO)
    assert evidence.n >= crop["min_components"]  # many components: the measured spread
    scale = footprints_for(evidence, model.scale_rule).scale
    assert scale == pytest.approx(estimate_gsig(evidence.A, evidence.dims))
    assert abs(scale - evidence.gSig * crop["gsig_factor"]) > 0.1  # the two rules differ here
    few = Evidence.build(evidence.A[:, : crop["min_components"] - 1], evidence.dims, gSig=3.0)
    assert footprints_for(few, model.scale_rule).scale == pytest.approx(crop["gsig_factor"] * 3.0)
    # the scale calcomp classify records, where the card and the README say to read it
    shutil.copyfile(DEMO, tmp_path / "demo.hdf5")
    assert main(["classify", str(tmp_path / "demo.hdf5"), "--in-place", "-q"]) == 0
    with h5py.File(tmp_path / "demo.hdf5", "r") as handle:
        recorded = handle["estimates/class_probs"].attrs["calcomp_crop_scale"]
    assert recorded == pytest.approx(scale)


def test_rdf_card_and_readme_state_that_rule(exported):
    crop = exported["crop"]
    slope, plus = crop["half_width_per_scale"], crop["half_width_plus"]
    half = f"{slope:g} * scale + {plus:g}"
    factor, least = f"{crop['gsig_factor']:g} x gSig", f"{crop['min_components']} or more"
    description = exported["rdf"]["inputs"][0]["description"]
    assert f"half-width {slope:g}*scale+{plus:g}" in description and "gSig" not in description
    readme = (ROOT / "README.md").read_text()
    fiji = readme[readme.index("## Fiji / bioimage.io") : readme.index("## Development")]
    for text in (exported["card"], fiji):
        assert f"half-width `{half}`" in text and factor in text and least in text
        assert "calcomp_crop_scale" in text and "4 * gSig + 1" not in text
