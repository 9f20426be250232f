"""``dnnprobe cluster``: a sweep of DVC experiments on a SLURM cluster, one array task per experiment.

``submit`` turns the queued DVC experiments and/or a grid (``-S pca=4,8``) into SLURM array jobs and
returns at once (nothing stays alive on the login node); each task runs its experiment in a scratch
copy of the repository with one shared DVC cache and pushes it home as a DVC experiment of this
repository (:mod:`dnnprobe.experiments.cluster_job`). ``status`` lists each experiment's job and state
(and the log tail of a failure), ``cancel`` cancels, ``resubmit`` reruns the failed, cancelled and
timed-out ones. Resources: ``.dnnprobe/cluster.yaml`` and the options (:mod:`dnnprobe.experiments.slurm`).
Before any ``sbatch``, every check runs (:mod:`dnnprobe.experiments.cluster_checks`: paths every node
reaches, each experiment's params; :func:`dnnprobe.experiments.slurm.check_cluster`); ``--dry-run``
runs them all too, then ``sbatch --test-only`` for each batch, so it never says "would run" for jobs
SLURM would refuse.

The first experiment runs alone, the others after it (``--dependency=afterany``): stages they share
(stimuli, network, extraction when only probe settings differ) are computed once, by the first, and
restored from the shared cache by the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.experiments import slurm
from dnnprobe.experiments.cluster_checks import check_params, check_storage, sweep_cache
from dnnprobe.experiments.cluster_plan import (SWEEPS, Planned, check_clean, check_names, existing_names,
                                               find_sweep, grid, new_sweep_dir, queued_experiments, read_record,
                                               repo_root, write_record)

RERUN = ("failed", "cancelled", "timeout")  # the states `resubmit` reruns


def check_tracking(uri: str | None) -> str:
    """The jobs' MLflow store must be a server every node reaches: not a file in a copy, not SQLite on NFS."""
    if not uri:
        raise DnnprobeError("MLFLOW_TRACKING_URI is not set: each job would log its probe run to a SQLite file in "
                            "its scratch copy, deleted with it; set it to the team's server "
                            "(export MLFLOW_TRACKING_URI=http://host:5000) or pass --tracking-uri")
    from dnnprobe.track.store import BARE_SCHEMES, check_reachable

    if uri in BARE_SCHEMES:  # Databricks' managed MLflow: a server, with its credentials from the environment
        return uri
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else "file"
    if scheme == "sqlite":
        raise DnnprobeError(f"MLFLOW_TRACKING_URI={uri} is a SQLite file: jobs on several nodes would write it at "
                            "once over the shared file system, where SQLite's locks are unreliable (a corrupt or "
                            "'database is locked' store); run `mlflow server` and set MLFLOW_TRACKING_URI=http://...")
    if scheme == "file" or len(scheme) == 1:  # a path (C: on Windows) or file:
        raise DnnprobeError(f"MLFLOW_TRACKING_URI={uri} is a folder (MLflow's file store, deprecated and refused by "
                            "MLflow 3): run `mlflow server` and set MLFLOW_TRACKING_URI=http://...")
    check_reachable(uri)  # as the stages check it: not after the compute, in every job
    return uri


def dvc_cache(repo: Path) -> str:
    """This repository's DVC cache folder (``dvc cache dir``), the jobs' shared cache by default."""
    dvc = Path(sys.executable).parent / "dvc"
    result = subprocess.run([str(dvc) if dvc.exists() else "dvc", "cache", "dir"], cwd=repo, capture_output=True,
                            text=True)
    if result.returncode != 0 or not result.stdout.strip():
        raise DnnprobeError(f"`dvc cache dir` failed in {repo}: {result.stderr.strip()[-300:]}")
    return str(Path(result.stdout.strip()).resolve())


