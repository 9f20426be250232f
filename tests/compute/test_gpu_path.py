"""The CUDA code paths, exercised on the CPU where they can be (benchmarks/gpu_check.sh runs them on a GPU).

What is checked here: the network's input is computed by exact division (as on the CPU); the torch
products' precision settings are set through the running torch's own API and restored; a device name
the machine does not have, or torch cannot parse, is one line; the dense eigensolver never runs on the
device above its size limit; the fold-ordered Gram is filled where the solver keeps it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import low_rank_data
from dnnprobe.probe import foldpca
from dnnprobe.compute import linalg
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.stages.params import load_params
from dnnprobe.extract.forward import _normalisation, pick_device, to_model_input
from dnnprobe.probe.foldpca import GramPCASolver
from dnnprobe.compute.linalg import NUMPY, TorchOps, full_float32, resolve_device


def test_network_input_divides_by_a_device_tensor_and_equals_torchvision_for_every_pixel_value():
    from torchvision.transforms import functional

    cpu = torch.device("cpu")
    scale = _normalisation(cpu)[0]
    # Division by a tensor on the device, never by a Python number (CUDA would multiply by 1/255).
    assert isinstance(scale, torch.Tensor) and scale.device == cpu and scale.dtype == torch.float32
    pixels = torch.arange(256, dtype=torch.uint8).repeat(3).view(1, 16, 16, 3)  # every value in every channel
    ours = to_model_input(pixels, cpu)
    image = pixels[0].permute(2, 0, 1)
    reference = functional.normalize(image.float() / 255, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert torch.equal(ours[0], reference)
    # The check is sensitive: the reciprocal product CUDA uses for a scalar differs in the last bit.
    assert not torch.equal(image.float() * (1 / 255), image.float() / 255)


def _switch_values():
    return [getattr(owner, name) for owner, name, _ in linalg._fp32_switches(torch)]


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
        for (owner, name, _), value in zip(linalg._fp32_switches(torch), before):
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


def test_params_refuse_a_device_name_torch_cannot_parse():
    from helpers import REPO

    for key in ("extract.device", "probe.device"):
        with pytest.raises(DnnprobeError, match=f"{key}.*leading zeros"):
            load_params(REPO / "params.yaml", (f"{key}=cuda:01",))


def test_dense_fallback_above_the_device_limit_runs_on_the_host(monkeypatch):
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((60, 60)))[0]
    matrix = (basis * np.linspace(1, 2, 60)) @ basis.T
    ops = TorchOps("cpu")
    monkeypatch.setattr(linalg, "DEVICE_EIGH_LIMIT", 40)

    def device_eigh(*args, **kwargs):
        raise AssertionError("a dense eigensolver ran on the device above DEVICE_EIGH_LIMIT")

    monkeypatch.setattr(torch.linalg, "eigh", device_eigh)
    values, vectors = ops.dense_top(ops.asarray(matrix, np.float64), 5)
    expected_values, expected_vectors = NUMPY.dense_top(matrix, 5)
    np.testing.assert_allclose(values, expected_values, rtol=1e-12)
    np.testing.assert_allclose(np.abs(vectors.T @ expected_vectors), np.eye(5), atol=1e-8)


def test_dense_fallback_too_large_for_the_host_is_refused_in_one_line(monkeypatch):
    from dnnprobe.compute import memory

    monkeypatch.setattr(linalg, "DEVICE_EIGH_LIMIT", 40)
    monkeypatch.setattr(memory, "available_bytes", lambda: 1 << 20)
    ops = TorchOps("cpu")
    with pytest.raises(DnnprobeError, match=r"^layer \(dense eigensolver fallback\): needs .* host memory"):
        ops.dense_top(ops.asarray(np.eye(60), np.float64), 5)


def test_fold_ordered_gram_lives_on_the_solver_device_and_gives_numpy_scores(monkeypatch):
    monkeypatch.setattr(foldpca, "DENSE_LIMIT", 50)  # the iterative path (float32 copy) at test size
    X, y = low_rank_data(n=120, d=300, seed=4)
    gram = X.astype(np.float64) @ X.T.astype(np.float64)
    test_folds = [np.arange(i, 120, 4) for i in range(4)]
    train, test = np.setdiff1d(np.arange(120), test_folds[1]), test_folds[1]
    ops = TorchOps("cpu")
    solver = GramPCASolver(gram, 6, test_folds, ops=ops)
    assert isinstance(solver.kp, torch.Tensor) and solver.kp.shape == (120, 120)
    reference = GramPCASolver(gram, 6, test_folds)
    with ops.precision():
        ours = solver.fold_scores(train, test)
    theirs = reference.fold_scores(train, test)
    for mine, other in zip(ours, theirs):
        np.testing.assert_allclose(np.abs(mine), np.abs(other), rtol=1e-3, atol=1e-3 * np.abs(other).max())
