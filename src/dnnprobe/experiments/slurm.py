"""SLURM, as ``dnnprobe cluster`` uses it: the job settings (``.dnnprobe/cluster.yaml`` and command options),
the checks made before anything is submitted (``sinfo``: partitions, their time limits and nodes;
``sbatch --test-only`` for a dry run), ``sbatch``, job states (``sacct``, else ``squeue``) and
``scancel``. Every call is the cluster's own command line tool: no scheduler of ours.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import socket
import subprocess
from pathlib import Path

import yaml

from dnnprobe.core.errors import DnnprobeError

SETTINGS_FILE = ".dnnprobe/cluster.yaml"  # the one place for a sweep's resources (not params.yaml: DVC tracks that)
MIN_TIME_S = 5 * 60  # a job copies the repository, restores shared stages and runs the rest: less is too short


@dataclasses.dataclass
class Settings:
    """What every job of a sweep asks SLURM for, and where it works. Defaults suit the demo."""

    partition: str | None = None  # None: the cluster's default partition
    account: str | None = None
    qos: str | None = None
    time: str = "00:30:00"  # SLURM's formats: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
    cpus: int = 2
    mem: str = "4G"
    gpus: str | None = None  # passed as --gpus (``1``, ``a100:2``); extract.device/probe.device ``auto`` use them
    gres: str | None = None  # passed as --gres (``gpu:1``, ``gpu:a100:1``): clusters that ask for GPUs this way
    sbatch: list[str] = dataclasses.field(default_factory=list)  # further sbatch options, as written
    cache: str | None = None  # the shared DVC cache; None: this repository's own (``dvc cache dir``)
    scratch: str | None = None  # where a job copies the repository; None: the node's $TMPDIR, else /tmp
    single_node: bool = False  # the cluster is this one machine: node-local paths (/tmp) are fine (checked)

    def sbatch_options(self) -> list[str]:
        options = [f"--time={self.time}", f"--cpus-per-task={self.cpus}", f"--mem={self.mem}"]
        for name in ("partition", "account", "qos", "gpus", "gres"):
            if getattr(self, name):
                options.append(f"--{name}={getattr(self, name)}")
        return options + list(self.sbatch)


def load_settings(repo: Path, overrides: dict[str, object]) -> Settings:
    """``.dnnprobe/cluster.yaml`` (if present) with the command's options on top; unknown keys refused."""
    path = repo / SETTINGS_FILE
    data = {}
    if path.exists():
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise DnnprobeError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
        if not isinstance(data, dict):
            raise DnnprobeError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    known = {field.name for field in dataclasses.fields(Settings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise DnnprobeError(f"{path}: unknown setting {unknown[0]!r} (known: {', '.join(sorted(known))})")
    data.update({key: value for key, value in overrides.items() if value not in (None, (), [])})
    if isinstance(data.get("sbatch"), str):
        data["sbatch"] = data["sbatch"].split()
    settings = Settings(**data)
    settings.time = str(settings.time)
    settings.gpus = None if settings.gpus is None else str(settings.gpus)
    settings.gres = None if settings.gres is None else str(settings.gres)
    if not isinstance(settings.single_node, bool):
        raise DnnprobeError(f"{path}: single_node must be true or false, got {settings.single_node!r}")
    return settings


def wants_gpu(settings: Settings) -> bool:
    """Whether the jobs ask SLURM for a GPU (``gpus``, ``gres: gpu:...`` or a GPU option under ``sbatch``)."""
    options = " ".join([*settings.sbatch, f"--gres={settings.gres or ''}"])
    return bool(settings.gpus) or re.search(r"(--gpus|--gpus-per-\w+|--gres=\S*gpu|(?<!\S)-G)\b", options) is not None


def time_seconds(text: str) -> int:
    """Seconds in a SLURM time limit (``30``, ``10:00``, ``1:00:00``, ``2-00``, ``1-12:00:00``)."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if match and not any(int(part) for part in match.groups() if part):
        raise DnnprobeError(f"time limit {text!r} is SLURM's 'no limit', refused: a sweep's jobs need a limit the "
                            "partition allows (its MaxTime); give one, e.g. --time 2:00:00")
    if not match or text.strip() in ("", "0"):
        raise DnnprobeError(f"time limit {text!r} is not one of SLURM's formats (MM, MM:SS, HH:MM:SS, D-HH, "
                            "D-HH:MM, D-HH:MM:SS)")
    days, first, second, third = match.groups()
    parts = [int(part) for part in (first, second, third) if part is not None]
    if days is not None:  # D-HH, D-HH:MM, D-HH:MM:SS
        hours, minutes, seconds = (parts + [0, 0])[:3]
        return int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
    if len(parts) == 1:
        return parts[0] * 60
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    return parts[0] * 3600 + parts[1] * 60 + parts[2]


def _completed(command: list[str], what: str) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DnnprobeError(f"{what}: `{' '.join(command)}` failed ({exc})") from exc
    if result.returncode != 0:
        reason = (result.stderr.strip() or result.stdout.strip() or f"exit status {result.returncode}").splitlines()
        raise DnnprobeError(f"{what}: `{' '.join(command[:2])}` failed: {reason[-1].strip()}")
    return result


def _run(command: list[str], what: str) -> str:
    return _completed(command, what).stdout


def _run_stderr(command: list[str], what: str) -> str:
    return _completed(command, what).stderr


def check_settings(settings: Settings) -> None:
    """Refuse settings no job could run with (a time limit below the floor, no CPU), without asking SLURM."""
    seconds = time_seconds(settings.time)
    if seconds < MIN_TIME_S:
        raise DnnprobeError(f"time limit {settings.time!r} is too short: a job needs at least {MIN_TIME_S // 60} "
                            "minutes (it copies the repository and restores shared stages before its own run); "
                            "set `time:` in .dnnprobe/cluster.yaml or --time")
    if not isinstance(settings.cpus, int) or settings.cpus < 1:
        raise DnnprobeError(f"cpus {settings.cpus!r} must be a whole number of at least 1")
    if not re.fullmatch(r"[0-9]+[KMGT]?", str(settings.mem).strip(), re.IGNORECASE):
        raise DnnprobeError(f"--mem {settings.mem!r}: not a SLURM memory size (a whole number with K, M, G or T: "
                            "4G, 500M; no unit: megabytes)")
    for option in settings.sbatch:
        name = own_option(option)
        if name:
            raise DnnprobeError(f"--sbatch-option {option!r}: dnnprobe sets {name} itself; use "
                                f"{OWN_OPTIONS[name]} instead")


# sbatch options dnnprobe sets itself (checked, or needed by the sweep's bookkeeping): what to use instead
_RESOURCE = {"--time": "-t", "--partition": "-p", "--account": "-A", "--qos": "-q", "--mem": None,
             "--cpus-per-task": "-c", "--gpus": "-G", "--gres": None}
_INSTEAD = {"--time": "--time (or `time:` in .dnnprobe/cluster.yaml)", "--cpus-per-task": "--cpus (or `cpus:`)"}
OWN_OPTIONS = {}
for _long, _short in _RESOURCE.items():
    _use = _INSTEAD.get(_long, f"{_long} (or `{_long[2:]}:` in .dnnprobe/cluster.yaml)")
    OWN_OPTIONS.update({_long: _use, **({_short: _use} if _short else {})})
for _long, _short in (("--array", "-a"), ("--output", "-o"), ("--error", "-e"), ("--job-name", "-J"),
                      ("--dependency", "-d"), ("--parsable", None), ("--test-only", None), ("--wrap", None)):
    _use = "nothing: dnnprobe cluster submit sets it per sweep (one array task per experiment, its log, its order)"
    OWN_OPTIONS.update({_long: _use, **({_short: _use} if _short else {})})
OWN_OPTIONS["--mem-per-cpu"] = OWN_OPTIONS["--mem"]


def own_option(option: str) -> str | None:
    """The option dnnprobe sets itself that `option` is (``--time=1``, ``--time 1`` as one argument, ``-t1``,
    or an abbreviation sbatch accepts, ``--tim=1``), or None."""
    option = option.strip()
    if not option.startswith("--"):
        return option[:2] if option[:2] in OWN_OPTIONS else None
    name = re.split(r"[=\s]", option, maxsplit=1)[0]
    if name in OWN_OPTIONS:
        return name
    # sbatch (getopt_long) takes any unambiguous prefix of a long option
    prefixed = [own for own in OWN_OPTIONS if own.startswith("--") and own.startswith(name) and len(name) > 3]
    return prefixed[0] if prefixed else None


def blamed(settings: Settings, reason: str) -> str:
    """The options an sbatch refusal is about, to put before it: ``--cpus 64: `` (all resources if unclear)."""
    words = {"cpu": ("cpus",), "mem": ("mem",), "gres": ("gres", "gpus"), "gpu": ("gpus", "gres"),
             "time limit": ("time",), "partition": ("partition",), "account": ("account",), "qos": ("qos",)}
    names = [name for word, names in words.items() if word in reason.lower() for name in names]
    names = list(dict.fromkeys(names or ("cpus", "mem", "gpus", "gres")))
    shown = [f"--{name} {getattr(settings, name)}" for name in names if getattr(settings, name)]
    return ", ".join(shown) + ": " if shown else ""


@dataclasses.dataclass
class Partition:
    name: str
    default: bool  # the partition a job without --partition goes to
    time_limit_s: int | None  # its MaxTime; None: infinite
    nodes: set[str]  # host names of its nodes


def partitions() -> dict[str, Partition]:
    """This cluster's partitions (``sinfo``, one line per node and partition)."""
    output = _run(["sinfo", "--noheader", "--Node", "--format=%P|%l|%n"],
                  "cannot reach SLURM (is it configured here: SLURM_CONF, slurmctld up?)")
    found: dict[str, Partition] = {}
    for line in output.splitlines():
        if line.count("|") != 2:
            continue
        name, limit, node = (part.strip() for part in line.split("|"))
        seconds = None if limit.lower() in ("infinite", "unlimited", "n/a") else time_seconds(limit)
        entry = found.setdefault(name.rstrip("*"), Partition(name.rstrip("*"), name.endswith("*"), seconds, set()))
        entry.nodes.add(node)
    return found


def check_cluster(settings: Settings) -> Partition:
    """Refuse, in one line and before anything is submitted, what SLURM would refuse or kill later; the
    partition the jobs go to. A dry run makes these checks too, then :func:`test_only`."""
    check_settings(settings)
    if shutil.which("sbatch") is None:
        raise DnnprobeError("no `sbatch` on PATH: submit from a SLURM login node (there, `module load slurm` "
                            "or your site's equivalent may be needed)")
    found = partitions()
    if settings.partition is not None and settings.partition not in found:
        raise DnnprobeError(f"unknown partition {settings.partition!r}: this cluster has "
                            f"{', '.join(sorted(found)) or 'none'} (`sinfo -s`)")
    chosen = found.get(settings.partition) if settings.partition else next(
        (part for part in found.values() if part.default), None)
    if chosen is None:
        raise DnnprobeError(f"this cluster has no default partition: name one ({', '.join(sorted(found)) or 'none'}) "
                            "with `partition:` in .dnnprobe/cluster.yaml or --partition")
    if chosen.time_limit_s is not None and time_seconds(settings.time) > chosen.time_limit_s:
        raise DnnprobeError(f"time limit {settings.time!r} is longer than partition {chosen.name!r} allows "
                            f"({chosen.time_limit_s // 60} minutes, `sinfo -p {chosen.name}`): SLURM would leave the "
                            "jobs pending for ever (PartitionTimeLimit); lower --time or pick another partition")
    here = socket.gethostname().split(".")[0]
    if settings.single_node and {node.split(".")[0] for node in chosen.nodes} != {here}:
        raise DnnprobeError(f"single_node is set but partition {chosen.name!r} has nodes "
                            f"{', '.join(sorted(chosen.nodes))} besides or instead of this machine ({here}): jobs "
                            "there cannot reach this machine's /tmp; drop --single-node and use shared paths")
    return chosen


def test_only(script: Path, options: list[str], arguments: list[str]) -> str:
    """``sbatch --test-only``: SLURM checks the job (partition, account, QOS, memory, GPUs) and says when it
    would start, submitting nothing. The line it prints; DnnprobeError with SLURM's reason if refused."""
    options = [option for option in options if not option.startswith("--dependency=")]
    result = _run_stderr(["sbatch", "--test-only", *options, str(script), *arguments], "sbatch would refuse the job")
    return result.strip().splitlines()[-1] if result.strip() else "sbatch --test-only: accepted"


def submit(script: Path, options: list[str], arguments: list[str]) -> str:
    """``sbatch --parsable``: the job id (``123``; an array's tasks are ``123_0``, ``123_1``, ...)."""
    output = _run(["sbatch", "--parsable", *options, str(script), *arguments], "sbatch refused the job")
    return output.strip().split(";")[0]


ON_LOGIN_NODE = "run this on a SLURM login node (there, `module load slurm` or your site's equivalent may be needed)"


def cancel(job_ids: list[str]) -> None:
    if job_ids:
        if shutil.which("scancel") is None:
            raise DnnprobeError(f"no `scancel` on PATH: cannot cancel jobs {', '.join(job_ids)}; {ON_LOGIN_NODE}")
        _run(["scancel", *job_ids], "scancel failed")


# SLURM's job states, as `dnnprobe cluster status` shows them.
STATES = {
    "PENDING": "pending", "REQUEUED": "pending", "REQUEUE_HOLD": "pending", "SUSPENDED": "pending",
    "RESIZING": "pending", "PREEMPTED": "pending", "CONFIGURING": "running", "RUNNING": "running",
    "COMPLETING": "running", "STAGE_OUT": "running", "COMPLETED": "completed", "CANCELLED": "cancelled",
    "TIMEOUT": "timeout", "DEADLINE": "timeout", "FAILED": "failed", "NODE_FAIL": "failed",
    "OUT_OF_MEMORY": "failed", "BOOT_FAIL": "failed",
}


def job_states(job_ids: list[str]) -> dict[str, str]:
    """State of each array task (``123_4``): pending, running, completed, failed, cancelled or timeout.

    ``sacct`` (accounting) knows finished jobs, and knows a new job only a moment after ``sbatch``;
    ``squeue`` knows the jobs still queued or running. A task neither lists is ``unknown``.
    """
    jobs = ",".join(sorted({job.split("_")[0] for job in job_ids}))
    states: dict[str, str] = {}
    if not jobs:
        return states
    if shutil.which("squeue") is None and shutil.which("sacct") is None:
        raise DnnprobeError(f"no `squeue`/`sacct` on PATH: cannot ask SLURM the state of jobs {jobs}; {ON_LOGIN_NODE}")
    queries = ([["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T", f"--jobs={jobs}"], "squeue"],
               [["sacct", "--noheader", "--parsable2", "--allocations", "--format=JobID,State", f"--jobs={jobs}"],
                "sacct"])
    for command, what in queries:  # sacct last: its word on a finished job is final
        try:
            output = _run(command, what)
        except DnnprobeError:
            continue  # no accounting (sacct), or the jobs have left the queue (squeue)
        for line in output.splitlines():
            if "|" in line:
                job, state = line.split("|")[:2]
                state = state.split()[0] if state.strip() else "UNKNOWN"  # "CANCELLED by 0"
                for task in _expand(job.strip()):
                    states[task] = STATES.get(state, state.lower())
    return {job: states.get(job, "unknown") for job in job_ids}


def _expand(job: str) -> list[str]:
    """``12_[0-2,5%2]`` (pending tasks, folded) -> ``12_0``, ``12_1``, ``12_2``, ``12_5``."""
    match = re.fullmatch(r"(\d+)_\[([^\]]+)\]", job)
    if not match:
        return [job]
    tasks = []
    for part in match.group(2).split("%")[0].split(","):
        first, _, last = part.partition("-")
        tasks += [f"{match.group(1)}_{i}" for i in range(int(first), int(last or first) + 1)]
    return tasks
