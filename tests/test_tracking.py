"""MLflow: store location, what a probe run records, failures and unreachable servers."""

from __future__ import annotations

import json
import time

import mlflow
import numpy as np
import pytest

from conftest import closed_port_url, tiny_params
from dnnprobe import tracking
from dnnprobe.errors import DnnprobeError
from dnnprobe.stages import probe


def test_default_store_is_anchored_on_dvc_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", "/some/real/repo")
    assert tracking.tracking_uri() == "sqlite:////some/real/repo/mlflow.db"
    assert tracking.artifact_location() == "file:///some/real/repo/mlruns"
    monkeypatch.delenv("DVC_ROOT")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"


def test_tracking_uri_environment_variable_wins(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    monkeypatch.setenv("DVC_ROOT", "/x")
    assert tracking.tracking_uri() == "http://127.0.0.1:1"


def run_probe(tmp_path, tiny_stimuli, tiny_gram, tiny_activations, **overrides):
    return probe(tiny_params(**overrides), tiny_stimuli, tiny_gram, tiny_activations, tmp_path / "probe",
                 tmp_path / "metrics.json", tmp_path / "run.json", tmp_path / "probes", progress=False)


def test_probe_stage_outputs_and_run(tmp_path, tiny_stimuli, tiny_gram, tiny_activations):
    summary = run_probe(tmp_path, tiny_stimuli, tiny_gram, tiny_activations)
    assert np.load(tmp_path / "probe" / "fc1" / "score.npy").shape == (3,)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["fc1"]["accuracy_mean"] == pytest.approx(summary["layers"]["fc1"]["mean"], abs=1e-6)
    run_id = json.loads((tmp_path / "run.json").read_text())["run_id"]
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["pca"] == "4" and run.data.params["classifier"] == "logistic"
    assert run.data.metrics["accuracy_mean/fc1"] == pytest.approx(summary["layers"]["fc1"]["mean"])
    assert json.loads((tmp_path / "probes" / "index.json").read_text())["layers"] == []


def test_save_models_writes_npz_that_loads_without_pickle(tmp_path, tiny_stimuli, tiny_gram, tiny_activations):
    from dnnprobe.probe import load_refit_model

    run_probe(tmp_path, tiny_stimuli, tiny_gram, tiny_activations, **{"probe.save_models": "true"})
    model = load_refit_model(tmp_path / "probes" / "conv5.npz")
    assert model["components"].shape == (4, 256 * 13 * 13) and model["coef"].shape == (1, 4)


def test_failing_probe_marks_the_run_failed_and_leaves_no_outputs(tmp_path, tiny_stimuli, tiny_gram, tiny_activations, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("solver exploded")

    monkeypatch.setattr("dnnprobe.probe.cross_validate_gram", broken)
    with pytest.raises(RuntimeError, match="solver exploded"):
        run_probe(tmp_path, tiny_stimuli, tiny_gram, tiny_activations)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert runs and all(r.info.status == "FAILED" for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert not (tmp_path / "probe").exists() and not (tmp_path / "metrics.json").exists()
    assert not (tmp_path / "run.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".dnnprobe-tmp")] == []


def test_unreachable_tracking_server_fails_fast_in_one_line(tmp_path, tiny_stimuli, tiny_gram, tiny_activations, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", closed_port_url())
    started = time.perf_counter()
    with pytest.raises(DnnprobeError, match="tracking server not reachable") as caught:
        run_probe(tmp_path, tiny_stimuli, tiny_gram, tiny_activations)
    assert time.perf_counter() - started < 20
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "probe").exists()


def test_probe_rejects_pca_above_the_training_fold_before_logging(tmp_path, tiny_stimuli, tiny_gram, tiny_activations):
    with pytest.raises(DnnprobeError, match="pca=20 is larger than the smallest training fold"):
        run_probe(tmp_path, tiny_stimuli, tiny_gram, tiny_activations, pca=20)
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


def test_probe_label_column_errors(tmp_path, tiny_stimuli, tiny_gram, tiny_activations):
    with pytest.raises(DnnprobeError, match="no column 'animacy'"):
        run_probe(tmp_path, tiny_stimuli, tiny_gram, tiny_activations, **{"probe.label": "animacy"})
    with pytest.raises(DnnprobeError, match="'condition' is not an integer class label"):
        run_probe(tmp_path, tiny_stimuli, tiny_gram, tiny_activations, **{"probe.label": "condition"})
