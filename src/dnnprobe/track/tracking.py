"""MLflow tracking: where runs go, and what a probe run records.

Store: ``$MLFLOW_TRACKING_URI`` when set; otherwise ``sqlite:///<repo>/mlflow.db`` with artifacts in
``<repo>/mlruns``. ``<repo>`` is ``$DVC_ROOT`` when DVC sets it: ``dvc exp run --temp`` and queued
experiments run in a temporary copy of the repository, and a path relative to that copy would lose
the run when the copy is deleted.

Each probe invocation is one parent run, named by the settings that tell it apart (see `run_name`;
DVC's experiment name is the tag ``dvc_exp_name`` and ends the name), with every params.yaml key the
probe read (dotted), the provenance hashes, the git commit, the stimulus table as a dataset input
(name, digest, source, row count: the runs table's Dataset column), one metric per layer (``<layer>``:
the mean fold score, as in reports/metrics.json; ``sem/<layer>`` and, with permutations,
``p_value/<layer>``...) and the metrics files as artifacts. One nested run per layer holds the fold
scores (metric ``fold_<scoring>`` at steps 0..cv-1). The report stage adds its figures to the
parent run, which it finds by the tag ``dnnprobe.summary_sha256``: the sha256 of the summary.json
the run wrote. No run id goes into a DVC output, whose bytes (and dvc.lock) would then change with
every run.

Launched by ``mlflow run`` (which exports ``$MLFLOW_RUN_ID``), the probe's parent run still goes to
the ``tracking.experiment`` experiment: nested under the launching run when that run is in the same
experiment, otherwise linked to it by tags (``launching_run_id`` on ours, ``probe_run_id`` on it).

Every run dnnprobe starts is tagged with the process that owns it (``dnnprobe.host``, ``dnnprobe.pid``,
``dnnprobe.process_start``). A probe killed by SIGKILL or the OOM killer leaves its runs RUNNING; the
next probe or report on the same host ends them as KILLED (see `mark_orphaned_runs`).

A failing store (full disk, locked or broken database, a server that stopped answering) is reported
as one DnnprobeError line, ``MLflow store <uri>: cannot write (<reason>)``, never as MLflow's or
SQLAlchemy's traceback; runs it left RUNNING are named in that line. Before any work, `check_store`
checks what can be checked without a run: the server answers, the database driver or plugin is
installed, the store opens, and its artifact location can be written. A relative store URI
(``sqlite:///mlflow.db``, ``./mlruns``) is anchored on ``<repo>``, as the default is.

Over HTTP, MLflow retries a failed request 7 times with a growing backoff and waits 120 s for each
answer, so a server that stops answering held the stage for over 12 minutes. The stages bound that
(`HTTP_LIMITS`) unless the user set MLflow's variables themselves.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from typing import Iterator, Mapping

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.params import comparable
from dnnprobe.network.params import ModelParams

STORE_LOCK = "mlflow.db.lock"
SUMMARY_TAG = "dnnprobe.summary_sha256"  # on a probe run: the sha256 of the summary.json it wrote

# Every run dnnprobe starts names the process that owns it, so that a later dnnprobe can tell a run
# whose process was killed (SIGKILL, the OOM killer) from one still in progress.
HOST_TAG = "dnnprobe.host"
PID_TAG = "dnnprobe.pid"
PROCESS_START_TAG = "dnnprobe.process_start"
ORPHANED_TAG = "dnnprobe.orphaned"


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
    """$MLFLOW_TRACKING_URI with a relative path anchored on the repository root, or the default store."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return anchored_uri(uri) if uri else f"sqlite:///{repo_root() / 'mlflow.db'}"


def shown(uri: str) -> str:
    """`uri` for a message or a log: a password in it (``postgresql://user:secret@host/db``) as ``***``."""
    parts = urllib.parse.urlsplit(uri)
    if not parts.password:
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


