"""Networks and weights: seeded random init, ImageNet weights via torchvision's cache (tested against a
local server), state_dict files loaded safely, friendly layer names, in-place activations handled."""

from __future__ import annotations

import hashlib
import pickle

import pytest
import torch

from helpers import closed_port_url
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.extract.forward import LayerRecorder
from dnnprobe.network.layers import LayerCall, friendly_layer_names, resolve_layers
from dnnprobe.network.build import build_network, load_network, load_state_dict_file, random_network, save_network


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_random_weights_are_reproducible_from_the_seed():
    assert same_weights(random_network("alexnet", 3), random_network("alexnet", 3))
    assert not same_weights(random_network("alexnet", 3), random_network("alexnet", 4))


def test_saved_network_round_trips_and_detects_changes(tmp_path):
    model, source = build_network("alexnet", "random", 1)
    info = save_network(model, tmp_path / "n.pt", "alexnet", "random", 1, source)
    again = save_network(random_network("alexnet", 1), tmp_path / "m.pt", "alexnet", "random", 1, source)
    assert info.sha256 == again.sha256  # byte-identical saves: DVC sees no change on a rerun
    loaded, loaded_info = load_network(tmp_path / "n.pt", "alexnet")
    assert same_weights(loaded, model) and loaded_info == info
    with pytest.raises(DnnprobeError, match="holds alexnet, but model.arch is vgg11"):
        load_network(tmp_path / "n.pt", "vgg11")
    with open(tmp_path / "n.pt", "ab") as handle:
        handle.write(b"x")
    with pytest.raises(DnnprobeError, match="sha256 differs"):
        load_network(tmp_path / "n.pt", "alexnet")


def test_state_dict_file_weights(tmp_path):
    reference = random_network("squeezenet1_0", 5)
    torch.save(reference.state_dict(), tmp_path / "mine.pt")
    model, source = build_network("squeezenet1_0", str(tmp_path / "mine.pt"), 0)
    assert same_weights(model, reference) and source == "mine.pt"


class Exploit:
    def __reduce__(self):
        return (print, ("pickled code ran",))


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda p: torch.save(random_network("alexnet", 0).state_dict(), p), "weights do not fit squeezenet1_0"),
        (lambda p: torch.save([torch.zeros(2)], p), "not a state_dict"),
        (lambda p: p.write_bytes(pickle.dumps(Exploit())), "not a loadable state_dict"),
        (lambda p: p.write_bytes(b"garbage"), "not a PyTorch weights file"),
    ],
)
def test_bad_weight_files_are_refused_without_running_code(tmp_path, capsys, write, message):
    path = tmp_path / "w.pt"
    write(path)
    with pytest.raises(DnnprobeError, match=message):
        build_network("squeezenet1_0", str(path), 0)
    assert "pickled code ran" not in capsys.readouterr().out
    with pytest.raises(DnnprobeError, match="is not a file"):
        build_network("squeezenet1_0", str(tmp_path / "none.pt"), 0)


def test_legacy_torch_save_format_still_loads(tmp_path):
    """The pre-1.6 format is a pickle (first byte 0x80), not a zip: it must pass the first-bytes check."""
    reference = random_network("squeezenet1_0", 5)
    torch.save(reference.state_dict(), tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    assert (tmp_path / "old.pt").read_bytes()[:1] == b"\x80"
    model, _ = build_network("squeezenet1_0", str(tmp_path / "old.pt"), 0)
    assert same_weights(model, reference)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"hello\n", "it starts with 'hello', not a torch.save archive"),
        (b"", "empty file"),
        (b"\n<!DOCTYPE html>\n<html><head><title>Sign in</title>", "it starts with '<!DOCTYPE html>', not a torch.save archive"),
        (b'{"conv1.weight": [0.1, 0.2, 0.3, 0.4]}', """it starts with '{"conv1.weight": [0.1, 0...', not a torch.save archive"""),
        (b"\x89PNG\r\n\x1a\nrest", "it starts with b'\\x89PNG\\r\\n\\x1a\\n', not a torch.save archive"),
        (len(b'{"w":{}}').to_bytes(8, "little") + b'{"w":{}}', "a safetensors file, not a torch.save archive; "
         "give it the .safetensors suffix"),
    ],
)
def test_a_file_torch_save_cannot_have_written_is_named_as_such(tmp_path, content, reason):
    path = tmp_path / "mine.pt"
    path.write_bytes(content)
    with pytest.raises(DnnprobeError) as caught:
        load_state_dict_file(path)
    assert str(caught.value) == f"{path}: not a PyTorch weights file ({reason})"


