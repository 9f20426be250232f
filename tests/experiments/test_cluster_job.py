"""A cluster job whose experiment does not come home (a push that pushed nothing, SIGTERM from a time
limit or scancel) fails, and ends its MLflow runs as KILLED; `dnnprobe cluster status` ends those of the
failed, cancelled and timed-out experiments too. No SLURM: the job's steps and the store are stand-ins
(a SQLite store in tmp)."""

from __future__ import annotations

import json
import os
import signal

import pytest

from helpers import copy_repo, git


def test_slurm_job_fails_when_its_push_brought_nothing_home(tmp_path):
    from dnnprobe.experiments.cluster_job import NotHome, check_home

    repo, work = copy_repo(tmp_path / "repo"), tmp_path / "work"
    git(tmp_path, "clone", "-q", str(repo), str(work))
    head = git(repo, "rev-parse", "HEAD").strip()
    git(work, "commit", "-q", "--allow-empty", "-m", "the job's experiment")
    made = git(work, "rev-parse", "HEAD").strip()
    git(work, "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/pca8", made)
    with pytest.raises(NotHome, match="did not bring experiment pca8 home .* has no experiment of that name"):
        check_home(repo, work, "pca8")
    git(repo, "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/pca8", head)  # another sweep's pca8, kept by DVC
    with pytest.raises(NotHome, match=f"has another pca8, {head[:7]}"):
        check_home(repo, work, "pca8")
    git(repo, "fetch", "-q", str(work), f"refs/exps/{head[:2]}/{head[2:]}/pca8:refs/exps/{head[:2]}/{head[2:]}/pca8",
        "--force")
    check_home(repo, work, "pca8")  # came home


def job_files(tmp_path) -> str:
    record = {"id": "S1", "repo": str(tmp_path), "cache": str(tmp_path / "cache"), "scratch": str(tmp_path / "s"),
              "tracking_uri": "http://127.0.0.1:1", "experiments": [{"name": "pca8", "rev": "0" * 40, "sets": []}]}
    (tmp_path / "sweep.json").write_text(json.dumps(record))
    (tmp_path / "batch.json").write_text(json.dumps({"sweep": str(tmp_path / "sweep.json"), "names": ["pca8"]}))
    return str(tmp_path / "batch.json")


@pytest.mark.parametrize("how", ["not home", "sigterm"])
def test_slurm_job_whose_result_does_not_come_home_fails_and_ends_its_runs(tmp_path, monkeypatch, capsys, how):
    from dnnprobe.experiments import cluster_job

    ended = []
    monkeypatch.setattr(cluster_job, "end_runs", lambda record, name, why: ended.append(
        (record["id"], name, why, list((tmp_path / "s").iterdir()))))

    def run(record, experiment, work):
        work.mkdir(parents=True)
        if how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)  # SLURM's signal at the time limit or scancel
        raise cluster_job.NotHome("`dvc exp push` did not bring experiment pca8 home")

    monkeypatch.setattr(cluster_job, "run_experiment", run)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        if how == "sigterm":
            with pytest.raises(SystemExit) as exited:
                cluster_job.main(job_files(tmp_path), "0")
            assert exited.value.code == 128 + signal.SIGTERM
            assert ended and "was stopped (time limit or scancel)" in ended[0][2]
        else:
            assert cluster_job.main(job_files(tmp_path), "0") == 1
            assert ended and "did not bring experiment pca8 home" in ended[0][2]
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert ended[0][:2] == ("S1", "pca8")
    assert ended[0][3] == []  # the scratch copy removed before the store is asked (SIGKILL follows SIGTERM)
    assert " done in " not in capsys.readouterr().out


def test_slurm_status_ends_the_mlflow_runs_of_experiments_that_did_not_come_home(tmp_path):
    import mlflow

    from dnnprobe.experiments.cluster import end_unreturned_runs
    from dnnprobe.track.tags import ORPHANED_TAG, SWEEP_TAG

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("dnnprobe", artifact_location=(tmp_path / "mlruns").as_uri())
    runs = {}
    for sweep, name, status in (("S1", "lost", "FINISHED"), ("S1", "lost", "RUNNING"), ("S1", "home", "FINISHED"),
                                ("S0", "lost", "FINISHED"), ("S1", "lost", "FAILED")):
        run = client.create_run(experiment, tags={SWEEP_TAG: sweep, "dvc_exp_name": name})
        client.log_metric(run.info.run_id, "accuracy", 0.9)
        if status != "RUNNING":
            client.set_terminated(run.info.run_id, status)
        runs[(sweep, name, status)] = run.info.run_id
    lines = end_unreturned_runs({"id": "S1", "tracking_uri": uri}, {"lost": "timeout", "home": "completed"})
    assert lines == ["ended 2 MLflow run(s) of lost as KILLED (tag dnnprobe.orphaned): their results did not come "
                     "home"]
    status = {key: client.get_run(run_id).info.status for key, run_id in runs.items()}
    assert status == {("S1", "lost", "FINISHED"): "KILLED", ("S1", "lost", "RUNNING"): "KILLED",
                      ("S1", "home", "FINISHED"): "FINISHED", ("S0", "lost", "FINISHED"): "FINISHED",
                      ("S1", "lost", "FAILED"): "FAILED"}
    assert "did not come home" in client.get_run(runs[("S1", "lost", "FINISHED")]).data.tags[ORPHANED_TAG]
    assert end_unreturned_runs({"id": "S1", "tracking_uri": uri}, {"lost": "timeout"}) == []  # done once


def test_slurm_jobs_runs_are_tagged_with_their_sweep(monkeypatch):
    from dnnprobe.track.runs import run_tags
    from dnnprobe.track.tags import SWEEP_TAG, SWEEP_VARIABLE

    monkeypatch.setenv(SWEEP_VARIABLE, "20261207-080000")
    monkeypatch.setenv("DVC_EXP_NAME", "pca8")
    tags = run_tags("probe")
    assert tags[SWEEP_TAG] == "20261207-080000" and tags["dvc_exp_name"] == "pca8"
