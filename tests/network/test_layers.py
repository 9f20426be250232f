"""Layer naming in one place: the default layer list, Conv/ReLU pairing, names MLflow accepts.
(Names resolved on real networks are tested in test_network.py and test_extraction.py.)"""

from __future__ import annotations

import pytest

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.stages.params import Params
from dnnprobe.network.layers import TUTORIAL_LAYERS, check_layer_names, depth_groups, requested_layers


def test_no_layers_means_the_tutorial_layers():
    assert requested_layers(Params().extract.layers) == TUTORIAL_LAYERS
    assert requested_layers(("fc2",)) == ("fc2",)


def test_depth_groups_pair_each_layer_with_its_relu():
    groups = depth_groups(["conv1", "conv1_relu", "conv2", "conv2_relu", "fc1", "fc1_relu", "fc3", "layer3"])
    assert [(g.label, g.conv, g.relu) for g in groups] == [
        ("Conv1", "conv1", "conv1_relu"), ("Conv2", "conv2", "conv2_relu"), ("FC1", "fc1", "fc1_relu"),
        ("FC3", "fc3", None), ("layer3", "layer3", None),
    ]


@pytest.mark.parametrize("name", ["fc6 (relu)", "x" * 201, "conv1:relu"])
def test_names_mlflow_rejects_are_refused_before_work(name):
    with pytest.raises(DnnprobeError, match="cannot be logged to MLflow"):
        check_layer_names(["conv1", name], "params.yaml: extract.layers")
    check_layer_names(["layer1.0.relu_1", "fc 2/relu"], "ok")
