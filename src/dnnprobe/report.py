"""The report: DNNBrain's Figure 1 (decoding score per depth, a Conv and a ReLU bar each) and DVC plot data.

Layers are grouped by depth: ``conv1`` and ``conv1_relu`` share a group (the Conv bar and the ReLU
bar); a layer without a ``_relu`` partner gets a group of its own. Error bars are the SEM over
folds; the dashed line is chance (the permutation null's mean when permutations ran, else the
majority-class rate); marks above bars give each layer's permutation p-value and each depth's
paired Conv-vs-ReLU test.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen needed; set before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dnnprobe.layers import depth_groups  # noqa: E402

# DNNBrain's published values (read off its Figure 1, +-0.005): AlexNet, ImageNet weights,
# BOLD5000 animate vs inanimate, PCA 100, 10-fold CV.
DNNBRAIN_PUBLISHED = {
    "conv1": 0.61, "conv2": 0.71, "conv3": 0.765, "conv4": 0.815, "conv5": 0.85, "fc1": 0.88, "fc2": 0.885,
    "conv1_relu": 0.705, "conv2_relu": 0.77, "conv3_relu": 0.81, "conv4_relu": 0.845, "conv5_relu": 0.865,
    "fc1_relu": 0.89, "fc2_relu": 0.90,
}
# The run those values come from; only such a run is drawn against them.
TUTORIAL_RUN = {"arch": "alexnet", "weights": "imagenet", "source": "bold5000", "pca": 100, "cv": 10,
                "classifier": "logistic", "scoring": "accuracy"}
CONV_COLOUR, RELU_COLOUR = "lime", "dodgerblue"  # DNNBrain's colours


def is_tutorial_run(summary: dict) -> bool:
    """Whether a probe summary is of DNNBrain's tutorial setting, the one its published values are for."""
    return all(summary.get(key) == value for key, value in TUTORIAL_RUN.items())


def _stars(p: float | None) -> str:
    if p is None or not np.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else "n.s."


def plot_rows(summary: dict) -> list[dict]:
    """The DVC plot table: one row per layer, in depth order, Conv before ReLU.

    ``depth`` is the x axis label (Conv1..FC2), ``type`` the series (Conv: the layer's output before
    the ReLU; ReLU: after it), ``score`` the mean fold score and ``sem`` its SEM over folds; ``layer``
    is the layer's own name (conv1_relu) and ``scoring`` what the score is (accuracy, r2, ...).
    """
    metrics = summary["layers"]
    rows = []
    for group in depth_groups(summary["layer_order"]):
        for kind, layer in (("Conv", group.conv), ("ReLU", group.relu)):
            if layer:
                rows.append({"depth": group.label, "type": kind, "layer": layer, "score": round(metrics[layer]["mean"], 6),
                             "sem": round(metrics[layer]["sem"], 6), "scoring": summary["scoring"]})
    return rows


def write_plot_csv(summary: dict, path: Path) -> None:
    rows = plot_rows(summary)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue())


def figure_title(summary: dict) -> str:
    line = (
        f"{summary['arch']} ({summary['weights']} weights), {summary['stimulus_set']}, n={summary['n_stimuli']}\n"
        f"PCA {summary['pca']}, {summary['cv']}-fold CV, {summary['classifier']}, label '{summary['label']}'"
    )
    if summary.get("is_demo"):
        line += "\nbuilt-in demo stimuli: a pipeline check, not a scientific finding"
    return line


