"""Networks: seeded random init, networks saved with their sidecar and loaded back checked, state_dict
files as weights (refused without running code), the torchvision default record."""

from __future__ import annotations

import pickle

import pytest
import torch

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.network.build import load_network, save_network
from dnnprobe.network.sources.torchvision import random_network
from helpers import build_network, same_weights


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


def test_a_folder_given_as_weights_is_named_as_a_folder(tmp_path):
    with pytest.raises(DnnprobeError) as caught:
        build_network("squeezenet1_0", str(tmp_path), 0)
    assert str(caught.value) == f"model.weights: {tmp_path} is a folder, not a state_dict file"


def test_unknown_arch_lists_the_choices():
    with pytest.raises(DnnprobeError, match="unknown network 'alexnett'.*alexnet"):
        build_network("alexnett", "random", 0)
