"""A lab's own model as its default: ``calcomp lab show / set / reset`` without the printing.

Where the default is looked up (environment variable, config file, bundled model) is
:mod:`calcomp_caiman.model.defaults`; this module says what it finds, in lines for the
command line, and changes the config file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from calcomp_caiman.model.defaults import (
    DEFAULT,
    ENV,
    check_model_folder,
    config_path,
    default_model,
    reset_default_model,
    resolve,
    set_default_model,
)
from calcomp_caiman.model.folder import CalcompModel, bundled_models

__all__ = ["LabDefault", "lab_reset", "lab_set", "lab_show"]


@dataclass(frozen=True)
class LabDefault:
    """The default model now: what it is, why, and what made it.

    Attributes
    ----------
    model : str
        A bundled model's name or a model folder.
    source : str
        ``environment``, ``config`` or ``bundled``.
    reason : str
        Where it was found, in words.
    name, sha256 : str
        The model's name and the SHA256 of its weights.
    refit : str
        What it was refitted from and on which labels ("" for a model not refitted).
    config_file : Path
        The config file ``calcomp lab set`` writes.
    """

    model: str
    source: str
    reason: str
    name: str
    sha256: str
    refit: str
    config_file: Path

    def lines(self) -> list[str]:
        """What ``calcomp lab show`` prints."""
        out = [
            f"default model: {self.model} ({self.name}, weights SHA256 {self.sha256[:12]})",
            f"why: {self.reason}",
        ]
        if self.refit:
            out.append(f"made by: {self.refit}")
        if self.source == "environment":
            out.append(f"{ENV} overrides the config file {self.config_file}")
        out.append(
            "every calcomp command, evaluate_components_4class(model=None) and "
            "use_calcomp_screening(model=None) use it; --model / model= override it"
        )
        return out


def _refit_text(config: dict) -> str:
    if not config.get("refit_from"):
        return ""
    text = f"refit ({config.get('refit_level', 'head')}) of {config['refit_from']} on {config.get('refit_labels', '?')} labels"  # fmt: skip
    labels = config.get("labels_file")
    if isinstance(labels, dict):
        text += f" from {labels.get('path')} (SHA256 {str(labels.get('sha256', ''))[:12]})"
    return text


def lab_show(environ: Mapping[str, str] | None = None) -> LabDefault:
    """The default model now, loaded (so a broken default fails here, with its reason).

    Raises
    ------
    FileNotFoundError, CalcompError
        The default names no model, or its folder is damaged.
    """
    chosen = default_model(environ)
    model = CalcompModel.load(resolve(DEFAULT, bundled_models(), environ))
    return LabDefault(
        chosen.model,
        chosen.source,
        chosen.reason,
        model.name,
        model.sha256,
        _refit_text(model.config),
        config_path(environ),
    )


def lab_set(folder: str | os.PathLike, environ: Mapping[str, str] | None = None) -> LabDefault:
    """Make the model in ``folder`` the default (the config file), after loading it once.

    Raises
    ------
    FileNotFoundError
        ``folder`` is not a model folder.
    CalcompError
        Its weights do not match its ``config.json`` (a damaged folder).
    """
    folder = check_model_folder(folder)
    model = CalcompModel.load(folder)  # a damaged folder fails now, not at the next classify
    path = set_default_model(folder, environ)
    return LabDefault(
        str(folder),
        "config",
        f"config file {path}",
        model.name,
        model.sha256,
        _refit_text(model.config),
        path,
    )


def lab_reset(environ: Mapping[str, str] | None = None) -> Path | None:
    """Forget the default in the config file; the config file when it named one, else None."""
    return reset_default_model(environ)
