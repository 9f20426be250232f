"""End to end with real DVC and MLflow, in a temporary copy of the repository on tiny data."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import copy_built_repo, copy_repo, dvc, git, mlflow_runs, render


@pytest.fixture(scope="module")
def repo(tmp_path_factory, built_tiny_repo) -> Path:
    return copy_built_repo(built_tiny_repo, tmp_path_factory.mktemp("repo"))  # a copy after `dvc repro`


def test_repro_writes_every_output(repo):
    assert (repo / "data" / "stimuli.stim.csv").is_file()
    assert (repo / "models" / "network.pt").is_file()
    for layer in ("conv1", "fc2_relu"):
        assert np.load(repo / "reports" / "probe" / layer / "score.npy").shape == (3,)
        assert np.load(repo / "reports" / "probe" / layer / "conf_m.npy").shape == (3, 2, 2)
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())  # one mean per layer
    details = json.loads((repo / "reports" / "metrics_detail.json").read_text())
    assert list(metrics) == list(details["sem"]) == yaml.safe_load((repo / "params.yaml").read_text())["extract"]["layers"]
    assert all(isinstance(value, float) for value in metrics.values())
    for name in ("conv_vs_relu.png", "conv_vs_relu.svg"):
        assert (repo / "reports" / "figures" / name).stat().st_size > 1000
    assert "not a scientific finding" in (repo / "reports" / "figures" / "conv_vs_relu.svg").read_text()
    assert "stimuli/" not in (repo / "data" / "stimuli.stim.csv").read_text().split("data=")[0].split("path=")[1].split("\n")[0]
    assert "Data and pipelines are up to date" in dvc(repo, "status")


def test_mlflow_parent_and_layer_runs_land_in_the_repo_store(repo):
    runs = mlflow_runs(repo / "mlflow.db")
    parents = [r for r in runs if "mlflow.parentRunId" not in r["tags"]]
    assert len(parents) == 1 and parents[0]["status"] == "FINISHED"
    children = [r for r in runs if r["tags"].get("mlflow.parentRunId") == parents[0]["run_uuid"]]
    assert sorted(r["params"]["layer"] for r in children) == sorted(
        yaml.safe_load((repo / "params.yaml").read_text())["extract"]["layers"])
    params = parents[0]["params"]
    for key in ("pca", "cv", "model.arch", "model.weights", "probe.classifier", "probe.C", "probe.label", "n_stimuli",
                "network_seed", "network_sha256", "stimuli_sha256", "images_sha256", "gram_sha256", "activations_sha256"):
        assert key in params, key
    assert params["pca"] == "4" and params["n_stimuli"] == "24"
    assert parents[0]["tags"]["git_commit"] == git(repo, "rev-parse", "HEAD").strip()
    with sqlite3.connect(repo / "mlflow.db") as connection:
        folds = connection.execute(
            "select step from metrics where run_uuid=? and key='fold_accuracy' order by step",
            (children[0]["run_uuid"],)).fetchall()
    assert [s for (s,) in folds] == [0, 1, 2]
    artifacts = repo / "mlruns"
    assert list(artifacts.rglob("conv_vs_relu.png")), "report did not log the figure to the parent run"


def test_exp_run_with_new_pca_reruns_only_check_probe_and_report(repo):
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "the default run")  # as a researcher does before trying other settings
    out = dvc(repo, "exp", "run", "-n", "pca3", "-S", "pca=3")
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"params", "check", "probe", "report"}  # the activations and Gram matrices are reused
    shown = json.loads(dvc(repo, "exp", "show", "--json"))
    text = json.dumps(shown)
    assert "pca3" in text
    runs = mlflow_runs(repo / "mlflow.db")
    parents = [r for r in runs if "mlflow.parentRunId" not in r["tags"]]
    assert sorted(p["params"]["pca"] for p in parents) == ["3", "4"]
    assert any(p["tags"].get("dvc_exp_name") == "pca3" for p in parents)


def test_temp_experiment_logs_into_the_real_repo_store(repo):
    before = len(mlflow_runs(repo / "mlflow.db"))
    dvc(repo, "exp", "run", "--temp", "-n", "temp-cv2", "-S", "cv=2")
    runs = mlflow_runs(repo / "mlflow.db")
    assert len(runs) == before + 15  # one parent and 14 layers, anchored on DVC_ROOT
    assert not (repo / ".dvc" / "tmp" / "exps").exists() or not list((repo / ".dvc" / "tmp" / "exps").rglob("mlflow.db"))


# ---- comparing experiments: dvc exp show, dvc plots (after the pca3 and temp-cv2 experiments above) ----

LAYERS = ["conv1", "conv1_relu", "conv2", "conv2_relu", "conv3", "conv3_relu", "conv4", "conv4_relu", "conv5",
          "conv5_relu", "fc1", "fc1_relu", "fc2", "fc2_relu"]
DEPTHS = "Conv1, Conv2, Conv3, Conv4, Conv5, FC1, FC2"


def test_exp_show_fits_200_columns_with_a_column_per_layer(repo):
    from helpers import env_without_tracking_uri

    env = {**env_without_tracking_uri(), "COLUMNS": "200"}
    table = dvc(repo, "exp", "show", "--only-changed", "--no-pager", env=env)
    lines = [line for line in table.splitlines() if line.strip()]
    assert max(len(line) for line in lines) <= 200, table
    header = next(line for line in lines if "Experiment" in line).split()
    # every layer whose mean differs between the rows has its column, none collapsed into "…"
    shown = json.loads(dvc(repo, "exp", "show", "--json"))
    revs = [shown[0], shown[1], *[rev for e in shown[1]["experiments"] for rev in e["revs"]]]
    means = [rev["data"]["metrics"]["reports/metrics.json"]["data"] for rev in revs]
    varying = [layer for layer in LAYERS if len({m[layer] for m in means}) > 1]
    assert len(varying) >= 10 and [name for name in header if name in LAYERS] == varying, table
    for experiment in ("pca3", "temp-cv2"):
        [row] = [line for line in lines if f"[{experiment}]" in line]
        assert len(re.findall(r"\b0\.\d+|\b1\b", row)) == len(varying), row
    assert "sem" not in table and "conv_vs_relu" not in table  # those are in reports/metrics_detail.json
    detail = dvc(repo, "metrics", "show", "reports/metrics_detail.json", env=env)
    assert "sem.conv1" in detail and "conv_vs_relu.Conv1.p_holm" in detail


def test_dnnprobe_compare_shows_every_layer_and_every_setting_that_differs_in_200_columns(repo):
    """The README's comparison command, on the two real experiments above (pca3, temp-cv2) and HEAD."""
    from helpers import env_without_tracking_uri

    env = {**env_without_tracking_uri(), "COLUMNS": "200"}
    result = subprocess.run(["python", "-m", "dnnprobe.cli", "compare"], cwd=repo, capture_output=True, text=True,
                            env={**env, "PYTHONPATH": "src"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 200 and lines[0].split()[0] == "experiment", result.stdout
    columns = lines[0].split()[1:]
    assert {"pca3", "temp-cv2"} <= set(columns), result.stdout
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:] if line.strip()}
    shown = json.loads(dvc(repo, "exp", "show", "--json"))
    revs = {rev["name"]: rev for e in shown[1]["experiments"] for rev in e["revs"]}
    for name in ("pca3", "temp-cv2"):
        data = revs[name]["data"]
        params, metrics = data["params"]["params.yaml"]["data"], data["metrics"]["reports/metrics.json"]["data"]
        column = columns.index(name)
        assert rows["pca"][column] == str(params["pca"]) and rows["cv"][column] == str(params["cv"])
        for layer in LAYERS:  # every layer, whether or not its value differs between the experiments
            assert rows[layer][column] == f"{metrics[layer]:.3f}", (layer, result.stdout)


