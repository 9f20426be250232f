"""MLflow: store location, what a probe run records, failures and unreachable servers."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
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

from helpers import can_mount_tmpfs, closed_port_url, latest_probe_run, one_line_error, tiny_params
from dnnprobe.track import tracking
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
    from dnnprobe.track import tracking

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
    # Still RUNNING, but owned by this live process; once it is gone, the next probe ends them as KILLED.
    assert _statuses() == {"full": ("RUNNING", None), "fc1": ("RUNNING", None)}
    ids = {name: run.info.run_id for name, run in _runs().items()}
    assert str(caught.value) == (
        f"MLflow store {tracking.tracking_uri()}: cannot write (database or disk is full); left RUNNING there: "
        f"{ids['full']} (the probe run), {ids['fc1']} (layer fc1) (the next probe or report on this host ends "
        "them as KILLED)")
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
    from dnnprobe.track import tracking
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
    from dnnprobe.track import tracking

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
               "setup": "from dnnprobe.track import tracking\ntracking.ensure_experiment('dnnprobe')\n"}
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
    [error] = result.stderr.splitlines()
    error = re.fullmatch(re.escape(f"error: MLflow store sqlite:///{mount}/mlflow.db: cannot write (database or disk is "
                                   "full)") + r"(; left RUNNING there: [0-9a-f]{32} \(the probe run\) \(the next probe "
                         r"or report on this host ends them as KILLED\))?", error)
    assert error, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "exit=1"
    if when == "before":
        assert lines[1:] == ["next FINISHED"] and not error.group(1)
    else:
        # The run had started; marking it FAILED needs the full disk too, so it may have stayed RUNNING (and
        # the line says so) until the next probe, which found its process gone and ended it as KILLED.
        assert lines[1] == ("full KILLED" if error.group(1) else "full FAILED") and lines[2:] == ["next FINISHED"]


# ---- a tracking server that stops, a store or artifact location that cannot be written ------------

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
    assert len(named) == 1 and status[named[0]] == "RUNNING" and names[named[0]].startswith("pca=4 cv=3 | alexnet random n=24")
    assert not (out / "probe").exists() and not (out / "metrics.json").exists()


def test_mlflow_http_retries_are_bounded_unless_the_user_set_them(monkeypatch):
    assert not any(name in os.environ for name in tracking.HTTP_LIMITS)  # conftest clears them for each test
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")  # the user's own setting stays
    tracking.check_reachable("sqlite:///x.db")  # a local store: nothing to bound
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    with pytest.raises(DnnprobeError, match="tracking server not reachable"):
        tracking.check_reachable(closed_port_url())
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2" and os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "300"
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR, MLFLOW_HTTP_REQUEST_BACKOFF_JITTER

    assert MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get() == 1 and MLFLOW_HTTP_REQUEST_BACKOFF_JITTER.get() == 0.5


@pytest.fixture
def failing_server():
    """An HTTP server on 127.0.0.1 whose /health answers and whose API answers 500 to everything (a
    server whose own store cannot be written); yields its URL and the number of API requests it got."""
    import http.server
    import threading

    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self):
            if self.path != "/health":
                requests.append(self.path)
            self.send_response(200 if self.path == "/health" else 500)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        do_GET = do_POST = _answer

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_failing_every_request_is_one_line_within_seconds(tmp_path, tiny_stimuli, tiny_gram,
                                                                     tiny_activations, monkeypatch, failing_server):
    url, requests = failing_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    started = time.perf_counter()
    message = one_line_error(lambda: run_probe(tmp_path, tiny_stimuli, tiny_gram, tiny_activations), "MLflow store")
    assert time.perf_counter() - started < 15  # MLflow's own retries: minutes
    assert message == (f"MLflow store {url}: cannot open (the server answered HTTP 500 to each of 3 tries; "
                       "see the server's log)")
    assert len(requests) == 3 and not (tmp_path / "probe").exists()


def test_a_database_store_without_its_driver_is_one_line_before_any_work(tmp_path, tiny_stimuli, tiny_gram,
                                                                          tiny_activations, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("psycopg") is not None:
        pytest.skip("psycopg is installed here")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://mlflow:secret@127.0.0.1:1/mlflow")
    message = one_line_error(lambda: run_probe(tmp_path, tiny_stimuli, tiny_gram, tiny_activations), "driver")
    # SQLAlchemy 2.1's driver for postgresql:// is psycopg (3); postgresql+psycopg2:// would name psycopg2.
    # The password is not shown.
    assert message == ("MLflow store postgresql://mlflow:***@127.0.0.1:1/mlflow: its database driver psycopg is not "
                       "installed (pip install psycopg[binary])")
    assert not (tmp_path / "probe").exists()


def test_a_file_store_refused_by_mlflow_names_the_fix_in_full(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "./mlruns")
    message = one_line_error(lambda: tracking.check_store("dnnprobe", create=True), "file store")
    assert message.startswith(f"MLflow store {tmp_path / 'mlruns'}: ")  # anchored on the repository ($DVC_ROOT)
    assert "MLFLOW_ALLOW_FILE_STORE=true" in message and "mlflow migrate-filestore" in message
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert tracking.check_store("dnnprobe", create=True)  # allowed: it works
    assert (tmp_path / "mlruns").is_dir()


@pytest.mark.parametrize("where", ["under a file", "s3 without boto3"])
def test_an_artifact_location_that_cannot_be_written_is_one_line_before_the_probe_and_the_report(
        tmp_path, tiny_stimuli, tiny_gram, tiny_activations, monkeypatch, where):
    import importlib.util

    from dnnprobe.stages.report import report

    if where == "under a file":
        (tmp_path / "a-file").write_text("not a folder")
        location, reason = (tmp_path / "a-file" / "artifacts").as_uri(), "cannot write (Not a directory)"
    elif importlib.util.find_spec("boto3") is not None:
        pytest.skip("boto3 is installed here")
    else:
        location, reason = "s3://lab-bucket/mlflow", "needs boto3, which is not installed (pip install boto3)"
    store = os.environ["MLFLOW_TRACKING_URI"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'other.db'}")
    run_probe(tmp_path / "results", tiny_stimuli, tiny_gram, tiny_activations)  # results for the report
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mlflow.set_tracking_uri(store)
    mlflow.create_experiment("dnnprobe", artifact_location=location)

    message = one_line_error(lambda: run_probe(tmp_path, tiny_stimuli, tiny_gram, tiny_activations), "artifact location")
    assert message.startswith(f"MLflow artifact location {location}: {reason}")
    assert not (tmp_path / "probe").exists() and not mlflow.search_runs(experiment_names=["dnnprobe"], output_format="list")
    # The report checks the same before it writes anything.
    figures = tmp_path / "figures"
    message = one_line_error(lambda: report(tiny_params(), tmp_path / "results" / "probe", figures, tmp_path / "plot.csv"),
                             "artifact location")
    assert message.startswith(f"MLflow artifact location {location}: {reason}")
    assert not figures.exists() and not (tmp_path / "plot.csv").exists()


def test_a_relative_store_uri_is_anchored_on_the_repository_not_a_temporary_copy(tmp_path, monkeypatch):
    """`dvc exp run --temp` and queued runs work in a copy under .dvc/tmp/exps that DVC deletes."""
    copy = tmp_path / ".dvc" / "tmp" / "exps" / "tmp1234"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    for given, anchored in (("sqlite:///mlflow.db", f"sqlite:///{tmp_path}/mlflow.db"),
                            ("sqlite:///runs/m.db?timeout=20", f"sqlite:///{tmp_path}/runs/m.db?timeout=20"),
                            ("file:mlruns", (tmp_path / "mlruns").as_uri()), ("./mlruns", str(tmp_path / "mlruns")),
                            ("sqlite:////abs/m.db", "sqlite:////abs/m.db"), ("sqlite:///:memory:", "sqlite:///:memory:"),
                            ("file:///abs/mlruns", "file:///abs/mlruns"), ("/abs/mlruns", "/abs/mlruns"),
                            ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
                            ("postgresql://u@db/mlflow", "postgresql://u@db/mlflow"), ("databricks", "databricks")):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", given)
        assert tracking.tracking_uri() == anchored, given
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    with tracking.probe_run("dnnprobe", "in a temporary copy", {"pca": 4}, "accuracy"):
        pass
    assert not (copy / "mlflow.db").exists() and not (copy / "mlruns").exists()
    runs = tracking_runs_in(tmp_path / "mlflow.db")
    assert runs == [("in a temporary copy", "FINISHED")]


def tracking_runs_in(database: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(database) as db:
        return list(db.execute("SELECT name, status FROM runs"))


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
    assert _statuses()["pca=4 cv=3 | alexnet random n=24"][0] == "FAILED"


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