def job_script_text(settings: slurm.Settings) -> str:
    """The batch script every task runs: this Python, this dnnprobe, the batch file and the task index.

    GPUs: SLURM sets CUDA_VISIBLE_DEVICES to the GPUs it gave the job, so ``device: auto`` (torch's
    ``cuda``, the first visible GPU) runs on the job's own GPU. A sweep that asked for none, on a node
    SLURM gave no GPU of this job (``SLURM_JOB_GPUS`` empty), hides the node's GPUs: ``auto`` then runs on
    the CPU instead of on a GPU SLURM gave another job.
    """
    source = Path(__file__).resolve().parents[2]  # the src/ folder holding dnnprobe
    lines = ["#!/bin/bash", "# One experiment of a dnnprobe cluster sweep: `dnnprobe cluster submit` wrote this file.",
             f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:\"$PATH\"",
             f"export PYTHONPATH={shlex.quote(str(source))}"]
    if not slurm.wants_gpu(settings):
        lines += ["# The sweep asked for no GPU: unless SLURM gave this job one, `device: auto` must not use the node's.",
                  'if [ -z "${SLURM_JOB_GPUS:-}" ]; then export CUDA_VISIBLE_DEVICES=""; fi']
    lines += ['echo "dnnprobe cluster: GPUs of this job (CUDA_VISIBLE_DEVICES): ${CUDA_VISIBLE_DEVICES-unset}"',
              f"exec {shlex.quote(sys.executable)} -m dnnprobe.experiments.cluster_job \"$1\" \"$SLURM_ARRAY_TASK_ID\""]
    return "\n".join(lines) + "\n"


def job_script(folder: Path, settings: slurm.Settings) -> Path:
    script = folder / "job.sh"
    script.write_text(job_script_text(settings))
    script.chmod(0o755)
    return script


@contextlib.contextmanager
def _blame(settings: slurm.Settings):
    """An sbatch refusal starts with the options it is about (``--cpus 64: sbatch refused the job: ...``)."""
    try:
        yield
    except DnnprobeError as exc:
        raise DnnprobeError(f"{slurm.blamed(settings, str(exc))}{exc}") from None


def check_unfinished(repo: Path, planned: list[Planned]) -> None:
    """Refuse a name a pending or running job of an earlier sweep has: only one of the two could come home."""
    names = {item.name for item in planned}
    for path in sorted((repo / SWEEPS).glob("*/sweep.json")):
        record, earlier = read_record(path)
        clash = [item for item in earlier if item.name in names and item.job]
        found = slurm.job_states([item.job for item in clash]) if clash else {}
        for item in clash:
            if found[item.job] in ("pending", "running"):
                raise DnnprobeError(f"experiment {item.name!r} is {found[item.job]} in sweep {record['id']} (job "
                                    f"{item.job}): two experiments of one name cannot both come home; wait for it "
                                    f"(`dnnprobe cluster status --sweep {record['id']}`), cancel it, or use another "
                                    "name")


def submit_batches(folder: Path, record: dict, planned: list[Planned], names: list[str], settings: slurm.Settings,
                   lead: bool, dry_run: bool) -> list[str]:
    """Submit `names` as one array job (or the first alone, then the rest after it); returns what to print.

    A dry run asks SLURM about each batch with ``sbatch --test-only`` (a copy of the job script in a
    temporary folder) and submits nothing: what SLURM would refuse is refused here too."""
    batches = [names[:1], names[1:]] if lead and len(names) > 1 else [names]
    by_name = {item.name: item for item in planned}
    number = len(list(folder.glob("batch-*.json")))
    script, lines, first = folder / "job.sh", [], None
    for batch in batches:
        number += 1
        batch_file = folder / f"batch-{number}.json"
        options = [*settings.sbatch_options(), f"--array=0-{len(batch) - 1}",
                   f"--job-name=dnnprobe-{folder.name}", f"--output={folder}/logs/%A_%a.log"]
        if first:
            options += [f"--dependency=afterany:{first}"]
        command = shlex.join(["sbatch", *options, str(script), str(batch_file)])
        if dry_run:
            with tempfile.TemporaryDirectory(prefix="dnnprobe-dry-run-") as temporary, _blame(settings):
                answer = slurm.test_only(job_script(Path(temporary), settings), options, [str(batch_file)])
            lines += [f"would run: {command}", f"  sbatch --test-only: {answer}"]
            first = first or "<first job>"
            continue
        (folder / "logs").mkdir(parents=True, exist_ok=True)
        batch_file.write_text(json.dumps({"sweep": str(folder / "sweep.json"), "names": batch}) + "\n")
        with _blame(settings):
            job = slurm.submit(script, options, [str(batch_file)])
        lines.append(f"submitted: {command}")
        first = first or job
        for index, name in enumerate(batch):
            item = by_name[name]
            if item.job:
                item.history.append(item.job)
            item.job, item.log = f"{job}_{index}", str(folder / "logs" / f"{job}_{index}.log")
        write_record(folder / "sweep.json", record, planned)
    return lines


