"""MLflow: store location, what a probe run records, failures and unreachable servers."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest

from conftest import can_mount_tmpfs, closed_port_url, latest_probe_run, tiny_params
from dnnprobe import tracking
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.stages.probe import probe


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
                 tmp_path / "metrics.json", tmp_path / "probes", progress=False)


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
    assert run.data.tags[tracking.SUMMARY_TAG] == _sha256(tmp_path / "probe" / "summary.json")
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
    assert run.info.run_name == f"pca=4 cv=3 | alexnet random n={summary['n_stimuli']}"
    assert summary["settings"] == "pca=4 cv=3"  # what labels this run's line in `dvc plots diff`
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


def test_run_names_begin_with_the_settings_that_differ():
    """MLflow's runs table shows about 20 characters of a name: what tells runs apart comes first."""
    defaults = {"pca": 100, "cv": 10, "probe.classifier": "logistic", "probe.C": 1.0, "probe.standardize": False}
    same = dict(defaults)
    assert tracking.run_name("alexnet", "random", same, defaults) == "alexnet random pca=100 cv=10"
    changed = {**defaults, "pca": 50, "probe.classifier": "ridge", "probe.C": 1}  # 1 == 1.0: not a change
    assert (tracking.run_name("alexnet", "models/external/mine.pt", changed, defaults)
            == "weights=mine.pt pca=50 classifier=ridge | alexnet mine.pt cv=10")
    assert tracking.run_name("vgg16", "random", {**defaults, "probe.C": 0.1}, defaults) == (
        "arch=vgg16 C=0.1 | vgg16 random pca=100 cv=10")


def test_dvc_experiment_name_is_a_tag_and_ends_the_run_name(tmp_path, tiny_stimuli, tiny_gram, tiny_activations, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "utile-sook")
    run_probe(tmp_path, tiny_stimuli, tiny_gram, tiny_activations, **{"probe.C": "0.5"})
    run = latest_probe_run()
    assert run.data.tags["dvc_exp_name"] == "utile-sook"
    assert run.info.run_name == "pca=4 cv=3 C=0.5 | alexnet random n=24 [utile-sook]"


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


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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


# ---- runs whose process was killed ----------------------------------------------------------------


