"""The OnACID candidate screen and its installation, without CaImAn (integrations.onacid*).

CaImAn's side (the crops it really passes, the run, save and load) is tested with real
CaImAn in ``test_real_caiman_online.py``. Here the crops are made the way
``get_candidate_components`` makes them (CaImAn 1.12.1, read in its source): a
``+-int(min(2 gSig, 25))`` crop, minus its median, over its standard deviation, reshaped
transposed, resized bilinearly to 50 x 50.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from calcomp_caiman import CLASSES, CalcompModel, extract_patches
from calcomp_caiman.integrations.onacid import use_calcomp_screening
from calcomp_caiman.integrations.onacid_screen import (
    SCREEN_ACCEPT,
    CandidateScreen,
    caiman_crop_half_width,
    patch_inputs,
    screen_accept,
)


@pytest.fixture(scope="module")
def model():
    return CalcompModel.load()


@pytest.fixture(scope="module", params=["calcomp_v2", "default"])
def any_model(request):
    """The bundled model v2 (one 50 x 50 footprint patch) and the default (model v3: its
    32 x 32 channels): the screen's crops follow the model's patch size."""
    return CalcompModel.load(request.param)


def _resize_like_cv2(image: np.ndarray, size: int = 50) -> np.ndarray:
    """cv2.resize(image, (size, size)) with INTER_LINEAR: half-pixel centres, edge clamped."""
    rows = (np.arange(size) + 0.5) * image.shape[0] / size - 0.5
    cols = (np.arange(size) + 0.5) * image.shape[1] / size - 0.5
    grid = np.meshgrid(rows, cols, indexing="ij")
    return map_coordinates(image, grid, order=1, mode="nearest")


def caiman_crop(image: np.ndarray, centre: tuple[int, int], gsig: float) -> np.ndarray:
    """What OnACID's sniper_mode hands to loaded_model.predict for one candidate."""
    half = caiman_crop_half_width(gsig)
    r, c = centre
    crop = image[r - half : r + half + 1, c - half : c + half + 1].astype(np.float32)
    flat = crop.ravel()  # CaImAn: C-ordered crop values ...
    flat = (flat - np.median(flat)) / np.std(flat)
    return _resize_like_cv2(flat.reshape(crop.shape, order="F"))  # ... reshaped in F order


def cell_image(shape, centre, sigmas, noise=0.0, seed=0):
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    image = np.exp(
        -((rows - centre[0]) ** 2) / (2 * sigmas[0] ** 2)
        - (cols - centre[1]) ** 2 / (2 * sigmas[1] ** 2)
    )
    return image + noise * np.random.default_rng(seed).standard_normal(shape)


def test_caiman_crop_half_width():
    assert [caiman_crop_half_width(g) for g in (1, 3, 4, 4.6, 12.5, 30)] == [2, 6, 8, 9, 25, 25]


@pytest.mark.parametrize("gsig", [3, 4, 6])
def test_remap_shows_a_cell_as_extract_patches_does(any_model, gsig):
    """An elongated cell (rows 2x longer than columns): same orientation and scale as its
    footprint's patch, so both the transposition and the window scale are undone."""
    model = any_model
    shape = (80, 90)
    image = cell_image(shape, (40, 45), (0.9 * gsig, 0.45 * gsig))
    X = caiman_crop(image, (40, 45), gsig)[None, ..., None]
    remapped = CandidateScreen(model, gsig, crop="remap").to_patches(X)[0]
    footprint = image.reshape(-1, 1, order="F")
    expected = extract_patches(footprint, shape, gSig=gsig, patch_size=model.patch_size)[0]
    assert np.corrcoef(remapped.ravel(), expected.ravel())[0, 1] > 0.97
    # taken as it is (no remap), the cell fills twice the patch: clearly unlike training
    stretched = CandidateScreen(model, gsig, crop="caiman").to_patches(X)[0]
    assert np.corrcoef(stretched.ravel(), expected.ravel())[0, 1] < 0.9
    # the transposed crop is the wrong orientation
    transposed = CandidateScreen(model, gsig, crop="remap").to_patches(X.transpose(0, 2, 1, 3))
    assert np.corrcoef(transposed[0].ravel(), expected.ravel())[0, 1] < 0.9


