"""The report's confusion-matrix figure of one layer: rates and counts per cell up to 30 classes; beyond,
the whole matrix without cell text beside the most frequent confusions."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no screen needed; set before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


# Up to this many classes every cell is drawn with its rate and count (the figure grows with the classes,
# to 20 inches at 30). Beyond, cells would be unreadable and the figure too large to open (13,800 px
# square at 150 classes; matplotlib fails past ~725): the whole matrix is drawn without cell text in a
# figure of fixed size, beside the most frequent confusions named.
ANNOTATED_CLASSES = 30
NAMED_CONFUSIONS = 20
# Tick labels are drawn for at most this many classes; beyond, every n-th.
MAX_TICK_LABELS = 40


def confusion_figure(conf_m: np.ndarray, classes: list[str], layer: str) -> plt.Figure:
    """Confusion matrix of one layer, summed over folds and normalised by true class.

    `conf_m`: (folds, classes, classes) counts, true class by row. Up to `ANNOTATED_CLASSES` classes,
    each cell shows its rate and count; beyond, see `_many_class_confusion_figure` (any class count
    gives a figure of at most 13 x 7.5 inches).
    """
    total = conf_m.sum(axis=0).astype(float)
    rates = total / np.maximum(total.sum(axis=1, keepdims=True), 1)
    if len(rates) > ANNOTATED_CLASSES:
        return _many_class_confusion_figure(rates, total, classes, layer)
    size = max(3.2, 0.6 * len(classes) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    image = axes.imshow(rates, vmin=0, vmax=1, cmap="Blues")
    for (row, col), value in np.ndenumerate(rates):
        axes.text(col, row, f"{value:.2f}\n({int(total[row, col])})", ha="center", va="center",
                  color="white" if value > 0.6 else "black", fontsize=7)
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"{layer}: confusion over all folds", fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    return figure


def _many_class_confusion_figure(rates: np.ndarray, total: np.ndarray, classes: list[str], layer: str) -> plt.Figure:
    """Left: the whole matrix of rates, no cell text (labels on every n-th class). Right: the
    `NAMED_CONFUSIONS` most frequent confusions (true -> predicted), by rate of the true class."""
    n = len(rates)
    names = [str(c) for c in classes] if len(classes) == n else [str(i) for i in range(n)]
    figure, (matrix, bars) = plt.subplots(1, 2, figsize=(13, 7.5), gridspec_kw={"width_ratios": [1.15, 1]})
    image = matrix.imshow(rates, vmin=0, vmax=1, cmap="Blues")
    step = int(np.ceil(n / MAX_TICK_LABELS))
    ticks = range(0, n, step)
    matrix.set_xticks(ticks, [names[i] for i in ticks], rotation=90, fontsize=5)
    matrix.set_yticks(ticks, [names[i] for i in ticks], fontsize=5)
    every = f" (one class in {step} named)" if step > 1 else ""
    matrix.set_xlabel(f"predicted{every}")
    matrix.set_ylabel("true")
    matrix.set_title(f"{layer}: confusion over all folds, {n} classes", fontsize=9)
    figure.colorbar(image, ax=matrix, fraction=0.046, label="rate (of the true class)")

    off_diagonal = rates.copy()
    np.fill_diagonal(off_diagonal, 0)
    order = np.argsort(-off_diagonal, axis=None, kind="stable")[:NAMED_CONFUSIONS]
    pairs = [np.unravel_index(i, rates.shape) for i in order]
    pairs = [(row, col) for row, col in pairs if off_diagonal[row, col] > 0]
    labels = [f"{_short(names[row])} \u2192 {_short(names[col])} ({int(total[row, col])})" for row, col in pairs]
    bars.barh(range(len(pairs)), [off_diagonal[row, col] for row, col in pairs], color="#0072B2")
    bars.set_yticks(range(len(pairs)), labels, fontsize=7)
    bars.invert_yaxis()
    bars.set_xlim(0, max([off_diagonal[row, col] for row, col in pairs], default=1) * 1.15)
    bars.set_xlabel("rate: share of the true class predicted as the other (count)")
    bars.set_title(f"the {len(pairs)} most frequent confusions (true \u2192 predicted)" if pairs
                   else "no confusions", fontsize=9)
    figure.tight_layout()
    return figure


def _short(name: str, limit: int = 24) -> str:
    return name if len(name) <= limit else name[:limit - 1] + "\u2026"
