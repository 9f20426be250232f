"""Source torchvision: ImageNet weights from torchvision's cache only (a local server shows no request), DNNBrain's
names for AlexNet/VGG and ResNet's stem and blocks, the tutorial layers as AlexNet's default."""

from __future__ import annotations

import hashlib

import pytest
import torch
from helpers import closed_port_url

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.network.layers import LayerCall, default_layers, resolve_layers
from dnnprobe.network.sources import torchvision as torchvision_source
from dnnprobe.network.sources.torchvision import TUTORIAL_LAYERS, friendly_layer_names, random_network
from helpers import build_network, same_weights


def test_no_layers_means_the_tutorial_layers():
    assert default_layers(random_network("alexnet", 0), "alexnet") == TUTORIAL_LAYERS


@pytest.fixture
def imagenet_file(tmp_path, http_server, monkeypatch):
    """squeezenet1_0 'ImageNet' weights served from 127.0.0.1, named with their sha256 prefix."""
    base, folder, requests = http_server
    weights = random_network("squeezenet1_0", 11)
    raw = tmp_path / "raw.pth"
    torch.save(weights.state_dict(), raw)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    name = f"squeezenet1_0-{digest[:8]}.pth"
    (folder / name).write_bytes(raw.read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr("dnnprobe.network.sources.torchvision.imagenet_weights_url", lambda arch, *_: f"{base}/{name}")
    return weights, name, folder, requests


def test_imagenet_weights_are_never_downloaded_but_read_from_the_torch_cache(imagenet_file, tmp_path):
    """Served (as if online) but not cached: one line naming the URL and where to put it, and no request;
    once the file is in the cache, it is used."""
    weights, name, folder, requests = imagenet_file
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    message = str(pytest.raises(DnnprobeError, build_network, "squeezenet1_0", "imagenet", 0).value)
    assert requests == [] and not cache.exists()
    url = torchvision_source.imagenet_weights_url("squeezenet1_0")  # the local server's, as patched
    assert f"put {url} at {cache / name}" in message and "nothing is downloaded" in message
    cache.mkdir(parents=True)
    (cache / name).write_bytes((folder / name).read_bytes())
    model, source = build_network("squeezenet1_0", "imagenet", 0)
    assert same_weights(model, weights) and source == name and requests == []


def test_imagenet_weights_with_a_wrong_hash_are_refused(imagenet_file, tmp_path):
    _, name, folder, _ = imagenet_file
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / name).write_bytes(b"not the weights")
    with pytest.raises(DnnprobeError, match="sha256 does not match the hash in its name; replace it with http"):
        build_network("squeezenet1_0", "imagenet", 0)


def test_imagenet_offline_with_nothing_cached_names_three_ways_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr("dnnprobe.network.sources.torchvision.imagenet_weights_url", lambda arch, *_: f"{closed_port_url()}/alexnet-owt-7be5be79.pth")
    with pytest.raises(DnnprobeError) as caught:
        build_network("alexnet", "imagenet", 0)
    message = str(caught.value)
    assert "dvc pull" in message and "torch cache" in message and "model.weights=random" in message
    assert "\n" not in message


def test_friendly_names_for_vgg_and_resnet():
    vgg = friendly_layer_names(random_network("vgg11", 0), "vgg11")
    assert vgg["conv1"] == "features.0" and vgg["conv1_relu"] == "features.1" and vgg["conv8"] == "features.18"
    assert vgg["fc1"] == "classifier.0" and vgg["fc2_relu"] == "classifier.4" and vgg["fc3"] == "classifier.6"
    resnet = friendly_layer_names(random_network("resnet18", 0), "resnet18")
    assert resnet["conv1_relu"] == "relu" and resnet["layer3"] == "layer3" and resnet["fc"] == "fc"
    assert resolve_layers(random_network("resnet18", 0), "resnet18", ["layer3.1.relu"]) == {"layer3.1.relu": LayerCall("layer3.1.relu")}