# Store URIs MLflow reads as a scheme though they have no colon (not paths to a file store).
BARE_SCHEMES = ("databricks", "databricks-uc", "uc")


def _scheme(uri: str) -> str:
    """The URI's scheme, lower case (``postgresql`` for ``postgresql+psycopg://``); "" for a path."""
    if uri in BARE_SCHEMES:
        return uri
    found = re.match(r"^([A-Za-z][A-Za-z0-9+.-]+):", uri)  # two characters at least: C: is a drive
    return found.group(1).split("+", 1)[0].lower() if found else ""


def anchored_uri(uri: str) -> str:
    """A store URI whose relative path is made absolute against `repo_root`; others unchanged.

    ``sqlite:///mlflow.db`` (MLflow's documented form: three slashes, a relative path), ``file:mlruns``
    and a bare ``mlruns`` or ``./mlruns`` name a path relative to the current folder, which inside
    ``dvc exp run --temp`` or a queued experiment is a temporary copy that DVC deletes with the run.
    """
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path, question, query = uri.removeprefix("sqlite:///").partition("?")
        if path and path != ":memory:":
            return f"sqlite:///{repo_root() / path}{question}{query}"
        return uri
    if uri.startswith("file:") and not uri.startswith(("file:/", "file://")):
        return (repo_root() / uri.removeprefix("file:")).as_uri()
    if not _scheme(uri) and not os.path.isabs(uri):
        return str(repo_root() / uri)  # a bare path, which MLflow reads as a file store
    return uri


def artifact_location() -> str:
    return (repo_root() / "mlruns").as_uri()


# MLflow's own variables, set for the stage's process unless the user set them: 2 retries (at once, then
# after about 2 s), and 10 s of silence before a request counts as failed (MLflow's defaults: 7 retries
# up to 64 s apart, 120 s). A server that stops answering then fails a request within seconds (refused) or
# about half a minute (silent), not 12 minutes.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
# Ending runs after the store failed: one try, 3 s, so that a dead server costs no more time.
_LAST_TRY = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}


def bound_http_retries() -> None:
    """Set `HTTP_LIMITS` in this process's environment, where the user has not set them."""
    for name, value in HTTP_LIMITS.items():
        os.environ.setdefault(name, value)


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when an HTTP tracking server does not answer (instead of retrying for
    minutes); bounds MLflow's HTTP retries for the rest of the process (`bound_http_retries`)."""
    if not uri.startswith(("http://", "https://")):
        return
    bound_http_retries()
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DnnprobeError(f"MLFLOW_TRACKING_URI={shown(uri)}: tracking server not reachable ({reason})") from None


# The driver's reason comes prefixed with its exception class: "(sqlite3.OperationalError) database or disk is full".
_EXCEPTION_CLASS_PREFIX = re.compile(r"^\((?:\w+\.)*\w+\)\s*")


def _http_failure(text: str) -> str | None:
    """MLflow's "API request to <url> failed with exception <urllib3's retry error>" as a short reason."""
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT

    if not text.startswith("API request to "):
        return None
    tries = MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() + 1  # the values MLflow used: the environment's, or its defaults
    if "timed out" in text or "timeout exception" in text:
        return (f"the server stopped answering: no reply within MLFLOW_HTTP_REQUEST_TIMEOUT="
                f"{MLFLOW_HTTP_REQUEST_TIMEOUT.get()} s, {tries} tries")
    status = re.search(r"too many (\d+) error responses", text)
    if status:
        return f"the server answered HTTP {status.group(1)} to each of {tries} tries; see the server's log"
    cause = re.search(r"\[Errno -?\d+\] ([^'\"()]+)", text)
    if cause or "Max retries exceeded" in text:
        reason = cause.group(1).strip() if cause else "no connection"
        return f"the server stopped answering: {reason}, {tries} tries"
    return None


