"""Which torch device a stage runs on, and full float32 on it.

``extract.device`` and ``probe.device`` name a device as ``auto``, ``cpu``, ``cuda`` or ``cuda:N``
(:data:`DEVICE_PATTERN`); a CUDA device this machine does not have is refused in one line naming the
key. On a GPU, float32 convolutions and products run in full float32 (:func:`full_float32`), so GPU
and CPU results differ by float32 rounding only.

torch is imported inside the functions that need it: the probe and gram stages import this module on
the CPU path too, where importing torch would cost seconds for nothing.
"""

from __future__ import annotations

import contextlib
import os
import re

from dnnprobe.core.errors import DnnprobeError

DEVICE_PATTERN = r"cuda(:(0|[1-9][0-9]*))?"  # torch refuses cuda:01


def _fp32_switches(torch) -> list[tuple[object, str, object]]:
    """(object, attribute, full-float32 value) of each switch that lets CUDA use TF32 for float32 work.

    torch >= 2.9 has the ``fp32_precision`` API, and reading the legacy ``allow_tf32`` flags after it was
    used raises RuntimeError: use whichever API the running torch has, never both.
    """
    backends = torch.backends
    if hasattr(backends.cuda.matmul, "fp32_precision") and hasattr(backends.cudnn, "conv"):
        return [(backends.cuda.matmul, "fp32_precision", "ieee"), (backends.cudnn.conv, "fp32_precision", "ieee")]
    return [(backends.cuda.matmul, "allow_tf32", False), (backends.cudnn, "allow_tf32", False)]


@contextlib.contextmanager
def full_float32():
    """CUDA convolutions and matrix products in full float32 (not TF32) inside the block.

    PyTorch lets cuDNN compute float32 convolutions in TF32 (a 10-bit mantissa) by default on Ampere
    and later GPUs, which moves activations by about 1e-3 of their size: GPU and CPU files would differ
    in the third digit. In full float32 they differ by float32 rounding only. The settings the process
    had are restored on the way out. No effect on the CPU.
    """
    import torch

    switches = _fp32_switches(torch)
    saved = [getattr(owner, name) for owner, name, _ in switches]
    try:
        for owner, name, value in switches:
            setattr(owner, name, value)
        yield
    finally:
        for (owner, name, _), value in zip(switches, saved):
            setattr(owner, name, value)


def check_cuda_device(device: str, key: str):
    """The torch device for `device` (``cuda`` or ``cuda:N``), which this machine must have.

    Raises DnnprobeError (one line, naming `key`) when torch sees no CUDA GPU or fewer than N + 1.
    """
    import torch

    if not torch.cuda.is_available():
        raise DnnprobeError(f"{key} is {device!r} but torch sees no CUDA GPU here (use auto or cpu)")
    index = torch.device(device).index or 0
    if index >= torch.cuda.device_count():
        raise DnnprobeError(f"{key} is {device!r} but this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return torch.device(device)


def nvidia_driver_present() -> bool:
    """Whether this machine may have a CUDA GPU, without importing torch (seconds) to ask."""
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia/version")


def pick_device(device: str):
    """The torch device for ``extract.device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``), which this
    machine must have; DnnprobeError (one line) otherwise, as for ``probe.device``."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if not re.fullmatch(DEVICE_PATTERN, device):
        raise DnnprobeError(f"extract.device must be auto, cpu, cuda or cuda:N, got {device!r}")
    return check_cuda_device(device, "extract.device")
