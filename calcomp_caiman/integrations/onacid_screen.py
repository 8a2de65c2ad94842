"""OnACID's candidate screen: CaImAn's ``loaded_model.predict`` answered by our model.

OnACID (``caiman.source_extraction.cnmf.online_cnmf.OnACID``) looks for new components in
every frame. With ``params.online['sniper_mode']`` it crops each candidate out of the
mean residual image, normalises it, resizes it to 50 x 50 and keeps it when column 0 of
``loaded_model.predict(X, batch_size=..., verbose=0)`` exceeds ``thresh_CNN_noisy``.
A :class:`CandidateScreen` has that ``predict`` interface: it shows our model each
candidate the way it was trained (a footprint in a ``+-(4 gSig + 1)`` window, cut from the
rank-1 non-negative factorisation of the residual buffer around the candidate) and
returns the summed probability of the accepted classes in column 0. A model v3 sees the
footprint as its ``footprint`` channel and its other channels as missing (zeros,
:func:`patch_inputs`), and every model sees no
traces and no other evidence, as a v2 model does here. It runs in NumPy:
neither Keras nor TensorFlow is loaded, and CaImAn's own online model
(``cnn_model_online.h5``) is not needed.

:func:`calcomp_caiman.integrations.onacid.use_calcomp_screening` installs a screen into
an OnACID object. CaImAn is never imported at module level: only the candidate search is
repeated with CaImAn's own functions, when they are importable.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from calcomp_caiman.evidence.patches import crop_half_width, extract_patches
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.schema import CLASSES

logger = logging.getLogger(__name__)

__all__ = [
    "CandidateScreen",
    "caiman_crop_half_width",
    "patch_inputs",
    "screen_accept",
    "SCREEN_ACCEPT",
]

_CAIMAN_PATCH = 50  # get_candidate_components resizes every crop to 50 x 50
_CROPS = ("calcomp", "remap", "caiman")

SCREEN_ACCEPT = ("neuron", "doubtful")
"""Classes whose summed probability a new OnACID candidate must have (against the threshold),
for models v1 and v2; a model v3 screens on P(neuron) alone (:func:`screen_accept`)."""

_NMF_ITERATIONS = 4  # CaImAn's rank1nmf runs 10; 4 screen the same (online_quality.py)
_FOOTPRINT_FLOOR = 0.2  # footprint values below this fraction of its peak are set to 0


def screen_accept(model: CalcompModel) -> tuple[str, ...]:
    """The classes a candidate's probability is summed over by default, for ``model``.

    Models v1 and v2: :data:`SCREEN_ACCEPT` (neuron and doubtful: lenient, the four-class
    evaluation cleans up). A model v3 sees a candidate's footprint alone there and calls most
    of them doubtful, so it screens on P(neuron): on the 8-cell test movie of
    ``tests/test_real_caiman_online.py`` neuron and doubtful passed 74.5 % of the candidates
    (35 components for 8 cells), P(neuron) alone 0.5 % (8 components, all 8 cells found).

    Examples
    --------
    >>> screen_accept(CalcompModel.load("calcomp_v2")), screen_accept(CalcompModel.load())
    (('neuron', 'doubtful'), ('neuron',))
    """
    return ("neuron",) if model.version >= 3 else SCREEN_ACCEPT


def caiman_crop_half_width(gSig: float) -> int:
    """Half-width in pixels of the crop OnACID's ``sniper_mode`` hands to its model.

    ``int(min(2 * gSig, 25))``, as in CaImAn's ``get_candidate_components``: the crop is
    ``2 * half + 1`` pixels wide, centred on the candidate pixel (moved inwards at the
    border of the field of view).

    Examples
    --------
    >>> caiman_crop_half_width(4), caiman_crop_half_width(3.5), caiman_crop_half_width(20)
    (8, 7, 25)
    """
    return int(min(2.0 * float(gSig), _CAIMAN_PATCH / 2))


def patch_inputs(model: CalcompModel, patches: np.ndarray) -> np.ndarray:
    """What ``model`` reads of candidates known by their footprint patch alone.

    Parameters
    ----------
    model : CalcompModel
    patches : (n, P, P) float32 ndarray
        Footprint patches (:meth:`CandidateScreen.to_patches`, or cut from a footprint).

    Returns
    -------
    (n, P, P) or (n, P, P, C) float32 ndarray
        The patches themselves for models v1 and v2; for a model v3 its channels
        (:attr:`~calcomp_caiman.CalcompModel.channel_names`): the patches as the
        ``footprint`` channel (the patch :func:`~calcomp_caiman.evidence.patches.crop_checked`
        makes), every other channel zeros, i.e. missing, as in training when that
        channel's evidence was dropped.

    Examples
    --------
    >>> import numpy as np
    >>> patch_inputs(CalcompModel.load("calcomp_v2"), np.zeros((3, 50, 50), np.float32)).shape
    (3, 50, 50)
    >>> patch_inputs(CalcompModel.load("calcomp_v3"), np.zeros((3, 32, 32), np.float32)).shape
    (3, 32, 32, 4)
    """
    patches = np.asarray(patches, dtype=np.float32)
    if model.version < 3:
        return patches
    names = model.channel_names
    channels = np.zeros((*patches.shape, len(names)), np.float32)
    channels[..., names.index("footprint")] = patches
    return channels


def _resampling_matrix(patch_size: int, out_width: float, in_width: float) -> np.ndarray:
    """Weights (patch_size, 50): our window of ``out_width`` px from CaImAn's ``in_width`` px crop.

    Both grids are centred on the candidate; a triangle kernel as wide as the coarser grid
    step (linear interpolation when enlarging, area averaging when shrinking). Output
    pixels beyond CaImAn's crop get no weight: there the patch is zero, as around an
    isolated footprint.
    """
    step_out = out_width / patch_size
    step_in = in_width / _CAIMAN_PATCH
    out_pos = (np.arange(patch_size) - (patch_size - 1) / 2.0) * step_out
    in_pos = (np.arange(_CAIMAN_PATCH) - (_CAIMAN_PATCH - 1) / 2.0) * step_in
    width = max(step_out, step_in)
    weights = np.maximum(0.0, 1.0 - np.abs(out_pos[:, None] - in_pos[None, :]) / width)
    weights /= weights.sum(axis=1).max()
    return weights.astype(np.float32)


class CandidateScreen:
    """OnACID's candidate classifier, backed by a :class:`~calcomp_caiman.CalcompModel`.

    CaImAn calls :meth:`predict` with its candidate crops; column 0 of the answer is the
    summed probability of the ``accept`` classes, which CaImAn compares with
    ``params.online['thresh_CNN_noisy']``. Made and installed by
    :func:`use_calcomp_screening`; build one directly only to inspect the preprocessing.

    Parameters
    ----------
    model : CalcompModel
        The classifier.
    gSig : float
        Half-size of a neuron in pixels (``params.init['gSig']``).
    accept : sequence of str
        Classes whose probabilities are summed into column 0.
    crop : {"calcomp", "remap", "caiman"}
        What the model sees of a candidate.

        * ``"calcomp"``: our own crop. The candidate's position is found again (CaImAn's
          candidate search repeated on ``onacid.estimates.sv``, and checked against the
          crops CaImAn passed); its footprint is the rank-1 non-negative factorisation of
          the residual buffer in CaImAn's ``+-2 gSig`` window (less its median, values
          under 20 % of the peak set to 0, as a CNMF footprint); the patch is cut from it
          exactly as :func:`~calcomp_caiman.extract_patches` cuts a CNMF footprint
          (centre of mass, ``+-(4 gSig + 1)`` window).
          Candidates that cannot be found again (or without ``onacid``) get ``"remap"``.
        * ``"remap"``: CaImAn's ``+-2 gSig`` crop of the mean residual, clipped at its
          median, placed at its true size inside our ``+-(4 gSig + 1)`` window.
        * ``"caiman"``: CaImAn's crop stretched over the whole patch (for comparison only).

        A model v3 gets that patch as its ``footprint`` channel; its ``neighbours``,
        ``cn`` and ``image`` channels are zeros (missing). The mean residual CaImAn crops
        is not the mean image of the ``image`` channel: the components found so far and
        the background are subtracted from it, so it would show the model an image
        unlike any it was trained on, where a missing channel is one it was (channel
        dropout).
    onacid : caiman ``OnACID``, optional
        The object whose candidates are screened; needed by ``crop="calcomp"``.

    Attributes
    ----------
    calls, candidates, remapped : int
        ``predict`` calls, candidates screened, and candidates that got the ``"remap"``
        crop, so far.

    Examples
    --------
    >>> import numpy as np
    >>> screen = CandidateScreen(CalcompModel.load(), gSig=4, crop="remap")
    >>> rr, cc = np.mgrid[:50, :50]
    >>> blob = np.exp(-((rr - 24.5) ** 2 + (cc - 24.5) ** 2) / 200.0)
    >>> X = np.stack([blob, np.zeros((50, 50))])[..., None].astype(np.float32)
    >>> out = screen.predict(X, batch_size=2, verbose=0)
    >>> out.shape, out.dtype
    ((2, 2), dtype('float32'))
    >>> bool(np.allclose(out.sum(axis=1), 1.0))
    True
    """

    def __init__(
        self,
        model: CalcompModel,
        gSig: float,
        *,
        accept: Sequence[str] | None = None,
        crop: str = "calcomp",
        onacid=None,
    ):
        if not isinstance(model, CalcompModel):
            raise TypeError(f"model must be a CalcompModel, got {type(model).__name__}.")
        accept = screen_accept(model) if accept is None else accept
        accept = (accept,) if isinstance(accept, str) else tuple(accept)
        unknown = [name for name in accept if name not in CLASSES]
        if not accept or unknown:
            raise ValueError(f"accept must name one or more of {CLASSES}, got {accept!r}.")
        if crop not in _CROPS:
            raise ValueError(f"crop must be one of {_CROPS}, got {crop!r}.")
        gsig = float(gSig)
        if not np.isfinite(gsig) or gsig <= 0:
            raise ValueError(f"gSig must be a positive number of pixels, got {gSig!r}.")
        self.model = model
        self.gSig = gsig
        self.accept = accept
        self.crop = crop
        self.calls = 0
        self.candidates = 0
        self.remapped = 0
        self._onacid = onacid
        self._columns = [CLASSES.index(name) for name in accept]
        size = model.patch_size
        caiman_width = 2 * caiman_crop_half_width(gsig) + 1
        our_width = caiman_width if crop == "caiman" else 2.0 * crop_half_width(gsig)
        self._resample = _resampling_matrix(size, our_width, caiman_width)
        self._half_window = int(np.ceil(crop_half_width(gsig))) + 2

    def to_patches(self, X: np.ndarray) -> np.ndarray:
        """CaImAn's candidate crops as patches, without the residual buffer.

        The ``"remap"`` (and ``"caiman"``) preprocessing, also the fallback of
        ``"calcomp"``.

        Parameters
        ----------
        X : (n, 50, 50, 1) or (n, 50, 50) float ndarray
            What ``get_candidate_components`` passes to ``predict``: crops of the mean
            residual minus their median, divided by their standard deviation, resized to
            50 x 50, with rows and columns swapped (CaImAn reshapes a C-ordered crop in
            Fortran order).

        Returns
        -------
        (n, P, P) float32 ndarray
            Rows and columns put back; negative values (below the crop's median) set to
            0; resampled into our window (``"remap"``), square-root compressed and scaled
            to unit L2 norm, as :func:`~calcomp_caiman.extract_patches` does to a
            footprint. An all-zero crop gives an all-zero patch; ``n == 0`` gives shape
            ``(0, P, P)``.

        Raises
        ------
        ValueError
            ``X`` does not have the shape above, or holds NaN or Inf.
        """
        X = _check_crops(X)
        crops = np.maximum(X.transpose(0, 2, 1), 0.0)
        patches = np.matmul(np.matmul(self._resample, crops), self._resample.T)
        np.sqrt(np.maximum(patches, 0, out=patches), out=patches)
        norms = np.sqrt(np.einsum("nij,nij->n", patches, patches))
        patches /= np.where(norms > 0, norms, 1.0)[:, None, None]
        return patches

    def predict(self, X: np.ndarray, batch_size: int | None = None, verbose: int = 0) -> np.ndarray:
        """Screen candidates: Keras' ``predict`` interface, as OnACID calls it.

        Parameters
        ----------
        X : (n, 50, 50, 1) float ndarray
            CaImAn's candidate crops (see :meth:`to_patches`).
        batch_size : int, optional
            Patches per forward pass (CaImAn passes ``min_num_trial``).
        verbose : int
            Ignored (Keras' argument).

        Returns
        -------
        (n, 2) float32 ndarray
            Column 0: summed probability of the ``accept`` classes; column 1: the rest.
        """
        X = _check_crops(X)
        centres = None
        if self.crop == "calcomp" and self._onacid is not None and len(X):
            centres = _find_candidates(self._onacid, X)
        if centres is None:
            patches = self.to_patches(X)
            if self.crop == "calcomp":
                if not self.remapped and self._onacid is not None:
                    logger.warning(
                        "could not find OnACID's candidates again (CaImAn's candidate search "
                        "differs from 1.12's?): screening CaImAn's crops, remapped, instead"
                    )
                self.remapped += len(X)
        else:
            patches = self._residual_patches(centres)
        probs = self.model.predict(
            patch_inputs(self.model, patches), batch_size=max(1, int(batch_size or 128)), threads=1
        )
        keep = probs[:, self._columns].sum(axis=1)
        self.calls += 1
        self.candidates += len(patches)
        return np.stack([keep, 1.0 - keep], axis=1).astype(np.float32)

    def _residual_patches(self, centres: list[tuple[int, int]]) -> np.ndarray:
        """Patches of the footprints found in the residual buffer around ``centres``."""
        estimates = self._onacid.estimates
        dims = tuple(int(d) for d in estimates.dims)
        residual = np.asarray(estimates.Yres_buf)  # (frames, pixels), Fortran pixel order
        movie = residual.reshape(len(residual), dims[1], dims[0])  # (frames, cols, rows) view
        near = caiman_crop_half_width(self.gSig)
        window = 2 * near + 1
        # (frames, n, rows, cols) boxes around the centres; pixels outside the FOV are 0
        windows = np.zeros((len(residual), len(centres), window, window), dtype=np.float32)
        for k, (row, col) in enumerate(centres):
            r0, r1 = max(row - near, 0), min(row + near + 1, dims[0])
            c0, c1 = max(col - near, 0), min(col + near + 1, dims[1])
            box = movie[:, c0:c1, r0:r1].transpose(0, 2, 1)
            windows[:, k, r0 - row + near : r1 - row + near, c0 - col + near : c1 - col + near] = (
                box
            )
        windows = windows.reshape(len(residual), len(centres), window * window)
        footprints = _rank1_nmf(windows)
        # like a CNMF footprint: no floor of clipped noise, no faint skirt
        footprints = np.maximum(footprints - np.median(footprints, axis=1, keepdims=True), 0)
        footprints[footprints < _FOOTPRINT_FLOOR * footprints.max(axis=1, keepdims=True)] = 0
        half = self._half_window
        side = 2 * half + 1
        canvas = np.zeros((len(centres), side, side), dtype=np.float32)
        canvas[:, half - near : half + near + 1, half - near : half + near + 1] = (
            footprints.reshape(len(centres), window, window)
        )
        A = canvas.transpose(0, 2, 1).reshape(len(centres), -1).T  # Fortran pixel order
        return extract_patches(A, (side, side), gSig=self.gSig, patch_size=self.model.patch_size)

    def __repr__(self) -> str:
        return (
            f"CandidateScreen(model={self.model.name!r}, gSig={self.gSig:g}, "
            f"accept={self.accept!r}, crop={self.crop!r})"
        )


def _check_crops(X) -> np.ndarray:
    """``X`` as (n, 50, 50) float32, or a one-line ``ValueError``."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim == 4 and X.shape[-1] == 1:
        X = X[..., 0]
    if X.ndim != 3 or X.shape[1:] != (_CAIMAN_PATCH, _CAIMAN_PATCH):
        raise ValueError(
            f"X must have shape (n, 50, 50, 1) as OnACID's sniper_mode passes it, got {X.shape}."
        )
    if not np.all(np.isfinite(X)):
        raise ValueError("X holds NaN or Inf (a flat crop: its standard deviation is 0).")
    return X


def _rank1_nmf(windows: np.ndarray) -> np.ndarray:
    """Spatial factors (n, pixels) of rank-1 NMFs of (frames, n, pixels); unit norm or 0.

    CaImAn's ``rank1nmf`` (alternating non-negative updates, 4 instead of its 10: on
    simulated movies the screening is the same) for all candidates at once, with
    element-wise products and sums (no BLAS: these matrices are tiny, and a
    multi-threaded BLAS would spend more time waking threads than multiplying).
    """
    footprints = np.maximum(windows, 0).mean(axis=0)
    for _ in range(_NMF_ITERATIONS):
        traces = np.maximum(np.einsum("np,tnp->tn", footprints, windows), 0)
        footprints = np.maximum(np.einsum("tnp,tn->np", windows, traces), 0)
        norms = np.sqrt(np.einsum("np,np->n", footprints, footprints))
        footprints /= np.where(norms > 0, norms, 1.0)[:, None]
    return footprints


def _find_candidates(onacid, X: np.ndarray) -> list[tuple[int, int]] | None:
    """(row, col) of each candidate CaImAn cropped into ``X``, or None if not all found.

    Repeats ``get_candidate_components``' search (CaImAn 1.12: peaks of the residual
    energy ``sv`` after its Gaussian-minus-box filter, or its maximum) and keeps the
    result only if CaImAn's own crops computed at those positions equal ``X`` (or its
    first ``len(X)`` ones: the screen may be handed the first few candidates alone).
    """
    params = onacid.params
    estimates = onacid.estimates
    if params.get("online", "use_corr_img"):
        return None  # candidates come from the correlation image: not repeated here
    try:  # the very functions get_candidate_components uses
        import cv2
        from caiman.source_extraction.cnmf.utilities import (
            gaussian_filter,
            peak_local_max,
            uniform_filter,
        )
    except ImportError:  # outside a CaImAn environment: remap instead
        return None
    try:
        dims = tuple(int(d) for d in estimates.dims)
        gsig = [float(g) for g in params.get("init", "gSig")]
        g_half = [int(g) // 2 for g in params.get("init", "gSiz")]
        trials = int(params.get("online", "min_num_trial"))
        sv = np.maximum(estimates.sv, 0)  # CaImAn updated sv in place, then clipped a copy
        mean_buff = np.asarray(estimates.mean_buff)
    except (AttributeError, TypeError, ValueError):
        return None
    if params.get("online", "use_peak_max"):
        image = sv.reshape(dims).copy()
        ksize = tuple(int(3 * g / 2) * 2 + 1 for g in gsig)
        image = gaussian_filter(image, gsig, truncate=3 / 2, mode="nearest") - uniform_filter(
            image, ksize, mode="nearest"
        )
        peaks = peak_local_max(
            image,
            min_distance=int(np.max(gsig)),
            num_peaks=trials,
            threshold_abs=0,
            exclude_border=False,
        )
    else:
        peaks = [np.unravel_index(np.argmax(sv), dims)] * trials
    mean_image = mean_buff.reshape(dims, order="F")
    half_cnn = [caiman_crop_half_width(g) for g in gsig]
    centres, expected = [], []
    for peak in peaks:
        if len(centres) == len(X):
            break  # X may hold only the first candidates
        ij = [min(max(int(v), g), d - g - 1) for v, g, d in zip(peak, g_half, dims)]
        near = np.maximum(
            mean_image[
                max(ij[0] - g_half[0], 0) : ij[0] + g_half[0] + 1,
                max(ij[1] - g_half[1], 0) : ij[1] + g_half[1] + 1,
            ],
            0,
        )
        if not np.any(near):
            continue  # CaImAn drops candidates whose footprint guess is empty
        ij = [min(max(int(v), h), d - h - 1) for v, h, d in zip(peak, half_cnn, dims)]
        crop = mean_image[
            max(ij[0] - half_cnn[0], 0) : ij[0] + half_cnn[0] + 1,
            max(ij[1] - half_cnn[1], 0) : ij[1] + half_cnn[1] + 1,
        ].astype(np.float32)
        flat = crop.ravel()
        flat = flat - np.median(flat)
        std = np.std(flat)
        if std == 0:
            return None
        normalised = (flat / std).reshape(crop.shape, order="F")
        expected.append(cv2.resize(normalised, (_CAIMAN_PATCH, _CAIMAN_PATCH)))
        centres.append((int(peak[0]), int(peak[1])))
    # CaImAn's candidates in CaImAn's order (a prefix of them when X was cut short)
    if len(expected) != len(X) or not np.allclose(np.stack(expected), X, atol=1e-3, rtol=1e-3):
        logger.debug("could not find %d OnACID candidates again: remapping their crops", len(X))
        return None
    return centres
