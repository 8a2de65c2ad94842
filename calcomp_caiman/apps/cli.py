"""The ``calcomp`` command: classify, reprocess, montage, demo, train, finetune, evaluate.

Heavy imports (Keras, matplotlib) happen inside the sub-commands that need them, so
``calcomp --help`` is instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import sys
import warnings
from pathlib import Path

from calcomp_caiman._version import __version__
from calcomp_caiman.errors import (
    CalcompError,
    OutputExistsError,
    OutputIsInputError,
    PickleNotAllowedError,
)
from calcomp_caiman.schema import CLASSES

logger = logging.getLogger("calcomp_caiman")


class _UsageError(Exception):
    """A wrong use of the command line: exit code 2 with the usage, as argparse's own."""


_REMEDIES = {
    OutputIsInputError: "use --in-place to update it, or add --overwrite",
    OutputExistsError: "use --overwrite to replace it, or choose another output",
    PickleNotAllowedError: "add --allow-pickle if you trust this folder",
}
"""What to do, in the command line's words, for the typed errors whose message says it in
Python's (``overwrite=True``): ``{error class: remedy}``, most specific first."""

_OUTPUTS = {
    "caiman": ("--out OUT.hdf5 (an updated copy)", "--in-place (update the file itself)"),
    "nwb": ("--out OUT.nwb (an updated copy)", "--in-place (update the file itself)"),
    "suite2p": (
        "--out DIR (a folder for calcomp's files)",
        "--in-place (calcomp's files go beside Suite2p's in the plane folder; Suite2p's own "
        "are kept)",
    ),
    "masks": (
        "--out OUT.csv (the table, with OUT.npz beside it)",
        "--in-place (NAME.calcomp.csv and .npz beside the mask file, which is not changed)",
    ),
}
"""Per input format: what ``--out`` and ``--in-place`` of ``calcomp classify`` write."""


def _message(err: BaseException) -> str:
    """The one-line error shown for ``err``: its own, or the command line's remedy."""
    for kind, remedy in _REMEDIES.items():
        if isinstance(err, kind):
            return f"{err.path}: {kind.problem_text}; {remedy}."
    return str(err)


def _result_error(result) -> str:
    """A failed file's error line, with the command line's remedy for a typed error."""
    for kind, remedy in _REMEDIES.items():
        python = f"; {kind.remedy}."
        if result.error_type == kind.__name__ and result.error.endswith(python):
            return result.error[: -len(python)] + f"; {remedy}."
    return result.error


def _configure_logging(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("calcomp: %(message)s"))
    root = logging.getLogger("calcomp_caiman")
    root.handlers[:] = [handler]
    levels = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}
    root.setLevel(levels[max(-1, min(2, level))])


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"calcomp: warning: {message}", file=sys.stderr if file is None else file)


def _load_model(name: str):
    from calcomp_caiman.model.folder import CalcompModel

    return CalcompModel.load(name)


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


def _where_to_write(args) -> str:
    """The usage error of ``calcomp classify`` without --out or --in-place, for its format."""
    from calcomp_caiman.io.registry import get_format

    try:
        name = get_format(args.format, args.input).name
    except (CalcompError, OSError, ValueError):
        return "give --out OUT or --in-place"
    out, in_place = _OUTPUTS[name]
    return f"give {out} or {in_place}"


