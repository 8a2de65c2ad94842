"""What is known about each component (row 1): footprints, traces, images, CaImAn's metrics.

| module | job |
|---|---|
| :mod:`~calcomp_caiman.evidence.evidence` | :class:`Evidence`, one result's evidence, checked once |
| :mod:`~calcomp_caiman.evidence.traces` | :class:`Traces`, read in row chunks |
| :mod:`~calcomp_caiman.evidence.footprints` | fingerprints and flags of the footprints |
| :mod:`~calcomp_caiman.evidence.patches` | crop scale and the patches the shape network sees |
| :mod:`~calcomp_caiman.evidence.features` | neighbour, image, trace and metric features |
| :mod:`~calcomp_caiman.evidence.order_stats` | medians, percentiles and MAD of rows, from one sort |
| :mod:`~calcomp_caiman.evidence.params` | one setting of CaImAn's params (``CNMFParams`` or a dict) |
| :mod:`~calcomp_caiman.evidence.modality` | one-photon (CNMF-E) or two-photon, from the params |

No module here knows a model or a file format.
"""

from calcomp_caiman.evidence.evidence import Evidence
from calcomp_caiman.evidence.traces import Traces

__all__ = ["Evidence", "Traces"]
