"""The report: DNNBrain's Figure 1 (decoding score per depth, a Conv and a ReLU bar each) and DVC plot data.

Layers are grouped by depth: ``conv1`` and ``conv1_relu`` share a group (the Conv bar and the ReLU
bar); a layer without a ``_relu`` partner gets a group of its own. Error bars are the SEM over
folds; the dashed line is chance (the permutation null's mean when permutations ran, else the
majority-class rate); with permutations, marks above bars give each layer's permutation p-value;
brackets give each depth's Conv-vs-ReLU test (Nadeau and Bengio's corrected resampled t-test over
folds, Holm-corrected across depths: :mod:`dnnprobe.probe.stats`). The footnote names only what is drawn.
Conv and ReLU are Okabe and Ito's orange and blue, told apart with every common colour-vision
deficiency; the legend sits right of the axes, so no bar, mark or bracket can hide under it.
"""

from __future__ import annotations

import csv
import io
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen needed; set before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.transforms import Affine2D, ScaledTranslation, blended_transform_factory  # noqa: E402

from dnnprobe.probe.pairing import depth_groups  # noqa: E402

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
# Okabe and Ito's (2008, "Color Universal Design") orange and blue, in place of DNNBrain's lime and
# dodgerblue, which deuteranopes and protanopes confuse.
CONV_COLOUR, RELU_COLOUR = "#E69F00", "#0072B2"
MANY_DEPTHS = 12  # above this many depths on the x axis, the figure packs them tighter
STAR_KEY = {"*": "* p < .05", "**": "** p < .01", "***": "*** p < .001", "n.s.": "n.s. p >= .05"}


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
    is the layer's own name (conv1_relu), ``scoring`` what the score is (accuracy, r2, ...) and
    ``settings`` what differs from the defaults (``pca=50 classifier=ridge``), which labels the line in
    ``dvc plots diff`` beside DVC's name for the experiment.
    """
    metrics = summary["layers"]
    rows = []
    groups = depth_groups(summary["layer_order"])
    single = not any(g.conv and g.relu for g in groups)  # no _relu partners (a ViT's blocks): one series
    for group in groups:
        for kind, layer in (("layer" if single else "Conv", group.conv), ("ReLU", group.relu)):
            if layer:
                rows.append({"depth": group.label, "type": kind, "layer": layer, "score": round(metrics[layer]["mean"], 6),
                             "sem": round(metrics[layer]["sem"], 6), "scoring": summary["scoring"],
                             "settings": summary.get("settings", "")})
    return rows


def write_plot_csv(attributes: dict | list[tuple[str | None, dict]], path: Path) -> None:
    """The DVC plot table of a summary, or of each attribute's (``(name, summary)`` pairs, from
    :func:`dnnprobe.probe.stats.attribute_summaries`): then ``scoring`` also names the attribute, ``accuracy
    (animacy)``, so that ``dvc plots show`` draws one series per attribute."""
    if isinstance(attributes, dict):
        attributes = [(None, attributes)]
    rows = []
    for name, summary in attributes:
        for row in plot_rows(summary):
            rows.append({**row, "scoring": f"{row['scoring']} ({name})"} if name else row)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue())


def decoded_attribute(summary: dict) -> str:
    """What was decoded, in words: the class names (``summary["class_names"]``) and the table column,
    e.g. ``decoding animate vs inanimate (column 'label')``; a continuous column by its name."""
    column = f"column '{summary['label']}'"
    names = summary.get("class_names") or summary.get("classes")
    if not names:  # a continuous target (ridge regression)
        return f"predicting {column}"
    if len(names) <= 4:
        return f"decoding {' vs '.join(names)} ({column})"
    return f"decoding {len(names)} classes: {', '.join(names[:3])}, ... ({column})"


def figure_title(summary: dict) -> str:
    """Stimulus set and what was decoded, then network and probe settings (and the demo warning)."""
    line = (
        f"{summary['stimulus_set']} (n={summary['n_stimuli']}): {decoded_attribute(summary)}\n"
        f"{summary['arch']} ({summary['weights']} weights), PCA {summary['pca']}, {summary['cv']}-fold CV, "
        f"{summary['classifier']} decoder"
    )
    if summary.get("is_demo"):
        line += "\nbuilt-in demo stimuli: a pipeline check, not a scientific finding"
    return line


# Marks stay legible where the chance line runs through them.
MARK_STYLE = {"bbox": {"facecolor": "white", "edgecolor": "none", "pad": 0.3}, "zorder": 4}


def _bracket_p(summary: dict, group) -> float | None:
    """The Holm-corrected Conv-vs-ReLU p of a depth; None where no corrected test was computed."""
    if not (group.conv and group.relu):
        return None
    return summary.get("conv_vs_relu", {}).get(group.label, {}).get("p_holm")


def footnote(summary: dict, drawn: dict[str, bool]) -> list[str]:
    """The footnote's sentences, one for each kind of thing drawn (`drawn`: "layer_marks", "brackets",
    "published")."""
    lines = [f"Bars: mean {summary['scoring'].replace('_', ' ')} over {summary['cv']} cross-validation folds; "
             "error bars: SEM over folds; dashed line: chance."]
    if drawn.get("layer_marks"):
        # classes are shuffled within each test fold; a continuous target (KFold) across all stimuli
        where = "across all stimuli" if summary.get("classes") is None else "within folds"
        lines.append(f"Marks above bars: permutation test per layer ({summary.get('permutations')} label "
                     f"permutations {where}, one-sided, not corrected across layers).")
    if drawn.get("brackets"):
        described = summary.get("conv_vs_relu_test", {})
        correction = described.get("correction", "Holm-corrected")
        lines.append("Brackets: Conv vs ReLU, Nadeau-Bengio corrected resampled t-test over folds "
                     f"(two-sided), {correction.replace('Holm over', 'Holm-corrected across')}.")
    marks = [mark for mark in STAR_KEY if mark in drawn.get("marks", ())]
    if marks:  # only the marks that appear
        lines.append(", ".join(STAR_KEY[mark] for mark in marks) + ".")
    if drawn.get("published"):
        lines.append("Black ticks: DNNBrain's published accuracies (its Figure 1).")
    return lines


def _points_above(figure: plt.Figure, axes, level: float):
    """x in data coordinates, y in points above the data value `level`: marks keep their distance from a
    bar top (in points) whatever the y-range."""
    y = Affine2D().scale(1 / 72.0) + figure.dpi_scale_trans + ScaledTranslation(0, level, axes.transData)
    return blended_transform_factory(axes.transData, y)


def conv_vs_relu_figure(summary: dict) -> plt.Figure:
    """DNNBrain's Figure 1 layout plus chance line, significance marks and, where it applies, DNNBrain's values.

    Above each bar top (mean + SEM), in points so that they never overlap whatever the y-range: a layer's
    permutation mark from 1.5 pt, the depth's bracket at 11-14 pt, its mark from 15 pt (about 25 pt in
    all); the y-axis keeps a fifth of its height free above the highest bar for them.
    """
    groups = depth_groups(summary["layer_order"])
    metrics = summary["layers"]
    scoring = summary["scoring"]
    # Layers without _relu partners (a ViT's blocks, ConvNeXt's stages): one bar per layer, in depth order.
    single = not any(g.conv and g.relu for g in groups)
    many = len(groups) > MANY_DEPTHS  # 12-48 layers: narrower slots and vertical tick labels
    slot = 0.35 if many else 0.9
    width_in, height_in = max(6.0, slot * len(groups) + 1.5) + 1.6, 4.8  # + room for the legend at the right
    figure, axes = plt.subplots(figsize=(width_in, height_in))
    x = np.arange(len(groups))
    width = 0.43
    drawn = {"layer_marks": False, "brackets": False, "published": False, "marks": set()}
    series = (((0.0, "conv", CONV_COLOUR, "layer"),) if single else
              ((-width / 2, "conv", CONV_COLOUR, "Conv"), (width / 2, "relu", RELU_COLOUR, "ReLU")))
    if single:
        width = 0.8
    for offset, kind, colour, name in series:
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
                # above the bar's visible top: its error bar, or 0 for a negative score (r2)
                axes.text(x[i] + offset, 1.5, mark, ha="center", va="bottom", fontsize=7, **MARK_STYLE,
                          transform=_points_above(figure, axes, max(mean + sem, 0.0)))
                drawn["layer_marks"] = True
                drawn["marks"].add(mark)
        published = [DNNBRAIN_PUBLISHED.get(layers[i]) for i in present] if is_tutorial_run(summary) else []
        if any(v is not None for v in published):
            axes.scatter(
                [x[i] + offset for i, v in zip(present, published) if v is not None],
                [v for v in published if v is not None],
                marker="_", s=250, color="black", zorder=5,
                label="DNNBrain published" if kind == "conv" else None,
            )
            drawn["published"] = True
    chance = summary["chance"]
    axes.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({summary['chance_source']})")
    # Conv vs ReLU per depth (Holm-corrected corrected resampled t-test), a bracket over the two bars.
    for i, group in enumerate(groups):
        p = _bracket_p(summary, group)
        if p is None:
            continue
        top = max(metrics[group.conv]["mean"] + metrics[group.conv]["sem"],
                  metrics[group.relu]["mean"] + metrics[group.relu]["sem"], 0.0)
        above = _points_above(figure, axes, top)
        axes.plot([x[i] - width / 2, x[i] - width / 2, x[i] + width / 2, x[i] + width / 2], [11, 14, 14, 11],
                  color="black", linewidth=0.8, transform=above)
        axes.text(x[i], 15, _stars(p), ha="center", va="bottom", fontsize=7, transform=above, **MARK_STYLE)
        drawn["brackets"] = True
        drawn["marks"].add(_stars(p))
    lows = [metrics[layer]["mean"] - metrics[layer]["sem"] for layer in summary["layer_order"]]
    highest = max(max(metrics[layer]["mean"] + metrics[layer]["sem"] for layer in summary["layer_order"]), chance)
    low = min(min(lows), chance) - 0.05
    if scoring != "r2":
        low = max(0.0, low)
    highest = max(highest, low + 0.08)
    # A fifth of the axis above the highest bar: (high - highest) / (high - low) = 0.2.
    high = highest + 0.25 * (highest - low)
    axes.set_ylim(low, high)
    if scoring != "r2":  # no tick above a perfect score
        axes.set_yticks([t for t in axes.get_yticks() if low - 1e-9 <= t <= 1.0 + 1e-9])
    axes.spines["top"].set_visible(False)
    axes.spines["right"].set_visible(False)
    axes.set_xticks(x, [g.label for g in groups], **({"rotation": 90, "fontsize": 7} if many else {}))
    axes.set_ylabel(scoring.replace("_", " "))
    axes.set_title(figure_title(summary), fontsize=9)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    # Footnote below everything: wrapped to the figure's width; the layout leaves its height free.
    lines = [wrapped for line in footnote(summary, drawn)
             for wrapped in textwrap.wrap(line, width=int(width_in * 72 / (6 * 0.52)))]
    figure.text(0.01, 0.01, "\n".join(lines), fontsize=6, color="dimgrey", va="bottom", linespacing=1.3)
    footnote_height = (len(lines) * 6 * 1.3 + 6) / 72.0 / height_in
    figure.tight_layout(rect=(0, footnote_height + 0.01, 1, 1))
    return figure


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


def save_figure(figure: plt.Figure, stem: Path) -> list[Path]:
    """PNG and SVG, byte-reproducible (no dates, fixed SVG ids)."""
    plt.rcParams["svg.hashsalt"] = "dnnprobe"
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    figure.savefig(paths[0], dpi=150, metadata={"Software": None})
    figure.savefig(paths[1], metadata={"Date": None, "Creator": None})
    plt.close(figure)
    return paths
