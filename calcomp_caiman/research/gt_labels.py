"""Ground-truth class of each CaImAn component of a simulated movie, by matching.

Pure NumPy/SciPy: runs with or without CaImAn.

The rule
--------
For component ``i`` (footprint ``a_i``, column of ``A``; trace ``c_i``, row of ``C``) and each
ground-truth object ``k`` (footprint ``g_k``, trace ``gt.C[k]``):

* **spatial score** ``s_ik``: for somatic objects (soma, donut_soma, out_of_focus, border_cut,
  dim) the cosine between ``a_i`` and ``g_k`` over the whole field. For processes (dendrite,
  axon), which CaImAn finds in pieces, the *local* cosine: ``g_k`` restricted to the
  component's support dilated by ``LOCAL_DILATION`` px, so a good piece of a long dendrite
  scores high. The local cosine too for one-photon background sources (``ONE_PHOTON_JUNK``:
  deep cells, background fields, vessels, motion), which extend beyond any component: a
  component is their residue when its trace follows them better than any cell's.
* **temporal score** ``t_ik``: Pearson correlation of ``c_i`` with the object's calcium, over
  the frames from ``c_i``'s first non-zero value on (OnACID adds components late; their trace
  is 0 before).
* **energy shares**: ``a_i`` is fitted by non-negative least squares with the footprints of its
  candidate objects (cosine >= 0.05, at most ``MAX_CANDIDATES``); ``share_ik = w_k g_k . a_i /
  |a_i|^2`` is the fraction of the component's energy explained by object ``k`` (the shares add
  up to the fit's R^2 <= 1).

Then, in this order:

1. **merge** -> doubtful: two or more somatic objects each explain >= ``MERGE_SHARE`` of the
   component's energy.
2. the best match ``k*`` maximises ``s_ik * max(t_ik, 0)`` (shape and activity must agree; a
   component on a soma whose dendrite crosses a neighbour matches the soma).
3. by the best match's kind:

   * soma / donut_soma: ``s >= NEURON_SPATIAL`` and ``t >= NEURON_TEMPORAL`` -> neuron;
     otherwise ``s >= PARTIAL_SPATIAL`` and ``t >= PARTIAL_TEMPORAL`` -> doubtful (a partial,
     shifted or poorly demixed soma); otherwise noise;
   * out_of_focus / border_cut / dim: ``s >= PARTIAL_SPATIAL`` and ``t >= PARTIAL_TEMPORAL`` ->
     doubtful; otherwise noise;
   * dendrite / axon: local ``s >= PROCESS_SPATIAL`` and ``t >= PARTIAL_TEMPORAL`` -> process;
     otherwise noise;
   * an object whose class is noise (``gt_class``, when the ground truth has it: the junk a
     hybrid or one-photon generator paints in, e.g. neuropil clouds, speckle, motion edges,
     vessels) -> noise, named after the object (one-photon sources also without ``gt_class``:
     "background residue", "vessel edge", "motion edge");
   * no object with positive score -> noise (neuropil, background, noise fragments).

4. **duplicates** -> doubtful: when several components are labelled neuron on the same object,
   the one with the highest ``s * t`` stays neuron; the others become doubtful (a duplicate looks
   like a neuron, so "noise" would teach the classifier a contradiction; CaImAn's
   ``remove_duplicates`` is the tool for them). Their ``duplicate_of`` names the kept component.
5. **unlabelled** (code ``UNLABELLED`` = 0, only when ``recording_activity`` is given: hybrid
   movies, whose real recording has cells of its own that nobody labelled): the share of the
   component's energy on the recording's active pixels outside the support of every injected
   object but junk (``recording_share``) decides. A component labelled noise with a share of at least
   ``UNLABELLED_SHARE``, or labelled anything else with a share of at least
   ``UNLABELLED_MAJORITY``, lies on the recording's own structure: its class is unknown, so it
   gets no label (leave it out of training, or learn from it without labels).

Every component gets a reason string saying which branch fired.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import numpy as np
import scipy.ndimage
import scipy.optimize
import scipy.sparse

from calcomp_caiman.schema import CLASSES

logger = logging.getLogger(__name__)

__all__ = ["LABEL_RULE", "UNLABELLED", "label_components"]

NEURON_SPATIAL = 0.6
NEURON_TEMPORAL = 0.5
PARTIAL_SPATIAL = 0.4
PARTIAL_TEMPORAL = 0.3
PROCESS_SPATIAL = 0.5
MERGE_SHARE = 0.2
LOCAL_DILATION = 2
MAX_CANDIDATES = 12
SUPPORT_FRACTION = 0.05  # a pixel is in a component's support above this fraction of its max
UNLABELLED_SHARE = 0.3
UNLABELLED_MAJORITY = 0.5
UNLABELLED = 0
"""Label code of a component that lies on a real recording's own (unlabelled) structure."""

