"""Runs whose process was killed: ended as KILLED by the next probe or report on the host."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow

from helpers import run_statuses, runs_by_name
from dnnprobe.track.lookup import log_artifacts_to_probe_run
from dnnprobe.track.owners import _process_start, owner_tags
from dnnprobe.track.runs import probe_run
from dnnprobe.track.store import ensure_experiment
from dnnprobe.track.tags import HOST_TAG, PID_TAG, PROCESS_START_TAG


def test_every_run_names_the_process_that_owns_it():
    with probe_run("dnnprobe", "t", {"pca": 4}, "accuracy") as run:
        run.log_layer("fc1", [0.5, 0.7], 0.6, 0.1)
    owner = owner_tags()
    assert owner[HOST_TAG] == socket.gethostname() and owner[PID_TAG] == str(os.getpid())
    if sys.platform.startswith("linux"):  # field 22 of /proc/<pid>/stat; the command name has no spaces here
        assert owner[PROCESS_START_TAG] == Path(f"/proc/{os.getpid()}/stat").read_text().split()[21]
    runs = runs_by_name()
    assert sorted(runs) == ["fc1", "t"]
    for run in runs.values():
        assert {key: run.data.tags.get(key) for key in owner} == owner


def test_runs_of_a_killed_process_are_ended_as_killed_and_no_others():
    experiment_id = ensure_experiment("dnnprobe")
    client = mlflow.tracking.MlflowClient()
    host = socket.gethostname()
    gone = subprocess.Popen(["sleep", "60"])
    gone_start = _process_start(gone.pid)
    gone.kill()
    gone.wait()
    dead = {HOST_TAG: host, PID_TAG: str(gone.pid), PROCESS_START_TAG: gone_start}
    parent = client.create_run(experiment_id, run_name="killed", tags=dead)
    client.create_run(experiment_id, run_name="killed-layer", tags={**dead, "mlflow.parentRunId": parent.info.run_id})
    client.create_run(experiment_id, run_name="alive", tags=owner_tags())
    # Our own pid, but a process started at another time had it: the pid was reused, that process is gone.
    client.create_run(experiment_id, run_name="reused-pid",
                      tags={**owner_tags(), PROCESS_START_TAG: "1"})
    client.create_run(experiment_id, run_name="other-host", tags={**dead, HOST_TAG: "some-other-host"})
    client.create_run(experiment_id, run_name="untagged")

    with probe_run("dnnprobe", "next", {"pca": 4}, "accuracy"):
        pass

    assert run_statuses() == {
        "killed": ("KILLED", f"process {gone.pid} on {host} was gone"),
        "killed-layer": ("KILLED", f"process {gone.pid} on {host} was gone"),
        "reused-pid": ("KILLED", f"process {os.getpid()} on {host} was gone"),
        "alive": ("RUNNING", None), "other-host": ("RUNNING", None), "untagged": ("RUNNING", None),
        "next": ("FINISHED", None),
    }


KILLED_DURING_A_LAYER = textwrap.dedent("""
    import os, signal
    import mlflow
    from dnnprobe.track.runs import probe_run

    with probe_run("dnnprobe", "killed", {"pca": 4}, "accuracy") as run:
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
    assert run_statuses() == {"killed": ("RUNNING", None), "conv1": ("FINISHED", None), "conv2": ("RUNNING", None)}
    pid = runs_by_name()["killed"].data.tags[PID_TAG]

    with probe_run("dnnprobe", "next", {"pca": 4}, "accuracy"):
        pass

    gone = f"process {pid} on {socket.gethostname()} was gone"
    assert run_statuses() == {"killed": ("KILLED", gone), "conv1": ("FINISHED", None), "conv2": ("KILLED", gone),
                           "next": ("FINISHED", None)}


def test_the_report_stage_also_ends_runs_of_killed_processes(tmp_path):
    with probe_run("dnnprobe", "probe", {"pca": 4}, "accuracy") as run:
        run.record_summary("a" * 64)
    gone = subprocess.Popen(["sleep", "60"])
    gone.kill()
    gone.wait()
    client = mlflow.tracking.MlflowClient()
    client.create_run(run.experiment_id, run_name="killed",
                      tags={**owner_tags(), PID_TAG: str(gone.pid)})
    figure = tmp_path / "figure.png"
    figure.write_bytes(b"not really a png")
    assert log_artifacts_to_probe_run("dnnprobe", "a" * 64, [figure], "report") is None
    assert run_statuses()["killed"] == ("KILLED", f"process {gone.pid} on {socket.gethostname()} was gone")
    assert [a.path for a in client.list_artifacts(run.run_id, "report")] == ["report/figure.png"]