def _cmd_classify(args) -> int:
    from calcomp_caiman.apps.one_file import (
        check_writable,
        classify_file,
        same_file,
        write_component_csv,
    )
    from calcomp_caiman.model.ood import advice

    if args.out is None and not args.in_place:
        raise _UsageError(_where_to_write(args))
    if args.out is not None and not args.overwrite and same_file(args.input, args.out):
        raise _UsageError(
            f"--out {args.out} is the input itself; use --in-place to update it "
            "(or add --overwrite)"
        )
    if not args.input.exists():
        raise FileNotFoundError(f"{args.input}: no such file")
    if args.csv:
        check_writable(args.csv)  # before the input is changed
    model = _load_model(args.model)
    result, fields = classify_file(
        args.input,
        model=model,
        out_path=None if args.in_place else args.out,
        overwrite=args.overwrite,
        accept=args.accept,
        min_prob=args.min_prob,
        gSig=args.gsig,
        format=args.format,
        plane=args.plane,
        replace_iscell=args.replace_iscell,
        allow_pickle=args.allow_pickle,
    )
    if args.csv:
        write_component_csv(fields, args.csv)
    counts = ", ".join(f"{result.counts[name]} {name}" for name in CLASSES)
    caiman = ""
    if result.caiman_accepted is not None:
        caiman = f", CaImAn's own selection kept {result.caiman_accepted}"
    ood = ""
    if result.ood_score is not None:
        verdict = "out of distribution" if result.ood else "in distribution"
        threshold = (
            "" if result.ood_threshold is None else f"threshold {result.ood_threshold:.2f}: "
        )
        ood = f"; OOD score {result.ood_score:.2f} ({threshold}{verdict})"
    print(
        f"{result.output}: {result.components} components ({counts}); calcomp accepts "
        f"{result.accepted}{caiman}{ood}"
    )
    if result.disagrees_with_caiman and not result.ood:  # (out of distribution: warned)
        print(
            f"calcomp and CaImAn's own selection differ a lot: check with `calcomp curate "
            f"{result.output}` (label ~{advice(result.components)} components) and refit"
        )
    return 0


def _cmd_reprocess(args) -> int:
    from tqdm import tqdm

    from calcomp_caiman.apps.batch import (
        ReprocessOptions,
        find_result_files,
        reprocess,
        write_summary_csv,
    )
    from calcomp_caiman.apps.one_file import check_writable

    if args.out_dir is None and not args.in_place:
        raise _UsageError(
            "give --out-dir DIR (updated copies under DIR) or --in-place (update the files "
            "themselves)"
        )
    summary = args.summary or (
        Path(args.out_dir) / "calcomp_summary.csv" if args.out_dir else Path("calcomp_summary.csv")
    )
    Path(summary).parent.mkdir(parents=True, exist_ok=True)
    check_writable(summary)  # before any file is changed
    options = ReprocessOptions(
        _load_model(args.model),
        out_dir=None if args.in_place else args.out_dir,
        overwrite=args.overwrite,
        resume=not args.no_resume,
        accept=args.accept,
        min_prob=args.min_prob,
        gSig=args.gsig,
        format=args.format,
        plane=args.plane,
        replace_iscell=args.replace_iscell,
        allow_pickle=args.allow_pickle,
        timeout=args.timeout or None,
    )
    total = len(find_result_files(args.paths, format=args.format))
    if args.scheduler or args.dask:
        from calcomp_caiman.apps.distributed import reprocess_dask

        stream = reprocess_dask(args.paths, options, scheduler=args.scheduler, workers=args.jobs)
    else:
        stream = reprocess(args.paths, options, jobs=args.jobs or 1)
    results = []
    with tqdm(total=total, unit="file", disable=args.quiet > 0, file=sys.stderr) as bar:
        for result in stream:
            if result.status == "failed":
                result = dataclasses.replace(result, error=_result_error(result))
                tqdm.write(f"calcomp: error: {result.error}", file=sys.stderr)
            results.append(result)
            bar.set_postfix_str(f"{Path(result.file).name}: {result.status}")
            bar.update()
    write_summary_csv(results, summary)
    failed = sum(r.status == "failed" for r in results)
    done = sum(r.status == "classified" for r in results)
    skipped = sum(r.status == "skipped" for r in results)
    print(f"{done} classified, {skipped} skipped, {failed} failed; summary: {summary}")
    return 1 if failed else 0


def _cmd_export_bioimageio(args) -> int:
    from calcomp_caiman.apps.export_bioimageio import export_bioimageio

    path = export_bioimageio(_load_model(args.model), args.out, overwrite=args.overwrite)
    print(f"bioimage.io package: {path}")
    return 0


def _cmd_montage(args) -> int:
    from calcomp_caiman.apps.montage import write_montage
    from calcomp_caiman.checks import check_gsig
    from calcomp_caiman.errors import GsigError

    try:
        check_gsig(args.gsig)
    except GsigError as err:
        raise CalcompError(f"--gsig: {err}") from None
    model = _load_model(args.model)
    path = write_montage(args.input, model, args.output, gSig=args.gsig, reclassify=args.reclassify)
    print(f"montage: {path}")
    return 0


