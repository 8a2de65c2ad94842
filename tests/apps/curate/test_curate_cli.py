"""`calcomp curate` refuses bad input with one clear line, and leaves the input untouched."""

from __future__ import annotations

import re
import socket

import h5py
import pytest

pytest.importorskip("flask")

from calcomp_caiman.apps.cli import main  # noqa: E402


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("calcomp: error: ")]
    assert len(errors) == 1 and err[-1] == errors[0], err  # warnings may come before
    return errors[0]


def test_a_file_that_is_not_a_caiman_result(tmp_path, capsys):
    notes = tmp_path / "notes.hdf5"
    with h5py.File(notes, "w") as handle:
        handle["x"] = [1, 2, 3]
    before = notes.read_bytes()
    assert main(["curate", str(notes), "--port", "0"]) == 1
    line = _error(capsys)
    assert str(notes) in line and "estimates" in line
    assert notes.read_bytes() == before
    text = tmp_path / "text.hdf5"
    text.write_text("hello")
    assert main(["curate", str(text), "--port", "0"]) == 1
    assert str(text) in _error(capsys)
    assert main(["curate", str(tmp_path / "missing.hdf5"), "--port", "0"]) == 1
    assert "missing.hdf5: no such file" in _error(capsys)


@pytest.mark.parametrize(
    "rows, message",
    [
        (
            "other_session.hdf5,3,neuron\n",
            "labels files other_session.hdf5, none of the files being curated",
        ),  # fmt: skip
        ("synthetic_cnmf.hdf5,400,neuron\n", "labels component 400 of .*which has 40 components"),
    ],
)
def test_a_labels_csv_of_other_files(tmp_path, caiman_copy, capsys, rows, message):
    path = caiman_copy("synthetic_cnmf.hdf5")
    labels = tmp_path / "labels.csv"
    labels.write_text("file,component,label\n" + rows)
    before = labels.read_bytes(), path.read_bytes()
    assert main(["curate", str(path), "--labels", str(labels), "--port", "0"]) == 1
    line = _error(capsys)
    assert str(labels) in line
    assert re.search(message, line), line
    assert (labels.read_bytes(), path.read_bytes()) == before


def test_a_port_in_use(caiman_copy, capsys):
    path = caiman_copy("synthetic_cnmf.hdf5")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["curate", str(path), "--port", str(port)]) == 1
    line = _error(capsys)
    assert f"port {port} on 127.0.0.1 is in use" in line and "--port" in line


def test_a_failed_refit_is_reported_and_the_model_kept(tmp_path, caiman_copy):
    """The v1 model has no fusion head: the background refit fails with the reason."""
    import time

    from calcomp_caiman.apps.curate import CurationSession
    from calcomp_caiman.errors import CalcompError

    path = caiman_copy("real_mouse2p_cnmf.hdf5")
    session = CurationSession([path], labels=tmp_path / "labels.csv", model="calcomp_resnet_v1")
    assert session.state()["can_refit"] is False  # the page disables its Refit button
    with pytest.raises(CalcompError, match="label some components"):
        session.start_refit()
    for k in range(10):
        session.set_label(0, k, "neuron" if k % 3 else "non_neuron")
    before = session.files[0].probs.copy()
    session.start_refit()
    deadline = time.monotonic() + 60
    while session.refit_status()["state"] in ("starting", "running"):
        assert time.monotonic() < deadline, "the refit never finished"
        time.sleep(0.2)
    status = session.refit_status()
    assert status["state"] == "failed" and "no fusion head" in status["error"]
    assert session.version == 0 and (session.files[0].probs == before).all()
