"""MLflow tracking: where runs go, and what a probe run records.

Store: ``$MLFLOW_TRACKING_URI`` when set; otherwise ``sqlite:///<repo>/mlflow.db`` with artifacts in
``<repo>/mlruns``. ``<repo>`` is ``$DVC_ROOT`` when DVC sets it: ``dvc exp run --temp`` and queued
experiments run in a temporary copy of the repository, and a path relative to that copy would lose
the run when the copy is deleted.

Each probe invocation is one parent run (params, provenance hashes, git commit, DVC experiment name,
per-layer summary metrics) with one nested run per layer (param ``layer``, metric ``fold_<scoring>``
at steps 0..cv-1, ``<scoring>_mean`` and ``<scoring>_sem``). The report stage adds its figures to the
parent run, which it finds through the run-info file the probe stage writes.

Launched by ``mlflow run`` (which exports ``$MLFLOW_RUN_ID``), the probe's parent run still goes to
the ``tracking.experiment`` experiment: nested under the launching run when that run is in the same
experiment, otherwise linked to it by tags (``launching_run_id`` on ours, ``probe_run_id`` on it).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Mapping

from dnnprobe.errors import DnnprobeError

STORE_LOCK = "mlflow.db.lock"


def repo_root() -> Path:
    """The real repository root: $DVC_ROOT, else the nearest folder above with dvc.yaml or .git."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file() or (folder / ".dvc").is_dir() or (folder / ".git").exists():
            return folder
    return here


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def artifact_location() -> str:
    return (repo_root() / "mlruns").as_uri()


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when an HTTP tracking server does not answer (instead of retrying for minutes)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DnnprobeError(f"MLFLOW_TRACKING_URI={uri}: tracking server not reachable ({reason})") from None


@contextlib.contextmanager
def _store_lock() -> Iterator[None]:
    """Serialise creating the SQLite store and the experiment: parallel queued runs would race."""
    from filelock import FileLock

    lock_path = repo_root() / STORE_LOCK
    with FileLock(str(lock_path), timeout=300):
        yield


def ensure_experiment(name: str) -> str:
    """Point MLflow at the store and return the experiment's id, creating both if needed."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    local = uri.startswith("sqlite:")
    with _store_lock() if local else contextlib.nullcontext():
        try:
            if local:
                _create_local_store(uri)
            experiment = mlflow.get_experiment_by_name(name)
            if experiment is None:
                location = artifact_location() if local else None
                return mlflow.create_experiment(name, artifact_location=location)
            if experiment.lifecycle_stage == "deleted":
                raise DnnprobeError(f"MLflow experiment {name!r} is deleted; restore it or set tracking.experiment")
            return experiment.experiment_id
        except MlflowException as exc:
            raise DnnprobeError(f"MLflow store {uri}: {exc.message.splitlines()[0]}") from None


def _create_local_store(uri: str) -> None:
    """Create a missing SQLite store with its "Default" experiment's artifacts under <repo>/mlruns.

    MLflow creates that experiment on first use with ``./mlruns`` of the current folder, which for a
    queued DVC experiment is a temporary copy that DVC deletes afterwards.
    """
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    database = uri.removeprefix("sqlite:///").split("?")[0]
    if database and database != ":memory:" and not Path(database).exists():
        SqlAlchemyStore(uri, artifact_location())


def git_commit() -> str:
    """The commit the code came from (for a DVC experiment, its baseline commit)."""
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        return os.environ["DVC_EXP_BASELINE_REV"]
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path.cwd()
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_tags(stage: str) -> dict[str, str]:
    from dnnprobe import __version__

    tags = {"stage": stage, "dnnprobe_version": __version__, "git_commit": git_commit()}
    tags["mlflow.source.git.commit"] = tags["git_commit"]
    for variable, tag in (("DVC_EXP_NAME", "dvc_exp_name"), ("DVC_EXP_BASELINE_REV", "dvc_exp_baseline_rev")):
        if os.environ.get(variable):
            tags[tag] = os.environ[variable]
    return tags


def dvc_recorded_md5(path: str | os.PathLike) -> str | None:
    """The md5 DVC recorded for an output in dvc.lock, if that entry still matches the file's size."""
    import yaml

    path = Path(path)
    lock = Path.cwd() / "dvc.lock"
    if not lock.is_file() or not path.is_file():
        return None
    try:
        relative = path.resolve().relative_to(Path.cwd().resolve()).as_posix()
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    except (ValueError, yaml.YAMLError):
        return None
    size = path.stat().st_size
    for stage in stages.values():
        for out in stage.get("outs", []):
            if out.get("path") == relative and out.get("size") == size and out.get("md5"):
                return out["md5"]
    return None


