"""Files in and out (row 1): one module per format, and the registry that picks one.

| module | job |
|---|---|
| :mod:`~calcomp_caiman.io.registry` | :data:`~calcomp_caiman.io.registry.REGISTRY`: format name -> reader and writer; detection |
| :mod:`~calcomp_caiman.io.caiman_h5` | CaImAn's HDF5 (``cnm.save``) |
| :mod:`~calcomp_caiman.io.nwb` | NWB (pynwb) |
| :mod:`~calcomp_caiman.io.suite2p` | Suite2p plane folders |
| :mod:`~calcomp_caiman.io.masks` | label images and mask stacks |
| :mod:`~calcomp_caiman.io.sidecar` | the CSV/npz results written beside files we do not rewrite |
| :mod:`~calcomp_caiman.io.atomic` | temp file + ``os.replace`` + lock: a file is old or new, never half written |

A reader knows no model; a writer takes a :class:`~calcomp_caiman.schema.Classification`.
"""