def _failure_reason(exc: BaseException) -> str:
    """The first line of an MLflow, SQLAlchemy or OS error, without class names, SQL or traceback."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    http = _http_failure(str(getattr(exc, "message", exc)))
    if http:
        return http
    # MLflow wraps SQLAlchemy's error, whose message starts with notes about sessions; the database
    # driver's own error (SQLAlchemy keeps it as .orig) says what went wrong, e.g. "database or disk is full".
    cause: BaseException | None = exc
    while cause is not None and getattr(cause, "orig", None) is None:
        cause = cause.__cause__
    driver_error = getattr(cause, "orig", None)
    text = str(driver_error) if driver_error is not None else str(getattr(exc, "message", exc))
    lines = text.strip().splitlines()
    reason = _EXCEPTION_CLASS_PREFIX.sub("", lines[0].strip()) if lines else type(exc).__name__
    return reason if len(reason) <= 200 else reason[:197] + "..."


class _DropErrorRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


@contextlib.contextmanager
def _quiet_store_logs() -> Iterator[None]:
    """Keep MLflow from printing a database error's traceback: we report the error in one line."""
    logger = logging.getLogger("mlflow.store.db.utils")  # logs every SQLAlchemy OperationalError with its traceback
    quiet = _DropErrorRecords()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def _store_failures() -> tuple[type[BaseException], ...]:
    from mlflow.exceptions import MlflowException

    try:
        from sqlalchemy.exc import OperationalError
    except ImportError:  # mlflow-skinny talking to a tracking server has no SQLAlchemy
        return (MlflowException,)
    return (MlflowException, OperationalError)


@contextlib.contextmanager
def _store_errors(store: str, action: str = "cannot write", *, kind: str = "MLflow store",
                  disk_full: bool = True) -> Iterator[None]:
    """Turn a failing MLflow store (full disk, locked or broken database) into one DnnprobeError line.

    The message reads ``<kind> <store>: <action> (<reason>)``. ``disk_full=False`` leaves an OSError
    alone: around code that also writes other files, a full disk is theirs to report.
    """
    try:
        with _quiet_store_logs():
            yield
    except _store_failures() as exc:
        raise DnnprobeError(f"{kind} {shown(store)}: {action} ({_failure_reason(exc)})") from None
    except OSError as exc:
        if not (disk_full and exc.errno == errno.ENOSPC):
            raise
        raise DnnprobeError(f"{kind} {shown(store)}: {action} ({_failure_reason(exc)})") from None


@contextlib.contextmanager
def _store_lock() -> Iterator[None]:
    """Serialise creating the SQLite store and the experiment: parallel queued runs would race."""
    from filelock import FileLock

    lock_path = repo_root() / STORE_LOCK
    with FileLock(str(lock_path), timeout=300):
        yield


# The module each kind of artifact location needs (MLflow imports it only when it first uploads), and the
# package that provides it.
ARTIFACT_MODULES = {
    "s3": ("boto3", "boto3"), "r2": ("boto3", "boto3"), "b2": ("boto3", "boto3"),
    "gs": ("google.cloud.storage", "google-cloud-storage"),
    "wasbs": ("azure.storage.blob", "azure-storage-blob azure-identity"),
    "abfss": ("azure.storage.filedatalake", "azure-storage-file-datalake azure-identity"),
    "hdfs": ("pyarrow", "pyarrow"), "viewfs": ("pyarrow", "pyarrow"), "sftp": ("pysftp", "pysftp"),
}
# A database driver's module and the package to install, where they differ.
DRIVER_PACKAGES = {"psycopg2": "psycopg2-binary", "psycopg": "psycopg[binary]", "MySQLdb": "mysqlclient",
                   "pymysql": "PyMySQL"}
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def check_store(experiment: str, create: bool = False) -> str | None:
    """Check, before any work, that runs can be logged to the store, in one DnnprobeError line if not.

    In order: a tracking server answers; the store's database driver is installed, or a file store is
    allowed (MLflow 3 refuses ``./mlruns`` without ``MLFLOW_ALLOW_FILE_STORE=true``); the store opens;
    and the experiment's artifact location can be written (a local folder: by writing in it; a cloud
    location: its client library is installed). With `create`, a missing experiment (and SQLite
    store) is created; returns the experiment's id, or None when it does not exist.
    What only a run can reveal (a server whose own artifact store fails) is left to the run.
    """
    import mlflow

    uri = tracking_uri()
    check_reachable(uri)
    _check_store_kind(uri)
    if create:
        experiment_id = ensure_experiment(experiment)
        with _store_errors(uri, "cannot read"):
            found = mlflow.get_experiment(experiment_id)
    else:
        mlflow.set_tracking_uri(uri)
        with _store_errors(uri, "cannot open"):
            found = mlflow.get_experiment_by_name(experiment)
        if found is None:
            return None
    check_artifact_location(found.artifact_location)
    return found.experiment_id


