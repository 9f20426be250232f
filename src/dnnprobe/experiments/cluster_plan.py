"""Which experiments a cluster sweep runs, and its record.

The experiments are the DVC experiments queued in the repository (``dvc exp run --queue -n NAME -S ...``:
each is a commit on ``refs/exps/celery/stash`` whose params.yaml holds its settings) and/or a grid given
on the command line (``-S pca=4,8 -S probe.classifier=logistic,lda``: every combination). Each becomes
(name, commit, ``-S`` overrides), the arguments of the ``dvc exp run`` its job runs.

The record of a sweep (``.dvc/tmp/cluster/<id>/sweep.json``, beside its job logs) names each experiment's
SLURM job; ``dnnprobe cluster status``, ``cancel`` and ``resubmit`` read it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
import subprocess
import time
from pathlib import Path

import yaml

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.params import flatten

SWEEPS = Path(".dvc") / "tmp" / "cluster"  # ignored by git (DVC's .dvc/.gitignore lists tmp/)
STASH = "refs/exps/celery/stash"  # where `dvc exp run --queue` keeps queued experiments


@dataclasses.dataclass
class Planned:
    name: str  # the DVC experiment name it comes home as
    rev: str  # the commit it runs on (its baseline)
    sets: list[str]  # `dvc exp run -S` overrides, Hydra syntax
    queued: bool = False  # taken from DVC's queue (removed from it once submitted)
    job: str | None = None  # SLURM array task, "123_0"
    log: str | None = None
    history: list[str] = dataclasses.field(default_factory=list)  # earlier jobs, oldest first


def git(repo: Path, *args: str) -> str:
    try:
        result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    except OSError as exc:
        raise DnnprobeError(f"cannot run git ({exc.strerror}): a sweep runs the commits of a git repository") from exc
    if result.returncode != 0:
        raise DnnprobeError(f"`git {' '.join(args)}` failed in {repo}: "
                            f"{(result.stderr.strip().splitlines() or ['?'])[-1]}")
    return result.stdout


def repo_root(path: Path) -> Path:
    try:
        return Path(git(path, "rev-parse", "--show-toplevel").strip()).resolve()
    except DnnprobeError as exc:
        raise DnnprobeError(f"{path.resolve()} is not inside a git repository (a sweep runs its commits)") from exc


def check_clean(repo: Path) -> None:
    """Jobs run committed code and params only: refuse a workspace with changes they would not see."""
    changed = [line[3:] for line in git(repo, "status", "--porcelain", "--untracked-files=all").splitlines()
               if not line[3:].startswith(".dnnprobe/")]
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise DnnprobeError(f"the workspace has uncommitted changes ({shown}): jobs run the committed code and "
                            "params only; commit them (or `git stash`) first")


def hydra_value(value: object) -> str:
    """A params.yaml value as `-S key=<value>` writes it (Hydra's override syntax)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return {math.inf: "inf", -math.inf: "-inf"}.get(value, "nan")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{hydra_value(item)}" for key, item in value.items()) + "}"
    text = str(value)
    plain = re.fullmatch(r"[A-Za-z_/][\w./-]*", text) and text.lower() not in ("true", "false", "null", "nan", "inf")
    return text if plain else json.dumps(text)


def overrides(baseline: dict, experiment: dict) -> list[str]:
    """The `-S` overrides that turn the baseline's params.yaml into the experiment's."""
    base, new = flatten(baseline), flatten(experiment)
    sets = [f"{'' if key in base else '+'}{key}={hydra_value(value)}"
            for key, value in new.items() if key not in base or (type(base[key]), base[key]) != (type(value), value)]
    return sets + [f"~{key}" for key in base if key not in new]


def _params_at(repo: Path, rev: str) -> dict:
    try:
        return yaml.safe_load(git(repo, "show", f"{rev}:params.yaml")) or {}
    except DnnprobeError:
        return {}


def queued_experiments(repo: Path) -> list[Planned]:
    """The experiments in DVC's queue, oldest first (the stash's reflog, as `dvc queue status` reads it)."""
    try:
        log = git(repo, "reflog", "show", "--format=%H %s", STASH)
    except DnnprobeError:
        return []  # nothing queued
    planned = []
    for line in reversed(log.splitlines()):
        rev, _, message = line.partition(" ")
        match = re.fullmatch(r"dvc-exp:([0-9a-f]{40}):[^:]*:(.*)", message.strip())
        if not match:
            continue
        baseline, name = match.groups()
        name = name or f"queued-{rev[:7]}"
        check_params_only(repo, name, baseline, rev)
        sets = overrides(_params_at(repo, baseline), _params_at(repo, rev))
        planned.append(Planned(name, baseline, sets, queued=True))
    return planned


def check_params_only(repo: Path, name: str, baseline: str, rev: str) -> None:
    """A queued experiment's job runs its baseline commit with its params.yaml as `-S` overrides: refuse
    one that changed other files too (dvc.yaml, code), which its job would silently drop."""
    changed = [path for path in git(repo, "diff", "--name-only", baseline, rev).splitlines()
               if path != "params.yaml" and not path.startswith(".dvc/tmp/")]  # DVC's own bookkeeping
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise DnnprobeError(f"queued experiment {name} also changes {shown} (not only params.yaml): a cluster job "
                            "runs its baseline commit with its params only and would drop them; commit the changes "
                            f"and queue it again (`dvc queue remove {name}`), or leave the queue out (--no-queued)")


def _choices(text: str) -> list[str]:
    """`1,2,[3,4]` -> `1`, `2`, `[3,4]`: Hydra's choice sweep, commas inside brackets or quotes kept."""
    parts, depth, quote, current = [], 0, "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    return parts + [current]


def grid(repo: Path, settings: tuple[str, ...]) -> list[Planned]:
    """Every combination of `-S key=a,b` choices, on HEAD, named after the values (`pca4-classifier_lda`)."""
    if not settings:
        return []
    axes, seen = [], {}
    for setting in settings:
        key, sep, values = setting.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise DnnprobeError(f"-S {setting!r}: expected key=value or key=value1,value2,...")
        key = key.strip().removeprefix("params.yaml:")  # DVC's own file prefix: params.yaml is the default
        bare = key.lstrip("+~")
        if bare in seen:
            raise DnnprobeError(f"-S {bare} given twice ({seen[bare]}, {setting}): use -S {bare}="
                                f"{','.join([seen[bare].partition('=')[2], values.strip()])} for a grid")
        seen[bare] = setting
        axes.append([(key, choice.strip()) for choice in _choices(values)])
    head = git(repo, "rev-parse", "HEAD").strip()
    planned = []
    for combination in itertools.product(*axes):
        varying = [(key, value) for (key, value), axis in zip(combination, axes) if len(axis) > 1] or combination
        parts = [(key.lstrip("+~").split(".")[-1], re.sub(r"[^\w.-]+", "_", value).strip("_")) for key, value in varying]
        name = "-".join(f"{key}{'' if value[:1].isdigit() else '_'}{value}" for key, value in parts) or "grid"
        planned.append(Planned(name, head, [f"{k}={v}" for k, v in combination]))
    return planned


def existing_names(repo: Path) -> set[str]:
    refs = git(repo, "for-each-ref", "--format=%(refname)", "refs/exps").split()
    return {ref.rsplit("/", 1)[-1] for ref in refs if not ref.startswith("refs/exps/celery/")}


def check_names(repo: Path, planned: list[Planned]) -> None:
    if not planned:
        raise DnnprobeError("nothing to submit: queue experiments (`dvc exp run --queue -n NAME -S key=value`) "
                            "or give a grid (`-S pca=4,8 -S probe.classifier=logistic,lda`)")
    seen: set[str] = set()
    taken = existing_names(repo)
    for item in planned:
        if item.name in seen:
            raise DnnprobeError(f"experiment name {item.name!r} is given twice: names must be unique")
        if item.name in taken:
            raise DnnprobeError(f"experiment {item.name!r} already exists in this repository: `dvc exp remove "
                                f"{item.name}` or queue it under another name")
        seen.add(item.name)


def new_sweep_dir(repo: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    folder = repo / SWEEPS / stamp
    suffix = 1
    while folder.exists():
        suffix += 1
        folder = repo / SWEEPS / f"{stamp}-{suffix}"
    return folder


def find_sweep(repo: Path, sweep: str | None) -> Path:
    """The record of sweep `sweep`, or of the latest one."""
    folders = sorted(path.parent for path in (repo / SWEEPS).glob("*/sweep.json"))
    if sweep:
        folders = [folder for folder in folders if folder.name == sweep]
    if not folders:
        raise DnnprobeError(f"no cluster sweep {sweep!r} in {repo / SWEEPS}" if sweep else
                            "no cluster sweep submitted from this repository yet (`dnnprobe cluster submit`)")
    return folders[-1] / "sweep.json"


def read_record(path: Path) -> tuple[dict, list[Planned]]:
    record = json.loads(path.read_text())
    return record, [Planned(**item) for item in record["experiments"]]


def write_record(path: Path, record: dict, planned: list[Planned]) -> None:
    record = {**record, "experiments": [dataclasses.asdict(item) for item in planned]}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record, indent=1) + "\n")
    temporary.replace(path)
