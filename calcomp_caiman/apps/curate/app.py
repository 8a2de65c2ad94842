"""The curation web page: a Flask app over a :class:`CurationSession`, served on 127.0.0.1.

Routes (JSON unless noted): ``/`` the page (``static/index.html``); ``/api/state``;
``/api/components?predicted=&file=&disagreements=1``; ``/api/card/<file>/<component>``;
``POST /api/label`` ``{"file": int, "component": int, "label": name, code or null}`` (null
removes the label; the reply holds the previous label, for undo); ``POST /api/refit`` and
``GET /api/refit``; ``POST /api/apply``. Every error answers ``{"error": "<one line>"}``:
400 a wrong request, 403 refused (below), 404, 405, 413 a body of :data:`MAX_BODY` bytes
or more, 415 a body that is not ``application/json``, 500 a bug (logged with its traceback).

No other website can drive the page (it rewrites the user's files). Every request must
name the page's own address in ``Host`` (``127.0.0.1:PORT`` or ``localhost:PORT``: a site
whose name was pointed at this computer, DNS rebinding, is refused); a request that carries
an ``Origin`` of another origin, a ``Sec-Fetch-Site`` other than ``same-origin`` (or
``none``) on ``/api``, or, when it changes something, a ``Referer`` from another origin,
is refused; every ``/api`` request must carry the session's token in :data:`TOKEN_HEADER` (random, made when
the server starts, written into the page, never in the URL); and a POST body is parsed only
when its type is ``application/json`` (a form another site submits is ``text/plain``). The
page may be shown only inside pages of this computer (``frame-ancestors``: a notebook on
``localhost``), never framed by another site.
"""

from __future__ import annotations

import errno
import hmac
import json
import logging
import secrets
import socket
import threading
from importlib import resources
from urllib.parse import urlsplit

from calcomp_caiman.apps.curate.session import CurationSession
from calcomp_caiman.apps.curate.store import LABEL_NAMES
from calcomp_caiman.errors import CalcompError
from calcomp_caiman.schema import CLASSES

logger = logging.getLogger(__name__)

__all__ = [
    "create_app",
    "CurateServer",
    "HOST",
    "MAX_BODY",
    "TOKEN_HEADER",
    "label_request",
    "parse_json",
]

HOST = "127.0.0.1"
"""The page is served on the local machine only."""

NAMES = (HOST, "localhost")
"""Host names the page answers to (with its port)."""

TOKEN_HEADER = "X-Calcomp-Token"
"""Header every ``/api`` request carries the session's token in (the page's script sends it)."""

MAX_BODY = 1 << 20
"""Request bodies of this many bytes or more are refused (a label is a few dozen)."""

_TOKEN_MARK = "__CALCOMP_TOKEN__"  # where index.html receives the token
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'self' "
    "http://127.0.0.1:* http://localhost:* https://127.0.0.1:* https://localhost:* vscode-webview:"
)