def _check_store_kind(uri: str) -> None:
    """A database store's driver is installed; a file store is allowed. One line naming the fix if not."""
    scheme = _scheme(uri)
    if scheme in ("", "file"):
        from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE

        if not MLFLOW_ALLOW_FILE_STORE.get():
            raise DnnprobeError(
                f"MLflow store {shown(uri)}: MLflow 3 refuses a file store unless MLFLOW_ALLOW_FILE_STORE=true is set; "
                "or move to a database store: `mlflow migrate-filestore` copies the runs into one "
                "(e.g. MLFLOW_TRACKING_URI=sqlite:///mlflow.db)")
        return
    if scheme not in DATABASE_SCHEMES:
        return
    try:
        from sqlalchemy import create_engine
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError
    except ImportError:
        raise DnnprobeError(f"MLflow store {shown(uri)}: needs SQLAlchemy (pip install mlflow, not only mlflow-skinny)") from None
    try:
        create_engine(uri).dispose()  # loads the dialect and imports its driver; connects to nothing
    except ImportError as exc:
        module = (exc.name or str(exc)).split(".")[0]
        raise DnnprobeError(f"MLflow store {shown(uri)}: its database driver {module} is not installed "
                            f"(pip install {DRIVER_PACKAGES.get(module, module)})") from None
    except (NoSuchModuleError, ArgumentError) as exc:
        raise DnnprobeError(f"MLflow store {shown(uri)}: not a database URI SQLAlchemy knows ({exc})") from None


def check_artifact_location(location: str) -> None:
    """One DnnprobeError line, naming `location` and the fix, when MLflow could not write artifacts there.

    A local folder is written to (a temporary file, removed at once; the folder is created as MLflow
    would); a cloud location needs its client library (`ARTIFACT_MODULES`); a server's proxied
    location (``mlflow-artifacts:``, ``http(s):``) is the server's to check.
    """
    import importlib.util
    import tempfile

    scheme = _scheme(location)
    if scheme in ARTIFACT_MODULES:
        module, package = ARTIFACT_MODULES[scheme]
        if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
            raise DnnprobeError(f"MLflow artifact location {location}: needs {module}, which is not installed "
                                f"(pip install {package}), or an experiment with another artifact location")
        return
    if scheme not in ("", "file"):
        from mlflow.exceptions import MlflowException
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        try:
            get_artifact_repository(location)
        except MlflowException as exc:
            raise DnnprobeError(f"MLflow artifact location {location}: {_failure_reason(exc)}") from None
        return
    folder = Path(urllib.request.url2pathname(urllib.parse.urlparse(location).path) if scheme else location)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise DnnprobeError(f"MLflow artifact location {location}: cannot write ({exc.strerror or exc}); make "
                            "it writable, or use an experiment with another artifact location "
                            "(tracking.experiment)") from None


