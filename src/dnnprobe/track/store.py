"""Where MLflow runs go, and whether they can go there, checked before any work.

Store: ``$MLFLOW_TRACKING_URI`` when set; otherwise ``sqlite:///<repo>/mlflow.db`` with artifacts in
``<repo>/mlruns``. ``<repo>`` is ``$DVC_ROOT`` when DVC sets it (`dnnprobe.core.paths.repo_root`):
``dvc exp run --temp`` and queued experiments run in a temporary copy of the repository, and a path
relative to that copy would lose the run when the copy is deleted. A relative store URI
(``sqlite:///mlflow.db``, ``./mlruns``) is anchored on ``<repo>``, as the default is.

Before any work, `check_store` checks what can be checked without a run: the server answers, the
database driver or plugin is installed, the store opens, and its artifact location can be written.

Over HTTP, MLflow retries a failed request 7 times with a growing backoff and waits 120 s for each
answer, so a server that stops answering held the stage for over 12 minutes. The stages bound that
(`HTTP_LIMITS`) unless the user set MLflow's variables themselves.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator

import mlflow
from filelock import FileLock
from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE
from mlflow.exceptions import MlflowException

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.paths import repo_root
from dnnprobe.track.failures import failure_reason, shown, store_errors

STORE_LOCK = "mlflow.db.lock"


# A server's address without its scheme (127.0.0.1:5000, localhost:5000/, mlflow.lab.org:443): MLflow would
# read it as a path (a file store) or as an unknown scheme.
SERVER_ADDRESS = re.compile(r"(?:localhost|[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+):[0-9]+/?")


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI with a relative path anchored on the repository root, or the default store.

    Raises DnnprobeError for a server's address without ``http://``.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri and SERVER_ADDRESS.fullmatch(uri.strip()):
        raise DnnprobeError(f"MLFLOW_TRACKING_URI={uri}: a tracking server's address needs its scheme: "
                            f"MLFLOW_TRACKING_URI=http://{uri.strip()} (or https://)")
    return anchored_uri(uri) if uri else f"sqlite:///{repo_root() / 'mlflow.db'}"


# Store URIs MLflow reads as a scheme though they have no colon (not paths to a file store).
BARE_SCHEMES = ("databricks", "databricks-uc", "uc")


def uri_scheme(uri: str) -> str:
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
    if not uri_scheme(uri) and not os.path.isabs(uri):
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


def bound_http_retries() -> None:
    """Set `HTTP_LIMITS` in this process's environment, where the user has not set them."""
    for name, value in HTTP_LIMITS.items():
        os.environ.setdefault(name, value)


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


@contextlib.contextmanager
def store_lock() -> Iterator[None]:
    """Serialise creating the SQLite store and the experiment: parallel queued runs would race."""
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
    uri = tracking_uri()
    check_reachable(uri)
    _check_store_kind(uri)
    if create:
        experiment_id = ensure_experiment(experiment)
        with store_errors(uri, "cannot read"):
            found = mlflow.get_experiment(experiment_id)
    else:
        mlflow.set_tracking_uri(uri)
        with store_errors(uri, "cannot open"):
            found = mlflow.get_experiment_by_name(experiment)
        if found is None:
            return None
    check_artifact_location(found.artifact_location)
    return found.experiment_id


def _check_store_kind(uri: str) -> None:
    """A database store's driver is installed; a file store is allowed. One line naming the fix if not."""
    scheme = uri_scheme(uri)
    if scheme in ("", "file"):
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
    scheme = uri_scheme(location)
    if scheme in ARTIFACT_MODULES:
        module, package = ARTIFACT_MODULES[scheme]
        if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
            raise DnnprobeError(f"MLflow artifact location {location}: needs {module}, which is not installed "
                                f"(pip install {package}), or an experiment with another artifact location")
        return
    if scheme not in ("", "file"):
        # lazy: the registry imports every artifact repository module, needed only for a remote location
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        try:
            get_artifact_repository(location)
        except MlflowException as exc:
            raise DnnprobeError(f"MLflow artifact location {location}: {failure_reason(exc)}") from None
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
    uri = tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    local = uri.startswith("sqlite:")
    with store_lock() if local else contextlib.nullcontext():
        with store_errors(uri, "cannot open"):
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
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore  # lazy: needs SQLAlchemy, which mlflow-skinny lacks

    database = uri.removeprefix("sqlite:///").split("?")[0]
    if database and database != ":memory:" and not Path(database).exists():
        SqlAlchemyStore(uri, artifact_location())
