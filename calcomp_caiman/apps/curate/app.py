"""The curation web page: a Flask app over a :class:`CurationSession`, served on 127.0.0.1.

Routes (JSON unless noted): ``/`` the page (``static/index.html``); ``/api/state``;
``/api/components?predicted=&file=&disagreements=1``; ``/api/card/<file>/<component>``;
``POST /api/label`` ``{file, component, label}`` (label null removes it; the reply holds
the previous label, for undo); ``POST /api/refit`` and ``GET /api/refit``;
``POST /api/apply``. Errors answer ``{"error": "<one line>"}`` with status 400.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from importlib import resources

from calcomp_caiman.apps.curate.session import CurationSession
from calcomp_caiman.errors import CalcompError

logger = logging.getLogger(__name__)

__all__ = ["create_app", "CurateServer", "HOST"]

HOST = "127.0.0.1"
"""The page is served on the local machine only."""


def create_app(session: CurationSession):
    """The Flask application serving ``session``."""
    from flask import Flask, jsonify, request

    static = resources.files("calcomp_caiman.apps.curate") / "static"
    app = Flask("calcomp_caiman.apps.curate", static_folder=str(static), static_url_path="/static")
    app.json.sort_keys = False

    @app.errorhandler(ValueError)
    @app.errorhandler(CalcompError)
    @app.errorhandler(OSError)
    def _error(err):
        return jsonify(error=str(err).splitlines()[0] if str(err) else type(err).__name__), 400

    @app.get("/")
    def index():
        return app.send_static_file("index.html")

    @app.get("/api/state")
    def state():
        return jsonify(session.state())

    @app.get("/api/components")
    def components():
        file = request.args.get("file", "")
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
        body = request.get_json(force=True, silent=True) or {}
        if "file" not in body or "component" not in body:
            raise ValueError("send {file, component, label}.")
        previous = session.set_label(int(body["file"]), int(body["component"]), body.get("label"))  # fmt: skip
        return jsonify(previous=previous, label=body.get("label"))

    @app.route("/api/refit", methods=["GET", "POST"])
    def refit():
        if request.method == "POST":
            return jsonify(session.start_refit())
        return jsonify(session.refit_status() or {"state": "idle"})

    @app.post("/api/apply")
    def apply():
        return jsonify(session.apply())

    return app


class CurateServer:
    """A running curation page: ``url``, :meth:`stop`, and inline display in Jupyter.

    Created by :func:`calcomp_caiman.apps.curate.serve`; serves in a background thread.
    """

    def __init__(self, session: CurationSession, *, port: int = 8765):
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
        except OSError as err:
            listening.close()
            if err.errno in (errno.EADDRINUSE, errno.EACCES):
                raise CalcompError(
                    f"port {port} on {HOST} is in use (another calcomp curate or program "
                    f"listens there); pick another with --port, or --port 0 for any free one."
                ) from None
            raise
        try:  # werkzeug serves the socket bound here (it would exit the process itself)
            self._server = make_server(HOST, int(port), create_app(session), threaded=True,
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
