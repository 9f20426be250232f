"""End to end with real DVC and MLflow, in a temporary copy of the repository on tiny data."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import copy_repo, dvc, git, mlflow_runs


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    path = copy_repo(tmp_path_factory.mktemp("repo"))
    dvc(path, "repro")
    return path


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
    out = dvc(repo, "exp", "run", "-n", "pca3", "-S", "pca=3")
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"check", "probe", "report"}  # the activations and Gram matrices are reused
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
