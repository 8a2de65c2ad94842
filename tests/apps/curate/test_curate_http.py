"""`calcomp curate` over real HTTP: only the page itself can drive it.

A served instance is asked what another website (a form, a fetch, DNS rebinding) or a
hostile client could send; every refusal is JSON and leaves the labels CSV, the result file
and the model folder as they were. What a browser itself does is in test_curate_browser.py.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("flask")

from conftest import CAIMAN_RESULTS, require  # noqa: E402

from calcomp_caiman.apps.cli_parser import build_parser  # noqa: E402
from calcomp_caiman.apps.curate import serve  # noqa: E402
from calcomp_caiman.apps.curate.app import MAX_BODY, TOKEN_HEADER, create_app  # noqa: E402

TOKEN_META = re.compile(r'<meta name="calcomp-token" content="([A-Za-z0-9_-]{32,})">')


class Served:
    """A served session over a copy of synthetic_cnmf.hdf5 (40 components), one label in its CSV."""

    def __init__(self, folder: Path):
        self.path = folder / "synthetic_cnmf.hdf5"
        shutil.copyfile(require(CAIMAN_RESULTS / "synthetic_cnmf.hdf5"), self.path)
        self.labels = folder / "labels.csv"
        self.labels.write_text("file,component,label\nsynthetic_cnmf.hdf5,2,noise\n")
        self.model_out = folder / "model_out"
        self.server = serve([self.path], labels=self.labels, model="calcomp_resnet_v1",
                            model_out=self.model_out)  # fmt: skip
        self.port = self.server.port
        self.host = f"127.0.0.1:{self.port}"
        status, _, body = self.request("GET", "/")
        assert status == 200
        self.token = TOKEN_META.search(body.decode()).group(1)

    def request(self, method: str, path: str, body: bytes | None = None, *, headers=None,
                host: str | None = None, token: bool = False, chunked: bool = False):  # fmt: skip
        """(status, headers, body) of one request, with exactly the headers given."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            connection.putheader("Host", self.host if host is None else host)
            sent = dict(headers or {})
            if token:
                sent[TOKEN_HEADER] = self.token
            if chunked:
                sent["Transfer-Encoding"] = "chunked"
            elif body is not None:
                sent["Content-Length"] = str(len(body))
            for name, value in sent.items():
                connection.putheader(name, value)
            connection.endheaders()
            if body is not None:
                if chunked:
                    for at in range(0, len(body), 65536):
                        piece = body[at : at + 65536]
                        connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
                    connection.send(b"0\r\n\r\n")
                else:
                    connection.send(body)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def label(self, body: bytes, **kwargs):
        headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
        return self.request("POST", "/api/label", body, headers=headers, **kwargs)

    def files(self) -> tuple[bytes, bytes, bool]:
        return self.labels.read_bytes(), self.path.read_bytes(), self.model_out.exists()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    served = Served(tmp_path_factory.mktemp("curate_http"))
    yield served
    served.server.stop()


@pytest.fixture
def unchanged(served):
    """The labels CSV, the result file and the model folder are as before the test."""
    before = served.files()
    yield served
    assert served.files() == before


def _error(status: int, headers: dict, body: bytes, expected: int) -> str:
    assert status == expected, body
    assert headers["Content-Type"] == "application/json", body
    message = json.loads(body)["error"]
    assert isinstance(message, str) and message and "\n" not in message
    return message


GOOD = json.dumps({"file": 0, "component": 5, "label": "neuron"}).encode()


def test_the_page_carries_the_token_and_the_page_s_requests_work(served):
    status, headers, body = served.request("GET", "/")
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'self' http://127.0.0.1:*" in headers["Content-Security-Policy"]
    assert served.token not in served.server.url  # in the page only
    status, _, body = served.request("GET", "/api/state", token=True, host=f"localhost:{served.port}")  # fmt: skip
    assert status == 200 and json.loads(body)["files"][0]["components"] == 40
    origin = {"Origin": f"http://127.0.0.1:{served.port}", "Referer": served.server.url,
              "Sec-Fetch-Site": "same-origin"}  # fmt: skip
    status, _, body = served.label(GOOD, token=True, headers=origin)
    assert (status, json.loads(body)) == (200, {"previous": None, "label": "neuron"})
    assert "synthetic_cnmf.hdf5,5,neuron" in served.labels.read_text()
    served.label(json.dumps({"file": 0, "component": 5, "label": None}).encode(), token=True)
    assert "5,neuron" not in served.labels.read_text()


def test_each_server_makes_its_own_token(served, tmp_path):
    other = Served(tmp_path)
    try:
        assert other.token != served.token and len(other.token) >= 43
        status, headers, body = other.request("GET", "/api/state", headers={TOKEN_HEADER: served.token})  # fmt: skip
        _error(status, headers, body, 403)
    finally:
        other.server.stop()
    with pytest.raises(ValueError, match="32 or more"):
        create_app(served.server.session, port=1, token="guessable")


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1:1",
                                  "127.0.0.1", "localhost.:{port}", "127.0.0.2:{port}", ""])  # fmt: skip