def test_remap_is_zero_outside_caimans_crop_and_unit_norm(any_model):
    gsig = 4
    image = cell_image((60, 60), (30, 30), (4, 4), noise=0.05)
    X = caiman_crop(image, (30, 30), gsig)[None, ..., None]
    patch = CandidateScreen(any_model, gsig, crop="remap").to_patches(X)[0]
    size = any_model.patch_size  # 50 (v2), 32 (v3)
    assert patch.shape == (size, size) and patch.dtype == np.float32
    assert np.linalg.norm(patch) == pytest.approx(1.0, abs=1e-5)
    # CaImAn's crop (17 px) covers the middle half of our 34 px window (25 of 50 patch
    # pixels, 16 of 32): the rim is empty
    rim, middle = slice(None, size // 5), slice(2 * size // 5, 3 * size // 5)
    assert not np.any(patch[rim]) and not np.any(patch[::-1][rim])
    assert not np.any(patch[:, rim]) and not np.any(patch[:, ::-1][:, rim])
    assert patch[middle, middle].min() > 0


def test_to_patches_empty_and_flat_crops(any_model):
    screen = CandidateScreen(any_model, 4, crop="remap")
    size = any_model.patch_size
    assert screen.to_patches(np.zeros((0, 50, 50, 1), np.float32)).shape == (0, size, size)
    zero = screen.to_patches(np.zeros((1, 50, 50), np.float32))
    assert not np.any(zero)
    negative = screen.to_patches(-np.ones((1, 50, 50, 1), np.float32))
    assert not np.any(negative)  # all below the median: nothing left, as an empty footprint


@pytest.mark.parametrize(
    "X", [np.zeros((2, 40, 40, 1)), np.zeros((50, 50)), np.zeros((2, 50, 50, 3))]
)
def test_to_patches_rejects_wrong_shapes(model, X):
    with pytest.raises(ValueError, match=r"X must have shape \(n, 50, 50, 1\)"):
        CandidateScreen(model, 4).to_patches(X)


def test_to_patches_rejects_nan(model):
    X = np.full((1, 50, 50, 1), np.nan, np.float32)
    with pytest.raises(ValueError, match="NaN"):
        CandidateScreen(model, 4).predict(X)


@pytest.mark.parametrize("accept", [("neuron",), ("neuron", "doubtful")])
def test_predict_column_zero_is_probability_of_accepted_classes(any_model, accept):
    model = any_model
    gsig = 3
    image = cell_image((50, 50), (25, 25), (3, 3), noise=0.1)
    rng = np.random.default_rng(1)
    X = np.stack(
        [
            caiman_crop(image, (25, 25), gsig),
            caiman_crop(rng.standard_normal((50, 50)), (25, 25), gsig),
        ]
    )[..., None].astype(np.float32)
    screen = CandidateScreen(model, gsig, accept=accept, crop="remap")
    out = screen.predict(X, batch_size=5, verbose=0)
    assert out.shape == (2, 2) and out.dtype == np.float32
    probs = model.predict(patch_inputs(model, screen.to_patches(X)))  # v2: the patches
    columns = [CLASSES.index(name) for name in accept]
    np.testing.assert_allclose(out[:, 0], probs[:, columns].sum(axis=1), atol=1e-6)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-6)
    assert (screen.calls, screen.candidates) == (1, 2)
    # without an OnACID object, the default crop falls back to the remap and says so
    fallback = CandidateScreen(model, gsig, accept=accept)
    np.testing.assert_allclose(fallback.predict(X), out, atol=1e-6)
    assert fallback.remapped == 2


def test_predict_screens_a_cell_above_noise(model):
    gsig = 4
    cell = caiman_crop(cell_image((60, 60), (30, 30), (4, 4), noise=0.05), (30, 30), gsig)
    noise = caiman_crop(np.random.default_rng(2).standard_normal((60, 60)), (30, 30), gsig)
    out = CandidateScreen(model, gsig, crop="remap").predict(np.stack([cell, noise])[..., None])
    assert out[0, 0] > 0.5 > out[1, 0]


def test_screen_argument_errors(model):
    with pytest.raises(ValueError, match="accept must name"):
        CandidateScreen(model, 4, accept=("cell",))
    with pytest.raises(ValueError, match="crop must be one of"):
        CandidateScreen(model, 4, crop="big")
    with pytest.raises(ValueError, match="gSig must be a positive"):
        CandidateScreen(model, 0)
    with pytest.raises(TypeError, match="CalcompModel"):
        CandidateScreen("default", 4)


def test_use_calcomp_screening_rejects_other_objects():
    with pytest.raises(TypeError, match="OnACID"):
        use_calcomp_screening(object())


