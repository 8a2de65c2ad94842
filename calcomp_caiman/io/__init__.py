"""Files in and out (row 1): one module per format, and the registry that picks one.

| module | job |
|---|---|
| :mod:`~calcomp_caiman.io.registry` | :data:`~calcomp_caiman.io.registry.REGISTRY`: format name -> reader and writer; detection |
| :mod:`~calcomp_caiman.io.caiman_h5` | read CaImAn's HDF5 (``cnm.save``) |
| :mod:`~calcomp_caiman.io.caiman_h5_write` | write the classification into it (repacked, atomic) |
| :mod:`~calcomp_caiman.io.caiman_h5_layout` | how such a file stores values; our names in it |
| :mod:`~calcomp_caiman.io.nwb` | read NWB (pynwb): ROIs, traces, images, our columns |
| :mod:`~calcomp_caiman.io.nwb_footprints` | NWB ROI masks as footprints |
| :mod:`~calcomp_caiman.io.nwb_write` | write the classification as columns of the table |
| :mod:`~calcomp_caiman.io.suite2p` | Suite2p plane folders |
| :mod:`~calcomp_caiman.io.masks` | label images and mask stacks |
| :mod:`~calcomp_caiman.io.label_table` | a lab's labels CSV (file, component, label); the record of it a refitted model keeps |
| :mod:`~calcomp_caiman.io.sidecar` | the CSV/npz results written beside files we do not rewrite |
| :mod:`~calcomp_caiman.io.limits` | sizes a file declares, checked against the file and a memory budget before reading |
| :mod:`~calcomp_caiman.io.atomic` | temp file + ``os.replace`` + lock: a file is old or new, never half written |

A reader knows no model; a writer takes a :class:`~calcomp_caiman.schema.Classification`
(or its ``as_result()`` dict) and checks it with :func:`~calcomp_caiman.schema.check_result`.
"""