def test_a_folder_given_as_weights_is_named_as_a_folder(tmp_path):
    with pytest.raises(DnnprobeError) as caught:
        build_network("squeezenet1_0", str(tmp_path), 0)
    assert str(caught.value) == f"model.weights: {tmp_path} is a folder, not a state_dict file"


def test_unknown_arch_lists_the_choices():
    with pytest.raises(DnnprobeError, match="unknown network 'alexnett'.*alexnet"):
        build_network("alexnett", "random", 0)


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
    monkeypatch.setattr("dnnprobe.network.build.imagenet_weights_url", lambda arch, *_: f"{base}/{name}")
    return weights, name, folder, requests


def test_imagenet_weights_download_into_the_torch_cache_and_are_reused(imagenet_file, tmp_path, monkeypatch):
    weights, name, _, requests = imagenet_file
    model, source = build_network("squeezenet1_0", "imagenet", 0)
    assert same_weights(model, weights) and source == name
    assert (tmp_path / "torch_home" / "hub" / "checkpoints" / name).is_file()
    # Offline now: the cached file is used without a request.
    monkeypatch.setattr("dnnprobe.network.build.imagenet_weights_url", lambda arch, *_: f"{closed_port_url()}/{name}")
    count = len(requests)
    model, _ = build_network("squeezenet1_0", "imagenet", 0)
    assert same_weights(model, weights) and len(requests) == count


def test_imagenet_weights_with_a_wrong_hash_are_refused(imagenet_file, http_server, monkeypatch):
    _, name, folder, _ = imagenet_file
    wrong = "squeezenet1_0-00000000.pth"
    (folder / wrong).write_bytes((folder / name).read_bytes())
    monkeypatch.setattr("dnnprobe.network.build.imagenet_weights_url", lambda arch, *_: f"{http_server[0]}/{wrong}")
    with pytest.raises(DnnprobeError, match="sha256 does not match the hash in its name"):
        build_network("squeezenet1_0", "imagenet", 0)


def test_imagenet_offline_with_nothing_cached_names_three_ways_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr("dnnprobe.network.build.imagenet_weights_url", lambda arch, *_: f"{closed_port_url()}/alexnet-owt-7be5be79.pth")
    with pytest.raises(DnnprobeError) as caught:
        build_network("alexnet", "imagenet", 0)
    message = str(caught.value)
    assert "dvc pull" in message and "torch cache" in message and "model.weights=random" in message
    assert "\n" not in message


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


def test_friendly_names_for_vgg_and_resnet():
    vgg = friendly_layer_names(random_network("vgg11", 0), "vgg11")
    assert vgg["conv1"] == "features.0" and vgg["conv1_relu"] == "features.1" and vgg["conv8"] == "features.18"
    assert vgg["fc1"] == "classifier.0" and vgg["fc2_relu"] == "classifier.4" and vgg["fc3"] == "classifier.6"
    resnet = friendly_layer_names(random_network("resnet18", 0), "resnet18")
    assert resnet["conv1_relu"] == "relu" and resnet["layer3"] == "layer3" and resnet["fc"] == "fc"
    assert resolve_layers(random_network("resnet18", 0), "resnet18", ["layer3.1.relu"]) == {"layer3.1.relu": LayerCall("layer3.1.relu")}


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
