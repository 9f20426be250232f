"""The report: DNNBrain's figure layout, DVC plot data, reproducible files."""

from __future__ import annotations

import json

import pytest

from helpers import tiny_params
from dnnprobe.report.plots import plot_rows
from dnnprobe.stages.probe import probe
from dnnprobe.stages.report import report


@pytest.fixture
def probed(tmp_path, tiny_stimuli, tiny_gram, tiny_activations):
    params = tiny_params()
    probe(params, tiny_stimuli, tiny_gram, tiny_activations, tmp_path / "probe", tmp_path / "metrics.json",
          tmp_path / "probes", progress=False)
    return params, tmp_path


def test_report_writes_figures_and_plot_table_reproducibly(probed):
    params, folder = probed
    paths = report(params, folder / "probe", folder / "figures", folder / "plots" / "s.csv")
    names = sorted(p.name for p in paths)
    assert names == ["confusion.png", "confusion.svg", "conv_vs_relu.png", "conv_vs_relu.svg"]
    first = {p.name: p.read_bytes() for p in paths}
    report(params, folder / "probe", folder / "figures", folder / "plots" / "s.csv")
    assert {p.name: p.read_bytes() for p in (folder / "figures").iterdir()} == first
    rows = (folder / "plots" / "s.csv").read_text().splitlines()
    assert rows[0] == "depth,type,layer,score,sem,scoring,settings" and len(rows) == 15  # a row per layer
    summary = json.loads((folder / "probe" / "summary.json").read_text())
    assert [(r["depth"], r["type"], r["layer"]) for r in plot_rows(summary)[:2]] == [("Conv1", "Conv", "conv1"),
                                                                                     ("Conv1", "ReLU", "conv1_relu")]
    assert plot_rows(summary)[1]["score"] == round(summary["layers"]["conv1_relu"]["mean"], 6)
    svg = (folder / "figures" / "conv_vs_relu.svg").read_text()
    for text in ("alexnet", "random weights", "PCA 4", "3-fold", "pipeline check"):
        assert text in svg, text
    # what ran, in full (issue 27): source, preprocessing, the folds and how C was set
    for text in ("torchvision alexnet (random weights), dnnbrain preprocessing", "3-fold CV (StratifiedKFold), not grouped",
                 "not shuffled", "C = 1 (fixed)"):
        assert text in svg, text
    # the demo table's title and its classes' names (its condition column)
    assert summary["stimulus_set"] in svg and f"decoding {' vs '.join(summary['class_names'])}" in svg
    assert summary["conv_vs_relu_test"]["correction"] == "Holm over 7 depths"


# ---- the figure, from summaries made here --------------------------------------------------

DEPTHS = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2"]