def _json_kind(value) -> str:
    """What a JSON value is, in words (messages never echo what a request sent)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "an integer out of range"
    if isinstance(value, float):
        return "a number with a fraction or exponent"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("a key appears twice")
    return dict(pairs)


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_json(data: bytes):
    """A request body as strict JSON: UTF-8, no NaN/Infinity, no key given twice.

    Raises
    ------
    ValueError
        One line saying why the body is not such JSON.

    Examples
    --------
    >>> parse_json(b'{"file": 0, "component": 3, "label": "neuron"}')
    {'file': 0, 'component': 3, 'label': 'neuron'}
    >>> parse_json(b'{"component": Infinity}')
    Traceback (most recent call last):
    ValueError: the request body is not JSON (Infinity is not JSON).
    """
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant,
                          object_pairs_hook=_unique_keys)  # fmt: skip
    except UnicodeDecodeError:
        raise ValueError("the request body is not UTF-8 text.") from None
    except RecursionError:
        raise ValueError("the request body nests too deeply.") from None
    except ValueError as err:
        raise ValueError(f"the request body is not JSON ({str(err).splitlines()[0]}).") from None


def label_request(body) -> tuple[int, int, str | None]:
    """``(file, component, label name or None)`` of a ``/api/label`` body, strictly typed.

    ``file`` and ``component`` must be JSON integers (not true/false, 5.0, "7");
    ``label`` a name of :data:`~calcomp_caiman.apps.curate.store.LABEL_NAMES`, a class code
    1-4 (a JSON integer) or null (remove the label). No other key.

    Raises
    ------
    ValueError
        One line naming the field that is wrong and what it must be.

    Examples
    --------
    >>> label_request({"file": 0, "component": 7, "label": 3})
    (0, 7, 'noise')
    >>> label_request({"file": 0, "component": "7", "label": "noise"})
    Traceback (most recent call last):
    ValueError: component must be a JSON integer (like 7), not a string.
    """
    if not isinstance(body, dict) or set(body) != {"file", "component", "label"}:
        got = "an object with other keys" if isinstance(body, dict) else _json_kind(body)
        raise ValueError(f'send a JSON object {{"file": int, "component": int, "label": name '
                         f"or null}}, not {got}.")  # fmt: skip
    for key in ("file", "component"):
        if type(body[key]) is not int:
            raise ValueError(f"{key} must be a JSON integer (like 7), not {_json_kind(body[key])}.")
    label = body["label"]
    if type(label) is int and 1 <= label <= len(CLASSES):
        label = CLASSES[label - 1]
    elif label is not None and not (isinstance(label, str) and label in LABEL_NAMES):
        kind = "another string" if isinstance(label, str) else _json_kind(label)
        raise ValueError(f"label must be one of {', '.join(LABEL_NAMES)}, a class code "
                         f"1-{len(CLASSES)} or null, not {kind}.")  # fmt: skip
    return body["file"], body["component"], label


def create_app(session: CurationSession, *, port: int, token: str):
    """The Flask application serving ``session`` at ``http://127.0.0.1:<port>/``.

    Parameters
    ----------
    session : CurationSession
        What the page shows and changes.
    port : int
        The port it is served on: requests naming another address in ``Host`` or
        ``Origin`` are refused.
    token : str
        The secret every ``/api`` request must carry in :data:`TOKEN_HEADER`; written into
        the page (``<meta name="calcomp-token">``). At least 32 URL-safe characters.

    Raises
    ------
    ValueError
        The token is short or holds characters other than ``A-Za-z0-9_-``.
    """
    from flask import Flask, Response, jsonify, request
    from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

    if len(token) < 32 or not all(c.isascii() and (c.isalnum() or c in "-_") for c in token):
        raise ValueError("token must be 32 or more URL-safe characters (secrets.token_urlsafe).")
    static = resources.files("calcomp_caiman.apps.curate") / "static"
    page = (static / "index.html").read_text(encoding="utf-8").replace(_TOKEN_MARK, token)
    hosts = {f"{name}:{port}" for name in NAMES} | (set(NAMES) if port == 80 else set())
    origins = {f"http://{name}:{port}" for name in NAMES}
    app = Flask("calcomp_caiman.apps.curate", static_folder=str(static), static_url_path="/static")
    app.json.sort_keys = False
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY

    def refuse(code: int, message: str):
        return jsonify(error=message), code

    @app.before_request
    def guard():
        host = request.headers.get("Host", "").lower()
        if host not in hosts:
            return refuse(403, f"this page answers only at http://{HOST}:{port}/, not at host "
                               f"{host[:60]!r} (another site's name pointing at this computer).")  # fmt: skip
        origin = request.headers.get("Origin")
        if origin is not None and origin.lower() not in origins:
            return refuse(403, "requests from another site are refused; use the page itself.")
        api = request.path.startswith("/api/")
        if api and request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):  # fmt: skip
            return refuse(403, "requests from another site are refused; use the page itself.")
        if request.method not in _SAFE:
            referer = urlsplit(request.headers.get("Referer", ""))
            if referer.netloc and f"{referer.scheme}://{referer.netloc}".lower() not in origins:
                return refuse(403, "changes from another site's page are refused; use the page itself.")  # fmt: skip
        if api and not hmac.compare_digest(request.headers.get(TOKEN_HEADER, "").encode(),
                                           token.encode()):  # fmt: skip
            return refuse(403, f"missing or wrong {TOKEN_HEADER}: the page sends it; reload the "
                               f"page (a restarted server has a new token).")  # fmt: skip
        if request.method not in _SAFE and request.mimetype != "application/json":
            return refuse(415, "send the body as Content-Type: application/json.")
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Content-Security-Policy"] = _CSP
        return response

    @app.errorhandler(ValueError)
    @app.errorhandler(CalcompError)
    @app.errorhandler(OSError)
    def bad_request(err):
        return refuse(400, str(err).splitlines()[0] if str(err).strip() else type(err).__name__)

    @app.errorhandler(HTTPException)
    def http_error(err):
        if err.code is None or err.code < 400:  # a redirect (a trailing slash): as it is
            return err
        if err.code == 413:
            return refuse(413, f"the request body is {MAX_BODY} bytes or more (a label is a few dozen).")  # fmt: skip
        return refuse(err.code, f"{err.name}: {(err.description or '').splitlines()[0]}")

    @app.errorhandler(Exception)
    def internal_error(err):
        logger.error("curation page: %s %s failed", request.method, request.path, exc_info=err)
        first = str(err).splitlines()[0] if str(err).strip() else ""
        return refuse(500, f"internal error ({type(err).__name__}{': ' if first else ''}{first}); "
                           "the server's log has the details.")  # fmt: skip

    def json_body():
        data = request.get_data(cache=False)  # a longer Content-Length: 413 before reading
        if len(data) >= MAX_BODY:  # a chunked body is cut at the limit: refused, not truncated
            raise RequestEntityTooLarge()
        return parse_json(data)

    def empty_body() -> None:
        if json_body() != {}:
            raise ValueError("send an empty JSON object {} as the body.")

    @app.get("/")
    def index():
        return Response(page, mimetype="text/html")

    @app.get("/api/state")
    def state():
        return jsonify(session.state())

    @app.get("/api/components")
    def components():
        file = request.args.get("file", "")
        if file and not (file.isascii() and file.isdigit()):
            raise ValueError("file must be a file index (0, 1, ...).")
        items = session.components(
            predicted=request.args.get("predicted") or None,
            file=int(file) if file != "" else None,
            disagreements=request.args.get("disagreements") in ("1", "true"),
        )
        return jsonify(items=items, version=session.version)

    @app.get("/api/card/<int:file>/<int:component>")
    def card(file: int, component: int):
        return jsonify(session.card(file, component))

    @app.post("/api/label")
    def label():
        file, component, name = label_request(json_body())
        previous = session.set_label(file, component, name)
        return jsonify(previous=previous, label=name)

    @app.route("/api/refit", methods=["GET", "POST"])
    def refit():
        if request.method == "POST":
            empty_body()
            return jsonify(session.start_refit())
        return jsonify(session.refit_status() or {"state": "idle"})

    @app.post("/api/apply")
    def apply():
        empty_body()
        return jsonify(session.apply())

    return app


class CurateServer:
    """A running curation page: ``url``, :meth:`stop`, and inline display in Jupyter.

    Created by :func:`calcomp_caiman.apps.curate.serve`; serves in a background thread.
    Each server makes its own token (:func:`create_app`), written into the page it serves.
    """

    def __init__(self, session: CurationSession, *, port: int = 0):
        from werkzeug.serving import WSGIRequestHandler, make_server

        class QuietHandler(WSGIRequestHandler):
            def log_request(self, code="-", size="-") -> None:  # one line per request: debug
                logger.debug("%s %s", self.requestline, code)

        self.session = session
        listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listening.bind((HOST, int(port)))
            listening.listen(64)
            bound = int(listening.getsockname()[1])
        except OSError as err:
            listening.close()
            if err.errno in (errno.EADDRINUSE, errno.EACCES):
                raise CalcompError(
                    f"port {port} on {HOST} is in use (another calcomp curate or program "
                    f"listens there); pick another with --port, or leave --port out for a free one."
                ) from None
            raise
        try:  # werkzeug serves the socket bound here (it would exit the process itself)
            app = create_app(session, port=bound, token=secrets.token_urlsafe(32))
            self._server = make_server(HOST, bound, app, threaded=True,
                                       request_handler=QuietHandler, fd=listening.fileno())  # fmt: skip
        finally:
            listening.close()  # werkzeug holds its own duplicate
        self.port = int(self._server.port)
        self.url = f"http://{HOST}:{self.port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="calcomp-curate")  # fmt: skip
        self._thread.start()
        logger.info("curation page at %s", self.url)

    def wait(self) -> None:
        """Block until :meth:`stop` is called (or Ctrl-C, which stops the server)."""
        try:
            while self._thread.is_alive():
                self._thread.join(timeout=0.5)
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving and any running refit."""
        self._server.shutdown()
        self._server.server_close()
        self.session.close()

    def __enter__(self) -> CurateServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _repr_html_(self) -> str:
        return (f'<iframe src="{self.url}" width="100%" height="720" style="border:1px solid #ccc">'
                f"</iframe><p>calcomp curate: <a href=\"{self.url}\" target=\"_blank\">{self.url}</a></p>")  # fmt: skip

    def __repr__(self) -> str:
        return f"CurateServer({self.url!r})"
