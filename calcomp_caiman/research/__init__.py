"""Research tooling: simulated whole movies, real-CaImAn runs and ground-truth labels.

Used to build training and test data for the model; never imported by the runtime and not
needed to classify components. ``movies`` and ``gt_labels`` need only NumPy and SciPy;
``caiman_runs`` needs real CaImAn (imported inside its functions).
"""
