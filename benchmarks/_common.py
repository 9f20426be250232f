"""What the benchmark scripts share: the path setup, the machine line, peak memory and CPU time readers,
and running one measurement in a fresh process.

Imported as ``from _common import ...`` by the scripts in this folder (run as ``python benchmarks/<script>.py``,
which puts this folder first on ``sys.path``). Standard library only: tv_extract.py imports it from another
virtual environment.
"""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# This checkout's code, as the stages run it (PYTHONPATH=src), whatever the environment's editable install
# points to; and this folder, for the data generators (make_images, make_synthetic) in a worker process.
for _path in (HERE, REPO / "src"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def machine() -> str:
    """The host's name and processor, for the first line of a benchmark's output."""
    return f"{platform.node()} {platform.processor() or platform.machine()}"


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_gib() -> float:
    return peak_rss_mb() / 1024


def gpu_peak_gib(device: str) -> float | None:
    """torch's peak allocated GPU memory in GiB; None on the CPU."""
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**30


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished children (decoding workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_worker(script: str, *args: str) -> dict:
    """``python <script> --worker <args>`` in a fresh process (so its peak RSS is its own): the JSON object
    its last line prints. Exits with the worker's error when it fails."""
    result = subprocess.run([sys.executable, script, "--worker", *args], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{Path(script).stem}: {args[0]} worker failed:\n{result.stderr.strip()}")
    return json.loads(result.stdout.strip().splitlines()[-1])
