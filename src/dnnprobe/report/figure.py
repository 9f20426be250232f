"""The report's main figure: DNNBrain's Figure 1 (decoding score per depth, a Conv and a ReLU bar each).

Layers are grouped by depth: ``conv1`` and ``conv1_relu`` share a group (the Conv bar and the ReLU
bar); a layer without a ``_relu`` partner gets a group of its own. Error bars are the SEM over
folds; the dashed line is chance (the permutation null's mean when permutations ran, else the
majority-class rate); with permutations, marks above bars give each layer's permutation p-value and
a layer that does not beat chance (p >= .05) is hatched (without them the footnote says no test ran);
brackets give each depth's Conv-vs-ReLU test (Nadeau and Bengio's corrected resampled t-test over
folds, Holm-corrected across depths: :mod:`dnnprobe.probe.stats`). The footnote names only what is drawn.
Conv and ReLU are Okabe and Ito's orange and blue, told apart with every common colour-vision
deficiency; the legend sits right of the axes, so no bar, mark or bracket can hide under it.
"""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")  # no screen needed; set before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.transforms import Affine2D, ScaledTranslation, blended_transform_factory  # noqa: E402

from dnnprobe.probe.pairing import depth_groups  # noqa: E402
from dnnprobe.report.dnnbrain import DNNBRAIN_PUBLISHED, is_tutorial_run  # noqa: E402

# Okabe and Ito's (2008, "Color Universal Design") orange and blue, in place of DNNBrain's lime and
# dodgerblue, which deuteranopes and protanopes confuse.
CONV_COLOUR, RELU_COLOUR = "#E69F00", "#0072B2"
MANY_DEPTHS = 12  # above this many depths on the x axis, the figure packs them tighter
BAR_WIDTH = 0.43  # a Conv and a ReLU bar side by side in a depth's slot
SINGLE_BAR_WIDTH = 0.8  # one bar per depth (no _relu partners)
STAR_KEY = {"*": "* p < .05", "**": "** p < .01", "***": "*** p < .001", "n.s.": "n.s. p >= .05"}


def _stars(p: float | None) -> str:
    if p is None or not np.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else "n.s."


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


def figure_title(summary: dict, width: int = 110) -> str:
    """What ran, each part on its own line and wrapped at `width` characters: the stimulus set and what was
    decoded; the network (source, arch, weights, preprocessing, tokens); the probe (PCA, folds, decoder, C);
    and the demo warning. A summary from before these were recorded says less."""
    network = f"{summary.get('network_source', '')} {summary['arch']}".strip() + f" ({summary['weights']} weights)"
    if "preprocess" in summary:
        network += f", {summary['preprocess']} preprocessing"
    if summary.get("tokens", "n/a") != "n/a":
        network += f", {summary['tokens']} tokens"
    probe = [f"PCA {summary['pca']}", summary.get("folds", f"{summary['cv']}-fold CV"),
             f"{summary['classifier']} decoder", summary.get("C_choice", "")]
    lines = [f"{summary['stimulus_set']} (n={summary['n_stimuli']}): {decoded_attribute(summary)}",
             network, ", ".join(part for part in probe if part)]
    if summary.get("is_demo"):
        lines.append("built-in demo stimuli: a pipeline check, not a scientific finding")
    return "\n".join(wrapped for line in lines for wrapped in textwrap.wrap(line, width=width))


# Marks stay legible where the chance line runs through them.
MARK_STYLE = {"bbox": {"facecolor": "white", "edgecolor": "none", "pad": 0.3}, "zorder": 4}


def _bracket_p(summary: dict, group) -> float | None:
    """The Holm-corrected Conv-vs-ReLU p of a depth; None where no corrected test was computed."""
    if not (group.conv and group.relu):
        return None
    return summary.get("conv_vs_relu", {}).get(group.label, {}).get("p_holm")