def _runs() -> dict[str, mlflow.entities.Run]:
    """Every run in the test's store, by name."""
    return {r.info.run_name: r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")}


def _statuses() -> dict[str, tuple[str, str | None]]:
    """Run name -> (status, its dnnprobe.orphaned tag)."""
    return {name: (r.info.status, r.data.tags.get(tracking.ORPHANED_TAG)) for name, r in _runs().items()}


def test_every_run_names_the_process_that_owns_it():
    with tracking.probe_run("dnnprobe", "t", {"pca": 4}, "accuracy") as run:
        run.log_layer("fc1", [0.5, 0.7], 0.6, 0.1)
    owner = tracking.owner_tags()
    assert owner[tracking.HOST_TAG] == socket.gethostname() and owner[tracking.PID_TAG] == str(os.getpid())
    if sys.platform.startswith("linux"):  # field 22 of /proc/<pid>/stat; the command name has no spaces here
        assert owner[tracking.PROCESS_START_TAG] == Path(f"/proc/{os.getpid()}/stat").read_text().split()[21]
    runs = _runs()
    assert sorted(runs) == ["fc1", "t"]
    for run in runs.values():
        assert {key: run.data.tags.get(key) for key in owner} == owner


def test_runs_of_a_killed_process_are_ended_as_killed_and_no_others():
    experiment_id = tracking.ensure_experiment("dnnprobe")
    client = mlflow.tracking.MlflowClient()
    host = socket.gethostname()
    gone = subprocess.Popen(["sleep", "60"])
    gone_start = tracking._process_start(gone.pid)
    gone.kill()
    gone.wait()
    dead = {tracking.HOST_TAG: host, tracking.PID_TAG: str(gone.pid), tracking.PROCESS_START_TAG: gone_start}
    parent = client.create_run(experiment_id, run_name="killed", tags=dead)
    client.create_run(experiment_id, run_name="killed-layer", tags={**dead, "mlflow.parentRunId": parent.info.run_id})
    client.create_run(experiment_id, run_name="alive", tags=tracking.owner_tags())
    # Our own pid, but a process started at another time had it: the pid was reused, that process is gone.
    client.create_run(experiment_id, run_name="reused-pid",
                      tags={**tracking.owner_tags(), tracking.PROCESS_START_TAG: "1"})
    client.create_run(experiment_id, run_name="other-host", tags={**dead, tracking.HOST_TAG: "some-other-host"})
    client.create_run(experiment_id, run_name="untagged")

    with tracking.probe_run("dnnprobe", "next", {"pca": 4}, "accuracy"):
        pass

    assert _statuses() == {
        "killed": ("KILLED", f"process {gone.pid} on {host} was gone"),
        "killed-layer": ("KILLED", f"process {gone.pid} on {host} was gone"),
        "reused-pid": ("KILLED", f"process {os.getpid()} on {host} was gone"),
        "alive": ("RUNNING", None), "other-host": ("RUNNING", None), "untagged": ("RUNNING", None),
        "next": ("FINISHED", None),
    }


KILLED_DURING_A_LAYER = textwrap.dedent("""
    import os, signal
    import mlflow
    from dnnprobe import tracking

    with tracking.probe_run("dnnprobe", "killed", {"pca": 4}, "accuracy") as run:
        run.log_layer("conv1", [0.5, 0.6], 0.55, 0.05)
        # SIGKILL, as the OOM killer sends it, while the next layer's run is open: nothing can end the runs.
        mlflow.tracking.MlflowClient.log_batch = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
        run.log_layer("conv2", [0.5, 0.6], 0.55, 0.05)
""")


def test_a_probe_killed_by_sigkill_is_ended_as_killed_by_the_next_probe(tmp_path):
    env = dict(os.environ)  # MLFLOW_TRACKING_URI and DVC_ROOT of the test's store (conftest)
    result = subprocess.run([sys.executable, "-c", KILLED_DURING_A_LAYER], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert _statuses() == {"killed": ("RUNNING", None), "conv1": ("FINISHED", None), "conv2": ("RUNNING", None)}
    pid = _runs()["killed"].data.tags[tracking.PID_TAG]

    with tracking.probe_run("dnnprobe", "next", {"pca": 4}, "accuracy"):
        pass

    gone = f"process {pid} on {socket.gethostname()} was gone"
    assert _statuses() == {"killed": ("KILLED", gone), "conv1": ("FINISHED", None), "conv2": ("KILLED", gone),
                           "next": ("FINISHED", None)}


def test_the_report_stage_also_ends_runs_of_killed_processes(tmp_path):
    with tracking.probe_run("dnnprobe", "probe", {"pca": 4}, "accuracy") as run:
        run.record_summary("a" * 64)
    gone = subprocess.Popen(["sleep", "60"])
    gone.kill()
    gone.wait()
    client = mlflow.tracking.MlflowClient()
    client.create_run(run.experiment_id, run_name="killed",
                      tags={**tracking.owner_tags(), tracking.PID_TAG: str(gone.pid)})
    figure = tmp_path / "figure.png"
    figure.write_bytes(b"not really a png")
    assert tracking.log_artifacts_to_probe_run("dnnprobe", "a" * 64, [figure], "report") is None
    assert _statuses()["killed"] == ("KILLED", f"process {gone.pid} on {socket.gethostname()} was gone")
    assert [a.path for a in client.list_artifacts(run.run_id, "report")] == ["report/figure.png"]


# ---- a failing MLflow store: full disk, broken database -------------------------------------------


def _database_full():
    from sqlalchemy.exc import OperationalError

    return OperationalError("INSERT INTO metrics ...", {}, sqlite3.OperationalError("database or disk is full"))


def _mlflow_wrapped_database_full():
    """What MLflow's SQLAlchemy store raises: its exception, caused by SQLAlchemy's."""
    from mlflow.exceptions import MlflowException

    try:
        raise MlflowException(str(_database_full()), error_code="TEMPORARILY_UNAVAILABLE") from _database_full()
    except MlflowException as exc:
        return exc


STORE_FAILURES = {
    "sqlalchemy": (_database_full, "database or disk is full"),
    "mlflow": (_mlflow_wrapped_database_full, "database or disk is full"),
    "enospc": (lambda: OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
}


@pytest.mark.parametrize("failure", sorted(STORE_FAILURES))
def test_a_store_failing_during_a_layer_is_one_line_and_the_runs_end_failed(monkeypatch, failure):
    make_error, reason = STORE_FAILURES[failure]

    def fail(*args, **kwargs):
        raise make_error()

    with pytest.raises(DnnprobeError) as caught:
        with tracking.probe_run("dnnprobe", "full", {"pca": 4}, "accuracy") as run:
            monkeypatch.setattr(mlflow.tracking.MlflowClient, "log_batch", fail)
            run.log_layer("fc1", [0.5, 0.6], 0.55, 0.05)
    assert str(caught.value) == f"MLflow store {tracking.tracking_uri()}: cannot write ({reason})"
    assert _statuses() == {"full": ("FAILED", None), "fc1": ("FAILED", None)}
    assert mlflow.active_run() is None


def test_when_marking_the_run_failed_fails_too_the_first_error_is_reported(monkeypatch):
    def fail(*args, **kwargs):
        raise _mlflow_wrapped_database_full()

    with pytest.raises(DnnprobeError) as caught:
        with tracking.probe_run("dnnprobe", "full", {"pca": 4}, "accuracy") as run:
            monkeypatch.setattr(mlflow.tracking.MlflowClient, "log_batch", fail)
            monkeypatch.setattr(mlflow.tracking.MlflowClient, "set_terminated", fail)
            run.log_layer("fc1", [0.5, 0.6], 0.55, 0.05)
    assert str(caught.value) == f"MLflow store {tracking.tracking_uri()}: cannot write (database or disk is full)"
    # Still RUNNING, but owned by this live process; once it is gone, the next probe ends them as KILLED.
    assert _statuses() == {"full": ("RUNNING", None), "fc1": ("RUNNING", None)}
    assert mlflow.active_run() is None


def test_a_store_failing_before_the_run_starts_is_one_line(monkeypatch):
    def fail(*args, **kwargs):
        raise _mlflow_wrapped_database_full()

    tracking.ensure_experiment("dnnprobe")
    monkeypatch.setattr(mlflow.tracking.MlflowClient, "create_run", fail)
    with pytest.raises(DnnprobeError) as caught:
        with tracking.probe_run("dnnprobe", "full", {"pca": 4}, "accuracy"):
            pytest.fail("the block must not run without a run")
    assert str(caught.value) == f"MLflow store {tracking.tracking_uri()}: cannot write (database or disk is full)"
    assert mlflow.active_run() is None


def test_report_artifacts_on_a_failing_store_or_full_disk_are_one_line(tmp_path, monkeypatch):
    with tracking.probe_run("dnnprobe", "probe", {"pca": 4}, "accuracy") as run:
        run.record_summary("b" * 64)
    figure = tmp_path / "figure.png"
    figure.write_bytes(b"not really a png")

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mlflow.tracking.MlflowClient, "log_artifact", disk_full)
    with pytest.raises(DnnprobeError) as caught:
        tracking.log_artifacts_to_probe_run("dnnprobe", "b" * 64, [figure], "report")
    artifacts = mlflow.get_run(run.run_id).info.artifact_uri
    assert str(caught.value) == f"MLflow artifact store {artifacts}: cannot write (No space left on device)"
    with pytest.raises(DnnprobeError) as caught:
        run.log_artifact(figure)  # the probe stage's metrics file
    assert str(caught.value) == f"MLflow artifact store {artifacts}: cannot write (No space left on device)"

    def database_broken(*args, **kwargs):
        raise _mlflow_wrapped_database_full()

    # A store that fails to answer is not a store without the run: no "run not found" warning.
    monkeypatch.setattr(mlflow.tracking.MlflowClient, "search_runs", database_broken)
    with pytest.raises(DnnprobeError) as caught:
        tracking.log_artifacts_to_probe_run("dnnprobe", "b" * 64, [figure], "report")
    assert str(caught.value) == f"MLflow store {tracking.tracking_uri()}: cannot read (database or disk is full)"


def test_the_report_finds_the_run_of_exactly_its_results(tmp_path):
    """By the sha256 of summary.json: the latest finished run that wrote it; none for other results."""
    for name, digest in (("old", "c" * 64), ("other", "d" * 64), ("new", "c" * 64)):
        with tracking.probe_run("dnnprobe", name, {"pca": 4}, "accuracy") as run:
            run.record_summary(digest)
    assert tracking.find_probe_run("dnnprobe", "c" * 64).info.run_name == "new"
    assert tracking.find_probe_run("dnnprobe", "e" * 64) is None
    assert tracking.find_probe_run("no such experiment", "c" * 64) is None
    figure = tmp_path / "figure.png"
    figure.write_bytes(b"not really a png")
    warning = tracking.log_artifacts_to_probe_run("dnnprobe", "e" * 64, [figure], "report")
    assert warning.startswith("no finished MLflow run in experiment 'dnnprobe' of sqlite:///")


FULL_DISK_PROBE = textwrap.dedent("""
    import sys
    from dnnprobe import tracking
    from dnnprobe.core.errors import DnnprobeError

    def fill(path):
        '''Write zeros until the disk is full.'''
        with open(path, "wb", buffering=0) as handle:
            try:
                while True:
                    handle.write(bytes(4096))
            except OSError:
                pass

    filler, when = sys.argv[1:]
    try:
        if when == "before":
            fill(filler)
        with tracking.probe_run("dnnprobe", "full", {"pca": 4}, "accuracy") as run:
            if when == "during":
                fill(filler)
            run.log_layer("fc1", [0.5, 0.6, 0.7], 0.6, 0.05)
    except DnnprobeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
""")

AFTER_FREEING_THE_DISK = textwrap.dedent("""
    import mlflow
    from dnnprobe import tracking

    with tracking.probe_run("dnnprobe", "next", {"pca": 4}, "accuracy"):
        pass
    for run in sorted(mlflow.search_runs(search_all_experiments=True, output_format="list"),
                      key=lambda run: run.info.start_time):
        print(run.info.run_name, run.info.status)
""")


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs user namespaces to mount a small tmpfs (unshare -r -m)")
@pytest.mark.parametrize("when", ["before", "during"])
def test_a_full_disk_under_the_store_is_one_line_on_a_real_small_disk(tmp_path, when):
    """The SQLite store on a 4 MB tmpfs that a file fills, before the probe's run or while it is open."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    scripts = {"probe": FULL_DISK_PROBE, "after": AFTER_FREEING_THE_DISK,
               "setup": "from dnnprobe import tracking\ntracking.ensure_experiment('dnnprobe')\n"}
    for name, text in scripts.items():
        (tmp_path / f"{name}.py").write_text(text)
    python = sys.executable
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{mount}/mlflow.db", "DVC_ROOT": str(mount)}
    # The mount lives as long as this shell: everything happens inside it.
    script = (f"mount -t tmpfs -o size=4m tmpfs {mount} && {python} {tmp_path}/setup.py >/dev/null 2>&1 && "
              f"{python} {tmp_path}/probe.py {mount}/filler {when}; echo exit=$?; "
              f"rm {mount}/filler && {python} {tmp_path}/after.py 2>/dev/null")
    result = subprocess.run(["unshare", "-r", "-m", "sh", "-c", script], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=300)
    assert result.stderr.splitlines() == [
        f"error: MLflow store sqlite:///{mount}/mlflow.db: cannot write (database or disk is full)"]
    lines = result.stdout.splitlines()
    assert lines[0] == "exit=1"
    if when == "before":
        assert lines[1:] == ["next FINISHED"]
    else:
        # The run had started; marking it FAILED needs the full disk too, so it may have stayed RUNNING
        # until the next probe, which found its process gone and ended it as KILLED.
        assert lines[1] in ("full FAILED", "full KILLED") and lines[2:] == ["next FINISHED"]


def test_labels_written_as_floats_keep_their_class_names(tmp_path, tiny_stimuli, tiny_gram, tiny_activations):
    """DNNBrain reads 1.0 as class 1: the condition names still go with the decoded classes."""
    from dnnprobe.stimuli import StimulusTable

    table = StimulusTable.read(tiny_stimuli)
    names = dict(zip(table.columns["label"], table.columns["condition"]))
    table.columns["label"] = [f"{label}.0" for label in table.columns["label"]]
    table.header["path"] = str(table.image_folder.resolve())
    table.write(tmp_path / "floats.stim.csv")
    summary = probe(tiny_params(), tmp_path / "floats.stim.csv", tiny_gram, tiny_activations, tmp_path / "probe",
                    tmp_path / "metrics.json", tmp_path / "probes", progress=False)
    assert summary["classes"] == ["0", "1"] and summary["class_names"] == [names["0"], names["1"]]
