"""Finding the probe run of a set of results, for the report stage to attach its figures to.

The report finds the parent run by the tag ``dnnprobe.summary_sha256``: the sha256 of the
summary.json the run wrote, so even results DVC restored from its run cache find their run.
"""

from __future__ import annotations

from pathlib import Path

import mlflow

from dnnprobe.track.failures import shown, store_errors
from dnnprobe.track.owners import mark_orphaned_runs
from dnnprobe.track.store import check_reachable, tracking_uri
from dnnprobe.track.tags import SUMMARY_TAG


def find_probe_run(experiment: str, summary_sha256: str):
    """The latest finished probe run in `experiment` that produced the summary.json of this sha256, or None."""
    uri = tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    with store_errors(uri, "cannot read"):
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
    run = find_probe_run(experiment, summary_sha256)
    if run is None:
        return (f"no finished MLflow run in experiment {experiment!r} of {shown(tracking_uri())} produced these probe "
                "results; figures not logged to MLflow")
    with store_errors(run.info.artifact_uri, kind="MLflow artifact store"):
        for path in paths:
            mlflow.tracking.MlflowClient().log_artifact(run.info.run_id, str(path), artifact_path=artifact_path)
    return None