def ensure_experiment(name: str) -> str:
    """Point MLflow at the store and return the experiment's id, creating both if needed."""
    import mlflow

    uri = tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    local = uri.startswith("sqlite:")
    with _store_lock() if local else contextlib.nullcontext():
        with _store_errors(uri, "cannot open"):
            if local:
                _create_local_store(uri)
            experiment = mlflow.get_experiment_by_name(name)
            if experiment is None:
                location = artifact_location() if local else None
                return mlflow.create_experiment(name, artifact_location=location)
            if experiment.lifecycle_stage == "deleted":
                raise DnnprobeError(f"MLflow experiment {name!r} is deleted; restore it or set tracking.experiment")
            return experiment.experiment_id


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


def owner_tags() -> dict[str, str]:
    """Tags naming the process that owns a run: host, pid, and the pid's start time (pids are reused)."""
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), PROCESS_START_TAG: _process_start(pid) or ""}


def _process_start(pid: int) -> str | None:
    """When process `pid` started, or None if there is no such (live) process.

    On Linux: field 22 of /proc/<pid>/stat (clock ticks after boot), which tells a reused pid from the
    process that had it before. Elsewhere, or for a process /proc hides from us, "": alive, start unknown.
    """
    if Path("/proc/self/stat").is_file():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            stat = None  # gone, or hidden (/proc mounted with hidepid): os.kill below tells which
        if stat is not None:
            # Field 2, the command name, is in parentheses and may itself contain spaces and ")".
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] == "Z":
                return None  # a zombie: it is dead, only not yet reaped by its parent
            return fields[19]  # fields[0] is field 3
    try:
        os.kill(pid, 0)  # signal 0 checks that the process exists, sends nothing
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it exists, but belongs to another user
    return ""


def _process_is_gone(pid: int, recorded_start: str) -> bool:
    current = _process_start(pid)
    if current is None:
        return True
    # A live process with another start time got the pid after the one that owned the run ended.
    return bool(recorded_start and current and current != recorded_start)


def mark_orphaned_runs(experiment_id: str) -> list[str]:
    """End, as KILLED, this host's RUNNING runs whose dnnprobe process is gone; returns their ids.

    A probe killed by SIGKILL or the OOM killer cannot end its runs, which would then show RUNNING
    forever. Only runs that dnnprobe tagged with their owner (see `owner_tags`) are considered, and
    only those of this host, since other machines' processes cannot be checked from here; a run whose
    process is still alive is left alone. Each run ended gets the tag ``dnnprobe.orphaned``.
    """
    import mlflow

    store = tracking_uri()
    host = socket.gethostname()
    client = mlflow.tracking.MlflowClient()
    orphaned = []
    with _store_errors(store):
        for run in _running_runs(client, experiment_id):
            tags = run.data.tags
            if tags.get(HOST_TAG) != host or not re.fullmatch(r"[0-9]{1,9}", tags.get(PID_TAG, "")):
                continue  # not ours to judge: another host's run, or no (valid) owner recorded
            pid = int(tags[PID_TAG])
            if pid == 0 or not _process_is_gone(pid, tags.get(PROCESS_START_TAG, "")):
                continue
            client.set_tag(run.info.run_id, ORPHANED_TAG, f"process {pid} on {host} was gone")
            client.set_terminated(run.info.run_id, "KILLED")
            orphaned.append(run.info.run_id)
    return orphaned


def _running_runs(client, experiment_id: str):
    """All RUNNING runs of the experiment, page by page."""
    page_token = None
    while True:
        page = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'",
                                  max_results=1000, page_token=page_token)
        yield from page
        page_token = page.token
        if not page_token:
            return


