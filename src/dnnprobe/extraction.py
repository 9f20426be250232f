"""Extraction: one forward pass over the stimuli records every requested layer.

Each requested module gets a forward hook that copies its output the moment it is computed.
The copy matters: torchvision's ReLUs run in place, so a conv layer's output tensor is overwritten
by the ReLU that follows it, and a hook that kept a reference would record post-ReLU values as
"conv". Images are decoded in DataLoader workers while the network computes, and each batch is
streamed to the ``.act.h5`` file, so memory is bounded by the batch, not by the number of stimuli.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from dnnprobe import __version__
from dnnprobe.actfile import ActivationWriter, dnnbrain_shape
from dnnprobe.errors import DnnprobeError
from dnnprobe.stimuli import INPUT_SIZE, StimulusTable, load_rgb, preprocess


class StimulusImages(Dataset):
    """The table's images, preprocessed as DNNBrain does; a bad image is reported, not raised.

    Errors travel back as values because DataLoader workers would wrap a raised error in a
    multi-line traceback; :func:`_collate` turns them into one clear message.
    """

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            return preprocess(load_rgb(self.paths[index])), None
        except DnnprobeError as exc:
            return None, f"stimulus row {index + 1}: {exc}"


def _collate(items):
    errors = [error for _, error in items if error is not None]
    if errors:
        return None, errors
    return torch.stack([tensor for tensor, _ in items]), None


class LayerRecorder:
    """Forward hooks that copy each requested module's output (before any in-place op touches it)."""

    def __init__(self, model: torch.nn.Module, module_paths: Mapping[str, str]) -> None:
        modules = dict(model.named_modules())
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [
            modules[path].register_forward_hook(self._hook(layer)) for layer, path in module_paths.items()
        ]

    def _hook(self, layer: str):
        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor):
                raise DnnprobeError(f"layer {layer}: module returns {type(output).__name__}, not a tensor")
            # Copy now: the next module may overwrite this tensor in place (ReLU(inplace=True), x += y).
            self.outputs[layer] = output.detach().to("cpu", copy=True)

        return hook

    def take(self) -> dict[str, torch.Tensor]:
        outputs, self.outputs = self.outputs, {}
        return outputs

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DnnprobeError(f"extract.device: {device} requested, but no CUDA device is available (use auto or cpu)")
    return torch.device(device)


def layer_unit_shapes(model: torch.nn.Module, module_paths: Mapping[str, str], device: torch.device) -> dict[str, tuple]:
    """Per-stimulus DNNBrain shape of each layer, from a forward pass on one blank image."""
    recorder = LayerRecorder(model, module_paths)
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, *INPUT_SIZE, device=device))
        outputs = recorder.take()
    finally:
        recorder.remove()
    missing = [layer for layer in module_paths if layer not in outputs]
    if missing:
        raise DnnprobeError(f"extract.layers: {', '.join(missing)} never run in the network's forward pass")
    return {layer: dnnbrain_shape(tuple(outputs[layer].shape[1:])) for layer in module_paths}


@dataclass
class ExtractionSummary:
    n_stimuli: int
    seconds: float
    device: str

    @property
    def images_per_second(self) -> float:
        return self.n_stimuli / self.seconds if self.seconds else float("inf")


def extract_activations(
    table: StimulusTable,
    model: torch.nn.Module,
    module_paths: Mapping[str, str],
    out_path: str | Path,
    batch_size: int = 64,
    device: str = "auto",
    dtype: str = "float32",
    compression: str = "none",
    num_workers: int = 1,
    file_attrs: Mapping[str, str | int] | None = None,
    progress: bool = True,
) -> ExtractionSummary:
    """Run `model` once over the table's images and write every layer to `out_path` (.act.h5)."""
    table.check_images_exist()
    target = pick_device(device)
    model = model.eval().to(target)
    unit_shapes = layer_unit_shapes(model, module_paths, target)
    loader = DataLoader(
        StimulusImages(table.image_paths()),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=target.type == "cuda",
        prefetch_factor=4 if num_workers else None,
    )
    attrs = {"dnnprobe_version": __version__, "preprocessing": "RGB, Resize((224, 224)), ToTensor, Normalize(ImageNet)"}
    attrs.update(file_attrs or {})
    recorder = LayerRecorder(model, module_paths)
    started = time.perf_counter()
    try:
        with ActivationWriter(
            out_path,
            n_stim=len(table),
            unit_shapes=unit_shapes,
            dtype=dtype,
            compression=compression,
            rows_per_chunk=batch_size,
            layer_attrs={layer: {"module": path} for layer, path in module_paths.items()},
            file_attrs=attrs,
        ) as writer, torch.inference_mode():
            for images, errors in tqdm(loader, desc="extract", unit="batch", disable=not progress):
                if errors:
                    raise DnnprobeError(f"{table.location or 'stimulus table'}, {errors[0]}")
                model(images.to(target, non_blocking=True))
                outputs = recorder.take()
                writer.write({layer: outputs[layer].reshape(len(images), -1).numpy() for layer in module_paths})
    finally:
        recorder.remove()
    return ExtractionSummary(n_stimuli=len(table), seconds=time.perf_counter() - started, device=str(target))