def _submit(repo: Path, planned: list[Planned], settings: slurm.Settings, tracking_uri: str | None, lead: bool,
            dry_run: bool) -> tuple[Path, list[str]]:
    """Every check first (a dry run makes them all), then the sbatch calls."""
    check_clean(repo)
    check_names(repo, planned)
    check_params(repo, planned)
    uri = check_tracking(tracking_uri)
    slurm.check_settings(settings)
    cache = sweep_cache(repo, settings.cache, None if settings.cache else dvc_cache(repo))
    check_storage(repo, cache, settings.single_node)
    slurm.check_cluster(settings)
    check_unfinished(repo, planned)
    folder = new_sweep_dir(repo)
    record = {"id": folder.name, "repo": str(repo), "cache": cache,
              "scratch": settings.scratch, "tracking_uri": uri, "settings": dataclasses.asdict(settings)}
    if dry_run:
        return folder, submit_batches(folder, record, planned, [p.name for p in planned], settings, lead, True)
    folder.mkdir(parents=True)
    write_record(folder / "sweep.json", record, planned)
    job_script(folder, settings)
    try:
        lines = submit_batches(folder, record, planned, [p.name for p in planned], settings, lead, False)
    except DnnprobeError:  # sbatch refused (an account, a QOS): no half-submitted sweep is left behind
        slurm.cancel([item.job.split("_")[0] for item in planned if item.job])
        shutil.rmtree(folder, ignore_errors=True)
        raise
    queued = [item.name for item in planned if item.queued]
    if queued:  # they run on the cluster now; left in DVC's queue, `dvc queue start` would run them again
        subprocess.run([str(Path(sys.executable).parent / "dvc"), "queue", "remove", *queued], cwd=repo,
                       capture_output=True)
    return folder, lines


def states(repo: Path, planned: list[Planned]) -> dict[str, str]:
    """Each experiment's state; a job SLURM calls completed whose experiment did not come home is failed."""
    found = slurm.job_states([item.job for item in planned if item.job])
    home = existing_names(repo)
    result = {}
    for item in planned:
        state = found.get(item.job, "unknown") if item.job else "not submitted"
        result[item.name] = "failed" if state == "completed" and item.name not in home else state
    return result


def _tail(path: str | None, lines: int = 6) -> list[str]:
    try:
        return Path(path).read_text(errors="replace").splitlines()[-lines:] if path else []
    except OSError:
        return ["(no log yet)"]


def end_unreturned_runs(record: dict, found: dict[str, str]) -> list[str]:
    """End as KILLED the MLflow runs of the experiments that failed, were cancelled or timed out (their
    result never came home: no FINISHED run with metrics for it); the line saying so, if any."""
    gone = [name for name, state in found.items() if state in RERUN]
    if not gone or not record.get("tracking_uri"):
        return []
    try:
        from dnnprobe.track.owners import end_sweep_runs

        ended = end_sweep_runs(record["tracking_uri"], record["id"], gone,
                               f"sweep {record['id']}: its job failed, was cancelled or timed out; the experiment "
                               "did not come home")
    except Exception as exc:  # noqa: BLE001 - status still shows the states
        return [f"(could not end their MLflow runs as KILLED: {str(exc).splitlines()[0]})"]
    return [f"ended {len(ended)} MLflow run(s) of {', '.join(gone)} as KILLED (tag dnnprobe.orphaned): their "
            "results did not come home"] if ended else []


