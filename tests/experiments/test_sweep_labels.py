"""What the sweep figure, its CSV and `dnnprobe compare` name beside each number (synthetic, fast): the decoder
and scoring each attribute ran with, the stimulus set, settings an older params.yaml lacks, repeats."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

LAYERS = ["conv1", "conv1_relu", "conv2", "conv2_relu"]


def _rev(rev: str, name: str | None, params: dict, metrics: dict) -> dict:
    return {"rev": rev, "name": name, "data": {"params": {"params.yaml": {"data": params}},
                                               "metrics": {"reports/metrics.json": {"data": metrics}}}}


def _exp_show(revs: list[dict], head: dict | None = None) -> list[dict]:
    head = head or {"rev": "f" * 40, "name": "main", "data": {"params": {}, "metrics": {}}}
    return [{**head, "experiments": [{"revs": [rev]} for rev in revs]}]


def _scores(shift: float, prefix: str = "", layers: list[str] = LAYERS) -> dict:
    return {f"{prefix}{layer}": round(0.5 + shift + i / 100, 6) for i, layer in enumerate(layers)}


def _mixed_decoders() -> list[dict]:
    """`two`: label (logistic, accuracy) and size:ridge_regression (r2); `auc`: label only, scored roc_auc."""
    two = {"probe": {"label": ["label", "size:ridge_regression"], "scoring": "accuracy"}}
    auc = {"probe": {"label": "label", "scoring": "roc_auc"}}
    return _exp_show([_rev("a" * 40, "two", two, {**_scores(0.1, "label/"), **_scores(0.0, "size/")}),
                      _rev("b" * 40, "auc", auc, _scores(0.2))])


def test_each_attribute_is_shown_with_the_decoder_and_scoring_it_ran_with(tmp_path):
    """probe.scoring=accuracy is only the default of a column that names no decoder: `size:ridge_regression`
    scored r2. compare, the sweep's panels, legend and CSV say r2 beside size's numbers, never accuracy."""
    import matplotlib.pyplot as plt

    from dnnprobe.experiments.compare import compare_rows
    from dnnprobe.experiments.exp_show import experiments_from_exp_show
    from dnnprobe.experiments.sweep import sweep_figure, write_sweep

    experiments = experiments_from_exp_show(_mixed_decoders())
    rows = dict(compare_rows(experiments))
    assert not {"probe.scoring", "probe.classifier", "probe.label"} & set(rows)
    assert rows["attribute label"] == ["logistic (accuracy)", "logistic (roc_auc)"]
    assert rows["attribute size"] == ["ridge_regression (r2)", "-"]
    assert not any(name.startswith("mean accuracy") for name in rows)  # no one heading for mixed scorings
    # label's and size's numbers never share a row: each layer row names its attribute
    assert rows["size/conv1"] == ["0.500", "-"] and rows["label/conv1"] == ["0.600", "0.700"] and "conv1" not in rows
    single = experiments_from_exp_show(_exp_show([_rev("c" * 40, "size", {"probe": {"label": "size:ridge_regression"}},
                                                       _scores(0.0))]))
    rows = dict(compare_rows([*experiments, *single]))
    assert rows["size/conv1"] == ["0.500", "-", "0.500"] and rows["attribute size"][2] == "ridge_regression (r2)"
    figure = sweep_figure(experiments, "probe.scoring")
    titles = [axes.get_title() for axes in figure.axes if axes.get_lines()]
    assert titles == ["attribute: label · logistic (accuracy) · 1 of 2 experiments",
                      "attribute: size · ridge_regression (r2) · 1 of 2 experiments",
                      "attribute: label · logistic (roc_auc) · 1 of 2 experiments"]  # one scoring per axis
    legend = "\n".join(text.get_text() for text in figure.legends[0].get_texts())
    assert "probe." not in legend
    plt.close(figure)
    _, table = write_sweep(experiments, "probe.scoring", tmp_path / "sweep.png")
    rows = list(csv.DictReader(table.read_text(encoding="utf-8").splitlines()))
    assert "probe.scoring" not in rows[0]
    ran = {(row["experiment"], row["attribute"], row["decoder"], row["scoring"]) for row in rows}
    assert ran == {("two", "label", "logistic", "accuracy"), ("two", "size", "ridge_regression", "r2"),
                   ("auc", "label", "logistic", "roc_auc")}


def test_scores_of_different_stimulus_sets_are_never_one_line_set_apart(tmp_path):
    """The demo set of 400 images, one of 24 and a .stim.csv of one's own: one panel each, titled by the set,
    though the attribute is `label` in all three; the CSV names each row's set."""
    import matplotlib.pyplot as plt

    from dnnprobe.experiments.exp_show import experiments_from_exp_show
    from dnnprobe.experiments.sweep import sweep_figure, sweep_table

    sets = {"big": {"source": "demo", "demo": {"n_per_class": 200}}, "small": {"source": "demo", "demo": {"n_per_class": 12}},
            "mine": {"source": "stimcsv", "table": "my.stim.csv"}}
    revs = [_rev(f"{i}" * 40, name, {"stimuli": stimuli, "pca": 10}, _scores(i / 10)) for i, (name, stimuli) in enumerate(sets.items())]
    experiments = experiments_from_exp_show(_exp_show(revs))
    figure = sweep_figure(experiments)
    panels = [axes for axes in figure.axes if axes.get_lines()]
    titles = sorted(" ".join(axes.get_title().split()) for axes in panels)
    assert len(panels) == 3 and titles == [
        "attribute: label · logistic (accuracy) · stimuli: demo (n_per_class=12, 256 px, seed 0) · 1 of 3 experiments",
        "attribute: label · logistic (accuracy) · stimuli: demo (n_per_class=200, 256 px, seed 0) · 1 of 3 experiments",
        "attribute: label · logistic (accuracy) · stimuli: stimcsv data/external/my.stim.csv · 1 of 3 experiments"]
    assert all(len([line for line in axes.get_lines() if line.get_linestyle() == "-"]) == 1 for axes in panels)
    plt.close(figure)
    rows = list(csv.DictReader(sweep_table(experiments).splitlines()))
    assert {row["experiment"]: row["stimulus_set"] for row in rows} == {
        "big": "demo (n_per_class=200, 256 px, seed 0)", "small": "demo (n_per_class=12, 256 px, seed 0)",
        "mine": "stimcsv data/external/my.stim.csv"}


