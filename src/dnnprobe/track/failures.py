"""A failing MLflow store as one DnnprobeError line, never MLflow's or SQLAlchemy's traceback.

A full disk, a locked or broken database or a server that stopped answering reads
``MLflow store <uri>: cannot write (<reason>)``: `store_errors` turns the error into that line,
`failure_reason` finds its reason, `shown` hides a password in the URI.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import urllib.parse
from typing import Iterator, Mapping

from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT
from mlflow.exceptions import MlflowException

from dnnprobe.core.errors import DnnprobeError


def shown(uri: str) -> str:
    """`uri` for a message or a log: a password in it (``postgresql://user:secret@host/db``) as ``***``."""
    parts = urllib.parse.urlsplit(uri)
    if not parts.password:
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


# Ending runs after the store failed: one try, 3 s, so that a dead server costs no more time.
LAST_TRY = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}


@contextlib.contextmanager
def temporary_environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set `values` in os.environ for the block, then restore what was there."""
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


# The driver's reason comes prefixed with its exception class: "(sqlite3.OperationalError) database or disk is full".
_EXCEPTION_CLASS_PREFIX = re.compile(r"^\((?:\w+\.)*\w+\)\s*")


def _http_failure(text: str) -> str | None:
    """MLflow's "API request to <url> failed with exception <urllib3's retry error>" as a short reason."""
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


def failure_reason(exc: BaseException) -> str:
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
def quiet_store_logs() -> Iterator[None]:
    """Keep MLflow from printing a database error's traceback: we report the error in one line."""
    logger = logging.getLogger("mlflow.store.db.utils")  # logs every SQLAlchemy OperationalError with its traceback
    quiet = _DropErrorRecords()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def _store_failures() -> tuple[type[BaseException], ...]:
    try:
        from sqlalchemy.exc import OperationalError  # lazy: mlflow-skinny talking to a tracking server has no SQLAlchemy
    except ImportError:
        return (MlflowException,)
    return (MlflowException, OperationalError)


@contextlib.contextmanager
def store_errors(store: str, action: str = "cannot write", *, kind: str = "MLflow store",
                 disk_full: bool = True) -> Iterator[None]:
    """Turn a failing MLflow store (full disk, locked or broken database) into one DnnprobeError line.

    The message reads ``<kind> <store>: <action> (<reason>)``. ``disk_full=False`` leaves an OSError
    alone: around code that also writes other files, a full disk is theirs to report.
    """
    try:
        with quiet_store_logs():
            yield
    except _store_failures() as exc:
        raise DnnprobeError(f"{kind} {shown(store)}: {action} ({failure_reason(exc)})") from None
    except OSError as exc:
        if not (disk_full and exc.errno == errno.ENOSPC):
            raise
        raise DnnprobeError(f"{kind} {shown(store)}: {action} ({failure_reason(exc)})") from None