class ProbeRun:
    """The parent MLflow run of one probe invocation."""

    def __init__(self, run_id: str, experiment_id: str, scoring: str, *, store: str | None = None) -> None:
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.scoring = scoring
        self.store = store or tracking_uri()
        self.left_running: list[str] = []  # "<run id> (layer <name>)": layer runs the store failed to end

    def log_layer(self, layer: str, scores, mean: float, sem: float, extra: Mapping[str, float] | None = None,
                  scoring: str | None = None, per_fold: Mapping[str, object] | None = None) -> None:
        """One nested run per layer (its fold scores); on the parent, ``<layer>`` (the mean) and
        ``sem/<layer>``, ``p_value/<layer>``... for the runs table and its chart view.

        With several attributes `layer` is ``<label>/<layer>`` and `scoring` that attribute's scoring;
        `per_fold` adds other per-fold series to the nested run (``fold_C``: the C chosen per fold)."""
        import mlflow
        from mlflow.entities import Metric, Param

        scoring = scoring or self.scoring
        stamp = int(time.time() * 1000)
        metrics = [Metric(f"fold_{scoring}", float(v), stamp, step) for step, v in enumerate(scores)]
        metrics += [Metric(f"fold_{key}", float(v), stamp, step) for key, values in (per_fold or {}).items()
                    for step, v in enumerate(values)]
        summary = {f"{scoring}_mean": mean, f"{scoring}_sem": sem, **(extra or {})}
        metrics += [Metric(key, float(value), stamp, 0) for key, value in summary.items()]
        client = mlflow.tracking.MlflowClient()
        with _store_errors(self.store):
            child = mlflow.start_run(run_name=layer, nested=True, experiment_id=self.experiment_id, tags=owner_tags())
        try:
            with _store_errors(self.store):
                client.log_batch(child.info.run_id, metrics=metrics, params=[Param("layer", layer)])
                mlflow.end_run("FINISHED")
        except BaseException:
            if not _end_run_quietly(child.info.run_id, "FAILED"):
                self.left_running.append(f"{child.info.run_id} (layer {layer})")
            raise
        on_parent = [Metric(layer, float(mean), stamp, 0), Metric(f"sem/{layer}", float(sem), stamp, 0)]
        on_parent += [Metric(f"{key}/{layer}", float(value), stamp, 0) for key, value in (extra or {}).items()]
        with _store_errors(self.store):
            client.log_batch(self.run_id, metrics=on_parent)

    def log_stimuli(self, table_path: str | os.PathLike, table_sha256: str, name: str, columns: list[str],
                    n_rows: int, label: str, class_counts: Mapping[str, int] | None, origin: str) -> None:
        """The stimulus table as the run's dataset input (context ``stimuli``): the runs table's Dataset
        column then names what was decoded. Its digest is the first 32 hex digits of the table file's
        sha256 (MLflow keeps at most 36 characters; the whole sha256 is the param ``stimuli_sha256``);
        its profile gives the row count, the decoded column and the class sizes; its tag ``stimuli.source``
        says where the stimuli came from (`origin`: demo, stimcsv, folder or bold5000)."""
        import mlflow

        dataset = StimulusTableDataset(table_path, table_sha256, name, columns, n_rows, label, class_counts)
        with _store_errors(self.store):
            mlflow.log_input(dataset, context="stimuli", tags={"stimuli.source": origin or "unknown"})

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None, name: str | None = None) -> None:
        """Attach a file to the parent run, as `name` (default: its own name).

        `name` lets a stage log an output from its temporary file before renaming it into place, so a
        failing artifact store leaves the previous outputs as they were.
        """
        import shutil
        import tempfile

        import mlflow

        client = mlflow.tracking.MlflowClient()
        with _store_errors(self.store, "cannot read"):
            artifact_uri = client.get_run(self.run_id).info.artifact_uri
        with _store_errors(artifact_uri, kind="MLflow artifact store"), tempfile.TemporaryDirectory() as folder:
            if name and name != Path(path).name:
                path = shutil.copyfile(path, Path(folder) / name)  # MLflow names an artifact after its file
            client.log_artifact(self.run_id, str(path), artifact_path=artifact_path)

    def record_summary(self, summary_sha256: str) -> None:
        """Tag the run with the sha256 of the summary.json it produced: the report stage finds the run
        of exactly those results this way, even when DVC restored them from its run cache."""
        import mlflow

        with _store_errors(self.store):
            mlflow.tracking.MlflowClient().set_tag(self.run_id, SUMMARY_TAG, summary_sha256)


