"""Relative depth: each probed layer's position in its network's layer order, or evenly spaced, said so."""

from __future__ import annotations

import csv
import json

import pytest


def friendly_order(source: str, arch: str) -> list[str]:
    """The source's own friendly layer order, from the network on the meta device."""
    import torch

    from dnnprobe.network.registry import get_source

    with torch.device("meta"):
        model = get_source(source).build(arch, 0)
    return list(get_source(source).friendly_layers(model, arch))


def test_a_layers_depth_is_its_position_in_the_networks_layer_order():
    from dnnprobe.experiments.depth import NETWORK_ORDER, relative_depths
    from dnnprobe.network.sources.torchvision import TUTORIAL_LAYERS

    order = friendly_order("timm", "vit_tiny_patch16_224")  # patch_embed, block1 .. block12, norm, head
    position = {name: order.index(name) + 1 for name in order}
    depths = relative_depths("timm", "vit_tiny_patch16_224", ["block1", "block2", "block12"])
    assert depths.depth_from == NETWORK_ORDER and depths.reason == ""
    assert depths.values == pytest.approx([position[name] / position["block12"] for name in ("block1", "block2", "block12")])
    assert depths.values == pytest.approx([2 / 13, 3 / 13, 1])  # block2 near the input side, not halfway
    # a module path counts as the friendly layer it is: blocks.5 is block6
    path = relative_depths("timm", "vit_tiny_patch16_224", ["block1", "blocks.5", "block12"])
    assert path.depth_from == NETWORK_ORDER and path.values[1] == pytest.approx(position["block6"] / position["block12"])

    order = friendly_order("torchvision", "alexnet")  # conv1, conv1_relu, conv1_maxpool, conv2, ...
    alexnet = relative_depths("torchvision", "alexnet", list(TUTORIAL_LAYERS))
    assert alexnet.depth_from == NETWORK_ORDER
    assert alexnet.values == pytest.approx([(order.index(name) + 1) / (order.index("fc2_relu") + 1) for name in TUTORIAL_LAYERS])
    assert 0 < alexnet.values[0] < alexnet.values[1] and alexnet.values[-1] == 1.0
    assert relative_depths("torchvision", "alexnet", ["features.0", "fc2_relu"]).values == (alexnet.values[0], 1.0)


@pytest.mark.parametrize(("source", "arch", "layers", "reason"), [
    ("local", "models/external/not_here.py:net", ["V1", "V2", "IT"], "network not built here"),
    ("hf", "models/external/no_such_folder", ["block1", "block2"], "network not built here"),
    ("timm", "vit_tiny_patch16_224", ["block1", "blocks.5.mlp"], "blocks.5.mlp is not in the network's layer order"),
    ("torchvision", "resnet18", ["layer1.0.relu_1", "layer4"], "layer1.0.relu_1 is not in the network's layer order"),
    ("torchvision", None, ["conv1", "fc1", "fc2"], "model.arch not recorded"),
])
def test_an_order_not_known_here_spaces_the_layers_evenly_and_says_why(source, arch, layers, reason):
    from dnnprobe.experiments.depth import EVENLY_SPACED, even_depths, relative_depths

    depths = relative_depths(source, arch, layers)
    assert (depths.depth_from, depths.reason) == (EVENLY_SPACED, reason)
    assert depths.values == pytest.approx(even_depths(len(layers)))


def exp_entry(name: str, source: str, arch: str, layers: list[str], pca: int = 100) -> dict:
    params = {"pca": pca, "model": {"source": source, "arch": arch, "weights": "random"}, "extract": {"layers": layers}}
    metrics = {layer: 0.5 + 0.01 * i for i, layer in enumerate(layers)}
    return {"rev": name.ljust(40, "0"), "name": name, "data": {"params": {"params.yaml": {"data": params}},
                                                               "metrics": {"reports/metrics.json": {"data": metrics}}}}