def _cmd_demo(args) -> int:
    from calcomp_caiman.apps.demo import run_demo

    summary = run_demo(args.out, model=_load_model(args.model))
    print(summary)
    return 0


def _cmd_train(args) -> int:
    from calcomp_caiman.research.train import run_training

    base = _load_model(args.base) if args.base else None
    model, history = run_training(
        args.data,
        args.val_data,
        simulated=args.simulated,
        simulated_fields=args.simulated_fields,
        base=base,
        name=args.name,
        epochs=args.epochs,
        seed=args.seed,
    )
    model.save(args.out)
    print(
        f"model {args.name}: {len(history['loss'])} epochs, best {history['best_epoch']}, "
        f"val_loss {min(history['val_loss']):.4f}; saved to {args.out}"
    )
    return 0


def _cmd_finetune(args) -> int:
    from calcomp_caiman.apps.finetune import finetune

    if not args.labels and not args.curation:
        raise CalcompError("give --labels LABELS.csv and/or --curation RESULT.hdf5 ...")
    base = _load_model(args.model)
    report = finetune(
        base,
        labels=args.labels,
        curation=args.curation,
        epochs=args.epochs,
        seed=args.seed,
        name=args.name,
    )
    report.model.save(args.out)
    if report.method == "refit" and not report.applied:
        print(
            f"not refitted: {report.summary} ({report.labels} labels from {report.files} "
            f"file(s), {report.validation}); {base.name} saved unchanged to {args.out}"
        )
    elif report.method == "refit":
        print(
            f"refitted {base.name} ({report.summary}) on {report.labels} labels from "
            f"{report.files} file(s) in {report.seconds:.1f} s: accuracy {report.before:.3f} -> "
            f"{report.after:.3f} ({report.validation}); saved to {args.out}"
        )
    else:
        print(
            f"fine-tuned {base.name} on {report.labels} labels: validation accuracy "
            f"{report.before:.3f} (first epoch) -> {report.after:.3f} (best); "
            f"saved to {args.out}"
        )
    return 0


def _cmd_evaluate(args) -> int:
    from calcomp_caiman.research.evaluate import run_evaluation

    if args.baselines and not args.train_data and not args.simulated_caiman:
        raise CalcompError("--baselines needs --train-data (labelled archives to train them on)")
    model = _load_model(args.model)
    shape_model = None
    if args.simulated_caiman:
        if not model.uses_evidence:
            raise CalcompError(f"--simulated-caiman evaluates a model v2; {model.name} has no head")
        shape_model = _load_model("calcomp_resnet_v1")
    _, json_path, summary_path = run_evaluation(
        model,
        args.data,
        out_prefix=args.out,
        simulated_caiman=args.simulated_caiman,
        shape_model=shape_model,
        test_videos_only=args.test_videos,
        group_by=args.group_by,
        baselines=args.baselines,
        training_paths=args.train_data,
        cnn_epochs=args.cnn_epochs,
        simulated=not args.no_simulated,
        simulated_settings=args.simulated_settings,
        seed=args.seed,
    )
    print(f"report: {json_path} and {summary_path}")
    return 0


def _cmd_curate(args) -> int:
    try:
        from calcomp_caiman.apps.curate import serve
    except ImportError as err:
        raise CalcompError(
            f'calcomp curate needs Flask: pip install "calcomp_caiman[curate]" ({err})'
        ) from None
    server = serve(
        args.inputs,
        labels=args.labels,
        model=args.model,
        model_out=args.model_out,
        port=args.port,
        open_browser=args.open,
        auto_refit=args.refit_every,
    )
    print(f"calcomp curate: {server.url} (labels: {server.session.store.path}; Ctrl-C stops)",
          flush=True)  # fmt: skip
    server.wait()
    return 0


