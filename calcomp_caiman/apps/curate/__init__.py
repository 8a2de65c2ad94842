"""Curate in the browser: label where the model is unsure, refit, apply.

``calcomp curate FILE.hdf5 ...`` (or :func:`serve` in a notebook) serves a local page with
one card per component (footprint, local image with outlines, traces, predicted class and
probabilities), most uncertain first. Labels go to the CSV that ``calcomp finetune
--labels`` reads as you type; "Refit" refits the model in a background process, "Apply"
writes the classification into the files and saves the model folder.

Only the page itself can drive the server: it answers only its own address, refuses
requests from other sites and needs the token written into the page
(:mod:`calcomp_caiman.apps.curate.app`).

Needs the ``curate`` extra (``pip install "calcomp_caiman[curate]"``: Flask).
"""

from __future__ import annotations

import os
import webbrowser

from calcomp_caiman.apps.curate.app import CurateServer, create_app
from calcomp_caiman.apps.curate.session import AUTO_REFIT, CurationSession
from calcomp_caiman.apps.curate.store import LABEL_NAMES, LabelStore

__all__ = ["serve", "CurateServer", "CurationSession", "LabelStore", "LABEL_NAMES", "create_app"]


def serve(
    files,
    *,
    labels: str | os.PathLike | None = None,
    model: str | os.PathLike = "default",
    model_out: str | os.PathLike | None = None,
    port: int = 0,
    open_browser: bool = False,
    auto_refit: int = AUTO_REFIT,
) -> CurateServer:
    """Serve the curation page for CaImAn result files on 127.0.0.1, in the background.

    Parameters
    ----------
    files : path-like or sequence of path-like
        CaImAn ``.hdf5`` result files.
    labels : path-like, optional
        The labels CSV (columns ``file``, ``component``, ``label``), read if it exists
        and rewritten atomically after every label. Default ``curate_labels.csv`` beside
        the first file.
    model : str or path-like
        Bundled model name or model folder; ``"default"``: the lab's default model
        (``calcomp lab``), else the bundled one.
    model_out : path-like, optional
        Where "Apply" saves the (refitted) model; default ``calcomp_curated_model`` beside
        the labels CSV.
    port : int
        TCP port; 0 (default) picks a free one.
    open_browser : bool
        Open the page in the default browser.
    auto_refit : int
        Refit in the background after this many new labels (default 5); 0: only when
        the page's Refit button is pressed.

    Returns
    -------
    CurateServer
        ``.url``; ``.stop()``; ``.wait()`` blocks. Displayed as the page itself (an
        IFrame) when it is the last value of a Jupyter cell.

    Raises
    ------
    FileNotFoundError, InvalidFileError
        A file is missing or not a CaImAn result, or the labels CSV is unusable.
    CalcompError
        The port is in use.

    Examples
    --------
    In a notebook::

        from calcomp_caiman.apps.curate import serve
        server = serve(["session1/cnm.hdf5"], labels="labels.csv")
        server          # the page, inline
        server.stop()
    """
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    session = CurationSession(files, labels=labels, model=model, model_out=model_out,
                              auto_refit=auto_refit)  # fmt: skip
    server = CurateServer(session, port=port)
    if open_browser:
        webbrowser.open(server.url)
    return server
