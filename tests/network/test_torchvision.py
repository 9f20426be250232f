"""Source torchvision: ImageNet weights via torchvision's cache (tested against a local server), DNNBrain's
names for AlexNet/VGG and ResNet's stem and blocks, the tutorial layers as AlexNet's default."""

from __future__ import annotations

import hashlib

import pytest
import torch
from helpers import closed_port_url

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.network.build import build_from_source
from dnnprobe.network.layers import LayerCall, default_layers, resolve_layers
from dnnprobe.network.sources.torchvision import TUTORIAL_LAYERS, friendly_layer_names, random_network


def build_network(arch, weights, seed):
    model, name, _ = build_from_source("torchvision", arch, weights, seed)
    return model, name


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


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


def test_imagenet_weights_download_into_the_torch_cache_and_are_reused(imagenet_file, tmp_path, monkeypatch):
    weights, name, _, requests = imagenet_file
    model, source = build_network("squeezenet1_0", "imagenet", 0)
    assert same_weights(model, weights) and source == name
    assert (tmp_path / "torch_home" / "hub" / "checkpoints" / name).is_file()
    # Offline now: the cached file is used without a request.
    monkeypatch.setattr("dnnprobe.network.sources.torchvision.imagenet_weights_url", lambda arch, *_: f"{closed_port_url()}/{name}")
    count = len(requests)
    model, _ = build_network("squeezenet1_0", "imagenet", 0)
    assert same_weights(model, weights) and len(requests) == count


def test_imagenet_weights_with_a_wrong_hash_are_refused(imagenet_file, http_server, monkeypatch):
    _, name, folder, _ = imagenet_file
    wrong = "squeezenet1_0-00000000.pth"
    (folder / wrong).write_bytes((folder / name).read_bytes())
    monkeypatch.setattr("dnnprobe.network.sources.torchvision.imagenet_weights_url", lambda arch, *_: f"{http_server[0]}/{wrong}")
    with pytest.raises(DnnprobeError, match="sha256 does not match the hash in its name"):
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
