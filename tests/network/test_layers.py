"""Layer naming: friendly names and module paths resolve to a module's first call, later calls by their
torchvision FX name; in-place activations keep their recording. (Each source's own names are tested
with the source: test_torchvision.py, test_sources.py.)"""

from __future__ import annotations

import pytest
import torch

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.extract.forward import LayerRecorder
from dnnprobe.network.layers import LayerCall, resolve_layers
from dnnprobe.network.sources.torchvision import random_network


def test_dnnbrain_names_and_module_paths_resolve_to_a_first_call():
    alexnet = resolve_layers(random_network("alexnet", 0), "alexnet", ["conv1", "conv1_relu", "fc1", "features.3"])
    assert alexnet == {
        "conv1": LayerCall("features.0", 0), "conv1_relu": LayerCall("features.1", 0),
        "fc1": LayerCall("classifier.1", 0), "features.3": LayerCall("features.3", 0),
    }
    resnet = resolve_layers(random_network("resnet18", 0), "resnet18", ["conv1", "conv1_relu", "layer3"])
    assert resnet == {"conv1": LayerCall("conv1", 0), "conv1_relu": LayerCall("relu", 0), "layer3": LayerCall("layer3", 0)}


def test_later_calls_of_a_module_resolve_by_their_torchvision_fx_name():
    model = random_network("resnet18", 0)
    resolved = resolve_layers(model, "resnet18", ["layer1.0.relu", "layer1.0.relu_1", "layer4.1.relu_1"])
    assert resolved == {
        "layer1.0.relu": LayerCall("layer1.0.relu", 0),
        "layer1.0.relu_1": LayerCall("layer1.0.relu", 1),
        "layer4.1.relu_1": LayerCall("layer4.1.relu", 1),
    }
    assert [str(call) for call in resolved.values()] == list(resolved)  # str() gives the FX name back
    # Not FX names: _0 is never used, and the part before _<k> must be a module path, not a DNNBrain name.
    for name in ("layer1.0.relu_0", "conv1_relu_1", "layer9_1"):
        with pytest.raises(DnnprobeError, match=f"unknown layer '{name}' for resnet18"):
            resolve_layers(model, "resnet18", [name])


@pytest.mark.parametrize(
    "arch, pre_activation",
    [
        ("alexnet", ["conv1", "conv3", "fc1"]),
        ("vgg11", ["conv1", "conv8", "fc1"]),
        ("vgg16", ["conv2", "fc2"]),
        ("resnet18", ["conv1_bn", "layer1.0.bn2", "layer4.1.bn2"]),
        ("resnet50", ["layer2.0.bn3"]),
    ],
)
def test_pre_activation_layers_keep_negative_values_in_every_arch(arch, pre_activation):
    model = random_network(arch, 0).eval()
    recorder = LayerRecorder(model, resolve_layers(model, arch, pre_activation))
    with torch.inference_mode():
        model(torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)))
    for layer, values in recorder.take().items():
        assert (values < 0).any(), f"{arch} {layer}: no negatives, an in-place op overwrote the recording"


@pytest.mark.parametrize("source, arch, layers, first, second, module", [
    ("torchvision", "alexnet", ["conv1", "fc1", "features.0"], "conv1", "features.0", "features.0"),
    ("torchvision", "resnet18", ["conv1_relu", "relu"], "conv1_relu", "relu", "relu"),
    ("torchvision", "resnet18", ["layer1.0.relu_1", "layer1.0.relu", "layer1.0.relu_1"], "layer1.0.relu_1",
     "layer1.0.relu_1", "layer1.0.relu_1"),
    ("timm", "vit_tiny_patch16_224", ["block1", "blocks.0"], "block1", "blocks.0", "blocks.0"),
])
def test_the_same_module_call_listed_twice_is_refused_naming_both(source, arch, layers, first, second, module):
    from dnnprobe.network.registry import get_source

    model = get_source(source).build(arch, 0)
    with pytest.raises(DnnprobeError) as caught:
        resolve_layers(model, arch, layers, source)
    assert str(caught.value) == (f"extract.layers: {first!r} and {second!r} are the same layer (module {module}); "
                                 "list it once")
