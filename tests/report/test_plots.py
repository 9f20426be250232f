"""The offline `dvc plots` page and template: what is inlined is what .dvc/plots/vendor/README.md records.

Rendering the page in a browser, offline, is tested with real DVC in tests/pipeline/test_pipeline.py.
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
    computed = {"mean", "sem_over_folds", "mean_minus_sem", "mean_plus_sem", "experiment_scoring"}
    assert fields - computed <= set(rows[0]) | {"rev"}  # every field it draws is written (or DVC's `rev`)


def test_dvc_plots_diff_labels_each_line_with_the_settings_that_differ():
    """Not only DVC's random experiment name (`risky-nosh`): what the probe's summary says differs."""
    from dnnprobe.report.plots import plot_rows

    template = json.loads((PLOTS / "layer_scores.json").read_text())
    summary = {"scoring": "accuracy", "layer_order": ["conv1", "conv1_relu"], "settings": "pca=50 classifier=ridge",
               "layers": {name: {"mean": 0.6, "sem": 0.01} for name in ("conv1", "conv1_relu")}}
    assert {row["settings"] for row in plot_rows(summary)} == {"pca=50 classifier=ridge"}
    [label] = [t["calculate"] for t in template["transform"] if t["as"] == "experiment_scoring"]
    assert label == "(datum.settings ? datum.settings + ' [' + datum.rev + ']' : datum.rev) + ' (' + datum.scoring + ')'"
    assert template["width"] >= 720  # room for the longer labels in the legend beside the chart


# ---- any network: the template drawn by real DVC in headless Chromium, marks counted ----------------

NETWORKS = {  # experiment -> its layer list, as extract.layers names them
    "alexnet": ["conv1", "conv1_relu", "conv2", "conv2_relu", "fc1", "fc1_relu"],
    "vit": [f"block{i}" for i in range(1, 13)],
    "resnet": ["layer1", "layer2", "layer3", "layer4"],
}


def _plots_repo(tmp_path):
    """A git + DVC repository holding only the report stage's plot (as dvc.yaml declares it, with our
    template and offline page), one commit per network, tagged by its name."""
    import shutil

    import yaml

    from dnnprobe.report.plots import write_plot_csv
    from helpers import dvc, git

    repo = tmp_path / "plots"
    (repo / "reports" / "plots").mkdir(parents=True)
    git(repo, "init", "-q")
    dvc(repo, "init", "-q")
    shutil.copytree(PLOTS, repo / ".dvc" / "plots", dirs_exist_ok=True)
    shutil.copy(REPO / ".dvc" / "config", repo / ".dvc" / "config")
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["report"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"report": {"cmd": "true", "plots": stage["plots"]}}}))
    for number, (name, layers) in enumerate(NETWORKS.items()):
        summary = {"scoring": "accuracy", "layer_order": layers, "settings": f"model.arch={name}",
                   "layers": {layer: {"mean": 0.55 + 0.01 * (i + number), "sem": 0.01} for i, layer in enumerate(layers)}}
        write_plot_csv(summary, repo / "reports" / "plots" / "layer_scores.csv")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", name)
        git(repo, "tag", name)
    return repo


def _visible_marks(dom: str, experiment: str) -> tuple[int, int]:
    """(lines, points) of one experiment that the page really draws: a line with a stroke colour, a point
    with a fill (a mark whose colour the scale leaves undefined is in the SVG but invisible)."""
    lines = [m for m in re.findall(r'<path [^>]*aria-roledescription="line mark"[^>]*>', dom) if f"[{experiment}]" in m]
    points = [m for m in re.findall(r'<path [^>]*aria-roledescription="point"[^>]*>', dom)
              if f"experiment: {experiment};" in m]
    return (sum(bool(re.search(r' stroke="#[0-9A-Fa-f]{6}"', m)) for m in lines),
            sum(bool(re.search(r' fill="#[0-9A-Fa-f]{6}"', m)) for m in points))


def test_dvc_plots_diff_of_different_networks_draws_each_networks_line(tmp_path):
    """AlexNet's Conv/ReLU pairs as two series, a ViT's 12 blocks and a ResNet's 4 stages as one line each:
    every point and line visible (issue 27: a ViT's rows used to be drawn without a colour, an empty chart)."""
    from helpers import dvc, render

    repo = _plots_repo(tmp_path)
    dvc(repo, "plots", "diff", "alexnet", "vit", "resnet")
    dom = render(repo / "dvc_plots" / "index.html")
    assert dom.count('class="marks"') == 1
    assert _visible_marks(dom, "alexnet") == (2, 6)  # Conv and ReLU lines, a point per layer
    assert _visible_marks(dom, "vit") == (1, 12)
    assert _visible_marks(dom, "resnet") == (1, 4)
    assert "Conv1" in dom and "block12" in dom and "layer4" in dom  # each network's own depth names as ticks
    assert "Conv1 .. FC2)" not in dom  # no AlexNet-only axis title over other networks' layers

    dvc(repo, "plots", "show")  # the workspace alone: the ResNet
    dom = render(repo / "dvc_plots" / "index.html")
    assert _visible_marks(dom, "workspace") == (1, 4)
