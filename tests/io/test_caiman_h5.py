"""CaImAn HDF5 result files: reading (io.caiman_h5) and writing (io.caiman_h5_write), on CaImAn
1.12.1 result files and on files written by research.caiman_files."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import stat
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import scipy.sparse
from conftest import CAIMAN_RESULTS

from calcomp_caiman.errors import FileBusyError, InvalidFileError
from calcomp_caiman.evidence.footprints import footprint_fingerprint
from calcomp_caiman.io import atomic, caiman_h5_write
from calcomp_caiman.io.caiman_h5 import is_classified_by, read_estimates, read_evidence
from calcomp_caiman.io.caiman_h5_layout import BACKUP_FIELDS
from calcomp_caiman.io.caiman_h5_write import write_classification
from calcomp_caiman.model import CalcompModel
from calcomp_caiman.research.caiman_files import write_caiman_file
from calcomp_caiman.schema import FIELDS

# name: (components, A dtype, row indices unsorted in the file, idx_components_bad or None)
EXPECTED = {
    "real_mouse2p_cnmf.hdf5": (59, np.float64, False, [17, 20, 51]),
    "real_mouse2p_cnmf_unevaluated.hdf5": (59, np.float64, True, None),
    "real_mouse2p_onacid.hdf5": (64, np.float32, False, None),
    "synthetic_cnmf.hdf5": (40, np.float64, True, [2, 3, 4]),
    "synthetic_seeded_cnmf.hdf5": (34, np.float64, True, []),
}


def shared(name: str) -> Path:
    path = CAIMAN_RESULTS / name
    if not path.exists():
        pytest.skip(f"{path} not available (the shared data lives beside the project)")
    return path


def writable_copy(name: str, folder: Path) -> Path:
    """Copy a shared (read-only) file; the copy gets ordinary rw permissions."""
    target = folder / name
    shutil.copyfile(shared(name), target)
    target.chmod(0o644)
    return target


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def temp_files(folder: Path) -> list[str]:
    return [p.name for p in Path(folder).iterdir() if ".calcomp-tmp-" in p.name]


def fake_result(n: int, seed: int = 0, A=None, **provenance) -> dict:
    """A classification of n components (fingerprints of ``A`` when given, else random)."""
    probs = np.random.default_rng(seed).dirichlet(np.ones(4), n).astype(np.float32)
    labels = (probs.argmax(axis=1) + 1).astype(np.int8)
    flags = np.zeros(n, np.uint8)
    flags[: min(n, 2)] = 1
    return {
        "class_probs": probs,
        "class_labels": labels,
        "class_flags": flags,
        "cnn_preds": probs[:, 0].copy(),
        "idx_components": np.flatnonzero(labels == 1).astype(np.int64),
        "idx_components_bad": np.flatnonzero(labels != 1).astype(np.int64),
        "class_fingerprint": (
            np.random.default_rng(seed).random((n, 3)) if A is None else footprint_fingerprint(A)
        ),
        "provenance": {
            "model": "tiny",
            "model_sha256": "ab" * 32,
            "version": "0.1.0",
            "classes": '["neuron", "process", "noise", "doubtful"]',
            "date": "2024-01-01T00:00:00+00:00",
            "min_prob": 0.5,
            **provenance,
        },
    }


def small_file(folder: Path, name: str = "small.hdf5", n: int = 3, **kwargs) -> Path:
    dims = kwargs.pop("dims", (20, 24))
    A = np.zeros((int(np.prod(dims)), n), np.float32)
    for k in range(n):
        A[5 * k : 5 * k + 4, k] = 1.0 + k
    kwargs.setdefault("C", np.ones((n, 30)))
    return Path(write_caiman_file(folder / name, A=A, dims=dims, gSig=(2, 2), **kwargs))


# --------------------------------------------------------------------------- comparison helpers


def values_equal(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def assert_same_attrs(a, b, where: str) -> None:
    assert set(a.attrs) == set(b.attrs), where
    for key in a.attrs:
        assert a.attrs.get_id(key).dtype == b.attrs.get_id(key).dtype, f"{where} attr {key}"
        assert values_equal(a.attrs[key], b.attrs[key]), f"{where} attr {key}"


def assert_same_dataset(a: h5py.Dataset, b: h5py.Dataset, where: str) -> None:
    for prop in ("dtype", "shape", "chunks", "compression", "compression_opts", "shuffle"):
        assert getattr(a, prop) == getattr(b, prop), f"{where}: {prop}"
    assert values_equal(a[()], b[()]), where
    assert_same_attrs(a, b, where)


def assert_same_tree(a: h5py.Group, b: h5py.Group, where: str = "/", renamed=None) -> None:
    """Every object under ``a`` exists identically under ``b``; ``renamed`` maps a name in
    ``a`` to its name in ``b`` (at this level); ``b`` may hold extra names at this level
    only where ``renamed`` says so."""
    renamed = renamed or {}
    assert_same_attrs(a, b, where)
    for name in a:
        x, y = a[name], b[renamed.get(name, name)]
        path = f"{where}{name}"
        assert type(x) is type(y), path
        if isinstance(x, h5py.Group):
            assert set(x) == set(y), path
            assert_same_tree(x, y, path + "/")
        else:
            assert_same_dataset(x, y, path)


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_read_shared_file(name):
    n, dtype, unsorted, bad = EXPECTED[name]
    path = shared(name)
    source = read_estimates(path)
    assert source.path == str(path)
    assert isinstance(source.A, scipy.sparse.csc_matrix)
    assert source.A.shape == (128 * 128, n) and source.n_components == n
    assert source.A.dtype == dtype
    assert source.dims == (128, 128)
    assert source.gSig in ((4.0, 4.0), (3.0, 3.0))
    assert source.classification is None
    assert source.A.has_sorted_indices
    with h5py.File(path, "r") as handle:
        group = handle["estimates/A"]
        data, indices, indptr = group["data"][()], group["indices"][()], group["indptr"][()]
    steps = np.flatnonzero(np.diff(indices) < 0) + 1
    assert bool(np.setdiff1d(steps, indptr).size) == unsorted  # as the README says
    raw = scipy.sparse.csc_matrix((data, indices, indptr), shape=source.A.shape)
    assert (raw != source.A).nnz == 0  # sorting kept every value in its place
    if bad is None:
        assert source.idx_components is None and source.idx_components_bad is None
        assert source.SNR_comp is None and source.r_values is None
    else:
        assert source.idx_components_bad.tolist() == bad
        assert source.idx_components_bad.dtype == np.int64
        assert len(source.idx_components) + len(bad) == n
        assert source.SNR_comp.shape == (n,) and source.r_values.shape == (n,)
    # CaImAn writes cnn_preds = [] when evaluated without the CNN, 'NoneType' otherwise
    if name in ("real_mouse2p_cnmf_unevaluated.hdf5", "real_mouse2p_onacid.hdf5"):
        assert source.cnn_preds is None
    else:
        assert source.cnn_preds.shape == (0,)
    assert source.accepted_list is None and source.rejected_list is None


# --------------------------------------------------------------------------- writing


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_round_trip_keeps_everything(name, tmp_path):
    path = writable_copy(name, tmp_path)
    n = EXPECTED[name][0]
    result = fake_result(n, A=read_estimates(path).A)
    assert write_classification(path, result) == str(path)
    size_first = path.stat().st_size
    assert temp_files(tmp_path) == []
    assert path.stat().st_mode & 0o777 == 0o644

    back = read_estimates(path)
    assert back.classification == result["provenance"]
    assert np.array_equal(back.cnn_preds, result["cnn_preds"])
    assert np.array_equal(back.idx_components, result["idx_components"])
    assert np.array_equal(back.idx_components_bad, result["idx_components_bad"])
    assert is_classified_by(path, "ab" * 32) and not is_classified_by(path, "cd" * 32)

    with h5py.File(shared(name), "r") as src, h5py.File(path, "r") as dst:
        # everything outside /estimates, and /params in particular, is untouched
        assert set(dst) == set(src)
        assert_same_attrs(src, dst, "/")
        for key in set(src) - {"estimates"}:
            if isinstance(src[key], h5py.Group):
                assert set(src[key]) == set(dst[key])
                assert_same_tree(src[key], dst[key], f"/{key}/")
            else:
                assert_same_dataset(src[key], dst[key], f"/{key}")
        ours = set(FIELDS) | set(BACKUP_FIELDS.values())
        assert set(dst["estimates"]) == set(src["estimates"]) | ours
        # CaImAn's values of the fields we overwrite are kept under caiman_*, as stored
        assert_same_tree(src["estimates"], dst["estimates"], "/estimates/", renamed=BACKUP_FIELDS)
        for key in FIELDS:
            assert values_equal(dst["estimates"][key][()], result[key]), key
        assert dst["estimates/class_labels"].dtype == np.int8
        assert dst["estimates/class_flags"].dtype == np.uint8
        assert dst["estimates/class_probs"].attrs["calcomp_model"] == "tiny"
        assert dst["estimates/class_probs"].attrs["calcomp_min_prob"] == 0.5

    # a second run with the same result gives the same content and no growth
    first = path.with_suffix(".first.hdf5")
    shutil.copyfile(path, first)
    assert write_classification(path, result) == str(path)
    assert path.stat().st_size <= size_first
    with h5py.File(first, "r") as a, h5py.File(path, "r") as b:
        assert set(a) == set(b)
        assert_same_tree(a, b)


def test_rerun_keeps_caiman_originals(tmp_path):
    path = writable_copy("real_mouse2p_cnmf.hdf5", tmp_path)
    write_classification(path, fake_result(59, seed=1))
    write_classification(path, fake_result(59, seed=2, model="other"))
    back = read_estimates(path)
    assert back.classification["model"] == "other"
    assert np.array_equal(back.cnn_preds, fake_result(59, seed=2)["cnn_preds"])
    with h5py.File(path, "r") as handle:
        assert handle["estimates/caiman_idx_components_bad"][()].tolist() == [17, 20, 51]
        assert handle["estimates/caiman_cnn_preds"].shape == (0,)


def test_none_originals_stay_nonetype(tmp_path):
    path = writable_copy("real_mouse2p_cnmf_unevaluated.hdf5", tmp_path)
    write_classification(path, fake_result(59))
    with h5py.File(path, "r") as handle:
        for backup in BACKUP_FIELDS.values():
            assert handle["estimates"][backup][()] == b"NoneType"


def test_out_path_leaves_source_untouched(tmp_path):
    path = writable_copy("synthetic_cnmf.hdf5", tmp_path)
    before = sha256(path)
    out = tmp_path / "out.hdf5"
    assert write_classification(path, fake_result(40), out_path=out) == str(out)
    assert sha256(path) == before
    assert read_estimates(out).classification["model"] == "tiny"
    assert out.stat().st_mode & 0o777 == path.stat().st_mode & 0o777

    out_before = sha256(out)
    with pytest.raises(InvalidFileError, match=r"out\.hdf5.*already exists.*overwrite=True"):
        write_classification(path, fake_result(40, seed=3), out_path=out)
    assert sha256(out) == out_before and sha256(path) == before
    write_classification(path, fake_result(40, seed=3), out_path=out, overwrite=True)
    assert sha256(out) != out_before and sha256(path) == before
    assert temp_files(tmp_path) == []


def load_like_caiman(path: Path) -> SimpleNamespace:
    """What CaImAn 1.12's load_CNMF does with a file (recursively_load_dict_contents_from_group):
    group attributes become entries, datasets too ('NoneType' -> None, dims -> tuple), the
    groups A/W/Ab become CSC matrices, and every /estimates entry is set on Estimates."""

    def load(group: h5py.Group) -> dict:
        out = dict(group.attrs)
        for key, item in group.items():
            if isinstance(item, h5py.Dataset):
                value = item[()]
                if isinstance(value, (bytes, str)) and value in (b"NoneType", "NoneType"):
                    value = None
                elif key in ("dims", "medw", "dxy") and isinstance(value, np.ndarray):
                    value = tuple(value)
                out[key] = value
            elif key in ("A", "W", "Ab"):
                out[key] = scipy.sparse.csc_matrix(
                    (item["data"][:], item["indices"][:], item["indptr"][:]), item["shape"][:]
                )
            else:
                out[key] = load(item)
        return out

    with h5py.File(path, "r") as handle:
        loaded = load(handle)
    estimates = SimpleNamespace()
    for key, value in loaded.pop("estimates").items():
        setattr(estimates, key, value)
    return SimpleNamespace(estimates=estimates, **loaded)


def test_loads_like_caiman_load_cnmf(tmp_path):
    path = writable_copy("real_mouse2p_cnmf.hdf5", tmp_path)
    result = fake_result(59)
    write_classification(path, result)
    cnm = load_like_caiman(path)
    original = load_like_caiman(shared("real_mouse2p_cnmf.hdf5"))
    est = cnm.estimates
    n = est.A.shape[1]
    assert est.class_probs.shape == (n, 4) and est.class_labels.shape == (n,)
    assert np.array_equal(est.cnn_preds, est.class_probs[:, 0])
    assert np.array_equal(est.class_labels, est.class_probs.argmax(axis=1) + 1)
    assert np.array_equal(np.sort(np.r_[est.idx_components, est.idx_components_bad]), np.arange(n))
    assert est.caiman_idx_components_bad.tolist() == [17, 20, 51]
    assert np.array_equal(est.caiman_idx_components, original.estimates.idx_components)
    assert est.dims == (128, 128)
    assert not any(key.startswith("calcomp_") for key in vars(est))  # provenance stays on disk
    assert cnm.params.keys() == original.params.keys()  # nothing new under /params
    for group in cnm.params:
        assert cnm.params[group].keys() == original.params[group].keys()
    assert cnm.mmap_file == original.mmap_file


# --------------------------------------------------------------------------- bad inputs


def not_hdf5(folder: Path) -> Path:
    path = folder / "notes.hdf5"
    path.write_text("component 1: neuron\n")
    return path


def truncated(folder: Path) -> Path:
    data = shared("synthetic_cnmf.hdf5").read_bytes()
    path = folder / "truncated.hdf5"
    path.write_bytes(data[: len(data) // 2])
    return path


def without_a(folder: Path) -> Path:
    path = small_file(folder, "no_a.hdf5")
    with h5py.File(path, "r+") as handle:
        del handle["estimates/A"]
    return path


def wrong_dims(folder: Path) -> Path:
    path = small_file(folder, "wrong_dims.hdf5")
    with h5py.File(path, "r+") as handle:
        handle["estimates/dims"][...] = [20, 20]
    return path


def zero_components(folder: Path) -> Path:
    return Path(
        write_caiman_file(folder / "empty.hdf5", A=np.zeros((480, 0)), C=None, dims=(20, 24))
    )


def nan_in_a(folder: Path) -> Path:
    A = np.zeros((480, 2))
    A[[3, 4], 0] = 1.0
    A[[50, 51], 1] = [1.0, np.nan]
    return Path(write_caiman_file(folder / "nan.hdf5", A=A, C=np.ones((2, 5)), dims=(20, 24)))


@pytest.mark.parametrize(
    "make, problem",
    [
        (not_hdf5, "is not an HDF5 file"),
        (truncated, "truncated or corrupt"),
        (without_a, "no estimates/A"),
        (wrong_dims, r"480 pixel rows but estimates/dims = \(20, 20\) gives 400"),
        (zero_components, "0 components: there is nothing to classify"),
        (nan_in_a, r"NaN or Inf values in 1 component\(s\) \(first: \[1\]\)"),
    ],
)
def test_bad_file_is_reported_and_left_unchanged(make, problem, tmp_path):
    path = make(tmp_path)
    before = sha256(path)
    with pytest.raises(InvalidFileError, match=problem) as info:
        read_estimates(path)
    assert str(info.value).startswith(str(path))
    with pytest.raises(InvalidFileError, match=problem) as info:
        write_classification(path, fake_result(3))
    assert str(info.value).startswith(str(path)) and info.value.path == str(path)
    assert sha256(path) == before
    assert temp_files(tmp_path) == []
    assert not is_classified_by(path, "ab" * 32)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.hdf5"):
        read_estimates(tmp_path / "missing.hdf5")
    with pytest.raises(FileNotFoundError, match="missing.hdf5"):
        write_classification(tmp_path / "missing.hdf5", fake_result(3))
    assert not is_classified_by(tmp_path / "missing.hdf5", "ab" * 32)


def test_wrong_result_is_refused(tmp_path):
    path = small_file(tmp_path)
    before = sha256(path)
    with pytest.raises(ValueError, match=r"result has 5 components but .*small\.hdf5 has 3"):
        write_classification(path, fake_result(5))
    bad = fake_result(3)
    bad["class_probs"] = bad["class_probs"][:, :3]
    with pytest.raises(ValueError, match=r"class_probs.*\(N, 4\)"):
        write_classification(path, bad)
    bad = fake_result(3)
    bad["provenance"]["accept"] = ["neuron"]
    with pytest.raises(TypeError, match="JSON"):
        write_classification(path, bad)
    del bad["cnn_preds"]
    with pytest.raises(ValueError, match="cnn_preds"):
        write_classification(path, bad)
    assert sha256(path) == before


def test_read_only_file_in_place(tmp_path):
    path = small_file(tmp_path)
    path.chmod(0o444)
    before = sha256(path)
    with pytest.raises(InvalidFileError, match=r"small\.hdf5: is read-only"):
        write_classification(path, fake_result(3))
    assert sha256(path) == before and temp_files(tmp_path) == []


def test_read_only_folder_in_place(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = small_file(folder)
    before = sha256(path)
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):  # root ignores the mode: make os.access say what it is
            real_access = os.access
            monkeypatch.setattr(
                os,
                "access",
                lambda p, mode: False if Path(p) == folder else real_access(p, mode),
            )
        with pytest.raises(InvalidFileError, match=r"small\.hdf5: cannot be written.*read-only"):
            write_classification(path, fake_result(3))
    finally:
        folder.chmod(0o755)
    assert sha256(path) == before and temp_files(folder) == []


def test_locked_file_is_busy(tmp_path):
    path = small_file(tmp_path)
    before = sha256(path)
    fd = os.open(path, os.O_RDONLY)  # another open file description: its flock conflicts
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(FileBusyError, match=r"small\.hdf5: is locked.*another calcomp"):
            write_classification(path, fake_result(3))
    finally:
        os.close(fd)
    assert sha256(path) == before and temp_files(tmp_path) == []
    write_classification(path, fake_result(3))  # free again
    assert read_estimates(path).classification is not None


@pytest.mark.parametrize("module, where", [(caiman_h5_write, "_write_fields"), (atomic, "_fsync")])
def test_disk_full_leaves_original(module, where, tmp_path, monkeypatch):
    path = writable_copy("synthetic_seeded_cnmf.hdf5", tmp_path)
    before = sha256(path)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(module, where, full)
    with pytest.raises(InvalidFileError, match="No space left on device.*original is unchanged"):
        write_classification(path, fake_result(34))
    assert sha256(path) == before
    assert temp_files(tmp_path) == []


# --------------------------------------------------------------------------- research.caiman_files


@pytest.mark.parametrize("dims", [(20, 30), (8, 10, 4)])
def test_write_caiman_file_round_trip(dims, tmp_path):
    n_pixels = int(np.prod(dims))
    A = scipy.sparse.random(n_pixels, 4, density=0.05, random_state=0, format="csc",
                            dtype=np.float32)  # fmt: skip
    C = np.random.default_rng(0).random((4, 25))
    b = np.ones(n_pixels)
    f = np.ones(25)
    path = write_caiman_file(tmp_path / "sim.hdf5", A=A, C=C, dims=dims, gSig=(2.5, 2.5),
                             b=b, f=f, extra_estimates={"SNR_comp": np.arange(4.0)})  # fmt: skip
    source = read_estimates(path)
    assert source.dims == dims and source.gSig == (2.5, 2.5)
    assert source.A.dtype == np.float32 and (source.A != A).nnz == 0
    assert source.idx_components is None and source.cnn_preds is None
    assert source.SNR_comp.tolist() == [0.0, 1.0, 2.0, 3.0]
    with h5py.File(path, "r") as handle:
        assert handle["params/data"].attrs["caiman_version"] == "1.12.1"
        assert handle["estimates/A/indices"].dtype == np.int32
        assert handle["estimates/A/shape"][()].tolist() == [n_pixels, 4]
        assert handle["estimates/b"].shape == (n_pixels, 1)
        assert handle["estimates/f"].shape == (1, 25)
        assert handle["estimates/idx_components"][()] == b"NoneType"
        assert handle["dims"][()].tolist() == list(dims)
    cnm = load_like_caiman(Path(path))
    assert np.array_equal(cnm.estimates.C, C) and cnm.estimates.nr == 4
    assert cnm.estimates.dims == dims
    with pytest.raises(InvalidFileError, match="already exists"):
        write_caiman_file(path, A=A, C=C, dims=dims)
    write_caiman_file(path, A=A[:, :2], C=C[:2], dims=dims, overwrite=True)
    assert read_estimates(path).n_components == 2
    assert temp_files(tmp_path) == []
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_write_caiman_file_checks_shapes(tmp_path):
    with pytest.raises(ValueError, match="pixel rows"):
        write_caiman_file(tmp_path / "x.hdf5", A=np.zeros((10, 1)), C=None, dims=(4, 4))
    with pytest.raises(ValueError, match=r"C must be \(N=1, T\)"):
        write_caiman_file(tmp_path / "x.hdf5", A=np.zeros((16, 1)), C=np.ones((2, 3)), dims=(4, 4))
    assert not (tmp_path / "x.hdf5").exists()


def test_classify_our_own_file(tmp_path):
    path = small_file(tmp_path)
    write_classification(path, fake_result(3))
    with h5py.File(path, "r") as handle:
        for backup in BACKUP_FIELDS.values():
            assert handle["estimates"][backup][()] == b"NoneType"
        assert "class_probs" not in handle["params"] and set(handle["params"]) == {"data", "init"}


def discarded_group(handle: h5py.File) -> h5py.Group:
    """estimates/discarded_components as a group (our writer stores None there)."""
    node = handle["estimates"].get("discarded_components")
    if not isinstance(node, h5py.Group):
        if node is not None:
            del handle["estimates/discarded_components"]
        node = handle["estimates"].create_group("discarded_components")
    return node


def saved_after_a_selection(path: Path, columns, discarded=()) -> None:
    """What CaImAn's cnm.save writes after its own select_components: A (and what was set
    aside under discarded_components) subset, our datasets left as they were."""
    with h5py.File(path, "r+") as handle:
        group = handle["estimates/A"]
        A = scipy.sparse.csc_matrix(
            (group["data"][()], group["indices"][()], group["indptr"][()]),
            shape=tuple(group["shape"][()]),
        )
        for part, A_part in (
            ("estimates/A", A[:, list(columns)]),
            ("estimates/discarded_components/A", A[:, list(discarded)]),
        ):
            discarded_group(handle)
            if part in handle:
                del handle[part]
            group = handle.create_group(part)
            for name in ("data", "indices", "indptr"):
                group[name] = getattr(A_part, name)
            group["shape"] = np.array(A_part.shape)


def test_stored_rows_follow_a_caiman_selection_saved_to_the_file(tmp_path):
    path = small_file(tmp_path, n=4)
    result = fake_result(4, A=read_estimates(path).A)
    write_classification(path, result)
    assert is_classified_by(path, "ab" * 32)

    saved_after_a_selection(path, [3, 1])
    np.testing.assert_array_equal(read_estimates(path).class_probs, result["class_probs"][[3, 1]])
    assert not is_classified_by(path, "ab" * 32)  # rows no longer in A's order: classify again


def test_stored_rows_of_a_restore_and_of_changed_footprints(tmp_path):
    path = small_file(tmp_path, n=4)
    result = fake_result(4, A=read_estimates(path).A)
    write_classification(path, result)
    with h5py.File(path, "r+") as handle:  # the discarded rows, as CaImAn saves them
        group = discarded_group(handle)
        for name in ("class_probs", "class_fingerprint"):
            group[name] = result[name][[0, 2]]
        for name in ("class_probs", "class_fingerprint"):
            data = result[name][[1, 3]]
            del handle["estimates"][name]
            handle["estimates"][name] = data
    saved_after_a_selection(path, [1, 3, 0, 2])  # restored: kept first, then discarded
    np.testing.assert_array_equal(
        read_estimates(path).class_probs, result["class_probs"][[1, 3, 0, 2]]
    )
    assert not is_classified_by(path, "ab" * 32)

    with h5py.File(path, "r+") as handle:  # footprints changed (refit): nothing matches
        handle["estimates/A/data"][...] *= 2.0
    assert read_estimates(path).class_probs is None


def test_caimans_own_selection_survives_a_classification(tmp_path):
    """A classified file keeps CaImAn's idx_components under its backup name; that, not
    ours, is what `calcomp classify` shows as CaImAn's selection the next time."""
    from importlib.resources import files

    from calcomp_caiman.apps.one_file import classify_file

    demo = files("calcomp_caiman.data") / "demo_caiman_sim.hdf5"
    caiman_own = read_evidence(demo).caiman_accepted
    out = tmp_path / "classified.hdf5"
    classify_file(demo, model=CalcompModel.load(), out_path=out)
    with h5py.File(out, "r") as handle:
        ours = handle["estimates/idx_components"][()]
    assert caiman_own is not None and int(np.sum(caiman_own)) != len(ours)  # they differ here
    np.testing.assert_array_equal(read_evidence(out).caiman_accepted, caiman_own)


def test_sparse_indices_that_are_not_whole_numbers_are_a_one_line_error():
    """NaN indices cast to int64 once made scipy's sort allocate without bound (a C++
    RuntimeError, found by the fuzz test); integral float indices are read as integers."""
    from calcomp_caiman.errors import InvalidFileError
    from calcomp_caiman.io.caiman_h5_layout import footprints_from_parts

    def parts(indices, indptr):
        return {"data": np.ones(1, np.float32), "indices": np.asarray(indices),
                "indptr": np.asarray(indptr), "shape": np.array([1, 1])}  # fmt: skip

    with pytest.raises(InvalidFileError, match="x.hdf5: estimates/A has float64 indices"):
        footprints_from_parts(parts([np.nan], [0.0, np.nan]), "x.hdf5")
    assert footprints_from_parts(parts([0.0], [0.0, 1.0]), "x.hdf5").nnz == 1
