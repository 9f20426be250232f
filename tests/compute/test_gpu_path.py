"""The network's input on a GPU, checked on the CPU: it is computed by exact division, as on the CPU
(benchmarks/gpu_check.sh runs it on a GPU). The device choice and the torch array ops are tested in
test_device.py and test_arrays.py."""

from __future__ import annotations

import torch

from dnnprobe.extract.forward import _normalisation, to_model_input


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
