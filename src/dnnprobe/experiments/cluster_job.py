"""One experiment of a cluster sweep, as its SLURM array task runs it (``python -m
dnnprobe.experiments.cluster_job BATCH TASK``; the job script that ``dnnprobe cluster submit`` writes).

In a scratch copy of the repository (never the user's workspace, so jobs never meet on one DVC
``rw.lock``, treeverse/dvc#7419): clone at the experiment's commit, point DVC at the one shared cache
(``cache.shared group``, ``cache.type reflink,copy``: no file of the copy is a link into the cache),
``dvc exp run -n NAME -S ...``, then ``dvc exp push`` the experiment to the user's repository, its git
remote. Stages the experiments share are restored from the shared cache (DVC's run cache) instead of
computed again. The scratch copy is removed at the end, also on SIGTERM (scancel, the time limit). A
failed stage pushes nothing: DVC caches no output of a failed stage, so no half-written output either.

A job whose experiment did not come home fails (exit status 1): a ``dvc exp push`` that pushed nothing
(an experiment of that name already in the repository, from another sweep) or failed, SIGTERM (the
time limit, ``scancel``). Its MLflow runs (tagged with the sweep and the experiment's name) are then
ended as KILLED with the tag ``dnnprobe.orphaned`` saying why: no FINISHED run for a result that is
not there.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


class NotHome(Exception):
    """The experiment ran but did not come home to the user's repository."""


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def _exp_ref(repo: Path, name: str) -> tuple[str, str] | None:
    """(ref, commit) of DVC experiment `name` in `repo`, or None."""
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps"], cwd=repo,
                          capture_output=True, text=True).stdout.split("\n")
    found = [line.split() for line in refs if line.strip() and not line.startswith("refs/exps/celery/")
             and line.split()[0].rsplit("/", 1)[-1] == name]
    return (found[0][0], found[0][1]) if found else None


def check_home(repo: Path, work: Path, name: str) -> None:
    """The experiment `dvc exp push` was to bring home is in the user's repository, as this job made it."""
    made, home = _exp_ref(work, name), _exp_ref(repo, name)
    if made is None or home is None or made != home:
        raise NotHome(f"`dvc exp push` did not bring experiment {name} home ({repo} has "
                      f"{'no experiment of that name' if home is None else 'another ' + name + ', ' + home[1][:7]})")


def end_runs(record: dict, name: str, why: str) -> None:
    """End the MLflow runs this job made as KILLED, tagged with why (its result did not come home)."""
    try:
        from dnnprobe.track.owners import end_sweep_runs

        ended = end_sweep_runs(record["tracking_uri"], record["id"], [name], why)
        print(f"dnnprobe cluster: ended {len(ended)} MLflow run(s) of {name} as KILLED ({why})", flush=True)
    except Exception as exc:  # noqa: BLE001 - the job fails anyway; `dnnprobe cluster status` tries again
        print(f"dnnprobe cluster: could not end {name}'s MLflow runs as KILLED: {str(exc).splitlines()[0]}",
              flush=True)


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    print(f"+ {' '.join(command)}", flush=True)
    subprocess.run(command, cwd=cwd, env=env, check=True)


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name  # the virtual environment this runs in
    return str(beside) if beside.exists() else name


def run_experiment(record: dict, experiment: dict, work: Path) -> None:
    repo = Path(record["repo"])
    dvc = _tool("dvc")
    _run(["git", "clone", "--quiet", "--no-checkout", str(repo), str(work)], cwd=work.parent)
    _run(["git", "checkout", "--quiet", "--detach", experiment["rev"]], cwd=work)
    for key in ("user.name", "user.email"):  # DVC commits the experiment: the user's identity, else ours
        found = subprocess.run(["git", "config", key], cwd=repo, capture_output=True, text=True).stdout.strip()
        _run(["git", "config", key, found or ("dnnprobe cluster" if key == "user.name" else "dnnprobe@localhost")],
             cwd=work)
    _run([dvc, "cache", "dir", "--local", record["cache"]], cwd=work)
    _run([dvc, "config", "--local", "cache.shared", "group"], cwd=work)
    _run([dvc, "config", "--local", "cache.type", "reflink,copy"], cwd=work)
    env = {key: value for key, value in os.environ.items()
           if key not in ("DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "PYTHONPATH")}
    env["MLFLOW_TRACKING_URI"] = record["tracking_uri"]
    env["DNNPROBE_CLUSTER_SWEEP"] = record["id"]  # tags its MLflow runs (dnnprobe.track.tags.SWEEP_VARIABLE)
    command = [dvc, "exp", "run", "--name", experiment["name"]]
    for setting in experiment["sets"]:
        command += ["--set-param", setting]
    _run(command, cwd=work, env=env)
    _run([dvc, "exp", "push", "--no-cache", str(repo), experiment["name"]], cwd=work, env=env)
    check_home(repo, work, experiment["name"])


def main(batch_path: str, task: str) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    try:  # MLflow imported now, not after SIGTERM: SLURM's SIGKILL follows it after KillWait (often 30 s, or 5)
        import dnnprobe.track.owners  # noqa: F401
    except Exception:  # noqa: BLE001 - end_runs says so if it is needed
        pass
    batch = json.loads(Path(batch_path).read_text())
    record = json.loads(Path(batch["sweep"]).read_text())
    experiment = next(item for item in record["experiments"] if item["name"] == batch["names"][int(task)])
    scratch = Path(record.get("scratch") or os.environ.get("TMPDIR") or "/tmp")
    job = f"{os.environ.get('SLURM_ARRAY_JOB_ID', os.getpid())}_{task}"
    work = scratch / f"dnnprobe-{job}-{experiment['name']}"
    started = time.perf_counter()
    print(f"dnnprobe cluster: experiment {experiment['name']} (job {job}, node {os.uname().nodename}) at "
          f"{experiment['rev'][:7]} in {work}, shared DVC cache {record['cache']}", flush=True)
    try:
        scratch.mkdir(parents=True, exist_ok=True)
        run_experiment(record, experiment, work)
    except subprocess.CalledProcessError as exc:
        print(f"dnnprobe cluster: experiment {experiment['name']} failed: `{' '.join(exc.cmd[:3])} ...` exited with "
              f"status {exc.returncode}", flush=True)
        if exc.cmd[1:3] == ["exp", "push"]:
            shutil.rmtree(work, ignore_errors=True)
            end_runs(record, experiment["name"], f"job {job}: `dvc exp push` failed, the experiment did not come home")
        return 1
    except NotHome as exc:
        print(f"dnnprobe cluster: experiment {experiment['name']} failed: {exc}", flush=True)
        shutil.rmtree(work, ignore_errors=True)
        end_runs(record, experiment["name"], f"job {job}: {exc}")
        return 1
    except SystemExit:  # SIGTERM: the time limit or scancel (SLURM sends SIGKILL a little later)
        print(f"dnnprobe cluster: experiment {experiment['name']} stopped by SIGTERM (time limit or scancel)",
              flush=True)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # SLURM signals every process of the job: finish this
        shutil.rmtree(work, ignore_errors=True)  # first: SIGKILL follows (KillWait), and the store may be slow
        end_runs(record, experiment["name"], f"job {job} was stopped (time limit or scancel) before its "
                 "experiment came home")
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"dnnprobe cluster: experiment {experiment['name']} done in {time.perf_counter() - started:.1f} s",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
