"""dnnprobe.experiments.slurm without a cluster: settings, time limits, the job script, and the refusals
made before anything is submitted (`dnnprobe cluster submit` run as a user runs it). Where SLURM is asked,
it is a fake `sinfo` and `sbatch` on PATH (:func:`fake_slurm`) that log each call: a dry run must make
every check a real submit makes and submit nothing."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from helpers import REPO, copy_repo, env_without_tracking_uri, health_server, one_line_error


def submit(repo: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = env if env is not None else slurmless_env(health_server())
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


HERE = socket.gethostname().split(".")[0]
ACCEPTED = "sbatch: Job 9 to start at 2026-12-07T06:47:43 using 1 processors on nodes vm in partition debug"


def fake_slurm(folder: Path, sinfo: str | None = f"debug*|infinite|{HERE}", refusal: str | None = None) -> dict:
    """The environment of a login node whose SLURM is two scripts: `sinfo` prints `sinfo` (None: fails as an
    unconfigured SLURM does), `sbatch --test-only` accepts (or prints `refusal` and fails), a real `sbatch`
    prints job id 4242. Every sbatch call is logged to folder/sbatch.log."""
    env = slurmless_env(health_server())
    tools = Path(env["PATH"].split(os.pathsep)[-1])
    answer = f"printf '%s\\n' {shlex.quote(sinfo)}" if sinfo is not None else (
        "echo 'sinfo: fatal: Could not establish a configuration source' >&2; exit 1")
    (tools / "sinfo").write_text(f"#!/bin/bash\n{answer}\n")
    refuse = f"echo {shlex.quote(refusal)} >&2; exit 1" if refusal else f"echo {shlex.quote(ACCEPTED)} >&2; exit 0"
    (tools / "sbatch").write_text(f"#!/bin/bash\necho \"$*\" >> {folder / 'sbatch.log'}\n"
                                  f"if [ \"$1\" = --test-only ]; then {refuse}; fi\necho 4242\n")
    for name in ("sinfo", "sbatch"):
        (tools / name).chmod(0o755)
    return env


def sbatch_calls(folder: Path) -> list[str]:
    log = folder / "sbatch.log"
    return log.read_text().splitlines() if log.exists() else []


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
    for bad in ("", "1h", "1:2:3:4", "-5"):
        one_line_error(lambda: time_seconds(bad), "not one of SLURM's formats")
    for none in ("0", "00:00:00", "0-0"):  # SLURM's "no limit": refused, saying why
        one_line_error(lambda: time_seconds(none), "is SLURM's 'no limit', refused: a sweep's jobs need a limit")


def test_slurm_settings_file_and_options_give_the_sbatch_options(tmp_path):
    from dnnprobe.experiments.slurm import load_settings

    (tmp_path / ".dnnprobe").mkdir()
    (tmp_path / ".dnnprobe" / "cluster.yaml").write_text(
        "partition: gpu\naccount: lab\ntime: '2:00:00'\ngpus: 1\nsbatch: [--constraint=a100]\n")
    settings = load_settings(tmp_path, {"cpus": 8, "qos": None, "gres": "gpu:1"})
    assert settings.sbatch_options() == ["--time=2:00:00", "--cpus-per-task=8", "--mem=4G", "--partition=gpu",
                                         "--account=lab", "--gpus=1", "--gres=gpu:1", "--constraint=a100"]
    (tmp_path / ".dnnprobe" / "cluster.yaml").write_text("partiton: gpu\n")
    one_line_error(lambda: load_settings(tmp_path, {}), "unknown setting 'partiton'")


@pytest.mark.parametrize("dry_run", [(), ("--dry-run",)])
def test_slurm_missing_sbatch_is_one_line_before_anything_is_submitted(tiny_repo, dry_run):
    line = error_line(submit(tiny_repo, "-S", "pca=4,8", "--single-node", *dry_run))
    assert "no `sbatch` on PATH" in line
    assert not (tiny_repo / ".dvc" / "tmp" / "cluster").exists()


def test_slurm_time_limit_below_the_floor_is_refused(tiny_repo):
    line = error_line(submit(tiny_repo, "-S", "pca=4,8", "--time", "00:02:00", "--dry-run"))
    assert "time limit '00:02:00' is too short: a job needs at least 5 minutes" in line


@pytest.mark.parametrize("dry_run", [(), ("--dry-run",)])
@pytest.mark.parametrize("sinfo, options, says", [
    (None, (), "cannot reach SLURM (is it configured here: SLURM_CONF, slurmctld up?): `sinfo --noheader` failed: sinfo: "
               + "fatal: Could not establish a configuration source"),
    (f"debug*|infinite|{HERE}", ("--partition", "gpu"), "unknown partition 'gpu': this cluster has debug"),
    (f"debug*|1:00:00|{HERE}", ("--time", "2:00:00"), "time limit '2:00:00' is longer than partition 'debug' allows"
                                                       + " (60 minutes"),
    (f"debug|infinite|{HERE}", (), "this cluster has no default partition: name one (debug)"),
    (f"debug*|infinite|{HERE}\ndebug*|infinite|node2", (), "single_node is set but partition 'debug' has nodes node2, "),
])
def test_slurm_what_slurm_would_refuse_is_refused_by_a_dry_run_too(tiny_repo, tmp_path, sinfo, options, says, dry_run):
    env = fake_slurm(tmp_path, sinfo)
    line = error_line(submit(tiny_repo, "-S", "pca=4,8", "--single-node", *options, *dry_run, env=env))
    assert says in line
    assert sbatch_calls(tmp_path) == []  # refused before any sbatch call
    assert not (tiny_repo / ".dvc" / "tmp" / "cluster").exists()


def test_slurm_dry_run_asks_sbatch_test_only_and_reports_its_refusal(tiny_repo, tmp_path):
    refusal = "allocation failure: Requested node configuration is not available"
    env = fake_slurm(tmp_path, refusal=refusal)
    line = error_line(submit(tiny_repo, "-S", "pca=4,8", "--single-node", "--mem", "100000G", "--dry-run", env=env))
    assert line.endswith(f"sbatch would refuse the job: `sbatch --test-only` failed: {refusal}")
    [call] = sbatch_calls(tmp_path)
    assert call.startswith("--test-only ") and "--mem=100000G" in call


def test_slurm_node_local_repository_is_refused_without_single_node(tiny_repo, tmp_path):
    line = error_line(submit(tiny_repo, "-S", "pca=4,8", "--dry-run", env=fake_slurm(tmp_path)))
    assert f"the repository {tiny_repo} is under /tmp, this node's alone" in line and "--single-node" in line


def test_slurm_bad_params_are_refused_before_slurm_is_asked(tiny_repo, tmp_path):
    env = fake_slurm(tmp_path)
    line = error_line(submit(tiny_repo, "-S", "pca=4,abc", "--single-node", "--dry-run", env=env))
    assert line.endswith("error: experiment pca_abc: params.yaml: pca must be an integer, got 'abc'")
    line = error_line(submit(tiny_repo, "-S", "probe.C=-1", "--single-node", env=env))
    assert line.endswith("probe.C must be > 0, got -1.0")
    assert sbatch_calls(tmp_path) == []


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


def test_slurm_dry_run_prints_each_job_and_its_sbatch_settings(tiny_repo, tmp_path):
    env = fake_slurm(tmp_path)
    result = submit(tiny_repo, "-S", "pca=4,8", "-S", "probe.classifier=logistic,lda", "--gpus", "1",
                    "--gres", "gpu:1", "--account", "lab", "--single-node", "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    jobs = [line for line in result.stdout.splitlines()[:4]]
    assert [line.split()[0] for line in jobs] == ["pca4-classifier_logistic", "pca4-classifier_lda",
                                                  "pca8-classifier_logistic", "pca8-classifier_lda"]
    assert "-S pca=8 -S probe.classifier=lda" in jobs[3]
    sbatch = [line for line in result.stdout.splitlines() if line.startswith("would run: sbatch")]
    assert len(sbatch) == 2 and "--array=0-0" in sbatch[0] and "--array=0-2" in sbatch[1]
    assert all("--gpus=1" in line and "--gres=gpu:1" in line and "--account=lab" in line for line in sbatch)
    assert "--dependency=afterany:" in sbatch[1]
    assert result.stdout.count(f"  sbatch --test-only: {ACCEPTED}") == 2
    assert result.stdout.splitlines()[-1].startswith("dry run: every check passed")
    calls = sbatch_calls(tmp_path)  # SLURM asked about both batches (the second without its dependency), no job
    assert len(calls) == 2 and all(call.startswith("--test-only ") and "--gres=gpu:1" in call for call in calls)
    assert not any("--dependency" in call for call in calls)
    assert not (tiny_repo / ".dvc" / "tmp" / "cluster").exists()  # a dry run writes nothing


def script_gpus(settings, env: dict[str, str]) -> str:
    """CUDA_VISIBLE_DEVICES as a job's script leaves it for `dvc exp run` (the script up to its exec line)."""
    from dnnprobe.experiments.cluster import job_script_text

    text = job_script_text(settings)
    assert text.splitlines()[-1].startswith("exec ") and text.splitlines()[-1].endswith(
        '-m dnnprobe.experiments.cluster_job "$1" "$SLURM_ARRAY_TASK_ID"')
    preamble = "\n".join(text.splitlines()[:-1]) + '\necho "GPUS=${CUDA_VISIBLE_DEVICES-unset}"\n'
    base = {key: value for key, value in os.environ.items() if not key.startswith(("CUDA_", "SLURM_"))}
    result = subprocess.run(["bash", "-c", preamble], env={**base, **env}, capture_output=True, text=True, check=True)
    return result.stdout.splitlines()[-1].removeprefix("GPUS=")