def test_the_sweep_draws_true_depths_and_labels_its_fallback(tmp_path, monkeypatch):
    """Legend, CSV and stderr name the experiment whose network was not built here; the others stand at
    their positions in their network's layer order."""
    import matplotlib.pyplot as plt
    from click.testing import CliRunner

    from dnnprobe.cli import main
    from dnnprobe.experiments.exp_show import experiments_from_exp_show
    from dnnprobe.experiments.sweep import sweep_figure

    monkeypatch.chdir(tmp_path)  # a workspace without the local network's file
    vit = ["block1", "block2", "block12"]
    exp_show = [{"rev": "f" * 40, "name": "main", "data": {"params": {}, "metrics": {}}, "experiments": [
        {"revs": [exp_entry("vit", "timm", "vit_tiny_patch16_224", vit)]},
        {"revs": [exp_entry("cornet", "local", "models/external/not_here.py:cornet_z", ["V1", "V2", "IT"])]}]}]
    experiments = experiments_from_exp_show(exp_show)
    figure = sweep_figure(experiments, "model.source")
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert [("(evenly spaced: network not built here)" in text) for text in legend] == [True, False]  # local, timm
    drawn = sorted([round(x, 6) for x in line.get_xdata()] for line in figure.axes[0].get_lines() if line.get_linestyle() == "-")
    assert drawn == [[0.0, 0.5, 1.0], [round(2 / 13, 6), round(3 / 13, 6), 1.0]]  # local evenly, the ViT by its order
    assert "position in the network's layer order" in figure.axes[0].get_xlabel().replace("\n", " ")
    plt.close(figure)

    saved = tmp_path / "exp_show.json"
    saved.write_text(json.dumps(exp_show))
    result = CliRunner().invoke(main, ["sweep", "--exp-show", str(saved), "--out", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "s.csv").read_text().splitlines()))
    assert {(row["experiment"], row["layer"]): (row["relative_depth"], row["depth_from"]) for row in rows} == {
        ("vit", "block1"): (f"{2 / 13:.6f}", "network order"), ("vit", "block2"): (f"{3 / 13:.6f}", "network order"),
        ("vit", "block12"): ("1.000000", "network order"), ("cornet", "V1"): ("0.000000", "evenly spaced"),
        ("cornet", "V2"): ("0.500000", "evenly spaced"), ("cornet", "IT"): ("1.000000", "evenly spaced")}
    said = [line for line in result.stderr.splitlines() if "evenly spaced" in line]
    assert len(said) == 1 and "1 of 2 experiments: cornet (network not built here: " in said[0]
    assert "not_here.py: no such file" in said[0]


def test_a_shared_layer_list_is_ticked_at_its_true_depths():
    import matplotlib.pyplot as plt

    from dnnprobe.experiments.exp_show import experiments_from_exp_show
    from dnnprobe.experiments.sweep import sweep_figure

    layers = ["block1", "block2", "block12"]
    exp_show = [{"rev": "f" * 40, "name": "main", "data": {"params": {}, "metrics": {}}, "experiments": [
        {"revs": [exp_entry(f"pca{pca}", "timm", "vit_tiny_patch16_224", layers, pca)]} for pca in (10, 100)]}]
    figure = sweep_figure(experiments_from_exp_show(exp_show), "pca")
    figure.canvas.draw()
    axes = figure.axes[0]
    assert [label.get_text() for label in axes.get_xticklabels()] == layers
    assert list(axes.get_xticks()) == pytest.approx([2 / 13, 3 / 13, 1])
    renderer = figure.canvas.get_renderer()
    ticks = [label.get_window_extent(renderer) for label in axes.get_xticklabels()]
    assert not ticks[0].overlaps(ticks[1]), "block1 and block2, 1/13 apart, collide"
    assert not any("evenly spaced" in text.get_text() for text in figure.legends[0].get_texts())
    plt.close(figure)
