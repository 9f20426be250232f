"""Device choice (dnnprobe.compute.device): full float32 is set through the running torch's own API and
restored; a device name the machine does not have, or torch cannot parse, is one line naming the key."""

from __future__ import annotations

import pytest
import torch

from dnnprobe.compute import device
from dnnprobe.compute.arrays import TorchOps, resolve_device
from dnnprobe.compute.device import full_float32, pick_device
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.stages.params import load_params


def _switch_values():
    return [getattr(owner, name) for owner, name, _ in device._fp32_switches(torch)]


def test_full_float32_uses_the_running_torch_api_and_restores_the_process_settings():
    before = _switch_values()
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        torch.backends.cuda.matmul.fp32_precision = "tf32"  # a user's choice, made with the new API
    try:
        chosen = _switch_values()
        with full_float32():
            assert all(value in ("ieee", False) for value in _switch_values())
        assert _switch_values() == chosen
    finally:
        for (owner, name, _), value in zip(device._fp32_switches(torch), before):
            setattr(owner, name, value)


def test_torch_ops_change_no_process_setting_outside_their_precision_block():
    before = _switch_values()
    ops = TorchOps("cpu")
    assert _switch_values() == before
    with ops.precision():
        assert all(value in ("ieee", False) for value in _switch_values())
    assert _switch_values() == before


@pytest.mark.parametrize(("device", "message"), [
    ("cuda:3", "extract.device is 'cuda:3' but torch sees no CUDA GPU here"),
    ("cuda:01", "extract.device must be auto, cpu, cuda or cuda:N, got 'cuda:01'"),
    ("gpu", "extract.device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
])
def test_an_extraction_device_this_machine_lacks_is_one_line(device, message, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DnnprobeError, match="^" + message.replace("(", r"\(")):
        pick_device(device)


def test_a_cuda_index_beyond_the_machine_is_one_line_for_both_keys(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DnnprobeError, match=r"^extract.device is 'cuda:3' but this machine has 1 CUDA GPU\(s\)$"):
        pick_device("cuda:3")
    with pytest.raises(DnnprobeError, match=r"^probe.device is 'cuda:1' but this machine has 1 CUDA GPU\(s\)$"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("device", ["garbage", "mps", "CUDA", " cpu", ""])
def test_an_unknown_device_name_is_named_not_blamed_on_the_gpu(device):
    with pytest.raises(DnnprobeError, match="probe.device must be auto, cpu, cuda or cuda:N, got"):
        resolve_device(device)


def test_params_refuse_a_device_name_torch_cannot_parse():
    from helpers import REPO

    for key in ("extract.device", "probe.device"):
        with pytest.raises(DnnprobeError, match=f"{key}.*leading zeros"):
            load_params(REPO / "params.yaml", (f"{key}=cuda:01",))
