"""Names MLflow accepts as part of a metric key."""

from __future__ import annotations

import pytest

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.track.keys import check_layer_names


@pytest.mark.parametrize("name", ["fc6 (relu)", "x" * 201, "conv1:relu"])
def test_names_mlflow_rejects_are_refused_before_work(name):
    with pytest.raises(DnnprobeError, match="cannot be logged to MLflow"):
        check_layer_names(["conv1", name], "params.yaml: extract.layers")
    check_layer_names(["layer1.0.relu_1", "fc 2/relu"], "ok")
