"""calcomp_caiman: four-class classification of CaImAn/CNMF components.

Every spatial component is classified as ``neuron``, ``process`` (dendrite), ``noise`` or
``doubtful`` (neuron) from its footprint, its neighbours, the correlation image and its
traces, by a small bundled model (a ResNet on the footprint and a fusion head)::

    from calcomp_caiman import evaluate_components_4class
    evaluate_components_4class(cnm.estimates, cnm.params)
    cnm.estimates.select_components(use_object=True)   # CaImAn's own method
    align_classes(cnm.estimates)  # our fields: one row per remaining component

Importing the package starts neither TensorFlow nor torch.
"""

from calcomp_caiman._version import __version__
from calcomp_caiman.classify import accept_components, classify_footprints
from calcomp_caiman.errors import CalcompError, FileBusyError, InvalidFileError
from calcomp_caiman.evidence.patches import estimate_gsig, extract_patches
from calcomp_caiman.integrations.caiman import (
    align_classes,
    attach_classes,
    evaluate_components_4class,
)
from calcomp_caiman.integrations.onacid import use_calcomp_screening
from calcomp_caiman.model.folder import CalcompModel
from calcomp_caiman.schema import CLASSES, PATCH_SIZE

__all__ = [
    "CLASSES",
    "PATCH_SIZE",
    "CalcompError",
    "CalcompModel",
    "FileBusyError",
    "InvalidFileError",
    "__version__",
    "accept_components",
    "align_classes",
    "attach_classes",
    "classify_footprints",
    "estimate_gsig",
    "evaluate_components_4class",
    "extract_patches",
    "use_calcomp_screening",
]
