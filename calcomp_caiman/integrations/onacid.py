"""Online: let CaImAn's OnACID screen its new candidate components with our model.

:func:`use_calcomp_screening` installs a
:class:`~calcomp_caiman.integrations.onacid_screen.CandidateScreen` as OnACID's
``loaded_model`` (the object its ``sniper_mode`` asks about each new candidate) and keeps
it there through CaImAn's own preparation of the object, by giving the object a subclass
of its class that still pickles and deep-copies. The screen itself, its crops and its
preprocessing live in :mod:`calcomp_caiman.integrations.onacid_screen`.

CaImAn is never imported here: the functions work on the OnACID object they are given.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Sequence

import numpy as np

from calcomp_caiman.errors import CalcompError
from calcomp_caiman.integrations.onacid_screen import (
    CandidateScreen,
    caiman_crop_half_width,
    patch_inputs,
)
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.schema import CLASSES

logger = logging.getLogger(__name__)

__all__ = ["use_calcomp_screening"]


def _check_model(model) -> CalcompModel:
    """Load ``model`` and run it once, so that a broken one fails now, not mid-stream."""
    if isinstance(model, CalcompModel):
        loaded = model
    elif model is None:
        loaded = CalcompModel.load()
    elif isinstance(model, (str, os.PathLike)):
        loaded = CalcompModel.load(model)
    else:
        raise TypeError(
            f"model must be a CalcompModel, a bundled model name or a model folder, "
            f"got {type(model).__name__}."
        )
    size = loaded.patch_size
    rows, cols = np.mgrid[:size, :size]
    blob = np.exp(-((rows - size / 2) ** 2 + (cols - size / 2) ** 2) / (size / 4) ** 2)
    probe = np.stack([np.zeros((size, size)), blob / np.linalg.norm(blob)]).astype(np.float32)
    try:
        probs = loaded.predict(patch_inputs(loaded, probe), threads=1)
    except Exception as err:  # any failure of the forward pass: report it at the call
        raise CalcompError(f"model {loaded.name!r} cannot classify a test patch: {err}") from err
    if probs.shape != (2, len(CLASSES)) or not np.all(np.isfinite(probs)):
        raise CalcompError(
            f"model {loaded.name!r} gave {probs.shape} probabilities with non-finite values "
            f"for a test patch; expected finite (2, {len(CLASSES)})."
        )
    return loaded


def _online_gsig(params) -> float:
    """The one ``gSig`` of ``params.init``; per-axis values must give a square crop."""
    gsig = np.ravel(np.asarray(params.get("init", "gSig"), dtype=float))
    if gsig.size == 0 or not np.all(np.isfinite(gsig)) or np.any(gsig <= 0):
        raise ValueError(f"params.init['gSig'] must be positive pixels, got {gsig.tolist()}.")
    halves = {caiman_crop_half_width(value) for value in gsig[:2]}
    if len(halves) > 1:
        raise ValueError(
            f"params.init['gSig']={gsig.tolist()} gives OnACID non-square candidate crops, "
            "which it scrambles before classifying; use the same gSig for rows and columns."
        )
    return float(gsig[:2].mean())


@functools.cache
def _screening_class(base: type) -> type:
    """A subclass of ``base`` (OnACID) whose preparation keeps our screen installed."""

    # keeps CaImAn's class name: OnACID.save stores the attributes, not the class
    class OnACID(base):
        _calcomp_screening = True

        def _prepare_object(self, *args, **kwargs):
            screen = getattr(self, "loaded_model", None)
            if not isinstance(screen, CandidateScreen):
                return super()._prepare_object(*args, **kwargs)
            # with sniper_mode off, CaImAn's preparation does not load its Keras model
            self.params.set("online", {"sniper_mode": False})
            try:
                return super()._prepare_object(*args, **kwargs)
            finally:
                self.params.set("online", {"sniper_mode": True})
                self.loaded_model = screen
                self.tf_in = None
                self.tf_out = None

        def __reduce_ex__(self, protocol):
            # the class is made at run time: pickle CaImAn's class and rebuild ours on load
            return _rebuild_screening, (base,), self.__dict__

    OnACID.__qualname__ = f"{base.__qualname__}[calcomp]"
    OnACID.__doc__ = base.__doc__
    return OnACID


def _rebuild_screening(base: type):
    """An empty screened OnACID object; unpickling then restores its attributes."""
    return object.__new__(_screening_class(base))


def use_calcomp_screening(
    onacid,
    *,
    model: CalcompModel | str | os.PathLike | None = None,
    threshold: float | None = None,
    accept: Sequence[str] | None = None,
    crop: str = "calcomp",
):
    """Make an OnACID object screen its new candidate components with our model, in place.

    Call it after building ``OnACID(params=...)`` and before ``fit_online`` (or before
    ``initialize_online`` when you drive ``fit_next`` yourself). The model is loaded and
    run on a test patch here, so a missing or broken model fails at this call, not
    mid-stream.

    Parameters
    ----------
    onacid : caiman ``OnACID``
        Configured (``params`` set); modified in place: its class becomes a subclass of
        its own that keeps the screen through CaImAn's preparation (it still pickles and
        deep-copies; unpickling needs this package), ``loaded_model`` is a
        :class:`~calcomp_caiman.integrations.onacid_screen.CandidateScreen` and
        ``params.online['sniper_mode']`` is True.
    model : CalcompModel, str or path-like, optional
        A loaded model, a bundled model's name or a model folder; default: the lab's
        default model (``calcomp lab``), else the bundled one. Loaded (once) here.
    threshold : float in [0, 1), optional
        Keep a candidate when the summed probability of the ``accept`` classes exceeds
        this; written to ``params.online['thresh_CNN_noisy']``. Default: the value
        already there (CaImAn's default 0.5).
    accept : sequence of str, optional
        Classes that count as a new component. Default
        (:func:`~calcomp_caiman.integrations.onacid_screen.screen_accept`): for a model v3
        ``("neuron",)``; for v1/v2 ``("neuron", "doubtful")``, more lenient than the final
        acceptance of :func:`~calcomp_caiman.evaluate_components_4class`, which cleans up
        afterwards (with v2, on simulated movies, it found more neurons than
        ``("neuron",)`` with little junk: ``benchmarks/online_quality.py``).
    crop : {"calcomp", "remap", "caiman"}
        What the model sees of a candidate (see ``CandidateScreen``): our own
        crop of the residual buffer (the default), or CaImAn's crop remapped to our
        scale or as it is; ``benchmarks/online_quality.py`` compares them.

    Returns
    -------
    CandidateScreen
        The installed screen (``onacid.loaded_model``); its ``calls`` and ``candidates``
        count what it screened.

    Raises
    ------
    TypeError
        ``onacid`` is not an OnACID object, or ``model`` is of the wrong kind.
    ValueError
        ``threshold`` outside ``[0, 1)``, unknown ``accept`` class or ``crop``, or a
        ``gSig`` that gives OnACID non-square crops.
    FileNotFoundError
        ``model`` is neither a bundled name nor a folder.
    CalcompError
        The model is damaged (hash mismatch, unreadable) or fails on a test patch.

    Notes
    -----
    With ``sniper_mode`` and ``test_both=False`` (CaImAn's default), the screen replaces
    OnACID's space-correlation test (``rval_thr``) for new candidates; with
    ``params.online['test_both'] = True`` a candidate passing either test is kept. The
    trace test (``thresh_fitness_*``) and the overlap test still follow. The screen is not
    saved by ``OnACID.save`` (CaImAn skips ``loaded_model``); call this again after
    ``load_OnlineCNMF`` to continue screening. Classify the final components with
    :func:`~calcomp_caiman.evaluate_components_4class` as for batch results, and after a
    selection or ``load_OnlineCNMF`` realign them with :func:`~calcomp_caiman.align_classes`.

    CaImAn 1.12.1's ``select_components`` fails on OnACID results with its default
    ``save_discarded_components=True`` (OnACID's initialisation leaves discarded
    components whose traces cover the init batch only; ``load_OnlineCNMF`` turns them
    into a dict), with or without this package: select with
    ``save_discarded_components=False``.

    The default crop repeats CaImAn 1.12's candidate search; where it cannot find the
    candidates again (another CaImAn version, ``use_corr_img``), those candidates get the
    ``"remap"`` crop, counted in ``CandidateScreen.remapped`` and logged once.

    Examples
    --------
    ::

        from caiman.source_extraction.cnmf import online_cnmf, params
        from calcomp_caiman import align_classes, evaluate_components_4class
        from calcomp_caiman.integrations.onacid import use_calcomp_screening

        opts = params.CNMFParams(params_dict={"data": {"fnames": [movie]}, ...})
        onacid = online_cnmf.OnACID(params=opts)
        use_calcomp_screening(onacid)                 # candidates screened by our model
        onacid.fit_online()
        evaluate_components_4class(onacid.estimates, onacid.params)
        onacid.estimates.select_components(use_object=True, save_discarded_components=False)
        align_classes(onacid.estimates)
    """
    params = getattr(onacid, "params", None)
    if not callable(getattr(type(onacid), "_prepare_object", None)) or not callable(
        getattr(params, "get", None)
    ):
        raise TypeError(
            f"onacid must be a CaImAn OnACID object (with params), got {type(onacid).__name__}."
        )
    if threshold is not None:
        threshold = float(threshold)
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold!r}.")
    gsig = _online_gsig(params)
    screen = CandidateScreen(_check_model(model), gsig, accept=accept, crop=crop, onacid=onacid)
    if not params.get("online", "update_num_comps"):
        warnings.warn(
            "params.online['update_num_comps'] is False: OnACID looks for no new "
            "components, so nothing will be screened.",
            stacklevel=2,
        )
    base = type(onacid)
    if not getattr(base, "_calcomp_screening", False):
        onacid.__class__ = _screening_class(base)
    settings = {"sniper_mode": True}
    if threshold is not None:
        settings["thresh_CNN_noisy"] = threshold
    params.set("online", settings)
    onacid.loaded_model = screen
    onacid.tf_in = None
    onacid.tf_out = None
    logger.info(
        "OnACID candidates screened by %s (keep P(%s) > %g)",
        screen.model.name,
        "+".join(screen.accept),
        params.get("online", "thresh_CNN_noisy"),
    )
    return screen