def conv_vs_relu_figure(summary: dict) -> plt.Figure:
    """DNNBrain's Figure 1 layout plus chance line, significance marks and, where it applies, DNNBrain's values."""
    groups = depth_groups(summary["layer_order"])
    metrics = summary["layers"]
    scoring = summary["scoring"]
    figure, axes = plt.subplots(figsize=(max(6.0, 0.9 * len(groups) + 1.5), 4.6))
    x = np.arange(len(groups))
    width = 0.43
    tops = []
    for offset, kind, colour, name in ((-width / 2, "conv", CONV_COLOUR, "Conv"), (width / 2, "relu", RELU_COLOUR, "ReLU")):
        layers = [getattr(g, kind) for g in groups]
        present = [i for i, layer in enumerate(layers) if layer]
        if not present:
            continue
        means = np.array([metrics[layers[i]]["mean"] for i in present])
        sems = np.array([metrics[layers[i]]["sem"] for i in present])
        axes.bar(x[present] + offset, means, width, yerr=sems, color=colour, label=name, capsize=0, ecolor="black")
        for i, mean, sem in zip(present, means, sems):
            mark = _stars(metrics[layers[i]].get("p_value"))
            if mark:
                axes.text(x[i] + offset, mean + sem + 0.004, mark, ha="center", va="bottom", fontsize=7)
            tops.append(mean + sem)
        published = [DNNBRAIN_PUBLISHED.get(layers[i]) for i in present] if is_tutorial_run(summary) else []
        if any(v is not None for v in published):
            axes.scatter(
                [x[i] + offset for i, v in zip(present, published) if v is not None],
                [v for v in published if v is not None],
                marker="_", s=250, color="black", zorder=5,
                label="DNNBrain published" if kind == "conv" else None,
            )
    chance = summary["chance"]
    axes.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({summary['chance_source']})")
    # Paired Conv-vs-ReLU test per depth, drawn as a bracket over the two bars.
    for i, group in enumerate(groups):
        p = summary.get("conv_vs_relu", {}).get(group.label, {}).get("p_value")
        if group.conv and group.relu and p is not None:
            top = max(metrics[group.conv]["mean"] + metrics[group.conv]["sem"],
                      metrics[group.relu]["mean"] + metrics[group.relu]["sem"]) + 0.03
            axes.plot([x[i] - width / 2, x[i] - width / 2, x[i] + width / 2, x[i] + width / 2],
                      [top - 0.008, top, top, top - 0.008], color="black", linewidth=0.8)
            axes.text(x[i], top + 0.003, _stars(p), ha="center", va="bottom", fontsize=7)
            tops.append(top + 0.03)
    means = [metrics[layer]["mean"] - metrics[layer]["sem"] for layer in summary["layer_order"]]
    low = min(min(means), chance) - 0.05
    high = max(max(tops), chance) + 0.03
    if scoring != "r2":
        low, high = max(0.0, low), min(1.05, max(high, low + 0.1))
    axes.set_ylim(low, high)
    axes.spines["top"].set_visible(False)
    axes.spines["right"].set_visible(False)
    axes.set_xticks(x, [g.label for g in groups])
    axes.set_ylabel(scoring.replace("_", " "))
    axes.set_title(figure_title(summary), fontsize=9)
    axes.legend(fontsize=7, loc="upper left", frameon=False)
    note = "error bars: SEM over folds; marks: permutation p (bars), paired test over folds (brackets)"
    figure.text(0.01, 0.005, note, fontsize=6, color="dimgrey")
    figure.tight_layout(rect=(0, 0.02, 1, 1))
    return figure


def confusion_figure(conf_m: np.ndarray, classes: list[str], layer: str) -> plt.Figure:
    """Confusion matrix of one layer, summed over folds and normalised by true class."""
    total = conf_m.sum(axis=0).astype(float)
    rates = total / np.maximum(total.sum(axis=1, keepdims=True), 1)
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


def save_figure(figure: plt.Figure, stem: Path) -> list[Path]:
    """PNG and SVG, byte-reproducible (no dates, fixed SVG ids)."""
    plt.rcParams["svg.hashsalt"] = "dnnprobe"
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    figure.savefig(paths[0], dpi=150, metadata={"Software": None})
    figure.savefig(paths[1], metadata={"Date": None, "Creator": None})
    plt.close(figure)
    return paths
