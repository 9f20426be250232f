"""Issue 27's comparison, scripted at small scale: five networks (AlexNet, a timm ViT with its CLS token
and with the mean of its patch tokens, ResNet-18, an OpenCLIP ViT tower, a DINOv2 from Hugging Face), random
weights and `extract.preprocess: model`, on 20 demo images with `probe.C: auto`, each a DVC experiment; then
what a researcher looks at: `dvc plots diff` of the six (rendered in headless Chromium, marks counted), the
MLflow runs and figures (naming tokens, preprocessing, folds and C), the edge-of-grid warning, and
`dnnprobe sweep` over them.

To fit the suite's time, the stages run in this process (DVC's own `dvc exp run` starts seven Python
processes per network, about twice the time) and each network is recorded with `dvc exp save`, DVC's way
to record a run made outside `dvc exp run`, with `DVC_EXP_NAME` set as `dvc exp run` sets it; the
experiment refs, dvc.lock and the outputs in DVC's cache are real. `dvc exp run` itself is tested in
test_pipeline.py."""

from __future__ import annotations

import csv
import itertools
import json
import re

import pytest

from helpers import (copy_repo, dvc, git, line_colours, mlflow_runs, point_positions, render, set_param, texts_outside,
                     visible_marks)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

# The smallest set the probe accepts with probe.C: auto (5 inner folds need 5 images per class in each
# training fold): 10 demo images per class at the smallest size, 2 folds, 2 components.
SMALL = {"pca": 2, "cv": 2, "stimuli": {"demo": {"n_per_class": 10, "image_size": 32}},
         "extract": {"batch_size": 20, "num_workers": 0, "preprocess": "model"}, "probe": {"C": "auto"}}

# experiment -> model.source, model.arch, extract.tokens, extract.layers (every key set for each network)
NETWORKS = {
    "alexnet": ("torchvision", "alexnet", "all", ["conv1", "conv1_relu", "fc1", "fc1_relu"]),
    "vit-cls": ("timm", "vit_tiny_patch16_224", "cls", ["block1", "block6", "block12"]),
    "vit-mean": ("timm", "vit_tiny_patch16_224", "mean", ["block1", "block6", "block12"]),
    "resnet18": ("torchvision", "resnet18", "all", ["layer1", "layer2", "layer3", "layer4"]),
    "clip": ("open_clip", "ViT-S-32", "cls", ["block1", "block6", "block12"]),
    "dinov2": ("hf", "models/external/dinov2", "cls", ["block1", "block2"]),  # a tiny config, no processor file
}


def run_networks(repo, monkeypatch) -> dict[str, str]:
    """Each network's stages up to the report, in this process, recorded as a DVC experiment of its name
    (the first also committed as the baseline, as a researcher commits a first run); each one's output."""
    from click.testing import CliRunner

    from dnnprobe.cli import main

    monkeypatch.chdir(repo)
    monkeypatch.setenv("DVC_ROOT", str(repo))  # MLflow's store: the repository's mlflow.db
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    logs = {}
    for number, (name, (source, arch, tokens, layers)) in enumerate(NETWORKS.items()):
        for key, value in {"model.source": source, "model.arch": arch, "extract.tokens": tokens,
                           "extract.layers": layers}.items():
            set_param(repo, key, value)
        monkeypatch.setenv("DVC_EXP_NAME", name)
        logs[name] = ""
        for stage in ("params", *(("stimuli",) if number == 0 else ()), "check", "network", "extract", "gram",
                      "probe", "report"):
            result = CliRunner().invoke(main, [stage, "--quiet"])
            assert result.exit_code == 0, (name, stage, result.output)
            logs[name] += result.output
        if number == 0:
            dvc(repo, "commit", "-f", "--with-deps", "report")
            git(repo, "add", "-A")
            git(repo, "commit", "-qm", f"the first network, {name}")
        dvc(repo, "exp", "save", "-n", name, "report")
    return logs


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    from transformers import Dinov2Config

    repo = copy_repo(tmp_path_factory.mktemp("five"), SMALL)
    Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=224,
                 patch_size=32).save_pretrained(repo / "models" / "external" / "dinov2")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a tiny DINOv2 configuration")
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield repo, run_networks(repo, monkeypatch)


def test_dvc_plots_diff_draws_each_networks_line(compared):
    """AlexNet's Conv/ReLU pairs as two series, every other network's layers as one line over its depth:
    every point and line visible (issue 27: a ViT's rows were drawn without a colour, an empty chart)."""
    repo, _ = compared
    dvc(repo, "plots", "diff", *NETWORKS)
    dom = render(repo / "dvc_plots" / "index.html")
    assert dom.count('class="marks"') == 1
    for name, (_, _, _, layers) in NETWORKS.items():
        expected = (2, len(layers)) if name == "alexnet" else (1, len(layers))
        assert visible_marks(dom, name) == expected, name
    assert "Conv1" in dom and "block12" in dom and "layer4" in dom  # each network's own depth names as ticks
    assert "Conv1 .. FC2)" not in dom  # no AlexNet-only axis title over other networks' layers
    # each experiment's line(s) its own colour (AlexNet's Conv and ReLU lines share one, dashed apart)
    colours = {name: line_colours(dom, name) for name in NETWORKS}
    assert all(len(found) == 1 for found in colours.values()), colours
    assert len(set().union(*colours.values())) == len(NETWORKS), colours
    # layers of different networks never share a depth: no two networks' points at the same x (the two
    # experiments of one ViT do share its depths)
    xs = {name: set(point_positions(dom, name).values()) for name in NETWORKS}
    assert xs["vit-cls"] == xs["vit-mean"] and len(xs["vit-cls"]) == 3
    for a, b in itertools.combinations([name for name in NETWORKS if name != "vit-mean"], 2):
        assert not xs[a] & xs[b], (a, b)
    texts = re.findall(r"<text[^>]*>([^<]+)</text>", dom)
    assert {"block1 (ViT-S-32)", "block1 (vit_tiny_patch16_224)", "block1 (dinov2)", "Conv1"} <= set(texts)
    assert not [text for text in texts if "…" in text]  # no legend entry, title or tick cut short

    dvc(repo, "plots", "show")  # the workspace alone: the last experiment, DINOv2
    assert visible_marks(render(repo / "dvc_plots" / "index.html"), "workspace") == (1, 2)


