"""A stand-in for CaImAn's ``Estimates`` with the same component-selection behaviour.

CaImAn cannot be installed in CI (it is not on PyPI). This class reproduces what
CaImAn 1.12's ``Estimates.select_components`` and ``restore_discarded_components`` do
to per-component fields, so the tests can check that our fields follow them: CaImAn
slices a fixed list of known fields and ``A``, stores the dropped ones in a new
``discarded_components`` object, and resets ``idx_components``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

KNOWN_FIELDS = ["C", "S", "YrA", "R", "F_dff", "g", "bl", "c1", "neurons_sn", "lam",
                "cnn_preds", "SNR_comp", "r_values", "coordinates"]  # fmt: skip


class Estimates:
    def __init__(self, A=None, C=None, dims=None):
        self.A = A
        self.C = C
        self.dims = dims
        for name in KNOWN_FIELDS[1:]:
            setattr(self, name, None)
        self.idx_components = None
        self.idx_components_bad = None
        self.discarded_components = None
        self.nr = 0 if A is None else A.shape[1]

    def select_components(
        self, idx_components=None, use_object=False, save_discarded_components=True
    ):
        if use_object:
            idx_components = self.idx_components
            idx_components_bad = self.idx_components_bad
        else:
            idx_components_bad = np.setdiff1d(np.arange(self.A.shape[-1]), idx_components)
        if idx_components is None:
            return self
        if save_discarded_components:
            self.discarded_components = Estimates()
        for field in KNOWN_FIELDS:
            value = getattr(self, field)
            if value is not None and len(value) == self.A.shape[-1]:
                if save_discarded_components:
                    setattr(self.discarded_components, field, value[idx_components_bad])
                setattr(self, field, value[idx_components])
        if save_discarded_components:
            self.discarded_components.A = self.A.tocsc()[:, idx_components_bad]
        self.A = self.A.tocsc()[:, idx_components]
        self.nr = len(idx_components)
        self.idx_components = None
        self.idx_components_bad = None
        return self

    def restore_discarded_components(self):
        if self.discarded_components is None:
            return
        for field in KNOWN_FIELDS:
            value = getattr(self, field)
            if value is not None and len(value) == self.A.shape[-1]:
                setattr(
                    self, field, np.concatenate([value, getattr(self.discarded_components, field)])
                )
                setattr(self.discarded_components, field, None)
        self.A = scipy.sparse.hstack([self.A.tocsc(), self.discarded_components.A.tocsc()]).tocsc()
        self.discarded_components.A = None
        self.nr = self.A.shape[-1]