@pytest.mark.parametrize("asked", [{"gpus": "1"}, {"gres": "gpu:a100:1"}, {"sbatch": ["--gpus-per-task=1"]}])
def test_slurm_job_with_a_gpu_keeps_the_gpus_slurm_gave_it(asked):
    from dnnprobe.experiments.slurm import Settings

    # SLURM sets CUDA_VISIBLE_DEVICES to the job's GPUs; `device: auto` (torch's cuda, the first visible) uses them.
    assert script_gpus(Settings(**asked), {"SLURM_JOB_GPUS": "3", "CUDA_VISIBLE_DEVICES": "0"}) == "0"
    assert script_gpus(Settings(**asked), {"CUDA_VISIBLE_DEVICES": "0"}) == "0"  # an older SLURM: no SLURM_JOB_GPUS


def test_slurm_job_without_a_gpu_hides_the_nodes_gpus_unless_slurm_gave_it_one():
    from dnnprobe.experiments.slurm import Settings

    # Asked for none: a GPU number inherited from the login shell must not send `auto` to another job's GPU.
    assert script_gpus(Settings(), {"CUDA_VISIBLE_DEVICES": "0"}) == ""
    assert script_gpus(Settings(), {}) == ""
    # A partition that gives GPUs by itself (SLURM_JOB_GPUS set): kept.
    assert script_gpus(Settings(), {"SLURM_JOB_GPUS": "2", "CUDA_VISIBLE_DEVICES": "0"}) == "0"