def test_runs_and_figures_name_tokens_preprocessing_folds_and_c(compared):
    repo, logs = compared
    runs = {r["tags"].get("dvc_exp_name"): r for r in mlflow_runs(repo / "mlflow.db") if "mlflow.parentRunId" not in r["tags"]}
    assert set(runs) == set(NETWORKS)
    for name, (source, arch, tokens, _) in NETWORKS.items():
        run = runs[name]
        params = run["params"]
        assert (params["network_source"], params["network_preprocess"]) == (source, "model"), name
        assert params["network_tokens"] == ("n/a" if source == "torchvision" else tokens), name
        assert "prep=model" in run["name"] and (source == "torchvision" or f"tokens={tokens}" in run["name"]), run["name"]
        # the report stage's figure, attached to the run: its title and caption say what ran
        [svg] = repo.glob(f"mlruns/**/{run['run_uuid']}/artifacts/report/conv_vs_relu.svg")
        text = " ".join(" ".join(re.findall(r"<!-- (.*?) -->", svg.read_text(), flags=re.DOTALL)).split())
        assert "model preprocessing" in text and "2-fold CV (StratifiedKFold)" in text, (name, text)
        assert source == "torchvision" or f"{tokens} tokens" in text, (name, text)
        assert "C chosen per training fold by 5-fold inner CV from 7 values 0.001 .. 1000" in text, (name, text)
        # the edge-of-grid warning: one line per layer whose C sat at an end of the auto grid, also tagged
        warned = re.findall(r"probe: warning: (attribute label, layer \w+: C = [\d.e+-]+, the (?:top|bottom) of its grid, "
                            r"chosen in \d of 2 folds)", logs[name])
        assert warned == [line for line in run["tags"].get("dnnprobe.C_at_grid_edge", "").split("; ") if line], name
    assert any(run["tags"].get("dnnprobe.C_at_grid_edge") for run in runs.values())

    summary = json.loads((repo / "reports" / "probe" / "summary.json").read_text())  # the workspace: DINOv2
    assert (summary["preprocess"], summary["tokens"]) == ("model", "cls")
    assert summary["preprocess_from"].endswith("defaults for model_type dinov2 (BitImageProcessorPil)")
    assert summary["folds"] == "2-fold CV (StratifiedKFold), not grouped, not shuffled"
    assert summary["C_choice"].startswith("C chosen per training fold")
    assert "; ".join(summary.get("C_at_grid_edge", [])) == runs["dinov2"]["tags"].get("dnnprobe.C_at_grid_edge", "")


def test_sweep_over_the_networks_writes_its_figure_and_table(compared, monkeypatch):
    from click.testing import CliRunner

    from dnnprobe.cli import main

    repo, _ = compared
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(main, ["sweep", "--out", "reports/sweep/networks.png"])
    assert result.exit_code == 0, result.output
    out = repo / "reports" / "sweep" / "networks.png"
    assert out.stat().st_size > 10_000
    with out.with_suffix(".csv").open() as table:
        rows = list(csv.DictReader(table))
    drawn = {}  # experiment -> (arch, tokens, its layers); AlexNet's experiment is the baseline commit's rows
    for row in rows:
        drawn.setdefault(row["experiment"], (row["model.arch"], row["extract.tokens"], []))[2].append(row["layer"])
    assert sorted(drawn.values()) == sorted((arch, tokens, layers) for _, arch, tokens, layers in NETWORKS.values())
    # every depth from its network's layer order (all six built here): a ViT's block6 at 7/13 (patch_embed first)
    assert {row["depth_from"] for row in rows} == {"network order"} and "evenly spaced" not in result.output
    vit = {row["layer"]: float(row["relative_depth"]) for row in rows if row["experiment"] == "vit-cls"}
    assert vit == pytest.approx({"block1": 2 / 13, "block6": 7 / 13, "block12": 1.0}, abs=1e-6)
    # The figure itself, from these experiments: nothing cut, every line over relative depth (0, 1], the last at 1.
    from dnnprobe.experiments.exp_show import experiments_from_exp_show, run_exp_show
    from dnnprobe.experiments.sweep import default_param, sweep_figure

    experiments = experiments_from_exp_show(run_exp_show(repo), repo)
    figure = sweep_figure(experiments, default_param(experiments))
    assert texts_outside(figure) == []
    lines = [line for axes in figure.axes for line in axes.get_lines() if len(line.get_xdata()) > 1
             and line.get_linestyle() == "-"]
    assert len(lines) == len(experiments) and all(min(l.get_xdata()) > 0 and max(l.get_xdata()) == 1 for l in lines)
