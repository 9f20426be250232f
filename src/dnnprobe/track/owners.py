"""Which process owns a run, and ending the runs of a process that was killed.

Every run dnnprobe starts is tagged with the process that owns it (``dnnprobe.host``, ``dnnprobe.pid``,
``dnnprobe.process_start``). A probe killed by SIGKILL or the OOM killer leaves its runs RUNNING; the
next probe or report on the same host ends them as KILLED (see `mark_orphaned_runs`).
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import mlflow

from dnnprobe.track.failures import LAST_TRY, store_errors, temporary_environment
from dnnprobe.track.store import tracking_uri
from dnnprobe.track.tags import HOST_TAG, ORPHANED_TAG, PID_TAG, PROCESS_START_TAG, SWEEP_TAG



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
    store = tracking_uri()
    host = socket.gethostname()
    client = mlflow.tracking.MlflowClient()
    orphaned = []
    with store_errors(store):
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


def end_sweep_runs(uri: str, sweep: str, names: list[str], why: str) -> list[str]:
    """End, as KILLED, the RUNNING or FINISHED runs that sweep `sweep`'s jobs made for experiments `names`
    (tags SWEEP_TAG and dvc_exp_name), whose result never came home (time limit, scancel, a failed push);
    each gets the tag ``dnnprobe.orphaned`` saying why. Returns their ids. Runs already ended so stay.
    One try of each request (LAST_TRY): the callers are a dying job and a status line, neither can wait."""
    ended = []
    with temporary_environment(LAST_TRY), store_errors(uri):
        client = mlflow.tracking.MlflowClient(tracking_uri=uri)
        experiments = [experiment.experiment_id for experiment in client.search_experiments()]
        for name in names:
            found = client.search_runs(experiments, max_results=1000, filter_string=(
                f"tags.`{SWEEP_TAG}` = '{sweep}' and tags.dvc_exp_name = '{name}'")) if experiments else []
            for run in found:
                if run.info.status in ("RUNNING", "FINISHED"):
                    client.set_tag(run.info.run_id, ORPHANED_TAG, why)
                    client.set_terminated(run.info.run_id, "KILLED")
                    ended.append(run.info.run_id)
    return ended


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
