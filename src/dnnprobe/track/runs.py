"""The probe's MLflow run: started, filled and ended as one probe invocation.

Each probe invocation is one parent run, named by the settings that tell it apart (see
`dnnprobe.track.naming.run_name`; DVC's experiment name is the tag ``dvc_exp_name`` and ends the
name), with every params.yaml key the probe read (dotted), the provenance hashes, the git commit, the
stimulus table as a dataset input (name, digest, source, row count: the runs table's Dataset column),
one metric per layer (``<layer>``: the mean fold score, as in reports/metrics.json; ``sem/<layer>``
and, with permutations, ``p_value/<layer>``...) and the metrics files as artifacts. One nested run per
layer holds the fold scores (metric ``fold_<scoring>`` at steps 0..cv-1). The run is tagged with the
sha256 of the summary.json it wrote (`record_summary`), by which the report stage finds it. No run id
goes into a DVC output, whose bytes (and dvc.lock) would then change with every run.

Launched by ``mlflow run`` (which exports ``$MLFLOW_RUN_ID``), the probe's parent run still goes to
the ``tracking.experiment`` experiment: nested under the launching run when that run is in the same
experiment, otherwise linked to it by tags (``launching_run_id`` on ours, ``probe_run_id`` on it).

A failing store is one DnnprobeError line (`dnnprobe.track.failures`); runs it left RUNNING are
named in that line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator, Mapping

import mlflow
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from dnnprobe import __version__
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.track.dataset import StimulusTableDataset
from dnnprobe.track.failures import LAST_TRY, quiet_store_logs, shown, store_errors, temporary_environment
from dnnprobe.track.owners import mark_orphaned_runs, owner_tags
from dnnprobe.track.store import check_store, tracking_uri
from dnnprobe.track.tags import SUMMARY_TAG, SWEEP_TAG, SWEEP_VARIABLE


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
    tags = {"stage": stage, "dnnprobe_version": __version__, "git_commit": git_commit()}
    tags["mlflow.source.git.commit"] = tags["git_commit"]
    for variable, tag in (("DVC_EXP_NAME", "dvc_exp_name"), ("DVC_EXP_BASELINE_REV", "dvc_exp_baseline_rev"),
                          (SWEEP_VARIABLE, SWEEP_TAG)):
        if os.environ.get(variable):
            tags[tag] = os.environ[variable]
    return tags


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
        scoring = scoring or self.scoring
        stamp = int(time.time() * 1000)
        metrics = [Metric(f"fold_{scoring}", float(v), stamp, step) for step, v in enumerate(scores)]
        metrics += [Metric(f"fold_{key}", float(v), stamp, step) for key, values in (per_fold or {}).items()
                    for step, v in enumerate(values)]
        summary = {f"{scoring}_mean": mean, f"{scoring}_sem": sem, **(extra or {})}
        metrics += [Metric(key, float(value), stamp, 0) for key, value in summary.items()]
        client = mlflow.tracking.MlflowClient()
        with store_errors(self.store):
            child = mlflow.start_run(run_name=layer, nested=True, experiment_id=self.experiment_id, tags=owner_tags())
        try:
            with store_errors(self.store):
                client.log_batch(child.info.run_id, metrics=metrics, params=[Param("layer", layer)])
                mlflow.end_run("FINISHED")
        except BaseException:
            if not _end_run_quietly(child.info.run_id, "FAILED"):
                self.left_running.append(f"{child.info.run_id} (layer {layer})")
            raise
        on_parent = [Metric(layer, float(mean), stamp, 0), Metric(f"sem/{layer}", float(sem), stamp, 0)]
        on_parent += [Metric(f"{key}/{layer}", float(value), stamp, 0) for key, value in (extra or {}).items()]
        with store_errors(self.store):
            client.log_batch(self.run_id, metrics=on_parent)

    def log_stimuli(self, table_path: str | os.PathLike, table_sha256: str, name: str, columns: list[str],
                    n_rows: int, label: str, class_counts: Mapping[str, int] | None, origin: str) -> None:
        """The stimulus table as the run's dataset input (context ``stimuli``): the runs table's Dataset
        column then names what was decoded. Its digest is the first 32 hex digits of the table file's
        sha256 (MLflow keeps at most 36 characters; the whole sha256 is the param ``stimuli_sha256``);
        its profile gives the row count, the decoded column and the class sizes; its tag ``stimuli.source``
        says where the stimuli came from (`origin`: demo, stimcsv, folder or bold5000)."""
        dataset = StimulusTableDataset(table_path, table_sha256, name, columns, n_rows, label, class_counts)
        with store_errors(self.store):
            mlflow.log_input(dataset, context="stimuli", tags={"stimuli.source": origin or "unknown"})

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None, name: str | None = None) -> None:
        """Attach a file to the parent run, as `name` (default: its own name).

        `name` lets a stage log an output from its temporary file before renaming it into place, so a
        failing artifact store leaves the previous outputs as they were.
        """
        client = mlflow.tracking.MlflowClient()
        with store_errors(self.store, "cannot read"):
            artifact_uri = client.get_run(self.run_id).info.artifact_uri
        with store_errors(artifact_uri, kind="MLflow artifact store"), tempfile.TemporaryDirectory() as folder:
            if name and name != Path(path).name:
                path = shutil.copyfile(path, Path(folder) / name)  # MLflow names an artifact after its file
            client.log_artifact(self.run_id, str(path), artifact_path=artifact_path)

    def tag(self, key: str, value: str) -> None:
        """Tag the parent run (MLflow keeps at most 8,000 characters of a tag's value; longer is cut)."""
        with store_errors(self.store):
            mlflow.tracking.MlflowClient().set_tag(self.run_id, key, value[:8000])

    def record_summary(self, summary_sha256: str) -> None:
        """Tag the run with the sha256 of the summary.json it produced: the report stage finds the run
        of exactly those results this way, even when DVC restored them from its run cache."""
        with store_errors(self.store):
            mlflow.tracking.MlflowClient().set_tag(self.run_id, SUMMARY_TAG, summary_sha256)


def _end_run_quietly(run_id: str, status: str) -> bool:
    """Try to end a run we started; failing here must not hide the error that brought us here.

    One quick try (`LAST_TRY`): the store has usually just failed. Returns whether the run was ended.
    """
    active = mlflow.active_run()
    try:
        with quiet_store_logs(), temporary_environment(LAST_TRY):
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
    experiment_id = check_store(experiment, create=True)
    store = tracking_uri()
    with store_errors(store):
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
        with store_errors(store):
            if launching is not None:
                mlflow.tracking.MlflowClient().set_tag(launching.info.run_id, "probe_run_id", run_id)
            mlflow.log_params({key: _param_value(value) for key, value in params.items()})
        # The block also writes output files: a full disk there is for them to report, not the store.
        with store_errors(store, disk_full=False):
            yield handle
        with store_errors(store):
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
    run_id = os.environ.pop("MLFLOW_RUN_ID", None)
    if not run_id:
        return None
    try:
        return mlflow.tracking.MlflowClient().get_run(run_id)
    except MlflowException:
        raise DnnprobeError(f"MLFLOW_RUN_ID={run_id}: no such run in the MLflow store {shown(tracking_uri())}") from None



def _param_value(value: object) -> str:
    text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."