@pytest.mark.parametrize("method, path", [("GET", "/"), ("GET", "/api/state"),
                                          ("POST", "/api/label"), ("POST", "/api/apply")])  # fmt: skip
def test_another_host_is_refused(unchanged, host, method, path):
    """DNS rebinding: another site's name resolved to 127.0.0.1 reaches the port, not the page."""
    body = GOOD if path == "/api/label" else b"{}" if method == "POST" else None
    status, headers, reply = unchanged.request(
        method, path, body, host=host.format(port=unchanged.port), token=True,
        headers={"Content-Type": "application/json"} if body else None,
    )  # fmt: skip
    assert "only at http://127.0.0.1" in _error(status, headers, reply, 403)
    assert unchanged.token.encode() not in reply


@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1:1", "null",
                                    "https://127.0.0.1:{port}", "http://localhost:1"])  # fmt: skip
@pytest.mark.parametrize("method, path", [("GET", "/api/state"), ("POST", "/api/label"),
                                          ("POST", "/api/apply")])  # fmt: skip
def test_another_origin_is_refused(unchanged, origin, method, path):
    body = GOOD if path == "/api/label" else b"{}" if method == "POST" else None
    status, headers, reply = unchanged.request(
        method, path, body, token=True,
        headers={"Origin": origin.format(port=unchanged.port), "Content-Type": "application/json"},
    )  # fmt: skip
    assert "another site" in _error(status, headers, reply, 403)


@pytest.mark.parametrize("headers", [{"Referer": "http://evil.example/page.html"},
                                     {"Referer": "http://127.0.0.1:1/"},
                                     {"Sec-Fetch-Site": "same-site"},
                                     {"Sec-Fetch-Site": "cross-site"}])  # fmt: skip
def test_a_change_from_another_site_s_page_is_refused(unchanged, headers):
    status, reply_headers, reply = unchanged.label(GOOD, token=True, headers=headers)
    assert "another site" in _error(status, reply_headers, reply, 403)


def test_a_page_framed_elsewhere_still_loads_but_cannot_change(served):
    """A notebook's IFrame: the page's own request carries the notebook as Referer."""
    status, _, _ = served.request("GET", "/", headers={"Referer": "http://localhost:8888/lab"})
    assert status == 200


@pytest.mark.parametrize("token", [None, "", "x" * 43, "{token}x", "{token_upper}"])
@pytest.mark.parametrize("method, path", [("GET", "/api/state"), ("GET", "/api/components"),
                                          ("GET", "/api/card/0/0"), ("GET", "/api/refit"),
                                          ("POST", "/api/label"), ("POST", "/api/refit"),
                                          ("POST", "/api/apply"), ("GET", "/api/nothing")])  # fmt: skip
def test_a_missing_or_wrong_token_is_refused(unchanged, token, method, path):
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers[TOKEN_HEADER] = token.format(token=unchanged.token,
                                             token_upper=unchanged.token.upper())  # fmt: skip
    body = GOOD if path == "/api/label" else b"{}" if method == "POST" else None
    status, reply_headers, reply = unchanged.request(method, path, body, headers=headers)
    assert TOKEN_HEADER in _error(status, reply_headers, reply, 403)


@pytest.mark.parametrize("content_type", [None, "text/plain", "text/plain; charset=utf-8",
                                          "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x",
                                          "application/jsonx", "text/json"])  # fmt: skip