def status_text(repo: Path, record_path: Path) -> str:
    record, planned = read_record(record_path)
    found = states(repo, planned)
    counts = {state: list(found.values()).count(state) for state in dict.fromkeys(found.values())}
    width = max(len(item.name) for item in planned)
    lines = [f"sweep {record['id']}: {len(planned)} experiments, "
             + ", ".join(f"{count} {state}" for state, count in counts.items())]
    lines += [f"  {item.name:<{width}}  {item.job or '-':<10}  {found[item.name]}" for item in planned]
    for item in planned:
        if found[item.name] in RERUN:
            lines.append(f"--- {item.name} ({found[item.name]}), the end of {item.log}:")
            lines += [f"    {line}" for line in _tail(item.log)]
    if any(state in RERUN for state in found.values()):
        lines += end_unreturned_runs(record, found)
        lines.append("`dnnprobe cluster resubmit` reruns the failed, cancelled and timed-out ones")
    return "\n".join(lines) + "\n"


def _one_line_errors(name: str):
    def decorate(function):
        @functools.wraps(function)
        def command(**options):
            try:
                function(**options)
            except DnnprobeError as exc:
                click.echo(f"dnnprobe cluster {name}: error: {exc}", err=True)
                sys.exit(1)
        return command
    return decorate


def _resource_options(function):
    for name, kind, text in reversed([
            ("partition", str, "SLURM partition"), ("account", str, "account to charge"), ("qos", str, "QOS"),
            ("time", str, "time limit per experiment (HH:MM:SS)"), ("cpus", int, "CPUs per experiment"),
            ("mem", str, "memory per experiment (4G)"), ("gpus", str, "GPUs per experiment, as --gpus (1, a100:1)"),
            ("gres", str, "generic resources per experiment, as --gres (gpu:1)"),
            ("cache", str, "the shared DVC cache folder"), ("scratch", str, "where jobs copy the repository")]):
        default = {"cache": "this repository's (dvc cache dir)", "scratch": "the node's $TMPDIR, else /tmp",
                   "partition": "the cluster's default"}.get(name, getattr(slurm.Settings(), name))
        shown = f"{slurm.SETTINGS_FILE}'s, else {default if default is not None else 'none'}"
        function = click.option(f"--{name}", type=kind, default=None, show_default=shown, help=text)(function)
    function = click.option("--single-node", is_flag=True, default=None, show_default=f"{slurm.SETTINGS_FILE}'s, else off",
                            help="the cluster is this one machine: allow a repository and cache in /tmp")(function)
    return click.option("--sbatch-option", "sbatch", multiple=True, show_default=f"{slurm.SETTINGS_FILE}'s sbatch:",
                        help="another sbatch option, as written (repeatable)")(function)


@click.group("cluster")
def command():
    """Run a sweep of DVC experiments on a SLURM cluster: submit, status, cancel, resubmit."""


@command.command("submit")
@click.option("-S", "--set-param", "grid_sets", multiple=True, show_default="no grid",
              help="key=v1,v2: a grid axis (every combination)")
@click.option("--queued/--no-queued", default=True, show_default=True, help="include the experiments in DVC's queue")
@click.option("--lead/--no-lead", default=True, show_default=True,
              help="run the first experiment alone first, to fill the shared cache")
