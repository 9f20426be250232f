"""The probe's MLflow run: what it records, and how a failing store ends it."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest

from helpers import (database_full_error, latest_probe_run, mlflow_database_full_error, one_line_error, run_probe,
                     run_statuses, runs_by_name, tiny_params)
from dnnprobe.track.runs import probe_run
from dnnprobe.track.store import ensure_experiment, tracking_uri
from dnnprobe.track.tags import SUMMARY_TAG
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.stages.probe import probe


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_probe_stage_outputs_and_run(tmp_path, tiny_stimuli, tiny_gram, tiny_activations):
    summary = run_probe(tmp_path, tiny_stimuli, tiny_gram, tiny_activations)
    assert np.load(tmp_path / "probe" / "fc1" / "score.npy").shape == (3,)
    # metrics.json: one number per layer (the mean), in layer order; the rest in metrics_detail.json
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert list(metrics) == summary["layer_order"]
    assert metrics["fc1"] == pytest.approx(summary["layers"]["fc1"]["mean"], abs=1e-6)
    details = json.loads((tmp_path / "metrics_detail.json").read_text())
    assert details["sem"]["fc1"] == pytest.approx(summary["layers"]["fc1"]["sem"], abs=1e-6)
    run = latest_probe_run()
    assert run.info.status == "FINISHED"
    assert run.data.tags[SUMMARY_TAG] == _sha256(tmp_path / "probe" / "summary.json")
    params = tiny_params()
    # every params.yaml key the probe stage reads, dotted as `dvc params diff` shows them
    from dnnprobe.stages.probe import PARAMS

    expected = {key: str(value) for key, value in params.flat(PARAMS).items()}
    assert expected.keys() >= {"pca", "cv", "probe.classifier", "probe.C", "model.seed", "tracking.experiment"}
    assert {key: run.data.params[key] for key in expected} == expected
    assert not any(key.startswith(("extract.", "stimuli.", "report.")) for key in run.data.params)
    # one metric per layer on the parent run, named as in metrics.json, and the SEM beside it
    assert {layer: run.data.metrics[layer] for layer in metrics} == pytest.approx(metrics, abs=1e-6)
    assert run.data.metrics["sem/fc1"] == pytest.approx(summary["layers"]["fc1"]["sem"])
    # what differs from the defaults first (the runs table cuts names short), then the network and n
    assert run.info.run_name == f"pca=4 cv=3 | alexnet random prep=dnnbrain n={summary['n_stimuli']}"
    assert summary["settings"] == "pca=4 cv=3"  # what labels this run's line in `dvc plots diff`
    # what ran, for every preprocessing choice: DNNBrain's default is recorded too (issue 27)
    assert {key: run.data.params[key] for key in ("network_source", "network_preprocess", "network_tokens")} == {
        "network_source": "torchvision", "network_preprocess": "dnnbrain", "network_tokens": "n/a"}
    assert (summary["network_source"], summary["preprocess"], summary["tokens"]) == ("torchvision", "dnnbrain", "n/a")
    assert summary["folds"] == "3-fold CV (StratifiedKFold), not grouped, not shuffled"
    assert summary["C_choice"] == "C = 1 (fixed)"
    assert run.data.params["stimulus_set"] == summary["stimulus_set"] and run.data.params["stimuli_source"] == "demo"
    # the stimulus table as the run's dataset input: name, digest, source, row count
    client = mlflow.tracking.MlflowClient()
    [dataset_input] = client.get_run(run.info.run_id).inputs.dataset_inputs
    dataset = dataset_input.dataset
    assert dataset.digest == _sha256(tiny_stimuli)[:32] and run.data.params["stimuli_sha256"] == _sha256(tiny_stimuli)
    assert dataset.name == summary["stimulus_set"] and json.loads(dataset.source)["uri"] == str(tiny_stimuli)
    assert json.loads(dataset.profile)["num_rows"] == summary["n_stimuli"]
    assert {tag.key: tag.value for tag in dataset_input.tags}["mlflow.data.context"] == "stimuli"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts >= {"metrics.json", "metrics_detail.json"}
    assert json.loads((tmp_path / "probes" / "index.json").read_text())["layers"] == []


def test_run_name_and_params_say_the_preprocessing_and_tokens_the_activations_record(tmp_path, tiny_stimuli, tiny_gram,
                                                                                      tiny_activations):
    """Two ViT runs that differ only in extract.tokens (or extract.preprocess) have different run names,
    the difference first, and `dvc plots diff` labels (summary["settings"]); C: auto is said in words."""
    import shutil

    import h5py

    gram = shutil.copy(tiny_gram, tmp_path / "gram.h5")
    with h5py.File(gram, "r+") as file:  # as the extract stage records a ViT's choices, carried by the gram stage
        file.attrs.update({"network_preprocess": "model", "network_tokens": "cls", "network_source": "timm"})
    summary = run_probe(tmp_path, tiny_stimuli, gram, tiny_activations, **{"probe.C": "auto"})
    run = latest_probe_run()
    assert run.info.run_name.startswith("prep=model tokens=cls pca=4 cv=3 C=auto | alexnet random n=24"), run.info.run_name
    assert summary["settings"] == "prep=model tokens=cls pca=4 cv=3 C=auto"
    assert {key: run.data.params[key] for key in ("network_source", "network_preprocess", "network_tokens")} == {
        "network_source": "timm", "network_preprocess": "model", "network_tokens": "cls"}
    assert summary["C_choice"] == "C chosen per training fold by 5-fold inner CV from 7 values 0.001 .. 1000"


def test_C_chosen_at_an_edge_of_its_grid_is_warned_in_one_line_per_layer_and_recorded(tmp_path, tiny_stimuli, tiny_gram,
                                                                                       tiny_activations, capsys):
    """probe.C with two candidates: every layer's C is at an end of the grid (issue 27: C: auto chose the top of
    its grid for every layer without a word)."""
    from dnnprobe.track.tags import C_EDGE_TAG

    summary = run_probe(tmp_path, tiny_stimuli, tiny_gram, tiny_activations, **{"probe.C": "[0.00001,0.0001]"})
    warnings = [line for line in capsys.readouterr().err.splitlines() if "of its grid" in line]
    assert len(warnings) == len(summary["layer_order"]) == len(summary["C_at_grid_edge"])
    for layer, line in zip(summary["layer_order"], warnings):
        assert line.startswith(f"probe: warning: attribute label, layer {layer}: C = "), line
        edge = summary["layers"][layer]["C_at_grid_edge"]
        assert f"C = {edge['C']:g}, the {edge['edge']} of its grid, chosen in {edge['folds']} of 3 folds" in line
        assert edge["C"] in (0.00001, 0.0001) and edge["folds"] >= 2
    assert latest_probe_run().data.tags[C_EDGE_TAG] == "; ".join(summary["C_at_grid_edge"])


def test_dvc_experiment_name_is_a_tag_and_ends_the_run_name(tmp_path, tiny_stimuli, tiny_gram, tiny_activations, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "utile-sook")
    run_probe(tmp_path, tiny_stimuli, tiny_gram, tiny_activations, **{"probe.C": "0.5"})
    run = latest_probe_run()
    assert run.data.tags["dvc_exp_name"] == "utile-sook"
    assert run.info.run_name == "pca=4 cv=3 C=0.5 | alexnet random prep=dnnbrain n=24 [utile-sook]"


def test_save_models_writes_npz_that_loads_without_pickle(tmp_path, tiny_stimuli, tiny_gram, tiny_activations):
    from dnnprobe.probe.refit import load_refit_model

    run_probe(tmp_path, tiny_stimuli, tiny_gram, tiny_activations, **{"probe.save_models": "true"})
    model = load_refit_model(tmp_path / "probes" / "conv5.npz")
    assert model["components"].shape == (4, 256 * 13 * 13) and model["coef"].shape == (1, 4)


def test_failing_probe_marks_the_run_failed_and_leaves_no_outputs(tmp_path, tiny_stimuli, tiny_gram, tiny_activations, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("solver exploded")

    monkeypatch.setattr("dnnprobe.probe.crossval.cross_validate_targets", broken)
    with pytest.raises(RuntimeError, match="solver exploded"):
        run_probe(tmp_path, tiny_stimuli, tiny_gram, tiny_activations)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert runs and all(r.info.status == "FAILED" for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert not (tmp_path / "probe").exists() and not (tmp_path / "metrics.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".dnnprobe-tmp")] == []


def test_probe_rejects_pca_above_the_training_fold_before_logging(tmp_path, tiny_stimuli, tiny_gram, tiny_activations):
    with pytest.raises(DnnprobeError, match="pca=20 is larger than the smallest training fold"):
        run_probe(tmp_path, tiny_stimuli, tiny_gram, tiny_activations, pca=20)
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


def test_probe_label_column_errors(tmp_path, tiny_stimuli, tiny_gram, tiny_activations):
    with pytest.raises(DnnprobeError, match="no column 'animacy'"):
        run_probe(tmp_path, tiny_stimuli, tiny_gram, tiny_activations, **{"probe.label": "animacy"})
    with pytest.raises(DnnprobeError, match="'condition' is not an integer class label"):
        run_probe(tmp_path, tiny_stimuli, tiny_gram, tiny_activations, **{"probe.label": "condition"})


def test_logged_hashes_are_of_the_files_read_not_taken_from_dvc_lock(tmp_path, monkeypatch, tiny_stimuli, tiny_gram,
                                                                    tiny_activations):
    """A file regenerated outside DVC can keep its size, so a hash that dvc.lock recorded may be stale."""
    import yaml

    activations = tmp_path / "data" / "activations.act.h5"
    activations.parent.mkdir()
    shutil.copyfile(tiny_activations, activations)
    stale = "0" * 32
    outs = [{"path": "data/activations.act.h5", "md5": stale, "size": activations.stat().st_size}]
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"extract": {"outs": outs}}}))
    monkeypatch.chdir(tmp_path)
    run_probe(tmp_path, tiny_stimuli, tiny_gram, activations)
    params = latest_probe_run().data.params
    assert stale not in params.values()
    assert params["stimuli_sha256"] == _sha256(tiny_stimuli)
    logged = {key: value for key, value in params.items() if key.startswith("activations_")}
    actual = {"activations_sha256": _sha256(activations),
              "activations_md5": hashlib.md5(activations.read_bytes()).hexdigest()}
    assert logged and logged == {key: actual[key] for key in logged}


STORE_FAILURES = {
    "sqlalchemy": (database_full_error, "database or disk is full"),
    "mlflow": (mlflow_database_full_error, "database or disk is full"),
    "enospc": (lambda: OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
}


@pytest.mark.parametrize("failure", sorted(STORE_FAILURES))
def test_a_store_failing_during_a_layer_is_one_line_and_the_runs_end_failed(monkeypatch, failure):
    make_error, reason = STORE_FAILURES[failure]

    def fail(*args, **kwargs):
        raise make_error()

    with pytest.raises(DnnprobeError) as caught:
        with probe_run("dnnprobe", "full", {"pca": 4}, "accuracy") as run:
            monkeypatch.setattr(mlflow.tracking.MlflowClient, "log_batch", fail)
            run.log_layer("fc1", [0.5, 0.6], 0.55, 0.05)
    assert str(caught.value) == f"MLflow store {tracking_uri()}: cannot write ({reason})"
    assert run_statuses() == {"full": ("FAILED", None), "fc1": ("FAILED", None)}
    assert mlflow.active_run() is None


def test_when_marking_the_run_failed_fails_too_the_first_error_is_reported(monkeypatch):
    def fail(*args, **kwargs):
        raise mlflow_database_full_error()

    with pytest.raises(DnnprobeError) as caught:
        with probe_run("dnnprobe", "full", {"pca": 4}, "accuracy") as run:
            monkeypatch.setattr(mlflow.tracking.MlflowClient, "log_batch", fail)
            monkeypatch.setattr(mlflow.tracking.MlflowClient, "set_terminated", fail)
            run.log_layer("fc1", [0.5, 0.6], 0.55, 0.05)
    # Still RUNNING, but owned by this live process; once it is gone, the next probe ends them as KILLED.
    assert run_statuses() == {"full": ("RUNNING", None), "fc1": ("RUNNING", None)}
    ids = {name: run.info.run_id for name, run in runs_by_name().items()}
    assert str(caught.value) == (
        f"MLflow store {tracking_uri()}: cannot write (database or disk is full); left RUNNING there: "
        f"{ids['full']} (the probe run), {ids['fc1']} (layer fc1) (the next probe or report on this host ends "
        "them as KILLED)")
    assert mlflow.active_run() is None


def test_a_store_failing_before_the_run_starts_is_one_line(monkeypatch):
    def fail(*args, **kwargs):
        raise mlflow_database_full_error()

    ensure_experiment("dnnprobe")
    monkeypatch.setattr(mlflow.tracking.MlflowClient, "create_run", fail)
    with pytest.raises(DnnprobeError) as caught:
        with probe_run("dnnprobe", "full", {"pca": 4}, "accuracy"):
            pytest.fail("the block must not run without a run")
    assert str(caught.value) == f"MLflow store {tracking_uri()}: cannot write (database or disk is full)"
    assert mlflow.active_run() is None


# The probe stage in a child process (so that a hang is bounded by the test): it stops the server
# (SIGKILL) as the second layer starts, and notes when.
_PROBE_STOPPING_THE_SERVER = """
import os, signal, sys, time
import dnnprobe.probe.crossval
from dnnprobe.stages.probe import command