SOMATIC = ("soma", "donut_soma", "out_of_focus", "border_cut", "dim")
PROCESSES = ("dendrite", "axon")
ONE_PHOTON_JUNK = {
    "deep_cell": "background residue",
    "background": "background residue",
    "vessel": "vessel edge",
    "motion": "motion edge",
}
"""Kinds of ``research.onephoton``'s background sources (noise; local spatial score) and
what a component matched to them is."""

LABEL_RULE = {
    "neuron_spatial": NEURON_SPATIAL,
    "neuron_temporal": NEURON_TEMPORAL,
    "partial_spatial": PARTIAL_SPATIAL,
    "partial_temporal": PARTIAL_TEMPORAL,
    "process_spatial": PROCESS_SPATIAL,
    "merge_share": MERGE_SHARE,
    "local_dilation": LOCAL_DILATION,
    "duplicates": "doubtful",
    "junk": "noise (ground-truth objects of class noise)",
    "one_photon_junk": "deep_cell, background, vessel, motion: local cosine, noise",
    "unlabelled_share": UNLABELLED_SHARE,
    "unlabelled_majority": UNLABELLED_MAJORITY,
    "unlabelled_code": UNLABELLED,
    "version": "1.2",
}
"""The thresholds of the rule (stored with the labels for provenance)."""

_CODE = {name: i + 1 for i, name in enumerate(CLASSES)}


def _get(gt, name):
    return gt[name] if isinstance(gt, dict) else getattr(gt, name)


def _dense_columns(A) -> np.ndarray:
    if scipy.sparse.issparse(A):
        return np.asarray(A.toarray(), dtype=np.float64)
    return np.asarray(A, dtype=np.float64)


def _zscore_rows(C: np.ndarray) -> np.ndarray:
    C = np.asarray(C, dtype=np.float64)
    C = C - C.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(C, axis=1, keepdims=True)
    return np.divide(C, norm, out=np.zeros_like(C), where=norm > 1e-12)


def _temporal_scores(C: np.ndarray, C_gt: np.ndarray) -> np.ndarray:
    """Pearson correlation of each trace with each GT trace, over the frames from the trace's
    first non-zero value on (OnACID components found late are 0 before their detection)."""
    nonzero = np.abs(C) > 0
    first = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), C.shape[1])
    out = np.zeros((C.shape[0], C_gt.shape[0]))
    for start in np.unique(first):
        rows = np.flatnonzero(first == start)
        if C.shape[1] - start < 3:
            continue
        out[rows] = _zscore_rows(C[rows, start:]) @ _zscore_rows(C_gt[:, start:]).T
    return out