def test_a_single_layer_is_said_to_have_no_comparable_depth(tmp_path):
    from dnnprobe.experiments.depth import SINGLE_LAYER, relative_depths
    from dnnprobe.experiments.exp_show import experiments_from_exp_show
    from dnnprobe.experiments.sweep import sweep_figure, sweep_table

    assert relative_depths("torchvision", "alexnet", ["conv2"]).depth_from == SINGLE_LAYER
    revs = [_rev("a" * 40, "all", {"pca": 10}, _scores(0.0)),
            _rev("b" * 40, "one", {"pca": 10, "extract": {"layers": ["conv2"]}}, _scores(0.1, layers=["conv2"]))]
    experiments = experiments_from_exp_show(_exp_show(revs))
    figure = sweep_figure(experiments)
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert sum("1 layer: depth not comparable" in text for text in legend) == 1
    assert "1 layer: depth not comparable" in next(text for text in legend if text.startswith("one"))
    rows = list(csv.DictReader(sweep_table(experiments).splitlines()))
    assert [row["depth_from"] for row in rows if row["experiment"] == "one"] == [SINGLE_LAYER]


def _old_commits() -> list[dict]:
    """Seven commits whose params.yaml predates extract.tokens/preprocess and probe.groups, each with the same
    scores as `lead-fixes` (which sets them to today's defaults), then `alexnet`, an experiment equal to it."""
    new = {"pca": 10, "extract": {"tokens": "all", "preprocess": "dnnbrain"}, "probe": {"groups": ""}}
    commits = [_rev("c" * 40, "lead-fixes", new, _scores(0.0))]
    commits += [_rev(f"{i}" * 40, None, {"pca": 10}, _scores(0.0)) for i in range(6)]
    # the earlier nested metrics.json (with the SEM), and a stimuli.folder the demo set never read
    nested = {layer: {"accuracy_mean": mean, "accuracy_sem": 0.01} for layer, mean in _scores(0.0).items()}
    commits += [_rev("6" * 40, None, {"pca": 10, "stimuli": {"folder": ""}}, nested)]
    commits += [_rev("e" * 40, None, {"pca": 50}, _scores(0.1))]
    commits[0]["experiments"] = [{"revs": [_rev("d" * 40, "alexnet", new, _scores(0.0))]}]
    return commits