real, calls = dnnprobe.probe.crossval.cross_validate_targets, []
def cross_validate_targets(*args, **kwargs):  # once per layer
    if len(calls) == 1:
        os.killpg(int(os.environ["SERVER_PGID"]), signal.SIGKILL)
        open(os.environ["STOPPED_AT"], "w").write(repr(time.time()))
    calls.append(1)
    return real(*args, **kwargs)
dnnprobe.probe.crossval.cross_validate_targets = cross_validate_targets
command(sys.argv[1:])
"""


def test_a_server_stopping_mid_probe_fails_in_seconds_naming_the_runs_left_running(
        tmp_path, tiny_stimuli, tiny_gram, tiny_activations, mlflow_server):
    from helpers import REPO, TINY_SETS

    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_HTTP_")}
    env.update(MLFLOW_TRACKING_URI=mlflow_server.url, SERVER_PGID=str(mlflow_server.process.pid),
               STOPPED_AT=str(tmp_path / "stopped_at"), PYTHONPATH=str(REPO / "src"))
    out = tmp_path / "out"
    options = ["--quiet", "--params", str(REPO / "params.yaml"), *[f"--set={s}" for s in TINY_SETS],
               "--table", tiny_stimuli, "--gram", tiny_gram, "--activations", tiny_activations,
               "--out", out / "probe", "--metrics", out / "metrics.json", "--details", out / "metrics_detail.json",
               "--models", out / "probes"]
    # MLflow's own retries took 745 s here; a hang fails the test after 120 s.
    result = subprocess.run([sys.executable, "-c", _PROBE_STOPPING_THE_SERVER, *map(str, options)], env=env,
                            capture_output=True, text=True, timeout=120)
    failed_after = time.time() - float((tmp_path / "stopped_at").read_text())
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"dnnprobe probe: error: MLflow store {mlflow_server.url}: cannot write "
                               "(the server stopped answering: Connection refused, 3 tries); left RUNNING there: ")
    assert failed_after < 15
    # The runs named are the probe run and the layer run being logged, RUNNING in the server's store.
    with sqlite3.connect(mlflow_server.database) as db:
        status = dict(db.execute("SELECT run_uuid, status FROM runs"))
        names = dict(db.execute("SELECT run_uuid, name FROM runs"))
    named = re.findall(r"([0-9a-f]{32}) \(the probe run\)", lines[0])
    assert len(named) == 1 and status[named[0]] == "RUNNING" and names[named[0]].startswith("pca=4 cv=3 | alexnet random prep=dnnbrain n=24")
    assert not (out / "probe").exists() and not (out / "metrics.json").exists()


def test_an_artifact_store_failing_at_the_end_leaves_the_previous_outputs(tmp_path, tiny_stimuli, tiny_gram,
                                                                          tiny_activations, monkeypatch):
    from mlflow.exceptions import MlflowException

    (tmp_path / "metrics.json").write_text("the previous run's\n")
    (tmp_path / "probe").mkdir()

    def fail(*args, **kwargs):
        raise MlflowException("API request to http://lab/api/2.0/mlflow-artifacts/artifacts failed with exception "
                              "HTTPConnectionPool(host='lab', port=80): Max retries exceeded (Caused by "
                              "ResponseError('too many 500 error responses'))")

    monkeypatch.setattr(mlflow.tracking.MlflowClient, "log_artifact", fail)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # the tries MLflow made, as the reason counts them
    message = one_line_error(lambda: run_probe(tmp_path, tiny_stimuli, tiny_gram, tiny_activations), "artifact store")
    assert message.endswith("cannot write (the server answered HTTP 500 to each of 3 tries; see the server's log)")
    assert (tmp_path / "metrics.json").read_text() == "the previous run's\n" and list((tmp_path / "probe").iterdir()) == []
    assert not (tmp_path / "metrics_detail.json").exists()
    assert run_statuses()["pca=4 cv=3 | alexnet random prep=dnnbrain n=24"][0] == "FAILED"


def test_labels_written_as_floats_keep_their_class_names(tmp_path, tiny_stimuli, tiny_gram, tiny_activations):
    """DNNBrain reads 1.0 as class 1: the condition names still go with the decoded classes."""
    from dnnprobe.stimuli.table import StimulusTable

    table = StimulusTable.read(tiny_stimuli)
    names = dict(zip(table.columns["label"], table.columns["condition"]))
    table.columns["label"] = [f"{label}.0" for label in table.columns["label"]]
    table.header["path"] = str(table.image_folder.resolve())
    table.write(tmp_path / "floats.stim.csv")
    summary = probe(tiny_params(), tmp_path / "floats.stim.csv", tiny_gram, tiny_activations, tmp_path / "probe",
                    tmp_path / "metrics.json", tmp_path / "probes", progress=False)
    assert summary["classes"] == ["0", "1"] and summary["class_names"] == [names["0"], names["1"]]
