"""Tests of calcomp_caiman.evidence.channels: model v3's channels at each component."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

import calcomp_caiman.evidence.channels as channels_module
from calcomp_caiman.evidence import Evidence
from calcomp_caiman.evidence.channels import CHANNELS, ChannelSource, component_channels
from calcomp_caiman.evidence.patches import crop_checked, crop_windows, footprints_for
from calcomp_caiman.research.simulate import simulate_session


@pytest.fixture(scope="module")
def session():
    return simulate_session(n_components=(12, 4, 6, 3), n_frames=100, seed=5)


def _image(session, seed=0):
    rng = np.random.default_rng(seed)
    total = np.asarray(session.A.sum(axis=1)).reshape(session.dims, order="F")
    return 100.0 + 50.0 * total / total.max() + rng.normal(0, 1, session.dims)


def test_footprint_channel_is_the_patch_and_every_channel_is_there(session):
    Cn = np.clip(_image(session) / 200.0, 0, 1)
    ev = Evidence.build(session.A, session.dims, Cn=Cn, image=_image(session))
    found = footprints_for(ev)
    stack = component_channels(ev, found, patch_size=32)
    assert stack.shape == (ev.n, 32, 32, len(CHANNELS)) and stack.dtype == np.float32
    np.testing.assert_allclose(stack[..., 0], crop_checked(*found, 32), atol=1e-6)
    neighbours = stack[..., CHANNELS.index("neighbours")]
    np.testing.assert_allclose(neighbours.max(axis=(1, 2)), 1.0, rtol=1e-6)
    cn = stack[..., CHANNELS.index("cn")]
    assert cn.min() >= 0 and cn.max() <= 1 and cn.std() > 0
    image = stack[..., CHANNELS.index("image")]
    assert np.abs(image).max() <= channels_module.IMAGE_CLIP and image.std() > 0


def test_images_are_read_through_the_footprint_crop_geometry():
    # one component; Cn equal to its footprint image: the cn channel is the footprint's
    # resampled window before compression, pixel for pixel
    rows, cols = np.mgrid[:60, :70]
    cell = np.exp(-((rows - 22.3) ** 2 + (cols - 41.7) ** 2) / 18.0)
    cell[cell < 0.05] = 0
    ev = Evidence.build(cell.reshape(-1, 1, order="F"), (60, 70), Cn=cell, gSig=3)
    found = footprints_for(ev)
    windows = crop_windows(*found, 32)
    expected = windows.resample(windows.crops)
    got = component_channels(ev, found, patch_size=32, names=("footprint", "cn"))[..., 1]
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_missing_evidence_gives_zero_channels(session):
    ev = Evidence.build(session.A, session.dims)  # no Cn, no image
    found = footprints_for(ev)
    stack = component_channels(ev, found, patch_size=24)
    for name in ("cn", "image"):
        assert not stack[..., CHANNELS.index(name)].any()
    with_images = Evidence.build(session.A, session.dims, Cn=np.zeros(session.dims) + 0.3,
                                 image=_image(session))  # fmt: skip
    source = ChannelSource.from_evidence(
        with_images, footprints_for(with_images), patch_size=24, use=("neighbours",)
    )
    assert source.present == (True, True, False, False)
    used = source.crop()
    assert not used[..., 2:].any() and used[..., 1].any()
    alone = Evidence.build(session.A[:, :1], session.dims)  # one component: no neighbours
    assert not component_channels(alone, footprints_for(alone), patch_size=24)[..., 1].any()


def test_image_channel_does_not_depend_on_the_image_units(session):
    base = _image(session)
    stacks = []
    for scale, offset in ((1.0, 0.0), (37.0, -500.0)):
        ev = Evidence.build(session.A, session.dims, image=scale * base + offset)
        stacks.append(component_channels(ev, footprints_for(ev), patch_size=32)[..., 3])
    np.testing.assert_allclose(stacks[0], stacks[1], atol=1e-4)


def test_chunks_and_ranges_give_the_same_channels(session, monkeypatch):
    ev = Evidence.build(session.A, session.dims, Cn=np.clip(_image(session) / 200, 0, 1))
    source = ChannelSource.from_evidence(ev, footprints_for(ev), patch_size=32)
    whole = source.crop()
    monkeypatch.setattr(channels_module, "_CHUNK_ELEMENTS", 3 * source.pad**2 * 4)
    np.testing.assert_allclose(np.concatenate([source.crop(0, 7), source.crop(7)]), whole,
                               atol=1e-6)  # fmt: skip
    assert source.crop(5, 5).shape == (0, 32, 32, 4)


def test_no_components_and_bad_names():
    ev = Evidence.build(scipy.sparse.csc_matrix((400, 0)), (20, 20))
    assert component_channels(ev, footprints_for(ev), patch_size=16).shape == (0, 16, 16, 4)
    with pytest.raises(ValueError, match="in that order"):
        ChannelSource.from_evidence(
            ev, footprints_for(ev), patch_size=16, names=("cn", "footprint")
        )
