"""research.recordings: fetching into the cache from local copies (no network), checks of the
documented pixels, and the provenance kept beside the movie."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
import subprocess
import zipfile

import h5py
import numpy as np
import pytest
import tifffile

from calcomp_caiman.research import recordings
from calcomp_caiman.research.recordings import (
    RECORDINGS,
    fetch_recording,
    load_recording,
    provenance_markdown,
)

MOVIE = np.arange(4 * 6 * 5, dtype=np.uint16).reshape(4, 6, 5)
DIGEST = hashlib.sha256(MOVIE.tobytes()).hexdigest()


def tiff_bytes(array) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, photometric="minisblack")
    return buffer.getvalue()


@pytest.fixture
def fake(monkeypatch):
    """Replace the documented recordings by small fakes with the same origins and readers."""

    def install(name, **changes):
        spec = dataclasses.replace(
            RECORDINGS[name], shape=MOVIE.shape, sha256=DIGEST, commit="", **changes
        )
        monkeypatch.setitem(RECORDINGS, name, spec)
        return spec

    return install


def test_pypi_recording_from_a_local_wheel(tmp_path, fake):
    spec = fake("optinist_mouse2p")
    wheel = tmp_path / "optinist-2.4.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as handle:
        handle.writestr(spec.member, tiff_bytes(MOVIE))
    cache = tmp_path / "cache"
    folder = fetch_recording(spec.name, cache, source=wheel)
    assert folder == cache / spec.name
    loaded = load_recording(spec.name, cache)
    assert np.array_equal(loaded.movie, MOVIE) and loaded.source.held_out
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["licence"] == "GPL-3.0" and provenance["movie_sha256"] == DIGEST
    assert provenance["archive"] == wheel.name
    wheel.unlink()  # cached: fetching again needs no source
    assert fetch_recording(spec.name, cache) == folder


def test_pixels_that_differ_from_the_documented_ones_are_refused(tmp_path, fake):
    spec = fake("optinist_mouse2p")
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as handle:
        handle.writestr(spec.member, tiff_bytes(MOVIE + 1))
    with pytest.raises(ValueError, match="sha256"):
        fetch_recording(spec.name, tmp_path / "cache", source=wheel)
    assert not (tmp_path / "cache" / spec.name / "movie.npy").exists()


def test_github_recording_needs_a_local_copy(tmp_path, fake):
    spec = fake("allen_movie_100")
    with pytest.raises(FileNotFoundError, match="local copy"):
        fetch_recording(spec.name, tmp_path / "cache")
    with pytest.raises(FileNotFoundError):
        load_recording(spec.name, tmp_path / "cache")


def test_github_recording_from_a_file_and_from_a_git_mirror(tmp_path, fake):
    spec = fake("allen_movie_100")
    checkout = tmp_path / "checkout"
    target = checkout / spec.member
    target.parent.mkdir(parents=True)
    with h5py.File(target, "w") as handle:
        handle["data"] = MOVIE
    fetch_recording(spec.name, tmp_path / "a", source=target)
    assert np.array_equal(load_recording(spec.name, tmp_path / "a").movie, MOVIE)
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    git = ["git", "-C", str(checkout), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "movie"], check=True)
    bare = tmp_path / "mirror.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(checkout), str(bare)], check=True)
    fetch_recording(spec.name, tmp_path / "b", source=bare)
    provenance = load_recording(spec.name, tmp_path / "b").provenance
    assert provenance["fetched_with"] == "local copy" and len(provenance["commit_read"]) == 40


def test_folder_of_frames(tmp_path, fake):
    spec = fake("calscipy_bruker")
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(MOVIE):
        (folder / f"frame_{i + 2:06d}.ome.tif").write_bytes(tiff_bytes(frame))
    fetch_recording(spec.name, tmp_path / "cache", source=folder)
    assert np.array_equal(load_recording(spec.name, tmp_path / "cache").movie, MOVIE)


def test_default_cache_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(recordings.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert recordings.default_cache() == tmp_path / "elsewhere"
    monkeypatch.delenv(recordings.CACHE_ENV)
    assert recordings.default_cache().parts[-3:] == (".cache", "calcomp", "recordings")


def test_every_recording_documents_licence_role_and_origin():
    roles = {spec.role for spec in RECORDINGS.values()}
    assert roles <= {"held_out", "hybrid", "calibration"} and "held_out" in roles
    for spec in RECORDINGS.values():
        assert spec.licence and spec.url and len(spec.sha256) == 64
        assert (spec.origin == "pypi") == bool(spec.requirement)
        assert (spec.origin == "github") == bool(spec.repository and spec.commit)
    table = provenance_markdown()
    assert all(f"| {name} |" in table for name in RECORDINGS)
    with pytest.raises(ValueError, match="unknown recording"):
        provenance_markdown(["nope"])