def made_summary(permutations: int = 0, sem: float = 0.02, base: float = 0.6, n: int = 400, **changes) -> dict:
    """A probe summary of 7 depths whose scores rise from `base`, each with a Conv-vs-ReLU test."""
    order = [name for depth in DEPTHS for name in (depth, f"{depth}_relu")]
    layers = {}
    for index, layer in enumerate(order):
        mean = min(0.995, base + 0.05 * (index // 2) + (0.04 if layer.endswith("_relu") else 0.0))
        layers[layer] = {"mean": mean, "sem": sem, "scores": [mean] * 10}
        if permutations:
            layers[layer]["p_value"] = 1 / (permutations + 1) if index > 1 else 0.3
    tests = {depth.capitalize() if depth.startswith("conv") else depth.upper():
             {"conv": depth, "relu": f"{depth}_relu", "mean_difference": 0.04, "t": 2.0, "df": 9,
              "p_value": 0.004 * (k + 1), "p_holm": min(1.0, 0.028 * (k + 1))}
             for k, depth in enumerate(DEPTHS)}
    summary = {
        "arch": "alexnet", "weights": "random", "stimulus_set": "image folder 'pets'", "n_stimuli": n,
        "is_demo": False, "source": "folder", "pca": 100, "cv": 10, "label": "label", "classifier": "logistic",
        "scoring": "accuracy", "permutations": permutations, "layer_order": order, "layers": layers,
        "classes": ["0", "1"], "class_names": ["cats", "dogs"], "conv_vs_relu": tests,
        "conv_vs_relu_test": {"test": "Nadeau-Bengio corrected resampled t-test over folds (ReLU minus Conv, two-sided)",
                              "correction": "Holm over 7 depths"},
        "chance": 0.5, "chance_source": "permutation null" if permutations else "majority class",
    }
    summary.update(changes)
    return summary


def drawn(summary: dict):
    """The figure drawn, its axes and the renderer that laid it out."""
    from dnnprobe.report.figure import conv_vs_relu_figure

    figure = conv_vs_relu_figure(summary)
    figure.canvas.draw()
    return figure, figure.axes[0], figure.canvas.get_renderer()


@pytest.mark.parametrize("n, sem, base, permutations", [
    (12, 0.09, 0.80, 0),  # a small real-image set: wide SEM, scores near the ceiling
    (40, 0.05, 0.55, 1000),
    (400, 0.02, 0.60, 1000),
    (4916, 0.004, 0.62, 0),  # BOLD5000: tight SEM
])
def test_nothing_overlaps_at_any_number_of_stimuli(n, sem, base, permutations):
    import matplotlib.pyplot as plt

    figure, axes, renderer = drawn(made_summary(permutations, sem, base, n))
    area = axes.get_window_extent(renderer)
    legend = axes.get_legend().get_window_extent(renderer)
    assert not legend.overlaps(area), "the legend lies over the bars' area"
    note = figure.texts[0].get_window_extent(renderer)
    title = axes.title.get_window_extent(renderer)
    ticks = [label.get_window_extent(renderer) for label in axes.get_xticklabels()]
    for box in (legend, note, title, area):
        assert figure.bbox.x0 <= box.x0 and box.x1 <= figure.bbox.x1 + 0.5  # nothing cut off at the sides
        assert figure.bbox.y0 <= box.y0 and box.y1 <= figure.bbox.y1 + 0.5
    assert not note.overlaps(area) and not any(note.overlaps(tick) for tick in ticks)
    assert not title.overlaps(legend) and not title.overlaps(area)
    marks = [text.get_window_extent(renderer) for text in axes.texts]
    assert len(marks) == 7 + (14 if permutations else 0)  # a bracket mark per depth, a mark per layer with permutations
    for index, mark in enumerate(marks):
        assert area.y0 <= mark.y0 and mark.y1 <= area.y1, "a mark lies outside the axes"
        assert not any(mark.overlaps(other) for other in marks[index + 1:]), "two marks overlap"
    plt.close(figure)


def test_footnote_names_only_what_is_drawn():
    import matplotlib.pyplot as plt

    figure, _, _ = drawn(made_summary(permutations=1000))
    note = " ".join(figure.texts[0].get_text().split())
    assert "error bars: SEM over folds" in note
    assert "permutation test per layer (1000 label permutations within folds, one-sided, not corrected" in note
    assert "Brackets: Conv vs ReLU, Nadeau-Bengio corrected resampled t-test over folds (two-sided), " \
           "Holm-corrected across 7 depths" in note
    assert "* p < .05" in note and "DNNBrain" not in note
    plt.close(figure)
    figure, axes, _ = drawn(made_summary(permutations=0))
    note = " ".join(figure.texts[0].get_text().split())
    assert "Marks above bars" not in note and "Nadeau-Bengio" in note
    # no test against chance ran: said, with how to run one (issue 27)
    assert "No test against chance was run" in note and "dvc exp run -S probe.permutations=1000" in note
    plt.close(figure)
    # A summary without corrected tests (an older probe's): no brackets, and the footnote does not mention them.
    figure, axes, _ = drawn(made_summary(permutations=0, conv_vs_relu={}))
    note = " ".join(figure.texts[0].get_text().split())
    assert "Brackets" not in note and "p < .05" not in note and not axes.texts
    plt.close(figure)
    tutorial = made_summary(weights="imagenet", source="bold5000")
    figure, _, _ = drawn(tutorial)
    assert "Black ticks: DNNBrain's published accuracies" in " ".join(figure.texts[0].get_text().split())
    plt.close(figure)


def test_title_names_the_stimulus_set_and_the_decoded_classes():
    from dnnprobe.report.figure import figure_title

    title = figure_title(made_summary(n=40))
    assert title.splitlines()[0] == "image folder 'pets' (n=40): decoding cats vs dogs (column 'label')"
    assert "label 'label'" not in title
    regression = made_summary(label="rt", classifier="ridge_regression", scoring="r2", classes=None, class_names=None)
    assert "predicting column 'rt'" in figure_title(regression)
    many = made_summary(classes=[str(i) for i in range(6)], class_names=["a", "b", "c", "d", "e", "f"])
    assert "decoding 6 classes: a, b, c, ... (column 'label')" in figure_title(many)


def test_conv_and_relu_bars_are_okabe_ito_orange_and_blue():
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    figure, axes, _ = drawn(made_summary())
    colours = [to_hex(patch.get_facecolor()) for patch in axes.patches]
    assert colours == ["#e69f00"] * 7 + ["#0072b2"] * 7
    plt.close(figure)


@pytest.mark.parametrize("n_layers", [12, 48])
def test_layers_without_relu_partners_get_one_bar_each_in_depth_order_readably(n_layers):
    """A ViT's blocks: one series, one bar per layer, tick labels that do not collide (12 to 48 layers)."""
    import matplotlib.pyplot as plt

    from dnnprobe.report.plots import plot_rows

    order = [f"block{i}" for i in range(1, n_layers + 1)]
    layers = {layer: {"mean": 0.6 + 0.005 * i, "sem": 0.01, "scores": [0.6] * 10} for i, layer in enumerate(order)}
    summary = made_summary(layer_order=order, layers=layers, conv_vs_relu={}, arch="vit_b_16")
    rows = plot_rows(summary)
    assert [row["layer"] for row in rows] == order and {row["type"] for row in rows} == {"layer"}
    figure, axes, renderer = drawn(summary)
    assert len(axes.patches) == n_layers  # one bar per layer
    assert [label.get_text() for label in axes.get_xticklabels()] == order
    ticks = [label.get_window_extent(renderer) for label in axes.get_xticklabels()]
    assert not any(a.overlaps(b) for a, b in zip(ticks, ticks[1:])), "tick labels collide"
    assert figure.get_size_inches()[0] <= 0.35 * 48 + 1.5 + 1.6 + 1e-9  # 48 layers stay within ~20 inches
    assert "layer" in [t.get_text() for t in axes.get_legend().get_texts()] and "ReLU" not in str(axes.get_legend().get_texts())
    plt.close(figure)


def test_title_names_tokens_preprocessing_folds_and_C_and_wraps_to_the_figure():
    from dnnprobe.report.figure import figure_title

    summary = made_summary(n=40, network_source="timm", arch="vit_small_patch16_224", preprocess="model", tokens="cls",
                           folds="10-fold CV (StratifiedGroupKFold), grouped by 'concept', not shuffled",
                           C_choice="C chosen per training fold by 5-fold inner CV from 7 values 0.001 .. 1000")
    title = figure_title(summary, width=70)
    joined = " ".join(title.split())
    for text in ("timm vit_small_patch16_224 (random weights), model preprocessing, cls tokens",
                 "grouped by 'concept'", "C chosen per training fold"):
        assert text in joined, text
    assert max(len(line) for line in title.splitlines()) <= 70 and len(title.splitlines()) >= 4


def test_layers_that_do_not_beat_chance_are_hatched_and_the_footnote_says_so():
    """With permutations, a layer whose permutation p >= .05 is drawn apart from the others (issue 27)."""
    import matplotlib.pyplot as plt

    summary = made_summary(permutations=1000)
    for layer in summary["layers"].values():
        layer["beats_chance"] = layer["p_value"] < 0.05
    figure, axes, _ = drawn(summary)
    hatched = [patch for patch in axes.patches if patch.get_hatch()]
    assert len(hatched) == 2  # conv1 and conv1_relu: p = 0.3 in made_summary
    note = " ".join(figure.texts[0].get_text().split())
    assert "Hatched bars: not above chance (permutation p >= .05)" in note and "No test against chance" not in note
    plt.close(figure)