def _cmd_lab(args) -> int:
    from calcomp_caiman.apps.lab import lab_reset, lab_set, lab_show

    if args.action == "set":
        if args.folder is None:
            raise _UsageError("calcomp lab set needs the model FOLDER to make the default")
        chosen = lab_set(args.folder)
        print(f"the default model is now {chosen.model} ({chosen.name}); written to {chosen.config_file}")  # fmt: skip
        if os.environ.get("CALCOMP_MODEL"):
            print(f"note: CALCOMP_MODEL={os.environ['CALCOMP_MODEL']} is set and overrides it")
        return 0
    if args.folder is not None:
        raise _UsageError(f"calcomp lab {args.action} takes no FOLDER")
    if args.action == "reset":
        path = lab_reset()
        print(f"removed the default model from {path}" if path else "no default model was set in the config file")  # fmt: skip
    for line in lab_show().lines():
        print(line)
    return 0


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
    its usage errors (:class:`_UsageError`) are reported by it."""
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
                       "model, see `calcomp lab show`; else the bundled calcomp_v2)")  # fmt: skip

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
    _accept_args(p)
    _format_args(p)
    p.set_defaults(handler=_cmd_classify)

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
    _accept_args(p)
    _format_args(p)
    p.set_defaults(handler=_cmd_reprocess)

    p = command(
        "export-bioimageio",
        help="write the shape CNN as a bioimage.io model package (ONNX; Fiji/deepImageJ)",
        description="Write the model's shape CNN as a bioimage.io model package: rdf.yaml, "
        "ONNX weights (softmax with the calibration temperature included), test tensors, "
        "cover, model card. Needs pip install 'calcomp_caiman[bioimageio]'.",
        epilog="example: calcomp export-bioimageio --model default --out calcomp_resnet.zip",
    )
    p.add_argument("--out", type=Path, required=True, help="package to write (.zip)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    model_arg(p)
    p.set_defaults(handler=_cmd_export_bioimageio)

    p = command("montage", help="PNG of the components grouped by predicted class")
    p.add_argument("input", type=Path, help="CaImAn .hdf5 result file")
    p.add_argument("-o", "--output", type=Path, required=True, help="PNG to write")
    p.add_argument("--gsig", type=float, help="override params/init/gSig (px)")
    p.add_argument("--reclassify", action="store_true", help="ignore stored class_probs")
    model_arg(p)
    p.set_defaults(handler=_cmd_montage)

    p = command(
        "demo", help="classify a shipped CaImAn result of a simulated movie; montage and CSV"
    )
    p.add_argument("--out", type=Path, default=Path("calcomp_demo"), help="output folder")
    model_arg(p)
    p.set_defaults(handler=_cmd_demo)

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
    p.set_defaults(handler=_cmd_train)

    p = command(
        "finetune",
        help="adapt a model to a lab's own labels (model v2: its head, in seconds; "
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
    p.set_defaults(handler=_cmd_finetune)

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
        help="model v2 report: CaImAn results of simulated movies "
        "(recipes/build_caiman_sim_data.py), with the real archives given as DATA; "
        "--baselines adds CaImAn's CNN architecture trained on the same data",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    model_arg(p)
    p.set_defaults(handler=_cmd_evaluate)

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
    p.set_defaults(handler=_cmd_curate)

    p = command(
        "lab",
        help="make a lab's own model (refitted on its labels) the default of every command",
        description="show: which model 'default' means now and why (CALCOMP_MODEL, else the "
        "config file $XDG_CONFIG_HOME/calcomp/config.json, else the bundled calcomp_v2). "
        "set FOLDER: make the model in FOLDER the default (the config file). reset: forget it. "
        "classify, reprocess, curate, evaluate_components_4class(model=None) and "
        "use_calcomp_screening(model=None) use the default; --model / model= override it.",
        epilog="example: calcomp lab set calcomp_curated_model",
    )
    p.add_argument("action", choices=("show", "set", "reset"), help="what to do")
    p.add_argument("folder", nargs="?", type=Path, help="set: the model folder")
    p.set_defaults(handler=_cmd_lab)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``calcomp``; return the exit code (0 ok, 1 error, 2 usage, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.verbose, args.quiet, args.debug = args.verbose or 0, args.quiet or 0, bool(args.debug)
    _configure_logging(args.verbose - args.quiet)
    try:
        with warnings.catch_warnings():
            # warnings (e.g. out of distribution) as one line each, without source lines
            warnings.showwarning = _show_warning
            return args.handler(args)
    except _UsageError as err:
        args.parser.error(str(err))  # exits with 2
    except (CalcompError, OSError, ValueError, ImportError, TimeoutError) as err:
        if args.debug:
            raise
        print(f"calcomp: error: {_message(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
