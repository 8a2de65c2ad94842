"""Evaluation reports on disk: the JSON report and its summary (a figure or tables).

* :func:`write_report`: ``<prefix>.json`` and ``<prefix>.png`` (a patch report:
  confusion matrices, F1, ROC and reliability) or ``<prefix>.md`` (an evidence report:
  :func:`summary_table`). matplotlib is imported only to draw the figure.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from calcomp_caiman.io.atomic import atomic_replace, atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["summary_table", "write_report"]


def write_report(report: dict, out_prefix: str | os.PathLike) -> tuple[Path, Path]:
    """Write a report as ``<out_prefix>.json`` and its summary beside it.

    Parameters
    ----------
    report : dict
        From :func:`~calcomp_caiman.research.evaluate.run_evaluation`: per dataset and
        pooled (the patch report, :func:`~calcomp_caiman.research.evaluate.evaluate_model`),
        or per test set (the evidence report, key ``sets``:
        :func:`~calcomp_caiman.research.evaluate.evaluate_results`).
    out_prefix : str or path-like
        Path without suffix; its folder is created if needed.

    Returns
    -------
    json_path : Path
    summary_path : Path
        ``<out_prefix>.png``, a summary figure, for a patch report;
        ``<out_prefix>.md``, :func:`summary_table`, for an evidence report.

    Raises
    ------
    ValueError
        The report holds values JSON cannot store (NaN, Inf, arrays).

    Notes
    -----
    NumPy scalars are written as floats. The figure has, for each pooled kind of data
    (real, simulated), one confusion matrix per method (3-way neuron / doubtful /
    non_neuron for real data, 4-class for simulated data, rows normalised), then
    per-class F1 bars, ROC curves of neuron vs non_neuron and a reliability diagram. It is
    drawn with matplotlib's Agg canvas, so no display is needed and the global backend is
    not changed. Both files are written to temporary names and renamed.
    """
    prefix = Path(out_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    json_path = prefix.with_name(prefix.name + ".json")
    try:
        text = json.dumps(report, indent=1, allow_nan=False, default=_json_scalar)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"report cannot be written as JSON ({err}); build it with evaluate_model or "
            f"evaluate_results."
        ) from err
    atomic_write_text(json_path, text + "\n")
    if "sets" in report:
        summary_path = prefix.with_name(prefix.name + ".md")
        atomic_write_text(summary_path, summary_table(report))
    else:
        summary_path = prefix.with_name(prefix.name + ".png")
        figure = _report_figure(report)
        atomic_replace(
            str(summary_path),
            lambda name: figure.savefig(name, format="png", dpi=110),
            mode=0o644,
            original=str(summary_path) if summary_path.exists() else None,
        )
    logger.info("wrote %s and %s", json_path, summary_path)
    return json_path, summary_path


def _json_scalar(value):
    """NumPy scalars as floats (``json.dumps`` ``default``); anything else is an error."""
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _report_figure(report: dict):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pooled = report.get("pooled", {})
    kinds = [kind for kind in ("real", "simulated") if kind in pooled] or list(pooled)
    methods = list(report.get("methods", [])) or ["model"]
    n_cols = max(len(methods), 4)
    n_rows = len(kinds) + 1
    figure = Figure(figsize=(3.6 * n_cols, 3.4 * n_rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(n_rows, n_cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_visible(False)
    colours = {name: f"C{i}" for i, name in enumerate(methods)}

    def view(kind):
        return "four_class" if kind == "simulated" else "three_way"

    for row, kind in enumerate(kinds):
        for col, method in enumerate(methods):
            metrics = pooled[kind]["metrics"].get(method)
            if metrics is None:
                continue
            ax = axes[row, col]
            ax.set_visible(True)
            summary = metrics[view(kind)]
            matrix = np.asarray(summary["confusion"], dtype=float)
            share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
            ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
            for (i, j), value in np.ndenumerate(matrix):
                ax.text(
                    j,
                    i,
                    f"{int(value)}",
                    ha="center",
                    va="center",
                    color="white" if share[i, j] > 0.6 else "black",
                    fontsize=8,
                )
            ticks = range(len(summary["classes"]))
            ax.set_xticks(ticks, summary["classes"], rotation=30, fontsize=8)
            ax.set_yticks(ticks, summary["classes"], fontsize=8)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            macro = summary["macro_f1"]
            ax.set_title(
                f"{kind}: {method}\nmacro-F1 {macro:.3f}"
                if macro is not None
                else f"{kind}: {method}",
                fontsize=9,
            )

    bottom = axes[-1]
    for col, kind in enumerate(kinds[:2]):
        ax = bottom[col]
        ax.set_visible(True)
        classes = pooled[kind]["metrics"][next(iter(pooled[kind]["metrics"]))][view(kind)][
            "classes"
        ]
        width = 0.8 / len(methods)
        for i, method in enumerate(methods):
            metrics = pooled[kind]["metrics"].get(method)
            if metrics is None:
                continue
            f1 = [metrics[view(kind)]["f1"][c] for c in classes]
            ax.bar(
                np.arange(len(classes)) + i * width,
                [v if v is not None else 0 for v in f1],
                width,
                label=method,
                color=colours[method],
            )
        ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("F1")
        ax.set_title(f"per-class F1 ({kind})", fontsize=9)
        ax.legend(fontsize=7)
    if kinds:
        kind = kinds[0]
        roc_ax, rel_ax = bottom[2], bottom[3]
        roc_ax.set_visible(True)
        rel_ax.set_visible(True)
        for method in methods:
            metrics = pooled[kind]["metrics"].get(method)
            if metrics is None:
                continue
            roc = metrics["neuron_vs_non_neuron"]["roc"]
            if roc is not None:
                auc = metrics["auc_neuron_vs_non_neuron"]
                roc_ax.plot(
                    roc["fpr"], roc["tpr"], color=colours[method], label=f"{method} (AUC {auc:.3f})"
                )
            bins = metrics["calibration"]["bins"]
            points = [(c, a) for c, a in zip(bins["confidence"], bins["accuracy"]) if c is not None]
            if points:
                ece = metrics["calibration"]["ece"]
                rel_ax.plot(
                    *zip(*points),
                    "o-",
                    color=colours[method],
                    ms=3,
                    label=f"{method} (ECE {ece:.3f})",
                )
        for ax in (roc_ax, rel_ax):
            ax.plot([0, 1], [0, 1], ":", color="grey")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.legend(fontsize=7, loc="lower right")
        roc_ax.set_xlabel("false positive rate")
        roc_ax.set_ylabel("true positive rate")
        roc_ax.set_title(f"neuron vs non_neuron ({kind})", fontsize=9)
        rel_ax.set_xlabel("top-class confidence")
        rel_ax.set_ylabel("accuracy")
        rel_ax.set_title(f"reliability ({kind})", fontsize=9)
    figure.suptitle(f"calcomp evaluation: {report.get('model', {}).get('name', '')}")
    return figure


def summary_table(report: dict) -> str:
    """The report as a Markdown table per test set (for the model card)."""
    lines = []
    for name, entry in report["sets"].items():
        lines += [
            f"**{name}** ({entry['components']} components, {entry['results']} results)",
            "",
            "| method | 4-class macro-F1 | neuron-vs-rest AUC | ECE | noise rejected "
            "| accepted-set F1 |",
            "|---|---|---|---|---|---|",
        ]
        for method, r in entry["methods"].items():
            noise = r["selection"]["noise_rejected"]
            auc = r["auc_neuron_vs_rest"]
            lines.append(
                f"| {method} | {r['four_class']['macro_f1']:.3f} | "
                f"{'n/a' if auc is None else f'{auc:.3f}'} | {r['calibration']['ece']:.3f} | "
                f"{'n/a' if noise is None else f'{noise:.3f}'} | "
                f"{r['selection']['accepted_f1']:.3f} |"
            )
        lines.append("")
    return "\n".join(lines)
