"""The model (row 2): probabilities from patches and features; knows no files.

| module | job |
|---|---|
| :mod:`~calcomp_caiman.model.folder` | :class:`CalcompModel`: a model folder (config, ``thresholds.json``, weights), load/save, bundled models |
| :mod:`~calcomp_caiman.model.engine` | the shape network's inference in NumPy |
| :mod:`~calcomp_caiman.model.network` | the shape network's Keras definition (imported on demand, for training) |
| :mod:`~calcomp_caiman.model.head` | the fusion head and its fit |
| :mod:`~calcomp_caiman.model.inputs` | what a model reads about a result's components (patches or channels, features, profiles), in chunks |
| :mod:`~calcomp_caiman.model.ood` | how unlike the training data a file's components are |
| :mod:`~calcomp_caiman.model.cpus`, :mod:`~calcomp_caiman.model.threads` | CPU count, one BLAS thread while fitting |
"""

from calcomp_caiman.model.folder import CalcompModel, bundled_models

__all__ = ["CalcompModel", "bundled_models"]