def _recording_share(A, G, dims, activity, junk) -> np.ndarray:
    """Share of each component's energy on active recording pixels that no injected object
    covers (junk does not cover: a compact component on a real cell under a broad neuropil
    cloud is that cell; a component on the cloud itself has little energy on active pixels)."""
    activity = np.asarray(activity, dtype=bool)
    if activity.shape == tuple(dims):
        activity = activity.ravel(order="F")
    if activity.shape != (A.shape[0],):
        raise ValueError(
            f"recording_activity has shape {activity.shape}; expected {tuple(dims)} or "
            f"({A.shape[0]},)"
        )
    objects = G[:, ~junk]
    covered = (
        objects > SUPPORT_FRACTION * np.maximum(objects.max(axis=0, keepdims=True), 1e-12)
    ).any(axis=1)
    free = activity & ~covered
    energy = np.sum(A * A, axis=0)
    return np.divide(
        np.sum(A[free] ** 2, axis=0), energy, out=np.zeros(A.shape[1]), where=energy > 0
    )


def label_components(A, C, dims: Sequence[int], gt, *, recording_activity=None) -> dict:
    """Class code of every CaImAn component, by matching to the simulation's ground truth.

    Parameters
    ----------
    A : (rows * cols, N) sparse or dense array
        CaImAn's ``estimates.A`` (pixels in Fortran order).
    C : (N, T) array
        CaImAn's ``estimates.C``.
    dims : (rows, cols)
        Field of view.
    gt : SimulatedMovie or dict
        Ground truth with ``A`` (pixels x K), ``C`` (K x T) and ``gt_kind`` (K kinds); with
        ``gt_class`` (K class codes), objects of class noise are junk (matched -> noise).
    recording_activity : (rows, cols) or (pixels,) bool array, optional
        Hybrid movies: the pixels where the real recording has structure of its own (its own
        cells). Components mostly there get the label ``UNLABELLED`` (0).

    Returns
    -------
    dict of arrays, one entry per component:
        ``labels`` (N,) int8 class codes 1-4 (order of ``CLASSES``), 0 for unlabelled;
        ``matched`` (N,) int GT index or -1; ``spatial`` and ``temporal`` (N,) float32 scores of
        the match (0 when none); ``share`` (N,) float32 energy share of the matched object;
        ``duplicate_of`` (N,) int (-1 unless a duplicate); ``recording_share`` (N,) float32
        (0 without ``recording_activity``); ``reason`` (N,) str.

    Raises
    ------
    ValueError
        If shapes disagree.

    Examples
    --------
    >>> g = np.zeros((10, 10)); g[3:6, 3:6] = 1
    >>> gt = {"A": g.reshape(-1, 1, order="F"), "C": np.sin(np.arange(50.0))[None],
    ...       "gt_kind": ("soma",)}
    >>> out = label_components(gt["A"], gt["C"], (10, 10), gt)
    >>> int(out["labels"][0]), str(out["reason"][0])
    (1, 'neuron: soma 0')
    """
    dims = tuple(int(d) for d in dims)
    n_pixels = dims[0] * dims[1]
    A = _dense_columns(A)
    C = np.asarray(C, dtype=np.float64)
    G = _dense_columns(_get(gt, "A"))
    C_gt = np.asarray(_get(gt, "C"), dtype=np.float64)
    kinds = tuple(_get(gt, "gt_kind"))
    has_class = "gt_class" in gt if isinstance(gt, dict) else hasattr(gt, "gt_class")
    classes = np.asarray(_get(gt, "gt_class")).ravel() if has_class else None
    if A.ndim != 2 or A.shape[0] != n_pixels:
        raise ValueError(f"A has shape {A.shape}; expected ({n_pixels}, N) for dims={dims}")
    n = A.shape[1]
    if C.shape[0] != n:
        raise ValueError(f"C has {C.shape[0]} rows but A has {n} components")
    if G.shape[0] != n_pixels or G.shape[1] != len(kinds) or C_gt.shape[0] != len(kinds):
        raise ValueError(
            f"ground truth: A {G.shape}, C {C_gt.shape}, {len(kinds)} kinds do not agree "
            f"with dims={dims}"
        )
    if C_gt.shape[1] != C.shape[1]:
        raise ValueError(f"C has {C.shape[1]} frames, ground truth {C_gt.shape[1]}")
    if classes is not None and classes.shape != (len(kinds),):
        raise ValueError(f"gt_class has {classes.size} entries for {len(kinds)} objects")
    n_gt = G.shape[1]
    out = {
        "labels": np.full(n, _CODE["noise"], np.int8),
        "matched": np.full(n, -1, int),
        "spatial": np.zeros(n, np.float32),
        "temporal": np.zeros(n, np.float32),
        "share": np.zeros(n, np.float32),
        "duplicate_of": np.full(n, -1, int),
        "recording_share": np.zeros(n, np.float32),
        "reason": np.array(["noise: no ground-truth object"] * n, dtype=object),
    }
    if n == 0:
        out["reason"] = out["reason"].astype(str)
        return out
    junk = classes == _CODE["noise"] if classes is not None else np.zeros(n_gt, bool)
    one_photon = np.array([k in ONE_PHOTON_JUNK for k in kinds], bool)
    junk = junk | one_photon
    if n_gt == 0:
        if recording_activity is not None:
            _mark_unlabelled(out, _recording_share(A, G, dims, recording_activity, junk))
        out["reason"] = out["reason"].astype(str)
        return out

    somatic = np.array([k in SOMATIC for k in kinds]) & ~junk
    process = np.array([k in PROCESSES for k in kinds]) & ~junk
    a_norm = np.linalg.norm(A, axis=0)
    g_norm = np.linalg.norm(G, axis=0)
    dot = A.T @ G  # (N, K)
    cos = dot / np.maximum(np.outer(a_norm, g_norm), 1e-12)

    # local cosine for processes: g restricted to the dilated support of each component
    support = A > SUPPORT_FRACTION * np.maximum(A.max(axis=0, keepdims=True), 1e-12)
    structure = np.ones((2 * LOCAL_DILATION + 1,) * 2, bool)
    masks = np.stack(
        [
            scipy.ndimage.binary_dilation(support[:, i].reshape(dims, order="F"), structure).ravel(
                order="F"
            )
            for i in range(n)
        ],
        axis=1,
    ).astype(np.float64)
    local_norm = np.sqrt(np.maximum(masks.T @ (G**2), 0))  # (N, K)
    local_cos = dot / np.maximum(a_norm[:, None] * local_norm, 1e-12)
    spatial = np.where((process | one_photon)[None, :], np.minimum(local_cos, 1.0), cos)

    temporal = _temporal_scores(C, C_gt)  # (N, K)
    combined = spatial * np.clip(temporal, 0, None)

    for i in range(n):
        if a_norm[i] <= 0:
            out["reason"][i] = "noise: empty footprint"
            continue
        candidates = np.flatnonzero(cos[i] >= 0.05)
        shares = np.zeros(n_gt)
        if len(candidates):
            candidates = candidates[np.argsort(-cos[i, candidates])][:MAX_CANDIDATES]
            rows = np.flatnonzero(masks[:, i])
            w, _ = scipy.optimize.nnls(G[np.ix_(rows, candidates)], A[rows, i])
            shares[candidates] = w * dot[i, candidates] / a_norm[i] ** 2
        merged = np.flatnonzero(somatic & (shares >= MERGE_SHARE))
        if len(merged) >= 2:
            k = merged[np.argmax(shares[merged])]
            out["labels"][i] = _CODE["doubtful"]
            out["reason"][i] = "doubtful: merge of " + " + ".join(
                f"{kinds[j]} {j} ({shares[j]:.2f})" for j in merged
            )
            out["matched"][i] = k
            out["spatial"][i], out["temporal"][i] = spatial[i, k], temporal[i, k]
            out["share"][i] = shares[k]
            continue
        k = int(np.argmax(combined[i]))
        if combined[i, k] <= 0:
            continue
        s, t = spatial[i, k], temporal[i, k]
        out["matched"][i] = k
        out["spatial"][i], out["temporal"][i], out["share"][i] = s, t, shares[k]
        kind = kinds[k]
        if junk[k]:
            named = f"{ONE_PHOTON_JUNK[kind]}, " if one_photon[k] else ""
            label, why = "noise", f"{named}{kind} {k}"
        elif kind in ("soma", "donut_soma"):
            if s >= NEURON_SPATIAL and t >= NEURON_TEMPORAL:
                label, why = "neuron", f"{kind} {k}"
            elif s >= PARTIAL_SPATIAL and t >= PARTIAL_TEMPORAL:
                label, why = "doubtful", f"partial or poorly demixed {kind} {k}"
            else:
                label, why = "noise", f"weak match to {kind} {k}"
        elif kind in PROCESSES:
            if s >= PROCESS_SPATIAL and t >= PARTIAL_TEMPORAL:
                label, why = "process", f"{kind} {k}"
            else:
                label, why = "noise", f"weak match to {kind} {k}"
        else:
            if s >= PARTIAL_SPATIAL and t >= PARTIAL_TEMPORAL:
                label, why = "doubtful", f"{kind} {k}"
            else:
                label, why = "noise", f"weak match to {kind} {k}"
        out["labels"][i] = _CODE[label]
        out["reason"][i] = f"{label}: {why} (s={s:.2f}, t={t:.2f})"
        if label == "neuron":
            out["reason"][i] = f"neuron: {kind} {k}"

    # duplicates: keep the best neuron per object
    neuron = np.flatnonzero(out["labels"] == _CODE["neuron"])
    for k in np.unique(out["matched"][neuron]):
        same = neuron[out["matched"][neuron] == k]
        if len(same) < 2:
            continue
        best = same[np.argmax(combined[same, k])]
        for i in same[same != best]:
            out["labels"][i] = _CODE["doubtful"]
            out["duplicate_of"][i] = best
            out["reason"][i] = f"doubtful: duplicate of component {best} on {kinds[k]} {k}"
    if recording_activity is not None:
        _mark_unlabelled(out, _recording_share(A, G, dims, recording_activity, junk))
    out["reason"] = out["reason"].astype(str)
    return out


