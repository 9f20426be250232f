"""The tracking section: the MLflow experiment's name, checked before any stage works."""

from __future__ import annotations

import pytest

from helpers import REPO
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.params import load, schema
from dnnprobe.track.params import TrackingParams


def tracking_params(*overrides: str):
    return load(schema(TrackingParams), REPO / "params.yaml", overrides)


def test_an_experiment_name_longer_than_mlflow_allows_is_refused_before_any_stage_works():
    """MLflow refuses experiment names over 500 characters; that failed only at the probe."""
    with pytest.raises(DnnprobeError, match=r"params.yaml: tracking.experiment must be at most 500 characters "
                                             r"\(MLflow's limit for an experiment name\), got 'eeee"):
        tracking_params("tracking.experiment=" + "e" * 501)
    assert tracking_params("tracking.experiment=" + "e" * 500).tracking.experiment == "e" * 500
    with pytest.raises(DnnprobeError, match="tracking.experiment must not be empty"):
        tracking_params("tracking.experiment=' '")
