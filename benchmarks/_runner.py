"""Child-process runner and report helpers shared by the benchmarks (standard library only).

A benchmark measures each step in a fresh child process of its own script
(``SCRIPT --child TASK.json``), so that the child's imports, peak RSS and BLAS threads are
its own and the parent stays small: this module, and what imports it at module level,
uses the standard library only. The parent writes the task as JSON, :class:`Runner`
starts the child and reads back the JSON result, and :func:`benchmark_main` sends a
``--child`` call to :func:`run_child_task`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "THREAD_VARIABLES",
    "HelpFormatter",
    "Runner",
    "add_output_arguments",
    "benchmark_main",
    "log",
    "machine_info",
    "new_parser",
    "parse_size",
    "peak_rss_mb",
    "print_header",
    "report_start",
    "run_child_task",
    "size_label",
    "vm_hwm_mb",
]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_STDERR_LINES = 15  # lines of a failed child's stderr that are logged

Task = Callable[[dict], dict]


# ------------------------------------------------------------------ any process


def log(message: str) -> None:
    """Progress line on stderr (stdout carries the report)."""
    print(message, file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    """``ru_maxrss`` of this process in MB.

    Linux keeps ``ru_maxrss`` across ``execve``, so a child started from a big parent
    reports at least the parent's peak; the parent here stays small (stdlib only), and
    :func:`vm_hwm_mb` (the peak of this address space only) is reported alongside.
    """
    import resource

    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value / 2**20 if sys.platform == "darwin" else value / 2**10


def vm_hwm_mb() -> float | None:
    """Peak RSS of the current address space (``VmHWM``), Linux only."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024 if match else None


def parse_size(text: str, counts: Sequence[str], example: str) -> tuple:
    """Parse ``ROWSxCOLS:COUNT...`` or ``SIDE:COUNT...`` into ``((rows, cols), *counts)``.

    Parameters
    ----------
    text : str
        For example ``"512x512:10000"`` or ``"1024:50000"`` (square FOV).
    counts : sequence of str
        Names of the whole numbers after the FOV, for the error message (``("N",)``,
        ``("N", "T")``); their number is the number expected.
    example : str
        Examples of valid sizes, for the error message.

    Returns
    -------
    tuple
        ``((rows, cols), count, ...)``.

    Raises
    ------
    argparse.ArgumentTypeError
        If ``text`` does not have that form.
    """
    match = re.fullmatch(r"(\d+)(?:x(\d+))?" + r":(\d+)" * len(counts), text.strip())
    if not match:
        suffix = "".join(f":{name}" for name in counts)
        raise argparse.ArgumentTypeError(
            f"size {text!r} is not ROWSxCOLS{suffix} or SIDE{suffix} (e.g. {example})"
        )
    rows = int(match.group(1))
    cols = int(match.group(2) or rows)
    return ((rows, cols), *(int(value) for value in match.groups()[2:]))


def size_label(dims: Sequence[int], *counts: int) -> str:
    """``((512, 512), 10000)`` -> ``"512x512:10000"`` (one ``:COUNT`` per count)."""
    return f"{dims[0]}x{dims[1]}" + "".join(f":{count}" for count in counts)