def test_dvc_plots_render_offline_as_one_chart_per_layer_depth(repo):
    dvc(repo, "plots", "show")
    dom = render(repo / "dvc_plots" / "index.html")
    assert dom.count('class="marks"') == 1  # one chart: the layer-score plot, no accidental second one
    assert f"for a discrete scale with 7 values: {DEPTHS}" in dom  # x axis: the depth names, in depth order
    assert "mean score over folds (the score is named in the legend)" in dom and "[workspace] (accuracy)" in dom
    assert re.search(r'aria-label="[^"]*layer: conv3_relu; scoring: accuracy; mean over folds: 0\.\d{4}; SEM over folds', dom)
    assert {"Conv", "ReLU"} <= set(re.findall(r"<text[^>]*>(Conv|ReLU)</text>", dom))  # the two series' legend
    assert "dvc_plots/" in (repo / ".gitignore").read_text() and "dvc_plots" not in git(repo, "status", "--porcelain")

    dvc(repo, "plots", "diff", "pca3", "temp-cv2")
    dom = render(repo / "dvc_plots" / "index.html")
    assert dom.count('class="marks"') == 1
    legend = set(re.findall(r"<text[^>]*>([^<]+)</text>", dom))
    # each experiment named by what differs from the defaults, then by DVC's name for it
    assert {"pca=3 cv=3 [pca3] (accuracy)", "pca=3 cv=2 [temp-cv2] (accuracy)", "Conv", "ReLU"} <= legend, legend
    assert len(re.findall(r"experiment: (pca3|temp-cv2); layer: fc2_relu", dom)) == 2