def file_md5(path: str | os.PathLike) -> str:
    """md5 as DVC computes it; taken from dvc.lock when it is recorded there (large files)."""
    import hashlib

    recorded = dvc_recorded_md5(path)
    if recorded:
        return recorded
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


class ProbeRun:
    """The parent MLflow run of one probe invocation."""

    def __init__(self, run_id: str, experiment_id: str, scoring: str) -> None:
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.scoring = scoring

    def log_layer(self, layer: str, scores, mean: float, sem: float, extra: Mapping[str, float] | None = None) -> None:
        """One nested run per layer; its summary metrics also go on the parent for the runs table."""
        import mlflow
        from mlflow.entities import Metric, Param

        stamp = int(time.time() * 1000)
        with mlflow.start_run(run_name=layer, nested=True, experiment_id=self.experiment_id) as child:
            metrics = [Metric(f"fold_{self.scoring}", float(v), stamp, step) for step, v in enumerate(scores)]
            summary = {f"{self.scoring}_mean": mean, f"{self.scoring}_sem": sem, **(extra or {})}
            metrics += [Metric(key, float(value), stamp, 0) for key, value in summary.items()]
            mlflow.tracking.MlflowClient().log_batch(child.info.run_id, metrics=metrics, params=[Param("layer", layer)])
        mlflow.tracking.MlflowClient().log_batch(
            self.run_id, metrics=[Metric(f"{key}/{layer}", float(value), stamp, 0) for key, value in summary.items()]
        )

    def write_info(self, path: str | os.PathLike) -> None:
        from dnnprobe.atomic import atomic_output

        with atomic_output(path) as temp:
            temp.write_text(json.dumps({"run_id": self.run_id, "experiment_id": self.experiment_id}, indent=2) + "\n")


@contextlib.contextmanager
def probe_run(experiment: str, run_name: str, params: Mapping[str, object], scoring: str) -> Iterator[ProbeRun]:
    """Start the parent run; it ends FINISHED, or FAILED if the block raises (never left RUNNING)."""
    import mlflow

    experiment_id = ensure_experiment(experiment)
    tags = run_tags("probe")
    launching = launching_run()
    parent_run_id = None
    if launching is not None:
        tags["launching_run_id"] = launching.info.run_id
        # In our experiment the launching run is the natural parent; elsewhere (e.g. "Default") we only
        # cross-link, so that every probe run lands in `experiment` as `dvc repro` runs do.
        if launching.info.experiment_id == experiment_id:
            parent_run_id = launching.info.run_id
    with mlflow.start_run(run_name=tags.get("dvc_exp_name", run_name), experiment_id=experiment_id, tags=tags,
                          parent_run_id=parent_run_id) as run:
        if launching is not None:
            mlflow.tracking.MlflowClient().set_tag(launching.info.run_id, "probe_run_id", run.info.run_id)
        mlflow.log_params({key: _param_value(value) for key, value in params.items()})
        yield ProbeRun(run.info.run_id, experiment_id, scoring)


def launching_run():
    """The run that launched this process and exported $MLFLOW_RUN_ID (`mlflow run` does), or None.

    The variable is taken out of the environment: mlflow.start_run would otherwise resume that run
    instead of starting ours (and would do so again for each nested layer run).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    run_id = os.environ.pop("MLFLOW_RUN_ID", None)
    if not run_id:
        return None
    try:
        return mlflow.tracking.MlflowClient().get_run(run_id)
    except MlflowException:
        raise DnnprobeError(f"MLFLOW_RUN_ID={run_id}: no such run in the MLflow store {tracking_uri()}") from None


def _param_value(value: object) -> str:
    text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def log_artifacts_to_run(run_info_path: str | os.PathLike, paths: list[Path], artifact_path: str) -> str | None:
    """Attach files to the probe's parent run; returns a warning instead of failing if it is gone."""
    import mlflow
    from mlflow.exceptions import MlflowException

    info_file = Path(run_info_path)
    try:
        info = json.loads(info_file.read_text())
        run_id = info["run_id"]
    except (OSError, ValueError, KeyError):
        return f"{info_file}: no probe run recorded; figures not logged to MLflow"
    uri = tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    client = mlflow.tracking.MlflowClient()
    try:
        client.get_run(run_id)
    except MlflowException:
        return f"MLflow run {run_id} (from {info_file}) is not in {uri}; figures not logged to MLflow"
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path=artifact_path)
    return None
