"""Whether a result comes from one-photon (CNMF-E) or two-photon (CNMF) imaging.

CaImAn has one switch for one-photon processing: ``params.init['center_psf']`` ("whether to
use 1p data processing mode. Set to true for 1p", ``CNMFParams``), which its own code reads
to pick the one-photon paths (``map_reduce``, merging, ``correlation_pnr``);
``params.init['method_init'] == 'corr_pnr'`` is the one-photon initialisation, used only
with it. :func:`detect_modality` reads those two. The other settings CNMF-E users change
(``ring_size_factor``, ``nb=0`` and the ``patch`` group's ``low_rank_background=None``
CaImAn then sets) do not decide: ``ring_size_factor`` is 1.5 in every ``CNMFParams``, and
``nb=0`` (no global background) is a two-photon choice too. A CaImAn ``.hdf5`` stores
``params/init/center_psf`` but not the string ``method_init``, so files are told by
``center_psf`` alone.

Results that carry no CaImAn params (Suite2p, NWB, masks) say nothing; the user's
``modality=`` (``--modality``) decides, else they are taken as two-photon
(:func:`modality_used`).
"""

from __future__ import annotations

import numpy as np

from calcomp_caiman.evidence.params import params_value

__all__ = [
    "MODALITIES",
    "MODALITY_CHOICES",
    "check_modality",
    "detect_modality",
    "modality_used",
]

MODALITIES = ("1p", "2p")
"""One-photon (wide-field, miniscopes; CaImAn's CNMF-E) and two-photon imaging."""

MODALITY_CHOICES = ("auto",) + MODALITIES
"""What a user may ask for: ``"auto"`` (from the params, else two-photon) or a modality."""

_ONE_PHOTON_INIT = "corr_pnr"


def _flag(value) -> bool | None:
    """A stored boolean (``True``, ``np.True_``, a 0-d array), else None."""
    if value is None or isinstance(value, (str, bytes)):  # CaImAn writes None as 'NoneType'
        return None
    array = np.asarray(value)
    if array.size != 1 or array.dtype.kind not in "biu":
        return None
    return bool(array.reshape(()))


def _text(value) -> str | None:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def detect_modality(params) -> str | None:
    """The modality CaImAn's params say: ``"1p"``, ``"2p"``, or None when they do not say.

    Parameters
    ----------
    params : CaImAn ``CNMFParams``, dict of groups, or None
        Read as :func:`~calcomp_caiman.evidence.evidence.params_value` reads them:
        ``params.get('init', key)`` or ``params['init'][key]``.

    Returns
    -------
    str or None
        ``"1p"`` when ``init.center_psf`` is true or ``init.method_init`` is
        ``"corr_pnr"`` (CNMF-E); ``"2p"`` when either is set otherwise; None when neither
        is there (no params, or not CaImAn's).

    Examples
    --------
    >>> detect_modality({"init": {"center_psf": True, "method_init": "corr_pnr", "nb": 0}})
    '1p'
    >>> detect_modality({"init": {"center_psf": False, "method_init": "greedy_roi"}})
    '2p'
    >>> detect_modality({"data": {"fr": 30}}) is None
    True
    """
    center_psf = _flag(params_value(params, "init", "center_psf"))
    method_init = _text(params_value(params, "init", "method_init"))
    if center_psf or method_init == _ONE_PHOTON_INIT:
        return "1p"
    if center_psf is False or method_init is not None:
        return "2p"
    return None


def check_modality(modality: str) -> str:
    """``modality`` when it is one of :data:`MODALITY_CHOICES`.

    Raises
    ------
    ValueError
        Anything else.
    """
    if modality not in MODALITY_CHOICES:
        raise ValueError(f"modality must be one of {MODALITY_CHOICES}, got {modality!r}.")
    return modality


def modality_used(modality: str, detected: str | None) -> str:
    """The modality to classify as: the one asked for, else the detected one, else ``"2p"``.

    Parameters
    ----------
    modality : {"auto", "1p", "2p"}
        What the user asked for.
    detected : {"1p", "2p"} or None
        :func:`detect_modality` of the result's params (``Evidence.modality``).

    Returns
    -------
    str
        ``"1p"`` or ``"2p"``.

    Raises
    ------
    ValueError
        ``modality`` is not one of :data:`MODALITY_CHOICES`.

    Examples
    --------
    >>> modality_used("auto", "1p"), modality_used("auto", None), modality_used("2p", "1p")
    ('1p', '2p', '2p')
    """
    check_modality(modality)
    if modality != "auto":
        return modality
    return detected if detected in MODALITIES else "2p"
