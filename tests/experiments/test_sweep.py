"""The sweep figure (synthetic, fast; tests/pipeline/test_sharing.py draws it from real experiments)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import drawn_texts, texts_outside


def test_sweep_figure_of_48_layers_stays_readable():
    """A 48-block transformer across three experiments: vertical, non-colliding layer names, within ~22 inches."""
    import matplotlib.pyplot as plt

    from dnnprobe.experiments.exp_show import Experiment
    from dnnprobe.experiments.sweep import sweep_figure

    layers = [f"block{i}" for i in range(1, 49)]
    experiments = [Experiment(f"exp-{pca}", {"pca": pca}, "accuracy", {layer: (0.6, 0.01) for layer in layers})
                   for pca in (10, 50, 100)]
    figure = sweep_figure(experiments, "pca")
    figure.canvas.draw()
    axes = figure.axes[0]
    renderer = figure.canvas.get_renderer()
    ticks = [label.get_window_extent(renderer) for label in axes.get_xticklabels()]
    assert [label.get_text() for label in axes.get_xticklabels()] == layers
    assert not any(a.overlaps(b) for a, b in zip(ticks, ticks[1:])), "layer names collide"
    assert figure.get_size_inches()[0] <= 0.3 * 48 + 7 + 1e-9
    plt.close(figure)


# ---- across networks (issue 27): relative depth, a panel per attribute, labels that are never cut ------------

NETWORKS = [("timm", "vit_small_patch16_224", "cls", "blocks"), ("timm", "vit_small_patch16_224", "mean", "blocks"),
            ("torchvision", "alexnet", "all", "features"), ("torchvision", "resnet18", "all", "layer"),
            ("open_clip", "ViT-B-32", "cls", "transformer.resblocks"), ("hf", "facebook/dinov2-small", "cls", "encoder.layer"),
            ("timm", "vit_large_patch16_224", "cls", "blocks"), ("timm", "convnext_tiny", "all", "stages"),
            ("torchvision", "vit_b_16", "cls", "encoder.layers.encoder_layer_"), ("timm", "deit_small_patch16_224", "cls", "blocks")]


def exp_show_of_networks(n_layers: int, shared: bool) -> list[dict]:
    """`dvc exp show --json` of 10 experiments, one per network, each probing `n_layers` layers (named by its
    network unless `shared`) for two attributes, `label` and `color` (metrics keys `<attribute>/<layer>`)."""
    rng = np.random.default_rng(0)
    revs = []
    for i, (source, arch, tokens, stem) in enumerate(NETWORKS):
        layers = [f"block{j}" if shared else f"{stem}.{j}" for j in range(n_layers)]
        params = {"pca": 100, "cv": 10, "model": {"source": source, "arch": arch, "weights": "random"},
                  "extract": {"layers": layers, "tokens": tokens}, "stimuli": {"source": "stimcsv"},
                  "probe": {"label": ["label", "color:ridge_regression"], "scoring": "accuracy"}}
        metrics = {f"{attribute}/{layer}": round(float(rng.uniform(0.3, 0.9)), 6)
                   for attribute in ("label", "color") for layer in layers}
        revs.append({"revs": [{"rev": f"{i:040d}", "name": f"{arch.split('/')[-1]}-{tokens}",
                               "data": {"params": {"params.yaml": {"data": params}},
                                        "metrics": {"reports/metrics.json": {"data": metrics}}}}]})
    return [{"rev": "f" * 40, "name": "main", "data": {"params": {}, "metrics": {}}, "experiments": revs}]


@pytest.mark.parametrize("shared", [False, True], ids=["layers-differ", "one-layer-list"])
def test_ten_networks_by_24_layers_two_attributes_stay_readable(shared):
    """Relative depth, one panel per attribute, chance drawn, no warning, and no text cut: the legend names
    each network (not a Python list) and the experiments whose depths are evenly spaced (these fake layer
    lists are mostly not in their networks: `blocks.23` of a 12-block ViT, `block0`; ViT-L's `blocks.0` ..
    `blocks.23` are, and stand at their positions in its layer order), the ticks name the layers when every
    experiment shares them."""
    import dataclasses
    import warnings

    import matplotlib.pyplot as plt

    from dnnprobe.experiments.exp_show import attribute_scores, experiments_from_exp_show
    from dnnprobe.experiments.sweep import default_param, sweep_figure

    experiments = experiments_from_exp_show(exp_show_of_networks(24, shared))
    assert len(experiments) == 10 and experiments[0].attributes == {"label": ("logistic", "accuracy"),
                                                                     "color": ("ridge_regression", "r2")}
    # without the repository no metrics_detail.json is read: r2's chance is known, accuracy's is not; give it
    experiments = [dataclasses.replace(e, chance={**e.chance, "label": 0.5}) for e in experiments]
    assert experiments[0].chance == {"label": 0.5, "color": 0.0}
    assert default_param(experiments) == "model.source"  # the network, not extract.layers
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "constrained_layout not applied" included
        figure = sweep_figure(experiments)
        outside = texts_outside(figure)
    assert outside == []
    drawn = [text.get_text() for text in drawn_texts(figure)]  # the check saw them all
    assert len(drawn) >= 10 + 2 * (24 if shared else 5) + 2 * 3 + 1 and figure.get_suptitle() in drawn
    panels = [axes for axes in figure.axes if axes.get_lines()]
    assert [axes.get_title() for axes in panels] == ["attribute: label · logistic (accuracy)",
                                                     "attribute: color · ridge_regression (r2)"]
    for axes, attribute in zip(panels, ("label", "color")):
        data = [line for line in axes.get_lines() if line.get_linestyle() == "-"]
        assert len(data) == 10  # one line per experiment, each within one attribute
        for line in data:
            x = line.get_xdata()
            assert len(x) == 24 and x[-1] == 1.0 and np.all((0 <= x) & (x <= 1)) and np.all(np.diff(x) > 0)
        starts = sorted(line.get_xdata()[0] for line in data)  # evenly spaced from 0, or ViT-L's blocks.0 at 2/25
        assert starts == ([0.0] * 10 if shared else [0.0] * 9 + [pytest.approx(2 / 25)])
        chance = [line for line in axes.get_lines() if line.get_linestyle() == "--"]
        assert [line.get_ydata()[0] for line in chance] == [{"label": 0.5, "color": 0.0}[attribute]]
        ticks = [label.get_text() for label in axes.get_xticklabels()]
        assert ticks == ([f"block{j}" for j in range(24)] if shared else ["0.00", "0.25", "0.50", "0.75", "1.00"])
    # a panel's lines are the experiments' scores of that attribute, in layer order
    first = next(line for line in panels[1].get_lines() if line.get_linestyle() == "-")
    ordered = sorted(experiments, key=lambda e: (e.params["model.source"], e.params["model.arch"],
                                                 e.params["extract.tokens"]))
    np.testing.assert_allclose(first.get_ydata(), [mean for mean, _ in attribute_scores(ordered[0])["color"].values()])
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend[0].startswith("hf facebook/dinov2-small · tokens=cls · (dinov2-small-cls)")
    assert "timm vit_small_patch16_224 · tokens=mean\n(vit_small_patch16_224-mean)" in "\n".join(legend)
    assert not any("[" in text or "extract.layers" in text for text in legend)
    evenly = [text for text in legend if "(evenly spaced: " in text]
    assert len(evenly) == (10 if shared else 9) and (shared or not any("vit_large" in text for text in evenly))
    assert "(evenly spaced: network not built here)" in legend[0]  # dinov2-small: not in this Hugging Face cache
    assert shared or "(evenly spaced: blocks.12 is not in the network's layer order)" in " ".join(legend).replace("\n", " ")
    assert ("24 layers: encoder.layer.0 .. encoder.layer.23" in legend[0]) != shared  # first and last layer named
    assert legend[-1] == "chance level"
    plt.close(figure)


def test_the_csv_beside_the_figure_holds_every_number(tmp_path):
    import csv

    from dnnprobe.experiments.depth import relative_depths
    from dnnprobe.experiments.exp_show import attribute_scores, experiments_from_exp_show
    from dnnprobe.experiments.sweep import write_sweep

    experiments = experiments_from_exp_show(exp_show_of_networks(5, shared=False))
    png, table = write_sweep(experiments, "model.arch", tmp_path / "sweep.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader(table.read_text(encoding="utf-8").splitlines()))
    assert len(rows) == 10 * 2 * 5
    assert list(rows[0])[:2] == ["experiment", "model.arch"] and list(rows[0])[-11:] == [
        "network", "stimulus_set", "attribute", "decoder", "scoring", "layer", "relative_depth", "depth_from", "mean",
        "sem", "chance"]
    assert not {"probe.label", "probe.scoring", "probe.classifier"} & set(rows[0])  # shown per attribute, as it ran
    for experiment in experiments:
        for attribute, scores in attribute_scores(experiment).items():
            mine = [row for row in rows if row["experiment"] == experiment.name and row["attribute"] == attribute]
            assert [row["layer"] for row in mine] == list(scores)
            assert [float(row["mean"]) for row in mine] == pytest.approx([mean for mean, _ in scores.values()], abs=1e-6)
            depths = relative_depths(experiment.params["model.source"], experiment.params["model.arch"], list(scores))
            assert [float(row["relative_depth"]) for row in mine] == pytest.approx(depths.values, abs=1e-6)
            assert {row["depth_from"] for row in mine} == {depths.depth_from}
            assert {row["chance"] for row in mine} == {"0.000000" if attribute == "color" else ""}
    depth_of = {row["experiment"]: row["depth_from"] for row in rows}
    assert depth_of["alexnet-all"] == "network order" and depth_of["resnet18-all"] == "evenly spaced"  # no module `layer`
    alexnet = [float(row["relative_depth"]) for row in rows if row["experiment"] == "alexnet-all"][:5]
    assert alexnet == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])  # features.0 .. 4: conv1, _relu, _maxpool, conv2, _relu
    vit = next(row for row in rows if row["experiment"] == "vit_small_patch16_224-cls")
    # seed and preprocess: not in these params.yaml, so as they ran, today's defaults (never None)
    assert vit["network"] == "timm vit_small_patch16_224, weights=random, seed=0, tokens=cls, preprocess=dnnbrain"
    assert vit["extract.layers"] == ",".join(f"blocks.{j}" for j in range(5))


def test_chance_levels_as_recorded_else_from_the_null_else_from_the_scoring():
    from dnnprobe.experiments.exp_show import chance_levels

    attributes = {"label": ("logistic", "accuracy"), "size": ("ridge_regression", "r2"), "animate": ("logistic", "roc_auc")}
    assert chance_levels(attributes, {}) == {"size": 0.0, "animate": 0.5}  # accuracy's needs the class counts
    recorded = {"chance": {"label": 0.61, "size": 0.0}, "null_mean": {"label/a": 0.4, "label/b": 0.6}}
    assert chance_levels(attributes, recorded) == {"label": 0.61, "size": 0.0, "animate": 0.5}
    earlier = {"null_mean": {"label/a": 0.4, "label/b": 0.6, "animate/a": 0.49}}  # before the probe recorded it
    assert chance_levels(attributes, earlier) == {"label": pytest.approx(0.5), "size": 0.0, "animate": 0.49}
    assert chance_levels({"label": ("logistic", "accuracy")}, {"null_mean": {"a": 0.3, "b": 0.5}}) == {
        "label": pytest.approx(0.4)}
