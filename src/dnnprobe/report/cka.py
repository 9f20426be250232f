"""The similarity stage's figures: linear CKA between every pair of layers
(:func:`dnnprobe.gram.similarity.layer_cka`), and between this run's layers and another run's
(:func:`dnnprobe.gram.similarity.cross_cka`, ``--other``), as heatmaps."""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")  # no screen needed; set before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PRINTED = 16  # values are printed in the cells up to this many rows and columns (beyond, they cannot be read)


def _heatmap(rows: list[str], columns: list[str], cka: np.ndarray) -> tuple[plt.Figure, plt.Axes]:
    """A rows x columns CKA heatmap on [0, 1], a colour bar, the layer names as ticks."""
    width, height = max(4.0, 0.45 * len(columns) + 2.0), max(4.0, 0.45 * len(rows) + 2.0)
    figure, axes = plt.subplots(figsize=(width + 1.0, height))
    image = axes.imshow(cka, vmin=0, vmax=1, cmap="viridis")
    if len(rows) <= PRINTED and len(columns) <= PRINTED:
        for (row, col), value in np.ndenumerate(cka):
            axes.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=6,
                      color="black" if value > 0.6 else "white")
    axes.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=7)
    axes.set_yticks(range(len(rows)), rows, fontsize=7)
    figure.colorbar(image, ax=axes, fraction=0.046, label="linear CKA")
    return figure, axes


def _wrap(text: str, inches: float) -> str:
    """`text` wrapped, line by line, to about `inches` at the titles' 8 points."""
    width = int((inches - 1.0) * 72 / (8 * 0.55))  # characters: an 8-point character is about 0.55 em wide
    return "\n".join(part for line in text.split("\n") for part in textwrap.wrap(line, width=width))


def cka_figure(layers: list[str], cka: np.ndarray, left_out: list[str], title: str) -> plt.Figure:
    """The layer x layer CKA matrix as a heatmap (values printed when it is small enough to read)."""
    figure, axes = _heatmap(layers, layers, cka)
    width = figure.get_size_inches()[0]
    note = f"\nnot derivable from the stored d x d moments: {', '.join(left_out)}" if left_out else ""
    axes.set_title(_wrap(title + note, width), fontsize=8)
    figure.tight_layout()
    return figure


def cross_cka_figure(rows: list[str], columns: list[str], cka: np.ndarray, row_network: str, column_network: str,
                     title: str, left_out: list[str] = ()) -> plt.Figure:
    """CKA between two networks' layers on the same stimuli as a heatmap: one row per layer of this run
    (`rows`, named `row_network` on the y axis), one column per layer of the other run (`columns`,
    `column_network` on the x axis); `cka` is len(rows) x len(columns), in [0, 1]. `title` names the
    stimulus set; `left_out`: the other run's layers not compared (named under the title)."""
    cka = np.asarray(cka, dtype=np.float64).reshape(len(rows), len(columns))
    figure, axes = _heatmap(rows, columns, cka)
    width, height = figure.get_size_inches()
    note = f"\nleft out (the other run's d x d moments; give --other-activations): {', '.join(left_out)}" \
        if left_out else ""
    axes.set_title(_wrap(title + note, width), fontsize=8)
    # the networks on their axes, so that the two are never confused (two ViTs differ only in their tokens)
    axes.set_ylabel(_wrap(f"rows, this run: {row_network}", height), fontsize=8)
    axes.set_xlabel(_wrap(f"columns, the other run: {column_network}", width), fontsize=8)
    figure.tight_layout()
    return figure
