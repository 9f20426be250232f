"""Figures saved as PNG and SVG, byte for byte the same on every run (DVC sees no change when the
numbers have not changed): the report's and the similarity stage's figures."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen needed; set before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(figure: plt.Figure, stem: Path) -> list[Path]:
    """PNG and SVG, byte-reproducible (no dates, fixed SVG ids)."""
    plt.rcParams["svg.hashsalt"] = "dnnprobe"
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    figure.savefig(paths[0], dpi=150, metadata={"Software": None})
    figure.savefig(paths[1], metadata={"Date": None, "Creator": None})
    plt.close(figure)
    return paths