@click.option("--tracking-uri", default=None, show_default="$MLFLOW_TRACKING_URI", help="MLflow server the jobs log to")
@click.option("--dry-run", is_flag=True, show_default="off", help="print the jobs and their sbatch settings; submit nothing")
@_resource_options
@_one_line_errors("submit")
def submit(grid_sets, queued, lead, tracking_uri, dry_run, **resources):
    """Submit the queued DVC experiments and/or a grid as SLURM array jobs; returns at once."""
    repo = repo_root(Path.cwd())
    settings = slurm.load_settings(repo, resources)
    planned = (queued_experiments(repo) if queued else []) + grid(repo, tuple(grid_sets))
    folder, commands = _submit(repo, planned, settings, tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"),
                               lead, dry_run)
    width = max(len(item.name) for item in planned)
    for item in planned:
        click.echo(f"{item.name:<{width}}  {item.rev[:7]}  {' '.join('-S ' + s for s in item.sets) or '(baseline)'}"
                   + (f"  job {item.job}" if item.job else ""))
    for line in commands:
        click.echo(line)
    if dry_run:
        click.echo("dry run: every check passed and SLURM would accept the jobs (sbatch --test-only); nothing "
                   "submitted")
    else:
        click.echo(f"sweep {folder.name}: `dnnprobe cluster status` follows it; logs in {folder / 'logs'}")


@command.command("status")
@click.option("--sweep", default=None, show_default="the latest", help="a sweep's id")
@_one_line_errors("status")
def status(sweep):
    """Each experiment of the sweep, its SLURM job and state; the log tail of each failure."""
    repo = repo_root(Path.cwd())
    click.echo(status_text(repo, find_sweep(repo, sweep)), nl=False)


@command.command("cancel")
@click.argument("names", nargs=-1)
@click.option("--sweep", default=None, show_default="the latest", help="a sweep's id")
@_one_line_errors("cancel")
def cancel(names, sweep):
    """Cancel the named experiments' jobs (default: every unfinished one of the sweep)."""
    repo = repo_root(Path.cwd())
    _, planned = read_record(find_sweep(repo, sweep))
    unknown = sorted(set(names) - {item.name for item in planned})
    if unknown:
        raise DnnprobeError(f"{', '.join(unknown)}: not in this sweep ({', '.join(p.name for p in planned)})")
    found = states(repo, planned)
    chosen = [item for item in planned if (item.name in names if names else found[item.name] in ("pending", "running"))]
    slurm.cancel([item.job for item in chosen if item.job])
    click.echo(f"cancelled: {', '.join(item.name for item in chosen) or 'nothing (all finished)'}")


@command.command("resubmit")
@click.option("--sweep", default=None, show_default="the latest", help="a sweep's id")
@click.option("--tracking-uri", default=None, show_default="the sweep's", help="MLflow server the jobs log to")
@click.option("--dry-run", is_flag=True, show_default="off", help="print the jobs; submit nothing")
@_resource_options
@_one_line_errors("resubmit")
def resubmit(sweep, tracking_uri, dry_run, **resources):
    """Rerun only the failed, cancelled and timed-out experiments of the sweep, reusing the shared cache."""
    repo = repo_root(Path.cwd())
    path = find_sweep(repo, sweep)
    record, planned = read_record(path)
    found = states(repo, planned)
    names = [item.name for item in planned if found[item.name] in RERUN]
    if not names:
        raise DnnprobeError(f"nothing to resubmit in sweep {record['id']}: no experiment failed, was cancelled or "
                            "timed out (`dnnprobe cluster status`)")
    settings = dataclasses.replace(slurm.Settings(**record["settings"]),
                                   **{k: v for k, v in resources.items() if v not in (None, ())})
    check_params(Path(record["repo"]), [item for item in planned if item.name in names])  # as submit checks them
    record["tracking_uri"] = check_tracking(tracking_uri or record["tracking_uri"])
    slurm.check_settings(settings)
    check_storage(Path(record["repo"]), record["cache"], settings.single_node)
    slurm.check_cluster(settings)
    record["settings"] = dataclasses.asdict(settings)
    lead = not any(state == "completed" for state in found.values())  # nothing computed yet: fill the cache first
    if not dry_run:
        job_script(path.parent, settings)  # the resources may have changed (--gpus); SLURM copied the old one
    for line in submit_batches(path.parent, record, planned, names, settings, lead, dry_run):
        click.echo(line)
    click.echo(f"dry run: would resubmit {', '.join(names)}; nothing submitted" if dry_run
               else f"resubmitted: {', '.join(names)}")