def machine_info() -> dict:
    """CPU model, CPU count, Python version and platform of this machine."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# ------------------------------------------------------------------ child side


def run_child_task(path: str, tasks: dict[str, Task]) -> int:
    """Run the task described in the JSON file ``path``; write its result as JSON."""
    task = json.loads(Path(path).read_text())
    result = tasks[task["task"]](task)
    Path(task["result"]).write_text(json.dumps(result))
    return 0


# ------------------------------------------------------------------ parent side


class Runner:
    """Starts each measurement in a fresh child process of ``script``.

    Parameters
    ----------
    script : str or Path
        The benchmark script; it is run as ``script --child TASK.json``.
    tmp : Path
        Folder for the task and result files.
    blas_threads : int, optional
        Sets ``OPENBLAS/OMP/MKL_NUM_THREADS`` in the children (default: inherited).
    unset : sequence of str
        Environment variables removed in the children.
    log_done : bool
        Also log the wall time of each child that succeeded.
    """

    def __init__(
        self,
        script: str | Path,
        tmp: Path,
        blas_threads: int | None = None,
        *,
        unset: Sequence[str] = (),
        log_done: bool = True,
    ):
        self.script = str(Path(script).resolve())
        self.tmp = tmp
        self.log_done = log_done
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), str(HERE), self.env.get("PYTHONPATH", "")) if p
        )
        self.env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        for key in unset:
            self.env.pop(key, None)
        if blas_threads:
            for key in THREAD_VARIABLES:
                self.env[key] = str(blas_threads)
        self.count = 0

    def __call__(self, name: str, describe: str = "", **task) -> dict:
        """Run task ``name`` with the keyword arguments as its JSON fields.

        Returns the child's result with ``child_wall_s`` added, or ``{"error": ...}``
        (the exit status and the last line of its stderr) when the child failed.
        """
        self.count += 1
        task_path = self.tmp / f"task{self.count}.json"
        result_path = self.tmp / f"result{self.count}.json"
        task_path.write_text(json.dumps({"task": name, "result": str(result_path), **task}))
        log(f"  [{name}] {describe}")
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, self.script, "--child", str(task_path)],
            env=self.env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0 or not result_path.exists():
            tail = "\n".join(proc.stderr.strip().splitlines()[-_STDERR_LINES:])
            log(f"  [{name}] FAILED (exit {proc.returncode}):\n{tail}")
            return {"error": f"exit {proc.returncode}: {tail.splitlines()[-1] if tail else ''}"}
        result = json.loads(result_path.read_text())
        result["child_wall_s"] = wall
        if self.log_done:
            log(f"  [{name}] done in {wall:.1f} s")
        return result


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except ``None`` ones (their help says what happens)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def new_parser(doc: str, example: str) -> argparse.ArgumentParser:
    """Parser of a benchmark: the first paragraph of ``doc`` as description, ``example``.

    Defaults are shown (:class:`HelpFormatter`); end it with :func:`add_output_arguments`.
    """
    return argparse.ArgumentParser(
        description=doc.split("\n\n")[0].replace("``", ""),
        epilog=f"example: {example}",
        formatter_class=HelpFormatter,
    )


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--json PATH`` and the hidden ``--child TASK`` that :func:`benchmark_main` reads."""
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write results")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)


def report_start() -> dict:
    """The first fields of a report: command line, machine, load average at the start."""
    return {
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "machine": machine_info(),
        "load_average_start": list(os.getloadavg()),
    }


def print_header(report: dict, title: str, warning: str) -> None:
    """Print the title, command, machine and load average lines of a report.

    ``warning`` ends the line printed when the load average (start or end) was above
    half the CPUs.
    """
    machine = report["machine"]
    print(title)
    print(f"command: {' '.join(report['command'])}")
    print(f"machine: {machine['cpu']}, {machine['cpus']} CPUs, Python {machine['python']}")
    load_start = " ".join(f"{v:.2f}" for v in report["load_average_start"])
    load_end = " ".join(f"{v:.2f}" for v in report["load_average_end"])
    print(f"load average: {load_start} (start), {load_end} (end)")
    busiest = max(report["load_average_start"][0], report["load_average_end"][0])
    if busiest > 0.5 * (machine["cpus"] or 1):
        print(f"WARNING: other jobs were running (load average above half the CPUs); {warning}")


def benchmark_main(
    argv: Sequence[str] | None,
    parser: argparse.ArgumentParser,
    tasks: dict[str, Task],
    run_benchmark: Callable[[argparse.Namespace], dict],
    print_report: Callable[[dict], None],
) -> int:
    """A benchmark's ``main``: a child task for ``--child``, else run, print, ``--json``."""
    args = parser.parse_args(argv)
    if args.child:
        return run_child_task(args.child, tasks)
    report = run_benchmark(args)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        log(f"wrote {args.json}")
    return 0
