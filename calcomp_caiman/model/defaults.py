"""Which model ``"default"`` means: the lab's own when it chose one, else the bundled one.

A lab that refitted the model on its labels makes that model its default once, and every
later ``calcomp classify``, ``calcomp reprocess``, ``calcomp curate``, hook call
(``evaluate_components_4class(..., model=None)``) and OnACID screen
(``use_calcomp_screening(..., model=None)``) uses it. :meth:`CalcompModel.load` resolves
the name ``"default"`` (also what ``model=None`` and a missing ``--model`` mean) here, in
this order; the first that names a model wins:

1. the environment variable :data:`ENV` (``CALCOMP_MODEL=/path/to/lab_model``): for one
   shell, one job script, one notebook kernel;
2. the config file ``$XDG_CONFIG_HOME/calcomp/config.json`` (``~/.config/calcomp/`` when
   ``XDG_CONFIG_HOME`` is unset), ``{"model": "/path/to/lab_model"}``, written by
   ``calcomp lab set FOLDER`` (:func:`set_default_model`) and removed by ``calcomp lab
   reset``; a relative path is relative to the config file's folder;
3. the bundled model :data:`BUNDLED_DEFAULT`.

A model named explicitly (``--model``, ``model=``, another bundled name, a folder) always
wins: only ``"default"`` is looked up. ``calcomp lab show`` says which model is the
default and why.

For a one-photon result (CNMF-E, :mod:`calcomp_caiman.evidence.modality`) ``"default"``
means the bundled one-photon model :data:`BUNDLED_ONE_PHOTON` when it is installed, unless
the lab's default is itself a one-photon model (``config.json`` ``"modality": "1p"``);
without one, the model above (trained on two-photon data: :func:`calcomp_caiman.classify.classify`
warns).
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from calcomp_caiman.errors import CalcompError
from calcomp_caiman.evidence.modality import MODALITIES
from calcomp_caiman.io.atomic import atomic_write_text

__all__ = [
    "BUNDLED_DEFAULT",
    "BUNDLED_ONE_PHOTON",
    "DEFAULT",
    "ENV",
    "DefaultModel",
    "check_model_folder",
    "config_path",
    "default_model",
    "model_modality",
    "reset_default_model",
    "resolve",
    "set_default_model",
]

DEFAULT = "default"
"""The name that means "this lab's default model"."""

ENV = "CALCOMP_MODEL"
"""Environment variable naming the default model (a folder or a bundled name)."""

BUNDLED_DEFAULT = "calcomp_v3"
"""The bundled model used when no lab default is set."""

BUNDLED_ONE_PHOTON = "calcomp_v3_1p"
"""The bundled model ``"default"`` means for one-photon results, when it is installed."""

_KEY = "model"


@dataclass(frozen=True)
class DefaultModel:
    """The model ``"default"`` means, and why."""

    model: str
    """A bundled model's name or a model folder."""
    source: str
    """``"environment"`` (:data:`ENV`), ``"config"`` (the config file) or ``"bundled"``."""
    reason: str
    """Where it was found, in words (names the variable or the file)."""


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The config file: ``$XDG_CONFIG_HOME/calcomp/config.json``, else
    ``~/.config/calcomp/config.json``.

    Examples
    --------
    >>> config_path({"XDG_CONFIG_HOME": "/tmp/cfg"}).as_posix()
    '/tmp/cfg/calcomp/config.json'
    """
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path.home() / ".config"  # spec: absolute only
    return root / "calcomp" / "config.json"


def _read_config(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise CalcompError(f"{path}: cannot read the calcomp config file ({err}).") from None
    try:
        config = json.loads(text) if text.strip() else {}
    except ValueError as err:
        raise CalcompError(
            f"{path}: not valid JSON ({err}); fix it, or remove it with `calcomp lab reset`."
        ) from None
    if not isinstance(config, dict):
        raise CalcompError(f'{path}: must hold a JSON object like {{"model": "/path"}}.')
    return config


def default_model(environ: Mapping[str, str] | None = None) -> DefaultModel:
    """The model ``"default"`` means now (see the module docstring for the order).

    Examples
    --------
    >>> default_model({"XDG_CONFIG_HOME": "/nonexistent"}).model
    'calcomp_v3'
    >>> default_model({"CALCOMP_MODEL": "/labs/ours/model"}).reason
    'environment variable CALCOMP_MODEL'
    """
    environ = os.environ if environ is None else environ
    value = environ.get(ENV, "").strip()
    if value:
        return DefaultModel(value, "environment", f"environment variable {ENV}")
    path = config_path(environ)
    value = _read_config(path).get(_KEY)
    if value is not None:
        if not isinstance(value, str) or not value.strip():
            raise CalcompError(
                f'{path}: "{_KEY}" must be a model folder or a bundled model name; fix it, '
                f"or `calcomp lab reset`."
            )
        model = value.strip()
        if _looks_like_path(model) and not Path(model).expanduser().is_absolute():
            model = str(path.parent / model)  # relative to the config file
        return DefaultModel(str(Path(model).expanduser()) if _looks_like_path(model) else model,
                            "config", f"config file {path}")  # fmt: skip
    return DefaultModel(BUNDLED_DEFAULT, "bundled", f"no {ENV} and no model in {path}")


def _looks_like_path(value: str) -> bool:
    """A folder rather than a bundled name (those are plain words like ``calcomp_v2``)."""
    separators = [os.sep] + ([os.altsep] if os.altsep else [])
    return any(sep in value for sep in separators) or value.startswith(("~", "."))


def model_modality(config: Mapping) -> str:
    """The imaging a model was trained for: its ``config.json`` ``modality``, else ``"2p"``.

    Raises
    ------
    CalcompError
        ``modality`` is neither ``"1p"`` nor ``"2p"``.

    Examples
    --------
    >>> model_modality({"name": "calcomp_v2"}), model_modality({"modality": "1p"})
    ('2p', '1p')
    """
    value = config.get("modality") or "2p"
    if value not in MODALITIES:
        raise CalcompError(
            f"model {config.get('name', 'unnamed')!r}: config.json modality must be one of "
            f"{MODALITIES}, got {value!r}."
        )
    return str(value)


def _trained_for(model: str, known: Mapping[str, os.PathLike] | Collection[str]) -> str | None:
    """:func:`model_modality` of a bundled name or folder; None when its config is unreadable
    (loading it then says why)."""
    folder = known[model] if isinstance(known, Mapping) and model in known else model
    try:
        return model_modality(json.loads((Path(folder) / "config.json").read_text()))
    except (OSError, ValueError, TypeError, AttributeError, CalcompError):
        return None


def resolve(
    name_or_folder: str | os.PathLike,
    known: Collection[str],
    environ: Mapping[str, str] | None = None,
    *,
    modality: str | None = None,
) -> str:
    """What :meth:`CalcompModel.load` should load for ``name_or_folder``.

    ``"default"`` becomes :func:`default_model`'s model (``"default"`` named there means the
    bundled one), or for ``modality="1p"`` the bundled one-photon model
    :data:`BUNDLED_ONE_PHOTON` when it is in ``known`` and the lab's default is not a
    one-photon model; anything else is returned as it is.

    Parameters
    ----------
    name_or_folder : str or path-like
    known : collection of str
        The bundled models' names (a mapping to their folders: the lab default's
        ``config.json`` is read to tell a one-photon lab model).
    environ : mapping, optional
        Default ``os.environ``.
    modality : {"1p", "2p"}, optional
        The imaging of the result to classify; None: two-photon.

    Raises
    ------
    FileNotFoundError
        The lab's default names neither a bundled model nor an existing folder: the
        message says where it was set and how to fix it.
    CalcompError
        The config file is unreadable.

    Examples
    --------
    >>> resolve("calcomp_resnet_v1", {"calcomp_resnet_v1"}, {})
    'calcomp_resnet_v1'
    >>> resolve("default", {"calcomp_v2", "calcomp_v3_1p"}, {"CALCOMP_MODEL": "calcomp_v2"},
    ...         modality="1p")
    'calcomp_v3_1p'
    """
    key = os.fspath(name_or_folder)
    if key != DEFAULT:
        return key
    chosen = _lab_or_bundled(known, environ)
    if modality == "1p" and BUNDLED_ONE_PHOTON in known and _trained_for(chosen, known) != "1p":
        return BUNDLED_ONE_PHOTON
    return chosen


def _lab_or_bundled(known: Collection[str], environ: Mapping[str, str] | None) -> str:
    """:func:`resolve` of ``"default"`` for two-photon results."""
    chosen = default_model(environ)
    if chosen.model in (DEFAULT, BUNDLED_DEFAULT) or chosen.source == "bundled":
        return BUNDLED_DEFAULT if chosen.model == DEFAULT else chosen.model
    if chosen.model not in known and not Path(chosen.model).is_dir():
        fix = (
            f"unset {ENV}"
            if chosen.source == "environment"
            else "run `calcomp lab set FOLDER` or `calcomp lab reset`"
        )
        raise FileNotFoundError(
            f"the default model is set to {chosen.model!r} ({chosen.reason}), which is neither "
            f"a bundled model nor a model folder; {fix}, or pass --model / model= explicitly."
        )
    return chosen.model


def check_model_folder(folder: str | os.PathLike) -> Path:
    """``folder`` as an absolute path, when it holds a model (``config.json``, ``weights.npz``).

    Raises
    ------
    FileNotFoundError
        It does not.
    """
    folder = Path(folder).expanduser().resolve()
    if not (folder / "config.json").is_file() or not (folder / "weights.npz").is_file():
        raise FileNotFoundError(
            f"{folder}: not a model folder (needs config.json and weights.npz); give the folder "
            f"calcomp curate's Apply or calcomp finetune --out wrote."
        )
    return folder


def set_default_model(folder: str | os.PathLike, environ: Mapping[str, str] | None = None) -> Path:
    """Make the model in ``folder`` this user's default (the config file; other keys kept).

    Parameters
    ----------
    folder : path-like
        A model folder (``config.json`` and ``weights.npz``), e.g. one ``calcomp curate``'s
        Apply or ``calcomp finetune --out`` wrote. Stored as an absolute path.

    Returns
    -------
    Path
        The config file written.

    Raises
    ------
    FileNotFoundError
        ``folder`` is not a model folder.
    """
    folder = check_model_folder(folder)
    path = config_path(environ)
    config = _read_config(path)
    config[_KEY] = str(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path


def reset_default_model(environ: Mapping[str, str] | None = None) -> Path | None:
    """Forget the lab's default in the config file (the file goes when nothing else is in
    it). Returns the config file when it named a model, else None. :data:`ENV` is not
    touched (it belongs to the shell)."""
    path = config_path(environ)
    config = _read_config(path)
    if _KEY not in config:
        return None
    del config[_KEY]
    if config:
        atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    else:
        path.unlink()
    return path