def _mark_unlabelled(out: dict, share: np.ndarray) -> None:
    """Rule 5: components on the recording's own structure get no label."""
    out["recording_share"] = share.astype(np.float32)
    noise = out["labels"] == _CODE["noise"]
    unknown = (noise & (share >= UNLABELLED_SHARE)) | (~noise & (share >= UNLABELLED_MAJORITY))
    for i in np.flatnonzero(unknown):
        out["reason"][i] = (
            f"unlabelled: {share[i]:.0%} of its energy on the recording's own active pixels "
            f"(was {out['reason'][i]})"
        )
    out["labels"][unknown] = UNLABELLED


def ground_truth_arrays(gt, *, generator_version: str) -> dict[str, np.ndarray]:
    """The ground-truth part of a data recipe's ``<id>_labels.npz``, as every recipe writes it.

    ``gt``: a simulated or hybrid movie's ground truth (``A`` sparse footprints, ``C``,
    ``S``, ``gt_kind``, ``gt_class``, ``parent``, ``dims``, ``seed``). Keys: ``gt_kind``,
    ``gt_class``, ``gt_parent``, ``gt_A_data/indices/indptr/shape`` (CSC, Fortran pixel
    order), ``gt_C`` (float16), ``gt_S``, ``dims``, ``seed``, ``generator_version`` and
    ``label_rule_json`` (:data:`LABEL_RULE`).
    """
    A_gt = gt.A.tocsc()
    return {
        "gt_kind": np.array(gt.gt_kind, dtype=str),
        "gt_class": gt.gt_class,
        "gt_parent": gt.parent,
        "gt_A_data": A_gt.data.astype(np.float32),
        "gt_A_indices": A_gt.indices.astype(np.int32),
        "gt_A_indptr": A_gt.indptr.astype(np.int64),
        "gt_A_shape": np.array(A_gt.shape),
        "gt_C": gt.C.astype(np.float16),
        "gt_S": gt.S,
        "dims": np.array(gt.dims),
        "seed": np.array(gt.seed),
        "generator_version": np.array(generator_version),
        "label_rule_json": np.array(json.dumps(LABEL_RULE, sort_keys=True)),
    }