def _end_run_quietly(run_id: str, status: str) -> bool:
    """Try to end a run we started; failing here must not hide the error that brought us here.

    One quick try (`_LAST_TRY`): the store has usually just failed. Returns whether the run was ended.
    """
    import mlflow

    active = mlflow.active_run()
    try:
        with _quiet_store_logs(), _environment(_LAST_TRY):
            if active is not None and active.info.run_id == run_id:
                mlflow.end_run(status)  # also takes it off MLflow's stack of active runs (before it calls the store)
            else:
                mlflow.tracking.MlflowClient().set_terminated(run_id, status)
    except Exception:  # noqa: BLE001 - the store is already failing; the first error is the one to report
        return False
    return True


@contextlib.contextmanager
def probe_run(experiment: str, run_name: str, params: Mapping[str, object], scoring: str) -> Iterator[ProbeRun]:
    """Start the parent run; it ends FINISHED, or FAILED if the block raises.

    The store and its artifact location are checked first (`check_store`), and runs of earlier probes
    on this host whose process was killed are ended as KILLED. A failing store (full disk, broken
    database, a server that stopped answering) is one DnnprobeError line, also for MLflow calls the
    block makes itself; marking the runs FAILED is then tried once, and the line names the runs that
    stay RUNNING (the next probe or report on this host ends them as KILLED once this process is gone).
    """
    import mlflow

    experiment_id = check_store(experiment, create=True)
    store = tracking_uri()
    with _store_errors(store):
        mark_orphaned_runs(experiment_id)
        tags = {**run_tags("probe"), **owner_tags()}
        launching = launching_run()
        parent_run_id = None
        if launching is not None:
            tags["launching_run_id"] = launching.info.run_id
            # In our experiment the launching run is the natural parent; elsewhere (e.g. "Default") we only
            # cross-link, so that every probe run lands in `experiment` as `dvc repro` runs do.
            if launching.info.experiment_id == experiment_id:
                parent_run_id = launching.info.run_id
        if tags.get("dvc_exp_name"):
            run_name = f"{run_name} [{tags['dvc_exp_name']}]"
        run = mlflow.start_run(run_name=run_name[:250], experiment_id=experiment_id, tags=tags, parent_run_id=parent_run_id)
    run_id = run.info.run_id
    handle = ProbeRun(run_id, experiment_id, scoring, store=store)
    try:
        with _store_errors(store):
            if launching is not None:
                mlflow.tracking.MlflowClient().set_tag(launching.info.run_id, "probe_run_id", run_id)
            mlflow.log_params({key: _param_value(value) for key, value in params.items()})
        # The block also writes output files: a full disk there is for them to report, not the store.
        with _store_errors(store, disk_full=False):
            yield handle
        with _store_errors(store):
            mlflow.end_run("FINISHED")
    except BaseException as exc:
        left = [] if _end_run_quietly(run_id, "FAILED") else [f"{run_id} (the probe run)"]
        left += handle.left_running
        if left and isinstance(exc, DnnprobeError):
            raise DnnprobeError(f"{exc}; left RUNNING there: {', '.join(left)} (the next probe or report on "
                                "this host ends them as KILLED)") from None
        raise


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
        raise DnnprobeError(f"MLFLOW_RUN_ID={run_id}: no such run in the MLflow store {shown(tracking_uri())}") from None


def changed_settings(arch: str, weights: str, settings: Mapping[str, object], defaults: Mapping[str, object]) -> list[str]:
    """What differs from the defaults, as ``key=value`` (dotted keys, their section dropped): the network
    and its weights when they are not ``alexnet`` and ``random``, then each setting off its default.
    A weights file is named by its file name."""
    parts = [f"{key}={value}" for key, value, default in (("arch", arch, ModelParams.arch),
                                                          ("weights", _weights_name(weights), ModelParams.weights))
             if value != default]
    parts += [f"{key.split('.', 1)[-1]}={value}" for key, value in settings.items()
              if key in defaults and comparable(value) != comparable(defaults[key])]
    return parts


