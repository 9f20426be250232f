"""The benchmark scripts keep working: each runs at tiny scale and ends with its contract line."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO


def run(script: str, *args: str, cwd) -> str:
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], cwd=cwd,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_bench_probe_tiny(tmp_path):
    from benchmarks_helpers import synthetic

    act = synthetic(tmp_path, n=60, layers=["fc1", "conv5_relu"])
    last = run("bench_probe.py", "--layers", "fc1,conv5_relu", "--n", "60", "--pca", "5", "--cv", "3",
               "--data", str(act), cwd=tmp_path)
    match = re.fullmatch(r"ratio=([\d.]+) peak_rss_mb=(\d+) max_fold_diff_samples=(\d+)", last)
    assert match, last
    assert float(match.group(1)) > 0 and int(match.group(2)) > 0
    assert int(match.group(3)) <= 1  # dnnprobe equals the exact reference to within one test sample per fold


def test_bench_extract_tiny(tmp_path):
    last = run("bench_extract.py", "--n", "8", "--size", "64", "--batch-size", "4", "--workers", "0",
               "--data-dir", str(tmp_path), cwd=tmp_path)
    match = re.fullmatch(r"ratio=([\d.]+) peak_rss_mb=(\d+)", last)
    assert match, last
    assert float(match.group(1)) > 0
