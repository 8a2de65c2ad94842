"""Re-classify a folder of existing CaImAn result files with the Python API.

    python example_pipelines/batch_reprocess.py RESULTS_DIR OUT_DIR

The same as ``calcomp reprocess RESULTS_DIR --out-dir OUT_DIR``: every ``*.hdf5`` under
RESULTS_DIR (recursively) is classified and written to OUT_DIR with the same sub-folders;
files already classified by this model are skipped; a file that cannot be read is
reported and left alone; a summary CSV lists every file. Works without CaImAn.
"""

import sys
from pathlib import Path

from calcomp_caiman import CalcompModel
from calcomp_caiman.apps.batch import reprocess, write_summary_csv


def main(results_dir: str, out_dir: str) -> int:
    model = CalcompModel.load()  # the bundled model
    results = []
    for result in reprocess([results_dir], model=model, out_dir=out_dir, accept=("neuron",)):
        results.append(result)
        counts = ", ".join(f"{n} {name}" for name, n in result.counts.items())
        print(f"{result.status:>10}  {Path(result.file).name}  {counts or result.error}")
    summary = write_summary_csv(results, Path(out_dir) / "calcomp_summary.csv")
    print(f"summary: {summary}")
    return int(any(r.status == "failed" for r in results))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
