"""The report finds the probe run of exactly its results, and attaches its figures to it."""

from __future__ import annotations

import errno

import mlflow
import pytest

from helpers import mlflow_database_full_error
from dnnprobe.track.lookup import find_probe_run, log_artifacts_to_probe_run
from dnnprobe.track.runs import probe_run
from dnnprobe.track.store import tracking_uri
from dnnprobe.core.errors import DnnprobeError


def test_report_artifacts_on_a_failing_store_or_full_disk_are_one_line(tmp_path, monkeypatch):
    with probe_run("dnnprobe", "probe", {"pca": 4}, "accuracy") as run:
        run.record_summary("b" * 64)
    figure = tmp_path / "figure.png"
    figure.write_bytes(b"not really a png")

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mlflow.tracking.MlflowClient, "log_artifact", disk_full)
    with pytest.raises(DnnprobeError) as caught:
        log_artifacts_to_probe_run("dnnprobe", "b" * 64, [figure], "report")
    artifacts = mlflow.get_run(run.run_id).info.artifact_uri
    assert str(caught.value) == f"MLflow artifact store {artifacts}: cannot write (No space left on device)"
    with pytest.raises(DnnprobeError) as caught:
        run.log_artifact(figure)  # the probe stage's metrics file
    assert str(caught.value) == f"MLflow artifact store {artifacts}: cannot write (No space left on device)"

    def database_broken(*args, **kwargs):
        raise mlflow_database_full_error()

    # A store that fails to answer is not a store without the run: no "run not found" warning.
    monkeypatch.setattr(mlflow.tracking.MlflowClient, "search_runs", database_broken)
    with pytest.raises(DnnprobeError) as caught:
        log_artifacts_to_probe_run("dnnprobe", "b" * 64, [figure], "report")
    assert str(caught.value) == f"MLflow store {tracking_uri()}: cannot read (database or disk is full)"


def test_the_report_finds_the_run_of_exactly_its_results(tmp_path):
    """By the sha256 of summary.json: the latest finished run that wrote it; none for other results."""
    for name, digest in (("old", "c" * 64), ("other", "d" * 64), ("new", "c" * 64)):
        with probe_run("dnnprobe", name, {"pca": 4}, "accuracy") as run:
            run.record_summary(digest)
    assert find_probe_run("dnnprobe", "c" * 64).info.run_name == "new"
    assert find_probe_run("dnnprobe", "e" * 64) is None
    assert find_probe_run("no such experiment", "c" * 64) is None
    figure = tmp_path / "figure.png"
    figure.write_bytes(b"not really a png")
    warning = log_artifacts_to_probe_run("dnnprobe", "e" * 64, [figure], "report")
    assert warning.startswith("no finished MLflow run in experiment 'dnnprobe' of sqlite:///")
