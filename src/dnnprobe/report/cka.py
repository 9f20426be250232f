"""The similarity stage's figure: linear CKA between every pair of layers
(:func:`dnnprobe.gram.similarity.layer_cka`), as a heatmap."""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")  # no screen needed; set before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def cka_figure(layers: list[str], cka: np.ndarray, left_out: list[str], title: str) -> plt.Figure:
    """The layer x layer CKA matrix as a heatmap (values printed when it is small enough to read)."""
    size = max(4.0, 0.45 * len(layers) + 2.0)
    figure, axes = plt.subplots(figsize=(size + 1.0, size))
    image = axes.imshow(cka, vmin=0, vmax=1, cmap="viridis")
    if len(layers) <= 16:
        for (row, col), value in np.ndenumerate(cka):
            axes.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=6,
                      color="black" if value > 0.6 else "white")
    axes.set_xticks(range(len(layers)), layers, rotation=60, ha="right", fontsize=7)
    axes.set_yticks(range(len(layers)), layers, fontsize=7)
    note = f"\nnot derivable from the stored d x d moments: {', '.join(left_out)}" if left_out else ""
    width = int(size * 72 / (8 * 0.55))  # characters: the title wraps to the figure's width
    wrapped = "\n".join(part for line in (title + note).split("\n") for part in textwrap.wrap(line, width=width))
    axes.set_title(wrapped, fontsize=8)
    figure.colorbar(image, ax=axes, fraction=0.046, label="linear CKA")
    figure.tight_layout()
    return figure
