"""Import the benchmark scripts' generators in tests."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from make_synthetic import write_synthetic  # noqa: E402


def synthetic(folder: Path, n: int, layers: list[str]) -> Path:
    act, _ = write_synthetic(folder / "synthetic", n, layers=layers)
    return act