@pytest.mark.parametrize("path", ["/api/label", "/api/refit", "/api/apply"])
def test_a_body_that_is_not_declared_json_is_refused(unchanged, content_type, path):
    """What an HTML form of another site can send (text/plain, form encodings) never counts."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    body = GOOD if path == "/api/label" else b"{}"
    status, reply_headers, reply = unchanged.request("POST", path, body, headers=headers, token=True)  # fmt: skip
    assert "application/json" in _error(status, reply_headers, reply, 415)


@pytest.mark.parametrize("chunked", [False, True])
def test_an_oversized_body_is_refused(unchanged, chunked):
    body = b'{"file": 0, "component": 5, "label": "neuron", "pad": "' + b"x" * MAX_BODY + b'"}'
    status, headers, reply = unchanged.label(body, token=True, chunked=chunked)
    assert f"{MAX_BODY} bytes or more" in _error(status, headers, reply, 413)


BAD_LABELS = {
    "null": b"null",
    "list": b'[0, 5, "neuron"]',
    "string": b'"neuron"',
    "number": b"5",
    "empty object": b"{}",
    "missing label": b'{"file": 0, "component": 5}',
    "extra key": b'{"file": 0, "component": 5, "label": "neuron", "then": "apply"}',
    "key twice": b'{"file": 0, "component": 5, "component": 6, "label": "neuron"}',
    "fraction": b'{"file": 0, "component": 5.9, "label": "neuron"}',
    "float integer": b'{"file": 0, "component": 5.0, "label": "neuron"}',
    "exponent": b'{"file": 0, "component": 5e0, "label": "neuron"}',
    "digit string": b'{"file": 0, "component": "7", "label": "neuron"}',
    "fullwidth digit": '{"file": 0, "component": "\uff11", "label": "neuron"}'.encode(),
    "true": b'{"file": 0, "component": true, "label": "neuron"}',
    "null component": b'{"file": 0, "component": null, "label": "neuron"}',
    "nested": b'{"file": 0, "component": {"value": 5}, "label": "neuron"}',
    "component list": b'{"file": 0, "component": [5], "label": "neuron"}',
    "Infinity": b'{"file": 0, "component": Infinity, "label": "neuron"}',
    "NaN": b'{"file": 0, "component": NaN, "label": "neuron"}',
    "negative": b'{"file": 0, "component": -1, "label": "neuron"}',
    "past the end": b'{"file": 0, "component": 40, "label": "neuron"}',
    "huge": b'{"file": 0, "component": 100000000000000000000000000000, "label": "neuron"}',
    "file string": b'{"file": "0", "component": 5, "label": "neuron"}',
    "file false": b'{"file": false, "component": 5, "label": "neuron"}',
    "no such file": b'{"file": 1, "component": 5, "label": "neuron"}',
    "unknown label": b'{"file": 0, "component": 5, "label": "cell"}',
    "label case": b'{"file": 0, "component": 5, "label": "NEURON"}',
    "label code string": b'{"file": 0, "component": 5, "label": "3"}',
    "label fullwidth": '{"file": 0, "component": 5, "label": "\uff11"}'.encode(),
    "label code 0": b'{"file": 0, "component": 5, "label": 0}',
    "label code 5": b'{"file": 0, "component": 5, "label": 5}',
    "label true": b'{"file": 0, "component": 5, "label": true}',
    "label fraction": b'{"file": 0, "component": 5, "label": 2.0}',
    "label list": b'{"file": 0, "component": 5, "label": ["neuron"]}',
    "label object": b'{"file": 0, "component": 5, "label": {"name": "neuron"}}',
    "truncated": b'{"file": 0, "component": 5, "label": "neuron"',
    "not utf-8": b'{"file": 0, "component": 5, "label": "\xff"}',
    "empty": b"",
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("body", BAD_LABELS.values(), ids=BAD_LABELS.keys())
def test_a_bad_label_body_is_a_json_400(unchanged, body):
    status, headers, reply = unchanged.label(body, token=True)
    _error(status, headers, reply, 400)


def test_a_label_may_be_a_class_code(served):
    status, _, body = served.label(b'{"file": 0, "component": 6, "label": 3}', token=True)
    assert (status, json.loads(body)) == (200, {"previous": None, "label": "noise"})
    served.label(b'{"file": 0, "component": 6, "label": null}', token=True)
    assert ",6," not in served.labels.read_text()


@pytest.mark.parametrize("body", [b"null", b"[]", b'{"go": true}', b"Infinity"])
def test_refit_and_apply_take_only_an_empty_object(unchanged, body):
    for path in ("/api/refit", "/api/apply"):
        status, headers, reply = unchanged.request(
            "POST", path, body, headers={"Content-Type": "application/json"}, token=True
        )
        _error(status, headers, reply, 400)


@pytest.mark.parametrize("method, path, code", [("GET", "/api/nothing", 404),
                                                ("GET", "/nothing", 404),
                                                ("GET", "/api/label", 405),
                                                ("PUT", "/api/state", 405),
                                                ("GET", "/api/card/0/400", 400),
                                                ("GET", "/api/components?file=%EF%BC%91", 400),
                                                ("GET", "/api/components?predicted=cell", 400)])  # fmt: skip
def test_every_error_is_json(unchanged, method, path, code):
    headers = {"Content-Type": "application/json"}
    body = b"{}" if method == "PUT" else None
    status, reply_headers, reply = unchanged.request(method, path, body, headers=headers, token=True)  # fmt: skip
    _error(status, reply_headers, reply, code)


def test_a_bug_is_a_json_500_with_one_line(served, monkeypatch):
    def broken():
        raise RuntimeError("a bug\nwith a second line")

    monkeypatch.setattr(served.server.session, "state", broken)
    status, headers, reply = served.request("GET", "/api/state", token=True)
    assert _error(status, headers, reply, 500) == (
        "internal error (RuntimeError: a bug); the server's log has the details."
    )


def test_the_port_is_a_free_one_unless_given():
    args = build_parser().parse_args(["curate", "x.hdf5"])
    assert args.port == 0
    assert build_parser().parse_args(["curate", "x.hdf5", "--port", "8765"]).port == 8765
