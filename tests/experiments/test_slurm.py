"""dnnprobe.experiments.slurm without a cluster: settings, time limits, and the refusals made before
anything is submitted (`dnnprobe cluster submit` run as a user runs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from helpers import REPO, copy_repo, env_without_tracking_uri, one_line_error


def submit(repo: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = env if env is not None else slurmless_env("http://127.0.0.1:5000")
    return subprocess.run([sys.executable, "-m", "dnnprobe.cli", "cluster", "submit", *args], cwd=repo, env=env,
                          capture_output=True, text=True)


def slurmless_env(tracking_uri: str | None) -> dict:
    """PATH without any SLURM command: the virtual environment and a folder holding only git."""
    env = env_without_tracking_uri()
    tools = Path(tempfile.mkdtemp(prefix="slurmless-"))
    (tools / "git").symlink_to(shutil.which("git"))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), str(tools)])
    env["PYTHONPATH"] = str(REPO / "src")
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


def error_line(result, command: str = "submit") -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stdout
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"dnnprobe cluster {command}: error: "), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("slurm") / "repo")


def test_slurm_time_limits_read_in_each_of_slurms_formats():
    from dnnprobe.experiments.slurm import time_seconds

    minute, hour, day = 60, 3600, 86400
    assert [time_seconds(t) for t in ("30", "10:30", "1:00:00", "2-0", "1-12:30", "1-00:00:05")] == [
        30 * minute, 10 * minute + 30, hour, 2 * day, day + 12 * hour + 30 * minute, day + 5]
    for bad in ("", "0", "1h", "1:2:3:4", "-5"):
        one_line_error(lambda: time_seconds(bad), "not one of SLURM's formats")


def test_slurm_settings_file_and_options_give_the_sbatch_options(tmp_path):
    from dnnprobe.experiments.slurm import load_settings

    (tmp_path / ".dnnprobe").mkdir()
    (tmp_path / ".dnnprobe" / "cluster.yaml").write_text(
        "partition: gpu\naccount: lab\ntime: '2:00:00'\ngpus: 1\nsbatch: [--constraint=a100]\n")
    settings = load_settings(tmp_path, {"cpus": 8, "qos": None})
    assert settings.sbatch_options() == ["--time=2:00:00", "--cpus-per-task=8", "--mem=4G", "--partition=gpu",
                                         "--account=lab", "--gpus=1", "--constraint=a100"]
    (tmp_path / ".dnnprobe" / "cluster.yaml").write_text("partiton: gpu\n")
    one_line_error(lambda: load_settings(tmp_path, {}), "unknown setting 'partiton'")


def test_slurm_missing_sbatch_is_one_line_before_anything_is_submitted(tiny_repo):
    line = error_line(submit(tiny_repo, "-S", "pca=4,8"))
    assert "no `sbatch` on PATH" in line
    assert not (tiny_repo / ".dvc" / "tmp" / "cluster").exists()


def test_slurm_time_limit_below_the_floor_is_refused(tiny_repo):
    line = error_line(submit(tiny_repo, "-S", "pca=4,8", "--time", "00:02:00", "--dry-run"))
    assert "time limit '00:02:00' is too short: a job needs at least 5 minutes" in line


def test_slurm_dirty_workspace_is_refused(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    (repo / "params.yaml").write_text((repo / "params.yaml").read_text().replace("pca: 4", "pca: 6"))
    line = error_line(submit(repo, "-S", "cv=3", "--dry-run"))
    assert "uncommitted changes (params.yaml)" in line


@pytest.mark.parametrize("uri, says", [(None, "MLFLOW_TRACKING_URI is not set"),
                                       ("sqlite:////shared/lab/mlflow.db", "is a SQLite file"),
                                       ("/shared/lab/mlruns", "MLflow's file store")])
def test_slurm_tracking_store_the_jobs_cannot_share_is_refused(tiny_repo, uri, says):
    line = error_line(submit(tiny_repo, "-S", "pca=4,8", "--dry-run", env=slurmless_env(uri)))
    assert says in line


def test_slurm_dry_run_prints_each_job_and_its_sbatch_settings(tiny_repo):
    result = submit(tiny_repo, "-S", "pca=4,8", "-S", "probe.classifier=logistic,lda", "--gpus", "1",
                    "--account", "lab", "--dry-run")
    assert result.returncode == 0, result.stderr
    jobs = [line for line in result.stdout.splitlines() if not line.startswith("would run")]
    assert [line.split()[0] for line in jobs] == ["pca4-classifier_logistic", "pca4-classifier_lda",
                                                  "pca8-classifier_logistic", "pca8-classifier_lda"]
    assert "-S pca=8 -S probe.classifier=lda" in jobs[3]
    sbatch = [line for line in result.stdout.splitlines() if line.startswith("would run: sbatch")]
    assert len(sbatch) == 2 and "--array=0-0" in sbatch[0] and "--array=0-2" in sbatch[1]
    assert all("--gpus=1" in line and "--account=lab" in line for line in sbatch)
    assert "--dependency=afterany:" in sbatch[1]
    assert not (tiny_repo / ".dvc" / "tmp" / "cluster").exists()  # a dry run writes nothing
