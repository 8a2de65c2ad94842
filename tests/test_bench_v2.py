"""``benchmarks/bench_v2_end_to_end.py --quick`` runs and prints its result lines."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_v2_end_to_end.py"
HAS_BASELINE = all(importlib.util.find_spec(name) for name in ("keras", "tensorflow", "cv2"))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``--quick`` run (about 30 s): its stdout, JSON report and temp folder."""
    folder = tmp_path_factory.mktemp("bench_v2")
    report_path = folder / "report.json"
    command = [sys.executable, str(BENCH), "--quick", "--tmp-dir", str(folder / "files")]
    command += ["--json", str(report_path)]
    if not HAS_BASELINE:
        command.append("--skip-baseline")
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(report_path.read_text()), folder / "files"


def test_quick_prints_throughput_memory_and_split(quick_run):
    out, report, files = quick_run
    assert "model: " in out and "uses_evidence=True" in out
    assert re.search(r"^ +256x256 +400 +300 +[\d.]+ +[\d,]+ ", out, re.MULTILINE), out
    assert re.search(
        r"throughput >= 3,000 components/s at 512x512:10000:2000: [\d,]+ components/s "
        r"\(measured at 256x256:400:300\) -> met: n/a",
        out,
    ), out
    assert re.search(
        r"peak RSS < 2,048 MB at 1024x1024:50000:10000: [\d,]+ MB "
        r"\(measured at 256x256:600:400\) -> met: n/a",
        out,
    ), out
    assert "Ours, split" in out and "256x256:600:400" in out
    for role in ("throughput", "rss"):
        ours = report["ours"][role]
        assert ours["rate"] > 0 and ours["rss_peak_mb"] > 0
        assert set(ours["split_s"]) >= {"read", "features", "patches", "network", "write"}
        assert report["files"][role]["rss_peak_mb"] > 0  # the generator's own
    assert not any(files.iterdir()), "the benchmark left files behind"


@pytest.mark.skipif(not HAS_BASELINE, reason="the baseline needs keras, tensorflow and cv2")
def test_quick_prints_the_baseline_ratio(quick_run):
    out, report, _ = quick_run
    assert re.search(
        r"ours / baseline >= 10x at 512x512:10000:2000: [\d.]+x \(measured at 256x256:400:300", out
    ), out
    assert "baseline: Keras" in out
    assert report["ours"]["throughput"]["ratio"] > 0
