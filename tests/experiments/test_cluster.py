"""`dnnprobe cluster` against a real SLURM (the `slurm_cluster` fixture: a one-node cluster started by
scripts/slurm-local when none is configured): a 2 pca x 2 classifier sweep of the tiny demo, its results
as DVC experiments equal to local `dvc exp run`s, the extraction computed once, MLflow runs on a server,
a job cancelled mid-run never shown as a result, and resubmitted. The cluster is this one machine, so the
repository and its cache in /tmp are every node's: `--single-node` says so (and submit checks it with sinfo)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from helpers import REPO, copy_repo, dvc, env_without_tracking_uri, git, health_server

GRID = ("-S", "pca=4,8", "-S", "probe.classifier=logistic,lda")
NAMES = ["pca4-classifier_logistic", "pca4-classifier_lda", "pca8-classifier_logistic", "pca8-classifier_lda"]


def cluster(repo: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dnnprobe.cli", "cluster", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)


def slurm_env(slurm_cluster: dict, tracking_uri: str) -> dict:
    env = {**env_without_tracking_uri(), **{k: v for k, v in slurm_cluster.items() if k.startswith("SLURM")}}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}/usr/sbin{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(REPO / "src")
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


def states(repo: Path, env: dict) -> dict[str, str]:
    result = cluster(repo, env, "status")
    assert result.returncode == 0, result.stderr
    return dict(re.findall(r"^  (\S+)\s+\S+\s+(\S+)$", result.stdout, re.M))


def wait_for(condition, what: str, limit: float = 420):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(3)
    raise AssertionError(f"timed out waiting for {what}")


def metrics(repo: Path, name: str) -> dict:
    """reports/metrics.json of DVC experiment `name` (its ref: refs/exps/<baseline>/<name>)."""
    refs = [ref for ref in git(repo, "for-each-ref", "--format=%(refname)", "refs/exps").split()
            if ref.endswith(f"/{name}")]
    assert len(refs) == 1, refs
    return json.loads(git(repo, "show", f"{refs[0]}:reports/metrics.json"))


def test_slurm_sweep_matches_local_runs_computes_extraction_once_and_resubmits_a_cancelled_job(
        tmp_path, slurm_cluster, mlflow_server):
    repo = copy_repo(tmp_path / "repo")
    env = slurm_env(slurm_cluster, mlflow_server.url)
    scratch = tmp_path / "scratch"
    # The reference: two of the four settings (both pca values, both classifiers) run locally, in a copy with
    # its own DVC cache, while the cluster works.
    local = copy_repo(tmp_path / "local")
    reference = subprocess.Popen(
        ["bash", "-c", "dvc exp run -q -n a -S pca=4 -S probe.classifier=logistic && "
                       "dvc exp run -q -n b -S pca=8 -S probe.classifier=lda"],
        cwd=local, env={**env_without_tracking_uri(), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'local.db'}"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    started = time.monotonic()
    submitted = cluster(repo, env, "submit", *GRID, "--cpus", "1", "--time", "00:10:00", "--scratch", str(scratch),
                        "--single-node")
    assert submitted.returncode == 0, submitted.stderr
    assert time.monotonic() - started < 60  # returns at once: nothing waits on the login node
    sweep = next((repo / ".dvc" / "tmp" / "cluster").glob("*/sweep.json")).parent
    assert sorted(states(repo, env)) == sorted(NAMES)

    # Cancel one mid-run: its stages have started.
    victim = NAMES[1]  # the first task of the array that runs after the first experiment
    record = json.loads((sweep / "sweep.json").read_text())
    log = Path(next(item["log"] for item in record["experiments"] if item["name"] == victim))
    wait_for(lambda: log.exists() and "Running stage" in log.read_text(), f"{victim} to run a stage")
    cancelled = cluster(repo, env, "cancel", victim)
    assert cancelled.returncode == 0 and victim in cancelled.stdout, cancelled.stderr
    wait_for(lambda: states(repo, env)[victim] == "cancelled", f"{victim} to read cancelled")
    shown = cluster(repo, env, "status").stdout
    assert f"--- {victim} (cancelled)" in shown and "resubmit" in shown

    resubmitted = cluster(repo, env, "resubmit")
    assert resubmitted.returncode == 0 and f"resubmitted: {victim}" in resubmitted.stdout, resubmitted.stderr
    finished = wait_for(lambda: (lambda s: s if not set(s.values()) & {"pending", "running"} else None)(
        states(repo, env)), "the sweep to finish")
    wall = time.monotonic() - started
    assert finished == dict.fromkeys(NAMES, "completed"), cluster(repo, env, "status").stdout

    # The four came home as DVC experiments of the user's repository, named as submitted.
    show = json.loads(dvc(repo, "exp", "show", "--json"))
    names = {rev.get("name") for commit in show for exp in (commit.get("experiments") or []) for rev in exp["revs"]}
    assert names == set(NAMES)
    compare = subprocess.run([sys.executable, "-m", "dnnprobe.cli", "compare"], cwd=repo, env=env,
                             capture_output=True, text=True)
    assert compare.returncode == 0 and all(name in compare.stdout for name in NAMES), compare.stderr
    figure = subprocess.run([sys.executable, "-m", "dnnprobe.cli", "sweep"], cwd=repo, env=env, capture_output=True,
                            text=True)
    assert figure.returncode == 0 and (repo / "reports" / "sweep" / "sweep_pca.csv").exists(), figure.stderr

    # Equal to the same experiments run locally with `dvc exp run`.
    assert reference.wait(timeout=600) == 0, reference.stdout.read()
    assert metrics(repo, NAMES[0]) == metrics(local, "a")
    assert metrics(repo, NAMES[3]) == metrics(local, "b")

    # The extraction ran once for all four (the first experiment's job); the others restored it from the cache.
    logs = "".join(path.read_text() for path in (sweep / "logs").glob("*.log"))
    assert logs.count("Running stage 'extract'") == 1, logs.count("Running stage 'extract'")
    completed_others = [path for path in (sweep / "logs").glob("*.log")
                        if re.search(r"^dnnprobe cluster: experiment \S+ done in", path.read_text(), re.M)
                        and "Running stage 'extract'" not in path.read_text()]
    assert len(completed_others) == 3  # two at once, then the third or the resubmitted one
    assert all("Stage 'extract' is cached" in path.read_text() for path in completed_others)
    assert not list(scratch.iterdir())  # every job removed its copy, the cancelled one too

    import mlflow

    client = mlflow.MlflowClient(mlflow_server.url)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    finished_runs = {run.data.tags.get("dvc_exp_name") for run in runs if run.info.status == "FINISHED"
                     and "mlflow.parentRunId" not in run.data.tags}
    assert set(NAMES) <= finished_runs
    print(f"slurm sweep of 4 tiny experiments (one cancelled and resubmitted): {wall:.0f} s")


def test_slurm_unknown_partition_is_refused_before_submitting(tmp_path, slurm_cluster):
    repo = copy_repo(tmp_path / "repo")
    env = slurm_env(slurm_cluster, health_server())
    for dry_run in ((), ("--dry-run",)):  # a dry run refuses what submitting would
        result = cluster(repo, env, "submit", "-S", "pca=4,8", "--partition", "gpu-a100", "--single-node", *dry_run)
        assert result.returncode == 1, result.stdout
        assert result.stderr.strip().splitlines() == [result.stderr.strip()]
        assert "unknown partition 'gpu-a100': this cluster has debug" in result.stderr
    assert not (repo / ".dvc" / "tmp" / "cluster").exists()
    queue = subprocess.run(["squeue", "--noheader"], env=env, capture_output=True, text=True)
    assert queue.stdout.strip() == ""


def test_slurm_local_script_stops_every_daemon_it_started(tmp_path, slurm_cluster):
    import socket

    with socket.socket() as first, socket.socket() as second:
        first.bind(("127.0.0.1", 0))
        second.bind(("127.0.0.1", 0))
        ports = first.getsockname()[1], second.getsockname()[1]
    script = REPO / "scripts" / "slurm-local"
    env = {**os.environ, "SLURM_LOCAL_PORT": str(20000 + (ports[0] + 7) % 20000), "SLURM_LOCAL_DB_PORT": str(ports[1])}
    started = subprocess.run([str(script), "start", str(tmp_path / "c")], env=env, capture_output=True, text=True)
    pids = {path.stem: int(path.read_text()) for path in (tmp_path / "c" / "run").glob("*.pid")}
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip() == f"export SLURM_CONF={tmp_path / 'c' / 'slurm.conf'}"
        assert set(pids) == {"munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd"}
        job = subprocess.run(["sbatch", "--parsable", "--wait", f"--output={tmp_path / 'job.out'}", "--wrap", "true"],
                             capture_output=True, text=True, cwd=tmp_path,
                             env={**env, "SLURM_CONF": str(tmp_path / "c" / "slurm.conf")}, timeout=120)
        assert job.returncode == 0, job.stderr
    finally:
        subprocess.run([str(script), "stop", str(tmp_path / "c")], env=env, capture_output=True)
    def running(pid: int) -> bool:  # a zombie (exited, not yet reaped by PID 1) does not run
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    alive = [name for name, pid in pids.items() if running(pid)]
    assert alive == [] and not list((tmp_path / "c" / "run").glob("*.pid"))


def test_slurm_sbatch_refusal_leaves_no_sweep_behind(tmp_path, slurm_cluster):
    repo = copy_repo(tmp_path / "repo")
    env = slurm_env(slurm_cluster, health_server())
    # A dry run asks SLURM (sbatch --test-only) and is refused as the submit is; an accepted one submits nothing.
    dry = cluster(repo, env, "submit", "-S", "pca=4,8", "--mem", "100000G", "--single-node", "--dry-run")
    assert dry.returncode == 1 and dry.stderr.strip().splitlines() == [dry.stderr.strip()], dry.stdout
    assert "sbatch would refuse the job: `sbatch --test-only` failed: " in dry.stderr
    accepted = cluster(repo, env, "submit", "-S", "pca=4,8", "--single-node", "--dry-run")
    assert accepted.returncode == 0 and accepted.stdout.count("  sbatch --test-only: sbatch: Job ") == 2, accepted.stderr
    result = cluster(repo, env, "submit", "-S", "pca=4,8", "--mem", "100000G", "--single-node")  # more than any node has
    assert result.returncode == 1, result.stdout
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    # SLURM's reason names no resource: every resource option is named before it
    assert "dnnprobe cluster submit: error: --cpus 2, --mem 100000G: sbatch refused the job: " in result.stderr
    assert not list((repo / ".dvc" / "tmp" / "cluster").iterdir())
    queue = subprocess.run(["squeue", "--noheader"], env=env, capture_output=True, text=True)
    assert queue.stdout.strip() == ""
