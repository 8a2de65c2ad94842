"""Quality of OnACID's candidate screening: our model vs CaImAn's correlation test.

Runs real CaImAn OnACID (``fit_online``, bare init, no motion correction) on seeded
simulated movies with ground truth (``_online_movies.simulated_movie``: the research
simulator where installed, else the built-in one) once per screening variant:

* ``caiman rval``: ``sniper_mode=False``, CaImAn's space-correlation test (``rval_thr``),
  the setting CaImAn uses when its own online CNN is not at hand;
* ``calcomp``: ``use_calcomp_screening(onacid)``, our own crop of the residual buffer and
  the model's own screening classes (``onacid_screen.screen_accept``: P(neuron) for a
  model v3, the default; P(neuron) + P(doubtful) for v1 and v2);
* ``calcomp remap``: CaImAn's crop remapped to our window scale;
* ``calcomp as-is``: CaImAn's crop stretched over the patch (no remap);
* ``calcomp + rval``: our screen OR CaImAn's correlation test (``test_both=True``);
* ``calcomp neuron + doubtful``: our screen with ``accept=SCREEN_ACCEPT`` (P(neuron) +
  P(doubtful) against the threshold, the lenient rule of models v1 and v2).

Every found component is matched to the ground truth by footprint cosine similarity
(>= 0.5). Counted over all movies: components found, distinct true neurons found
("neurons kept"), and junk admitted (components matching a dendrite/axon, nothing, or an
object found already). The last columns repeat the count for the components that
``evaluate_components_4class`` accepts afterwards (``idx_components``).

Examples
--------
    CAIMAN_DATA=... .venv-caiman/bin/python benchmarks/online_quality.py --seeds 3
    .venv-caiman/bin/python benchmarks/online_quality.py --builtin --dims 64 64 --frames 400
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _online_movies import match_components, onacid_for, simulated_movie, write_tif  # noqa: E402

from calcomp_caiman.integrations.onacid_screen import SCREEN_ACCEPT  # noqa: E402

VARIANTS = {
    "caiman rval": None,
    "calcomp": {"crop": "calcomp"},
    "calcomp remap": {"crop": "remap"},
    "calcomp as-is": {"crop": "caiman"},
    "calcomp + rval": {"crop": "calcomp", "test_both": True},
    "calcomp neuron + doubtful": {"crop": "calcomp", "accept": SCREEN_ACCEPT},
}


def run_variant(path, movie, setting, threshold):
    from calcomp_caiman import evaluate_components_4class
    from calcomp_caiman.integrations.onacid import use_calcomp_screening

    online = {"test_both": True} if setting and setting.get("test_both") else {}
    onacid = onacid_for(path, movie, **online)
    if setting is not None:
        use_calcomp_screening(
            onacid,
            threshold=threshold,
            crop=setting["crop"],
            accept=setting.get("accept"),
        )
    start = time.perf_counter()
    onacid.fit_online()
    seconds = time.perf_counter() - start
    est = onacid.estimates
    found = match_components(est.A, movie)
    evaluate_components_4class(est, onacid.params)
    accepted = match_components(est.A[:, est.idx_components], movie)
    return found, accepted, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--dims", type=int, nargs=2, default=(96, 96))
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--threshold", type=float, default=0.5, help="thresh_CNN_noisy")
    parser.add_argument("--builtin", action="store_true", help="use the built-in simulator")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    totals = {name: {"found": {}, "accepted": {}, "seconds": 0.0} for name in args.variants}
    source = None
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(args.seeds):
            movie = simulated_movie(seed, tuple(args.dims), args.frames, builtin=args.builtin)
            source = movie.source
            path = write_tif(movie, Path(folder), f"movie_{seed}")
            for name in args.variants:
                found, accepted, seconds = run_variant(path, movie, VARIANTS[name], args.threshold)
                total = totals[name]
                total["seconds"] += seconds
                for key, counts in (("found", found), ("accepted", accepted)):
                    for field, value in counts.items():
                        total[key][field] = total[key].get(field, 0) + value
                print(f"seed {seed} {name:15s} found {found} accepted {accepted}", file=sys.stderr)

    print(
        f"\n{args.seeds} movies {args.dims[0]}x{args.dims[1]}, {args.frames} frames ({source}); "
        f"thresh_CNN_noisy {args.threshold}\n"
    )
    print(
        "| screening | components | neurons kept | junk admitted | fit_online s "
        "| accepted by 4-class: components | neurons | junk |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, total in totals.items():
        f, a = total["found"], total["accepted"]
        print(
            f"| {name} | {f['components']} | {f['neurons']} / {f['true_neurons']} | "
            f"{f['junk']} | {total['seconds']:.1f} | {a['components']} | {a['neurons']} | "
            f"{a['junk']} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, "totals": totals}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
