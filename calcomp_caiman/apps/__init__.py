"""What users run (rows 4-5): batch and Dask reprocessing, the labelling page, the demo,
montages, the bioimage.io export, and the ``calcomp`` command line (parsing and printing)."""