def test_repeats_across_commits_are_drawn_once_and_said_so(tmp_path):
    """A key an older params.yaml lacks ran as today's default: no difference (one line, not 7), shown as the
    default, never None; each experiment left out as a repeat is named on stderr."""
    from dnnprobe.experiments.exp_show import experiments_from_exp_show
    from dnnprobe.experiments.sweep import command, sweep_table

    repeats: list[tuple[str, str]] = []
    experiments = experiments_from_exp_show(_old_commits(), repeats=repeats)
    assert [e.name for e in experiments] == ["lead-fixes", "eeeeeee"]
    assert repeats == [("alexnet", "lead-fixes")] + [(f"{i}" * 7, "lead-fixes") for i in range(7)]
    assert "None" not in sweep_table(experiments)
    path = tmp_path / "exp_show.json"
    path.write_text(json.dumps(_old_commits()))
    result = CliRunner().invoke(command, ["--exp-show", str(path), "--out", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    assert ("sweep: alexnet, 0000000, 1111111, 2222222, 3333333 and 3 more: same settings and scores as lead-fixes, "
            "drawn once") in result.stderr
    assert "sweep: 2 experiments" in result.stdout


def test_the_legend_of_19_experiments_shows_what_varies_in_wrapped_entries_each_its_own_look():
    """Only the settings that vary and have a value (never `probe.groups= ·`), entries wrapped to 60
    characters a line, and no two of 19 lines drawn alike (tab20 colours, a marker each past 10)."""
    import matplotlib.pyplot as plt

    from dnnprobe.experiments.exp_show import experiments_from_exp_show
    from dnnprobe.experiments.sweep import LEGEND_CHARACTERS, sweep_figure

    revs = [_rev(f"{i:040d}", f"experiment-with-a-long-name-{i}",
                 {"pca": 10 + i, "model": {"source": "timm", "arch": f"vit_small_patch{i}_224", "weights": "random"},
                  "extract": {"tokens": "cls" if i % 2 else "mean", "preprocess": "model"}, "probe": {"groups": "" if i else "concept"},
                  "stimuli": {"demo": {"seed": i % 2}}},
                 _scores(i / 100)) for i in range(19)]
    experiments = experiments_from_exp_show(_exp_show(revs))
    figure = sweep_figure(experiments)
    texts = [text.get_text() for text in figure.legends[0].get_texts()]
    assert not any("=·" in text or text.rstrip().endswith("=") or "= ·" in text for text in texts)
    assert sum("probe.groups=concept" in text for text in texts) == 1
    assert max(len(line) for text in texts for line in text.split("\n")) <= LEGEND_CHARACTERS
    assert sum("(evenly spaced: network not built here)" in text for text in texts) >= 17  # notes wrapped too (patch8, 16 exist)
    handles = figure.legends[0].legend_handles[:19]
    looks = {(tuple(np.round(handle.get_color(), 3)), handle.get_marker()) for handle in handles}
    assert len(looks) == 19
    assert figure.legends[0].get_window_extent().width < 0.5 * figure.bbox.width  # not 3/4 of the width
    plt.close(figure)


@pytest.mark.parametrize("verb", ["shown"])
def test_compare_names_the_repeats_it_leaves_out(tmp_path, verb):
    from dnnprobe.experiments.compare import command

    path = tmp_path / "exp_show.json"
    path.write_text(json.dumps(_old_commits()))
    result = CliRunner().invoke(command, ["--exp-show", str(path), "--width", "120"])
    assert result.exit_code == 0, result.output
    assert "compare: alexnet: same settings" not in result.stderr  # grouped by the one kept
    assert f"and 3 more: same settings and scores as lead-fixes, {verb} once" in result.stderr


def test_the_chance_note_counts_the_experiments_of_its_own_panel():
    """`chance level unknown for 1 of this panel's 2 experiments`, beside a title saying the panel holds 2 of 3."""
    import dataclasses

    import matplotlib.pyplot as plt

    from dnnprobe.experiments.exp_show import experiments_from_exp_show
    from dnnprobe.experiments.sweep import sweep_figure

    revs = [_rev("a" * 40, "one", {"pca": 10}, _scores(0.0)), _rev("b" * 40, "two", {"pca": 20}, _scores(0.1)),
            _rev("c" * 40, "other", {"pca": 30, "stimuli": {"source": "folder"}}, _scores(0.2))]
    experiments = experiments_from_exp_show(_exp_show(revs))
    experiments = [dataclasses.replace(e, chance={"label": 0.5}) if e.name == "one" else e for e in experiments]
    figure = sweep_figure(experiments, "pca")
    [demo] = [axes for axes in figure.axes if axes.get_lines() and "demo" in axes.get_title()]
    assert "2 of 3 experiments" in " ".join(demo.get_title().split())
    assert any("chance level unknown for 1 of this panel's 2 experiments" in text.get_text() for text in demo.texts)
    plt.close(figure)
