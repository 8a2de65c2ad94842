"""The ``calcomp`` argument parser: every sub-command, its options, help and examples.

Parsing only: :mod:`calcomp_caiman.apps.cli` runs what a parsed command line asks for.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from calcomp_caiman._version import __version__
from calcomp_caiman.evidence.modality import MODALITY_CHOICES
from calcomp_caiman.model.defaults import BUNDLED_DEFAULT
from calcomp_caiman.schema import CLASSES

__all__ = ["build_parser"]


def _accept_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("acceptance (idx_components)")
    group.add_argument(
        "--accept",
        nargs="+",
        default=None,
        choices=CLASSES,
        metavar="CLASS",
        help="classes kept as accepted components (default: the model's thresholds.json, "
        "neuron for the bundled model)",
    )
    group.add_argument(
        "--min-prob",
        type=_probability_or_argmax,
        default=None,
        metavar="P|argmax",
        help="accept when P(accepted classes) >= P; 'argmax': when the most probable class "
        "is accepted (default: the model's thresholds.json)",
    )


def _probability_or_argmax(text: str):
    if text == "argmax":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a probability or 'argmax', got {text!r}"
        ) from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text!r}")
    return value


def _format_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("other pipelines' outputs")
    group.add_argument(
        "--format",
        default="auto",
        choices=("auto", "caiman", "nwb", "suite2p", "masks"),
        help="input format (auto: .hdf5/.h5 CaImAn, .nwb, Suite2p plane folder, "
        ".tif/.tiff/.npy masks)",
    )
    group.add_argument("--plane", help="NWB: the PlaneSegmentation to classify (if several)")
    group.add_argument(
        "--replace-iscell",
        action="store_true",
        help="Suite2p: also write iscell.npy (Suite2p's kept as iscell_suite2p.npy)",
    )
    group.add_argument(
        "--allow-pickle",
        action="store_true",
        help="Suite2p: allow loading its pickled stat.npy/ops.npy (loading a pickle can run "
        "any code: only for folders you trust)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0:  # also NaN
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def _output_options(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=default, help="more messages")
    parser.add_argument("-q", "--quiet", action="count", default=default, help="fewer messages")
    parser.add_argument("--debug", action="store_true", default=default, help="show tracebacks")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default once, when it says something: not for ``None`` or ``False``
    (a flag), nor when the help already speaks of its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return action.help
        return super()._get_help_string(action)


def _command(
    sub,
    common: argparse.ArgumentParser,
    name: str,
    help: str,
    *,
    description: str | None = None,
    epilog: str | None = None,
) -> argparse.ArgumentParser:
    """A sub-command of ``calcomp`` that also takes the ``common`` options after its name;
    ``args.parser`` is the sub-command, so that its usage errors are reported by it."""
    command = sub.add_parser(
        name,
        parents=[common],
        help=help,
        description=description,
        epilog=epilog,
        formatter_class=_HelpFormatter,
    )
    command.set_defaults(parser=command)
    return command


def build_parser() -> argparse.ArgumentParser:
    """The ``calcomp`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="calcomp",
        description="Classify CaImAn/CNMF components as neuron, process, noise or doubtful.",
    )
    parser.add_argument("--version", action="version", version=f"calcomp_caiman {__version__}")
    _output_options(parser, None)
    common = argparse.ArgumentParser(add_help=False)
    _output_options(common, argparse.SUPPRESS)  # also after the sub-command
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    command = functools.partial(_command, sub, common)

    def model_arg(p):
        p.add_argument("--model", default="default",
                       help="bundled model name or model folder (default: the lab's default "
                       f"model, see `calcomp lab show`; else the bundled {BUNDLED_DEFAULT})")  # fmt: skip

    def modality_arg(p):
        p.add_argument("--modality", default="auto", choices=MODALITY_CHOICES,
                       help="one-photon (CNMF-E) or two-photon data; auto: from the file's "
                       "CaImAn params (center_psf), else 2p. Without --model, picks the "
                       "default model of that modality (default: %(default)s)")  # fmt: skip

    p = command("classify", help="classify one CaImAn result file")
    p.add_argument(
        "input", type=Path, help="CaImAn .hdf5 result file (or .nwb, Suite2p plane folder, masks)"
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, help="write an updated copy here")
    where.add_argument("--in-place", action="store_true", help="update the file (atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--csv", type=Path, help="also write a per-component table")
    p.add_argument("--gsig", type=float, help="override params/init/gSig (px)")
    model_arg(p)
    modality_arg(p)
    _accept_args(p)
    _format_args(p)
    p.set_defaults(command="classify")

    p = command("reprocess", help="classify many result files (folders recursive)")
    p.add_argument(
        "paths",
        nargs="+",
        help="files and folders (*.hdf5, *.nwb, Suite2p planes found recursively)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out-dir", type=Path, help="write updated copies under this folder")
    where.add_argument("--in-place", action="store_true", help="update the files (atomically)")
    p.add_argument(
        "--jobs", type=int, help="worker processes (default: 1; with --dask, one per CPU)"
    )
    p.add_argument("--dask", action="store_true", help="run on a local Dask cluster")
    p.add_argument("--scheduler", help="address of a running Dask scheduler (tcp://HOST:PORT)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs of other models")
    p.add_argument("--no-resume", action="store_true", help="redo files already classified")
    p.add_argument("--summary", type=Path, help="summary CSV (default: in --out-dir or here)")
    p.add_argument("--gsig", type=float, help="override every file's gSig (px)")
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=600.0,
        metavar="SECONDS",
        help="stop a file that takes longer (a stalled read) and report it failed; 0: no "
        "limit (default: %(default)g)",
    )
    model_arg(p)
    modality_arg(p)
    _accept_args(p)
    _format_args(p)
    p.set_defaults(command="reprocess")

    p = command(
        "export-bioimageio",
        help="write the image network (v1/v2: shape CNN, v3: image branch) as a bioimage.io "
        "model package (ONNX; Fiji/deepImageJ)",
        description="Write the model's image network (models v1/v2: the shape CNN; v3: the "
        "multi-channel image branch) as a bioimage.io model package: rdf.yaml, "
        "ONNX weights (softmax with the calibration temperature included), test tensors, "
        "cover, model card. Needs pip install 'calcomp_caiman[bioimageio]'.",
        epilog="example: calcomp export-bioimageio --model default --out calcomp_resnet.zip",
    )
    p.add_argument("--out", type=Path, required=True, help="package to write (.zip)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    model_arg(p)
    p.set_defaults(command="export_bioimageio")

    p = command("montage", help="PNG of the components grouped by predicted class")
    p.add_argument("input", type=Path, help="CaImAn .hdf5 result file")
    p.add_argument("-o", "--output", type=Path, required=True, help="PNG to write")
    p.add_argument("--gsig", type=float, help="override params/init/gSig (px)")
    p.add_argument("--reclassify", action="store_true", help="ignore stored class_probs")
    model_arg(p)
    p.set_defaults(command="montage")

    p = command(
        "demo", help="classify a shipped CaImAn result of a simulated movie; montage and CSV"
    )
    p.add_argument("--out", type=Path, default=Path("calcomp_demo"), help="output folder")
    model_arg(p)
    p.set_defaults(command="demo")

    p = command("train", help="train a model on labelled archives (needs Keras 3)")
    p.add_argument("--data", nargs="+", required=True, help="training .npz archives or folders")
    p.add_argument("--val-data", nargs="+", required=True, help="held-out videos' archives")
    p.add_argument(
        "--simulated",
        type=int,
        default=0,
        help="simulated footprints per class in each simulated field of view",
    )
    p.add_argument(
        "--simulated-fields",
        type=int,
        default=12,
        help="simulated fields of view, each at its own zoom (as the recipe)",
    )
    p.add_argument("--model", "--base", dest="base", help="start from this model (name or folder)")
    p.add_argument("--name", default="custom", help="name of the new model")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="model folder to write")
    p.set_defaults(command="train")

    p = command(
        "finetune",
        help="adapt a model to a lab's own labels (models v2, v3: their head, in seconds; "
        "older models: the network, needs Keras 3)",
    )
    p.add_argument(
        "--model", "--base", dest="model", default="default",
        help="the model to adapt: 'default', a bundled name or a model folder",
    )  # fmt: skip
    p.add_argument("--labels", type=Path, help="CSV with columns file, component, label")
    p.add_argument("--curation", nargs="+", type=Path,
                   help="CaImAn files with accepted_list / rejected_list")  # fmt: skip
    p.add_argument("--epochs", type=int, default=15, help="network fine-tuning only (v1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", help="name of the new model")
    p.add_argument("--out", type=Path, required=True, help="model folder to write")
    p.set_defaults(command="finetune")

    p = command("evaluate", help="metrics report (JSON + PNG) on labelled data")
    p.add_argument("data", nargs="+", help="labelled .npz archives or folders")
    p.add_argument("--out", type=Path, default=Path("calcomp_evaluation"), help="output prefix")
    p.add_argument("--baselines", action="store_true",
                   help="also train and score the two baselines (needs --train-data)")  # fmt: skip
    p.add_argument("--train-data", nargs="+", help="archives to train the baselines on")
    p.add_argument("--cnn-epochs", type=int, default=15, help="epochs of the CaImAn-CNN baseline")
    p.add_argument("--test-videos", action="store_true",
                   help="evaluate only the --model's held-out test videos (its config.json); "
                   "the baselines never train on them and validate on its validation videos")  # fmt: skip
    p.add_argument("--group-by", choices=("video", "file"), default="video")
    p.add_argument("--no-simulated", action="store_true", help="skip the simulated test set")
    p.add_argument("--simulated-settings", choices=("train", "shifted"), default="shifted",
                   help="simulator settings of the simulated test set")  # fmt: skip
    p.add_argument(
        "--simulated-caiman", type=Path, metavar="DIR",
        help="model v2/v3 report: CaImAn results of simulated movies "
        "(recipes/build_caiman_sim_data.py), with the real archives given as DATA; "
        "--baselines adds CaImAn's CNN architecture trained on the same data",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    model_arg(p)
    p.set_defaults(command="evaluate")

    p = command(
        "curate",
        help="label components in the browser where the model is unsure; refit; apply",
        description="Serve a local page (127.0.0.1) with one card per component, most "
        "uncertain first. Keys 1-4 label neuron/process/noise/doubtful, n not a neuron, "
        "u skip, z undo. Labels are saved as you go to the --labels CSV (the format "
        "`calcomp finetune --labels` reads). Refit adapts the model to them; Apply writes "
        "the classification into the files (as classify --in-place) and saves the model.",
        epilog="example: calcomp curate session1/cnm.hdf5 session2/cnm.hdf5 "
        "--labels labels.csv --open",
    )
    p.add_argument("inputs", nargs="+", type=Path, help="CaImAn .hdf5 result files")
    p.add_argument("--labels", type=Path,
                   help="labels CSV (default: curate_labels.csv beside the first file)")  # fmt: skip
    p.add_argument("--model-out", type=Path,
                   help="model folder Apply writes (default: calcomp_curated_model beside "
                   "the labels)")  # fmt: skip
    p.add_argument("--port", type=int, default=0,
                   help="TCP port on 127.0.0.1 (%(default)s: a free one)")  # fmt: skip
    p.add_argument("--open", action="store_true", help="open the page in the browser")
    p.add_argument("--refit-every", type=int, default=5, metavar="N",
                   help="refit in the background after every N new labels; 0: only on Refit")  # fmt: skip
    model_arg(p)
    p.set_defaults(command="curate")

    p = command(
        "lab",
        help="make a lab's own model (refitted on its labels) the default of every command",
        description="show: which model 'default' means now and why (CALCOMP_MODEL, else the "
        f"config file $XDG_CONFIG_HOME/calcomp/config.json, else the bundled {BUNDLED_DEFAULT}). "
        "set FOLDER: make the model in FOLDER the default (the config file). reset: forget it. "
        "classify, reprocess, curate, evaluate_components_4class(model=None) and "
        "use_calcomp_screening(model=None) use the default; --model / model= override it.",
        epilog="example: calcomp lab set calcomp_curated_model",
    )
    p.add_argument("action", choices=("show", "set", "reset"), help="what to do")
    p.add_argument("folder", nargs="?", type=Path, help="set: the model folder")
    p.set_defaults(command="lab")
    return parser
