"""The ``calcomp`` command: runs each sub-command and prints its result (the parser is
:mod:`calcomp_caiman.apps.cli_parser`).

Heavy imports (Keras, matplotlib) happen inside the sub-commands that need them, so
``calcomp --help`` is instant.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import warnings
from pathlib import Path

from calcomp_caiman.apps.cli_parser import build_parser
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
        load_models,
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
    model, one_photon_model = load_models(args.model, args.modality)
    result, fields = classify_file(
        args.input,
        model=model,
        modality=args.modality,
        one_photon_model=one_photon_model,
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
    if result.expected_error is not None:  # the reliability map warns, in place of the OOD score
        verdict = "classes unreliable" if result.unreliable else "no warning"
        ood = f"; expected error {result.expected_error:.2f} (warns above {result.unreliable_above:.2f}: {verdict})"  # fmt: skip
    elif result.ood_score is not None:
        verdict = "out of distribution" if result.ood else "in distribution"
        threshold = (
            "" if result.ood_threshold is None else f"threshold {result.ood_threshold:.2f}: "
        )
        ood = f"; OOD score {result.ood_score:.2f} ({threshold}{verdict})"
    print(
        f"{result.output}: {result.components} components ({counts}); calcomp accepts "
        f"{result.accepted}{caiman}{ood}; {result.modality} data, model {result.model}"
    )
    warned = result.unreliable if result.expected_error is not None else result.ood
    if result.disagrees_with_caiman and not warned:  # (a warning said it already)
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
    from calcomp_caiman.apps.one_file import check_writable, load_models

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
    model, one_photon_model = load_models(args.model, args.modality)
    options = ReprocessOptions(
        model,
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
        modality=args.modality,
        one_photon_model=one_photon_model,
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
            raise CalcompError(
                f"--simulated-caiman evaluates a model with a fusion head (v2, v3); {model.name} has none"
            )
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


_HANDLERS = {
    "classify": _cmd_classify,
    "reprocess": _cmd_reprocess,
    "export_bioimageio": _cmd_export_bioimageio,
    "montage": _cmd_montage,
    "demo": _cmd_demo,
    "train": _cmd_train,
    "finetune": _cmd_finetune,
    "evaluate": _cmd_evaluate,
    "curate": _cmd_curate,
    "lab": _cmd_lab,
}
"""The function that runs each sub-command (``args.command``)."""


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
            return _HANDLERS[args.command](args)
    except _UsageError as err:
        args.parser.error(str(err))  # exits with 2
    except (CalcompError, OSError, ValueError, ImportError, TimeoutError) as err:
        if args.debug:
            raise
        print(f"calcomp: error: {_message(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