@pytest.mark.parametrize("option, instead", [
    ("--time=2:00:00", "use --time (or `time:` in .dnnprobe/cluster.yaml) instead"), ("-t", "use --time"),
    ("--partition=gpu", "use --partition"), ("--gres=gpu:2", "use --gres"), ("--gpus=2", "use --gpus"),
    ("--mem=8G", "use --mem"), ("--cpus-per-task=8", "use --cpus"), ("-c8", "use --cpus"),
    ("--array=0-9", "use nothing: dnnprobe cluster submit sets it"), ("--output=x.log", "use nothing")])
def test_slurm_sbatch_options_dnnprobe_sets_itself_are_refused(tiny_repo, tmp_path, option, instead):
    line = error_line(submit(tiny_repo, "-S", "pca=4,8", "--single-node", f"--sbatch-option={option}", "--dry-run",
                             env=fake_slurm(tmp_path)))
    assert f"--sbatch-option {option!r}: dnnprobe sets " in line and instead in line
    assert sbatch_calls(tmp_path) == []


@pytest.mark.parametrize("option, own", [("--time 1", "--time"), ("--tim=1", "--time"), ("--part=gpu", "--partition"),
                                         ("--wrap=hostname", "--wrap"), ("-t1", "-t"), ("--exclusive", None),
                                         ("--constraint=avx512", None), ("--mail-type=END", None)])
def test_slurm_own_options_are_found_however_spelled(option, own):
    """One argument holding a space, or an abbreviation sbatch accepts, must not slip past the check."""
    from dnnprobe.core.errors import DnnprobeError
    from dnnprobe.experiments.slurm import Settings, check_settings, own_option

    assert own_option(option) == own
    if own:
        with pytest.raises(DnnprobeError, match=f"dnnprobe sets {own} itself"):
            check_settings(Settings(sbatch=[option]))
    else:
        check_settings(Settings(sbatch=[option]))


def test_slurm_resources_sbatch_refuses_are_named_with_their_option(tiny_repo, tmp_path):
    line = error_line(submit(tiny_repo, "-S", "pca=4,8", "--single-node", "--mem", "4X", env=fake_slurm(tmp_path)))
    assert line.endswith("error: --mem '4X': not a SLURM memory size (a whole number with K, M, G or T: 4G, 500M; "
                         "no unit: megabytes)")
    line = error_line(submit(tiny_repo, "-S", "pca=4,8", "--single-node", "--cpus", "64", "--dry-run",
                             env=fake_slurm(tmp_path, refusal="sbatch: error: CPU count per node can not be satisfied")))
    assert "error: --cpus 64: sbatch would refuse the job: `sbatch --test-only` failed: sbatch: error: CPU count" in line