def test_online_module_imports_without_caiman_or_keras():
    code = (
        "import sys, calcomp_caiman.integrations.onacid; "
        "bad = [m for m in ('caiman', 'keras', 'tensorflow', 'torch') if m in sys.modules]; "
        "sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_default_screen_accepts_neurons_and_doubtful_cells_with_v2(any_model):
    """v1/v2 screen new candidates leniently (evaluate_components_4class decides later); a
    model v3, which sees a candidate's footprint alone there, on P(neuron)."""
    expected = ("neuron",) if any_model.version >= 3 else SCREEN_ACCEPT
    assert SCREEN_ACCEPT == ("neuron", "doubtful")
    assert screen_accept(any_model) == expected == CandidateScreen(any_model, 4).accept
    assert CandidateScreen(any_model, 4, accept="neuron").accept == ("neuron",)
    assert CandidateScreen(any_model, 4, accept=SCREEN_ACCEPT).accept == SCREEN_ACCEPT


# ------------------------------------------------------------------ model v3


def _cell_and_noise(gsig: float) -> np.ndarray:
    cell = caiman_crop(cell_image((60, 60), (30, 30), (gsig, gsig), noise=0.05), (30, 30), gsig)
    noise = caiman_crop(np.random.default_rng(2).standard_normal((60, 60)), (30, 30), gsig)
    return np.stack([cell, noise])[..., None].astype(np.float32)


def test_patch_inputs_of_a_v3_model_are_the_footprint_channel_alone(random_v3):
    patches = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    channels = patch_inputs(random_v3, patches)
    assert channels.shape == (3, 32, 32, len(random_v3.channel_names))
    footprint = random_v3.channel_names.index("footprint")
    np.testing.assert_array_equal(channels[..., footprint], patches)
    assert not np.any(np.delete(channels, footprint, axis=-1))  # the others: missing
    assert not np.any(random_v3.channel_presence(channels))
    assert patch_inputs(random_v3, np.zeros((0, 32, 32), np.float32)).shape == (0, 32, 32, 4)


@pytest.mark.parametrize("accept", [("neuron",), ("neuron", "doubtful")])
def test_a_v3_screen_sums_the_accepted_classes_of_the_footprint_channel(random_v3, accept):
    """A model v3 screens the footprint patch as its footprint channel, no other evidence."""
    gsig = 4
    X = _cell_and_noise(gsig)
    screen = CandidateScreen(random_v3, gsig, accept=accept, crop="remap")
    out = screen.predict(X, batch_size=5, verbose=0)
    assert out.shape == (2, 2) and out.dtype == np.float32
    patches = screen.to_patches(X)
    assert patches.shape == (2, 32, 32)  # the model's patch size
    channels = np.zeros((2, 32, 32, 4), np.float32)
    channels[..., 0] = patches  # CHANNELS order: footprint first
    probs = random_v3.predict(channels)
    columns = [CLASSES.index(name) for name in accept]
    np.testing.assert_allclose(out[:, 0], probs[:, columns].sum(axis=1), atol=1e-6)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-6)
    # the other channels matter to this model: filling them would change the answer
    filled = channels.copy()
    filled[..., 1:] = patches[..., None]
    assert not np.allclose(random_v3.predict(filled)[:, columns].sum(axis=1), out[:, 0], atol=1e-3)
    fallback = CandidateScreen(random_v3, gsig, accept=accept)  # no OnACID: remapped
    np.testing.assert_allclose(fallback.predict(X), out, atol=1e-6)
    assert fallback.remapped == 2


def test_a_v3_screen_decides_as_a_v2_screen_without_evidence(random_v3):
    """No traces, no features: the fusion head sees the v2 screen's 'absent' evidence, and
    the temperature of components without traces."""
    from calcomp_caiman.evidence.features import absent_features

    gsig = 4
    X = _cell_and_noise(gsig)
    screen = CandidateScreen(random_v3, gsig, accept="neuron", crop="remap")
    channels = patch_inputs(random_v3, screen.to_patches(X))
    logits = random_v3.shape_logits(channels)
    fused = random_v3.fuse(logits, absent_features(2), presence=np.zeros((2, 3)))
    np.testing.assert_allclose(screen.predict(X)[:, 0], fused[:, 0], atol=1e-6)


class _Params:
    """The part of CaImAn's CNMFParams that use_calcomp_screening reads and sets."""

    def __init__(self, gsig):
        self.groups = {"init": {"gSig": [gsig, gsig]}, "online": {"update_num_comps": True}}

    def get(self, group, key):
        return self.groups[group].get(key)

    def set(self, group, settings):
        self.groups[group].update(settings)


class _OnACIDLike:
    """Stands in for CaImAn's OnACID class: what use_calcomp_screening checks and replaces."""

    def __init__(self, gsig):
        self.params = _Params(gsig)

    def _prepare_object(self, *args, **kwargs):
        return self


def test_use_calcomp_screening_installs_a_v3_model(random_v3):
    """Installing runs the model on a test patch: a v3 model gets it as its channels. The
    installed screen answers CaImAn's crops with the v3 model."""
    model = random_v3
    onacid = _OnACIDLike(4)
    screen = use_calcomp_screening(onacid, model=model, crop="remap")
    assert onacid.loaded_model is screen and screen.model is model
    assert onacid.params.get("online", "sniper_mode") is True
    X = _cell_and_noise(4)
    expected = model.predict(patch_inputs(model, screen.to_patches(X)))
    assert screen.accept == ("neuron",)  # a model v3 screens on P(neuron)
    np.testing.assert_allclose(screen.predict(X)[:, 0], expected[:, 0], atol=1e-6)