def _weights_name(weights: str) -> str:
    return Path(weights).name if ("/" in weights or "\\" in weights) else weights


def run_name(arch: str, weights: str, settings: Mapping[str, object], defaults: Mapping[str, object],
             always: tuple[str, ...] = ("pca", "cv")) -> str:
    """A parent run's name: what differs from the defaults first, then the network and the `always` keys.

    ``classifier=ridge pca=50 | alexnet random n=400 cv=10``: MLflow's runs table cuts names at about 20
    characters, so what tells runs apart comes first (:func:`changed_settings`); the rest says what
    ran. The default run is ``alexnet random n=400 pca=100 cv=10``. `probe_run` appends DVC's experiment
    name in brackets, so the name also says which `dvc exp show` row it is.
    """
    changed = changed_settings(arch, weights, settings, defaults)
    rest = [arch, _weights_name(weights)]
    rest += [f"{key}={settings[key]}" for key in always if key in settings and f"{key}={settings[key]}" not in changed]
    return " ".join(changed) + (" | " if changed else "") + " ".join(str(part) for part in rest)


@functools.cache
def _stimulus_dataset_class():
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types import ColSpec, Schema

    class _StimulusTableDataset(MetaDataset):
        """A stimulus table as MLflow sees it: metadata (name, digest, source, schema, profile), no data."""

        def __init__(self, table_path, table_sha256, name, columns, n_rows, label, class_counts):
            with warnings.catch_warnings():  # MLflow warns that a local path fits two source types; both are "local"
                warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
                source = resolve_dataset_source(str(table_path))
            schema = Schema([ColSpec("string", column) for column in columns])
            super().__init__(source, name=name, digest=table_sha256[:32], schema=schema)
            self._profile = {"num_rows": n_rows, "label": label}
            if class_counts:
                self._profile["class_counts"] = dict(class_counts)

        @property
        def profile(self):
            return self._profile

        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), "profile": json.dumps(self._profile)}

    return _StimulusTableDataset


def StimulusTableDataset(*args):  # noqa: N802 - a class, built on first use so mlflow is imported lazily
    return _stimulus_dataset_class()(*args)


def _param_value(value: object) -> str:
    text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def find_probe_run(experiment: str, summary_sha256: str):
    """The latest finished probe run in `experiment` that produced the summary.json of this sha256, or None."""
    import mlflow

    uri = tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    with _store_errors(uri, "cannot read"):
        found = mlflow.get_experiment_by_name(experiment)
        if found is None:
            return None
        runs = mlflow.tracking.MlflowClient().search_runs(
            [found.experiment_id],
            filter_string=f"tags.`{SUMMARY_TAG}` = '{summary_sha256}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=1)
    mark_orphaned_runs(found.experiment_id)
    return runs[0] if runs else None


def log_artifacts_to_probe_run(experiment: str, summary_sha256: str, paths: list[Path], artifact_path: str) -> str | None:
    """Attach files to the probe run that produced these results; returns a warning, rather than
    failing, when the store has no such run (e.g. results pulled from a DVC remote, runs logged elsewhere).

    A failing store or artifact location (full disk, broken database) is one DnnprobeError line.
    """
    import mlflow

    run = find_probe_run(experiment, summary_sha256)
    if run is None:
        return (f"no finished MLflow run in experiment {experiment!r} of {shown(tracking_uri())} produced these probe "
                "results; figures not logged to MLflow")
    with _store_errors(run.info.artifact_uri, kind="MLflow artifact store"):
        for path in paths:
            mlflow.tracking.MlflowClient().log_artifact(run.info.run_id, str(path), artifact_path=artifact_path)
    return None