@pytest.mark.parametrize("uri, says", [("http://127.0.0.1:1", "MLFLOW_TRACKING_URI=http://127.0.0.1:1: tracking server "
                                                              "not reachable ("),
                                       ("databricks", "would refuse")])  # databricks: a server, not "a folder"
def test_slurm_tracking_server_is_checked_at_submit(tiny_repo, tmp_path, uri, says):
    env = fake_slurm(tmp_path, refusal="would refuse")
    line = error_line(submit(tiny_repo, "-S", "pca=4,8", "--single-node", "--dry-run", "--tracking-uri", uri, env=env))
    assert says in line and "folder" not in line


def sweep_record(repo: Path, sweep: str, sets: list[str], job: str = "4242_0", name: str = "pca8") -> None:
    folder = repo / ".dvc" / "tmp" / "cluster" / sweep
    folder.mkdir(parents=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    experiment = {"name": name, "rev": head, "sets": sets, "queued": False, "job": job,
                  "log": str(folder / "logs" / f"{job}.log"), "history": []}
    (folder / "sweep.json").write_text(json.dumps({"id": sweep, "repo": str(repo), "cache": str(repo / "c"),
                                                   "scratch": None, "tracking_uri": health_server(),
                                                   "settings": {"single_node": True}, "experiments": [experiment]}))


def slurm_says(env: dict, state: str) -> dict:
    """A fake `squeue` and `sacct` on PATH: every job is in `state`; `scancel` accepts."""
    tools = Path(env["PATH"].split(os.pathsep)[-1])
    for name in ("squeue", "sacct"):
        (tools / name).write_text(f"#!/bin/bash\necho '4242_0|{state}'\n")
    (tools / "scancel").write_text("#!/bin/bash\nexit 0\n")
    for name in ("squeue", "sacct", "scancel"):
        (tools / name).chmod(0o755)
    return env


def test_slurm_name_of_an_unfinished_sweeps_experiment_is_refused(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    sweep_record(repo, "20261207-010101", ["pca=8"])
    env = slurm_says(fake_slurm(tmp_path), "RUNNING")
    line = error_line(submit(repo, "-S", "pca=4,8", "--single-node", "--dry-run", env=env))
    assert "experiment 'pca8' is running in sweep 20261207-010101 (job 4242_0): two experiments of one name" in line
    assert sbatch_calls(tmp_path) == []
    slurm_says(env, "COMPLETED")  # finished (and not home: a failure), so the name is free again
    assert submit(repo, "-S", "pca=4,8", "--single-node", "--dry-run", env=env).returncode == 0


def cluster_command(repo: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dnnprobe.cli", "cluster", *args], cwd=repo, env=env,
                          capture_output=True, text=True)


def test_slurm_resubmit_dry_run_says_so_and_rechecks_params(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    sweep_record(repo, "20261207-010101", ["pca=8"])
    env = slurm_says(fake_slurm(tmp_path), "FAILED")
    result = cluster_command(repo, env, "resubmit", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "resubmitted" not in result.stdout
    assert result.stdout.splitlines()[-1] == "dry run: would resubmit pca8; nothing submitted"
    assert all(call.startswith("--test-only ") for call in sbatch_calls(tmp_path))
    sweep_record(repo, "20261207-020202", ["pca=abc"])
    line = error_line(cluster_command(repo, env, "resubmit", "--dry-run"), "resubmit")
    assert line.endswith("error: experiment pca8: params.yaml: pca must be an integer, got 'abc'")


def test_slurm_status_and_cancel_without_slurms_tools_say_so(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    sweep_record(repo, "20261207-010101", ["pca=8"])
    line = error_line(cluster_command(repo, slurmless_env(None), "status"), "status")
    assert "no `squeue`/`sacct` on PATH: cannot ask SLURM the state of jobs 4242; run this on a SLURM login node" in line
    line = error_line(cluster_command(repo, slurmless_env(None), "cancel", "pca8"), "cancel")
    assert "no `squeue`/`sacct` on PATH" in line
    env = slurm_says(slurmless_env(None), "RUNNING")
    (Path(env["PATH"].split(os.pathsep)[-1]) / "scancel").unlink()
    line = error_line(cluster_command(repo, env, "cancel", "pca8"), "cancel")
    assert "no `scancel` on PATH: cannot cancel jobs 4242_0; run this on a SLURM login node" in line
