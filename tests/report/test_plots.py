"""The offline `dvc plots` page and template: what is inlined is what .dvc/plots/vendor/README.md records.

Rendering the page in a browser, offline, is tested with real DVC in tests/pipeline/test_pipeline.py, and
`dvc plots diff` of experiments with different networks (each network's line drawn, marks counted) in
tests/pipeline/test_five_networks.py.
"""

from __future__ import annotations

import hashlib
import json
import re

from helpers import REPO

PLOTS = REPO / ".dvc" / "plots"


def test_offline_page_inlines_the_recorded_bundles_and_loads_nothing():
    page = (PLOTS / "offline.html").read_text(encoding="utf-8")
    bundles = re.findall(r'<script data-bundle="([^"]+)">\n(.*?)\n</script>', page, flags=re.S)
    assert [name for name, _ in bundles] == ["vega-5.33.1", "vega-lite-5.23.0", "vega-embed-6.29.0"]
    recorded = (PLOTS / "vendor" / "README.md").read_text()
    for name, code in bundles:
        package, version = name.rsplit("-", 1)
        digest = hashlib.sha256(code.encode("utf-8")).hexdigest()
        assert f"| {package} | {version} | " in recorded and f"`{digest}`" in recorded, name
        assert (PLOTS / "vendor" / f"LICENSE-{package}").read_text().startswith("Copyright")
    # nothing fetched from a network: no script or stylesheet by address, DVC's CDN scripts left out
    assert not re.search(r'<(script|link)[^>]+(src|href)=', page)
    assert "{plot_divs}" in page and "{scripts}" not in page
    assert "plots/offline.html" in (REPO / ".dvc" / "config").read_text()


def test_template_draws_the_report_stage_columns():
    template = json.loads((PLOTS / "layer_scores.json").read_text())
    assert template["data"] == {"values": "<DVC_METRIC_DATA>"}
    fields = set(re.findall(r'"field": "(\w+)"', json.dumps(template)))
    from dnnprobe.report.plots import plot_rows

    summary = {"scoring": "accuracy", "layer_order": ["conv1", "conv1_relu", "fc1"],
               "layers": {name: {"mean": 0.6, "sem": 0.01} for name in ("conv1", "conv1_relu", "fc1")}}
    rows = plot_rows(summary)
    assert [(r["depth"], r["type"], r["layer"]) for r in rows] == [("Conv1", "Conv", "conv1"), ("Conv1", "ReLU", "conv1_relu"),
                                                                    ("FC1", "Conv", "fc1")]
    computed = {"mean", "sem_over_folds", "mean_minus_sem", "mean_plus_sem", "experiment_scoring", "experiments", "colour",
                "dash"}
    assert fields - computed <= set(rows[0]) | {"rev"}  # every field it draws is written (or DVC's `rev`)


def test_dvc_plots_diff_labels_each_line_with_the_settings_that_differ():
    """Not only DVC's random experiment name (`risky-nosh`): what the probe's summary says differs."""
    from dnnprobe.report.plots import plot_rows

    template = json.loads((PLOTS / "layer_scores.json").read_text())
    summary = {"scoring": "accuracy", "layer_order": ["conv1", "conv1_relu"], "settings": "pca=50 classifier=ridge",
               "layers": {name: {"mean": 0.6, "sem": 0.01} for name in ("conv1", "conv1_relu")}}
    assert {row["settings"] for row in plot_rows(summary)} == {"pca=50 classifier=ridge"}
    [label] = [t["calculate"] for t in template["transform"] if t.get("as") == "experiment_scoring"]
    assert label == "(datum.settings ? datum.settings + ' [' + datum.rev + ']' : datum.rev) + ' (' + datum.scoring + ')'"
    assert template["width"] >= 720  # room for the longer labels in the legend beside the chart


def test_each_network_has_its_own_depths_and_each_experiment_its_own_colour():
    """`dvc plots diff` of different networks: a ViT's block3 and DINOv2's block3 are not one depth (the
    network follows each depth name but the default network's), and each experiment's line has its own
    colour (the series `layer` was one green for every network); one experiment keeps Conv/ReLU colours."""
    from dnnprobe.network.params import ModelParams
    from dnnprobe.report.plots import DEFAULT_ARCH, plot_rows

    assert DEFAULT_ARCH == ModelParams.arch
    layers = {name: {"mean": 0.6, "sem": 0.01} for name in ("block1", "block3")}
    depths = {arch: [row["depth"] for row in plot_rows({"scoring": "accuracy", "layer_order": list(layers),
                                                        "layers": layers, "arch": arch})]
              for arch in ("vit_tiny_patch16_224", "models/external/dinov2", "alexnet")}
    assert depths == {"vit_tiny_patch16_224": ["block1 (vit_tiny_patch16_224)", "block3 (vit_tiny_patch16_224)"],
                      "models/external/dinov2": ["block1 (dinov2)", "block3 (dinov2)"], "alexnet": ["block1", "block3"]}

    template = json.loads((PLOTS / "layer_scores.json").read_text())
    computed = {t["as"]: t["calculate"] for t in template["transform"] if "calculate" in t}
    assert {"op": "distinct", "field": "rev", "as": "experiments"} in [
        a for t in template["transform"] for a in t.get("joinaggregate", [])]
    assert computed["colour"] == "datum.experiments > 1 ? datum.experiment_scoring : datum.type"
    assert template["encoding"]["color"]["field"] == "colour"
    assert template["encoding"]["color"]["scale"]["range"][:2] == ["#E69F00", "#0072B2"]  # Conv orange, ReLU blue
    assert len(set(template["encoding"]["color"]["scale"]["range"])) >= 10
    for legend in (template["encoding"]["color"]["legend"], template["layer"][1]["encoding"]["strokeDash"]["legend"]):
        assert legend["labelLimit"] >= 1000 and legend["titleLimit"] >= 480  # no legend entry or title cut