def test_a_key_no_stage_reads_stops_dvc_repro_in_one_line(repo):
    """`classifier: ridge` at the top level (meant as probe.classifier): no stage lists it, so without the
    params stage DVC would say "up to date" and an experiment would be its baseline under a new name."""
    from helpers import env_without_tracking_uri

    original = (repo / "params.yaml").read_text()
    try:
        (repo / "params.yaml").write_text(original + "classifier: ridge\n")
        result = subprocess.run(["dvc", "repro"], cwd=repo, capture_output=True, text=True, env=env_without_tracking_uri())
        assert result.returncode != 0
        errors = [line for line in result.stderr.splitlines() if line.startswith("dnnprobe ")]
        assert len(errors) == 1, result.stderr
        assert errors[0].startswith("dnnprobe params: error: params.yaml: unknown key classifier (known: cv, "), errors
        assert re.findall(r"Running stage '(\w+)'", result.stdout + result.stderr) == ["params"]
    finally:
        (repo / "params.yaml").write_text(original)


def test_repro_gives_cka_and_rdms_of_layers_narrower_than_the_stimuli(tmp_path):
    """ViT class tokens (64 units) on 80 stimuli: stored as d x d moments, which crashed the similarity stage
    (all layers narrow) or left them out (mixed). Here two narrow blocks and the wide head (1000 units):
    every layer is in cka.json and rdms.hdf5, equal to a direct computation from the activation file."""
    from dnnprobe.extract.actfile import ActivationFile
    from dnnprobe.gram.similarity import read_rdms
    from scipy.spatial.distance import pdist

    from helpers import TINY, direct_linear_cka, merge

    params = merge(json.loads(json.dumps(TINY)), {
        "stimuli": {"demo": {"n_per_class": 40}},
        "model": {"source": "timm", "arch": "test_vit"},
        "extract": {"layers": ["block1", "block2", "head"], "tokens": "cls", "preprocess": "model"}})
    repo = copy_repo(tmp_path, params)
    assert "Running stage 'similarity'" in dvc(repo, "repro")
    result = json.loads((repo / "reports" / "similarity" / "cka.json").read_text())
    layers = ["block1", "block2", "head"]
    assert result["layers"] == layers and result["from_activations"] == ["block1", "block2"]
    with ActivationFile(repo / "data" / "activations.act.h5") as acts:
        X = {layer: acts.read_layer(layer) for layer in layers}
    assert [X[layer].shape for layer in layers] == [(80, 64), (80, 64), (80, 1000)]
    for i, a in enumerate(layers):
        for j, b in enumerate(layers):
            assert result["cka"][i][j] == pytest.approx(direct_linear_cka(X[a], X[b]), abs=1e-5)
    names, dissimilarities = read_rdms(repo / "reports" / "similarity" / "rdms.hdf5")
    assert names == layers
    for index, layer in enumerate(layers):
        direct = pdist(X[layer].astype(np.float64), "sqeuclidean") / X[layer].shape[1]
        np.testing.assert_allclose(dissimilarities[index], direct, rtol=1e-4, atol=1e-5 * direct.max())
    assert "Data and pipelines are up to date" in dvc(repo, "status")