def footnote(summary: dict, drawn: dict[str, bool]) -> list[str]:
    """The footnote's sentences, one for each kind of thing drawn (`drawn`: "layer_marks", "not_above_chance",
    "brackets", "published"), and, when no permutation test ran, that none did and how to run one."""
    lines = [f"Bars: mean {summary['scoring'].replace('_', ' ')} over {summary['cv']} cross-validation folds; "
             "error bars: SEM over folds; dashed line: chance."]
    if drawn.get("layer_marks"):
        # classes are shuffled within each test fold; a continuous target (KFold) across all stimuli
        where = "across all stimuli" if summary.get("classes") is None else "within folds"
        lines.append(f"Marks above bars: permutation test per layer ({summary.get('permutations')} label "
                     f"permutations {where}, one-sided, not corrected across layers).")
    if drawn.get("not_above_chance"):
        lines.append("Hatched bars: not above chance (permutation p >= .05).")
    if not any("p_value" in layer for layer in summary["layers"].values()):
        lines.append("No test against chance was run (the dashed line is the chance level only): set "
                     "probe.permutations, e.g. dvc exp run -S probe.permutations=1000, for a permutation test per layer.")
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
    # Layers without _relu partners (a ViT's blocks, ConvNeXt's stages): one bar per layer, in depth order.
    single = not any(g.conv and g.relu for g in groups)
    many = len(groups) > MANY_DEPTHS  # 12-48 layers: narrower slots and vertical tick labels
    slot = 0.35 if many else 0.9
    width_in, height_in = max(6.0, slot * len(groups) + 1.5) + 1.6, 4.8  # + room for the legend at the right
    figure, axes = plt.subplots(figsize=(width_in, height_in))
    x = np.arange(len(groups))
    drawn = {"layer_marks": False, "not_above_chance": False, "brackets": False, "published": False, "marks": set()}
    _draw_bars(figure, axes, summary, groups, x, single, drawn)
    chance = summary["chance"]
    axes.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({summary['chance_source']})")
    _draw_brackets(figure, axes, summary, groups, x, BAR_WIDTH, drawn)
    _set_y_range(axes, summary, chance)
    axes.spines["top"].set_visible(False)
    axes.spines["right"].set_visible(False)
    axes.set_xticks(x, [g.label for g in groups], **({"rotation": 90, "fontsize": 7} if many else {}))
    axes.set_ylabel(summary["scoring"].replace("_", " "))
    axes.set_title(figure_title(summary, width=int((width_in - 1.0) * 72 / (9 * 0.55))), fontsize=9)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    _draw_footnote(figure, summary, drawn, width_in, height_in)
    return figure


def _draw_bars(figure: plt.Figure, axes, summary: dict, groups, x: np.ndarray, single: bool, drawn: dict) -> None:
    """The Conv and ReLU bars (or one series), each layer's permutation mark, and DNNBrain's values as
    black ticks where the run is of its setting; records what was drawn in `drawn`."""
    metrics = summary["layers"]
    series = (((0.0, "conv", CONV_COLOUR, "layer"),) if single else
              ((-BAR_WIDTH / 2, "conv", CONV_COLOUR, "Conv"), (BAR_WIDTH / 2, "relu", RELU_COLOUR, "ReLU")))
    width = SINGLE_BAR_WIDTH if single else BAR_WIDTH
    for offset, kind, colour, name in series:
        layers = [getattr(g, kind) for g in groups]
        present = [i for i, layer in enumerate(layers) if layer]
        if not present:
            continue
        means = np.array([metrics[layers[i]]["mean"] for i in present])
        sems = np.array([metrics[layers[i]]["sem"] for i in present])
        bars = axes.bar(x[present] + offset, means, width, yerr=sems, color=colour, label=name, capsize=0, ecolor="black")
        for bar, i in zip(bars.patches, present):  # the permutation test says this layer does not beat chance
            if metrics[layers[i]].get("beats_chance") is False:
                bar.set_hatch("///")
                bar.set_edgecolor("white")
                drawn["not_above_chance"] = True
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


def _draw_brackets(figure: plt.Figure, axes, summary: dict, groups, x: np.ndarray, width: float, drawn: dict) -> None:
    """Conv vs ReLU per depth (Holm-corrected corrected resampled t-test), a bracket over the two bars."""
    metrics = summary["layers"]
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


def _set_y_range(axes, summary: dict, chance: float) -> None:
    """Every bar, error bar and the chance line in range, a fifth of the axis free above the highest bar
    for the marks; from 0 and no tick above 1 unless the score is r2 (which can be negative)."""
    metrics, scoring = summary["layers"], summary["scoring"]
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


def _draw_footnote(figure: plt.Figure, summary: dict, drawn: dict, width_in: float, height_in: float) -> None:
    """The footnote below everything, wrapped to the figure's width; the layout leaves its height free."""
    lines = [wrapped for line in footnote(summary, drawn)
             for wrapped in textwrap.wrap(line, width=int(width_in * 72 / (6 * 0.52)))]
    figure.text(0.01, 0.01, "\n".join(lines), fontsize=6, color="dimgrey", va="bottom", linespacing=1.3)
    footnote_height = (len(lines) * 6 * 1.3 + 6) / 72.0 / height_in
    figure.tight_layout(rect=(0, footnote_height + 0.01, 1, 1))
