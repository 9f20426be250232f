"""Conv/ReLU pairing: each layer with its _relu partner, one depth each."""

from __future__ import annotations

from dnnprobe.probe.pairing import depth_groups


def test_depth_groups_pair_each_layer_with_its_relu():
    groups = depth_groups(["conv1", "conv1_relu", "conv2", "conv2_relu", "fc1", "fc1_relu", "fc3", "layer3"])
    assert [(g.label, g.conv, g.relu) for g in groups] == [
        ("Conv1", "conv1", "conv1_relu"), ("Conv2", "conv2", "conv2_relu"), ("FC1", "fc1", "fc1_relu"),
        ("FC3", "fc3", None), ("layer3", "layer3", None),
    ]
