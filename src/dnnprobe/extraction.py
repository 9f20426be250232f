"""Extraction: one forward pass over the stimuli records every requested layer.

Each requested module gets a forward hook that copies its output the moment it is computed.
The copy matters: torchvision's ReLUs run in place, so a conv layer's output tensor is overwritten
by the ReLU that follows it, and a hook that kept a reference would record post-ReLU values as
"conv". Images are decoded in DataLoader workers while the network computes, and each batch is
streamed to the ``.act.h5`` file, so memory is bounded by the batch, not by the number of stimuli.
"""

from __future__ import annotations

import functools
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from dnnprobe.actfile import ActivationWriter, dnnbrain_shape
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.hashing import file_sha256
from dnnprobe.layers import LayerCall, fx_call_names, parse_layer_call
from dnnprobe.stimuli import ImageList, StimulusTable

# DNNBrain's AlexNet test transform: squash to 224 x 224 (no crop), then ImageNet normalisation.
INPUT_SIZE = (224, 224)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---- images ------------------------------------------------------------------------------


def load_rgb(path: Path, expected_sha256: str | None = None) -> Image.Image:
    """Open an image as 8-bit RGB, as DNNBrain does (``.convert('RGB')``), with clear errors.

    16-bit greyscale PNGs are scaled to 8 bits first: PIL's own conversion would clip them to white.
    With `expected_sha256`, the bytes must have that hash (the image is the one the image list names).
    """
    if not path.is_file():
        raise DnnprobeError(f"{path}: image not found")
    if expected_sha256 is not None and file_sha256(path) != expected_sha256:
        raise DnnprobeError(
            f"{path}: its bytes differ from those the image list recorded; rerun the stimuli and check stages")
    try:
        with warnings.catch_warnings():
            # PIL only warns between its pixel limit and twice that; treat both as an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                    array = np.asarray(image, dtype=np.float64)
                    peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
                    image = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
                return image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DnnprobeError(f"{path}: image too large to decode safely ({exc})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        reason = "empty file" if path.stat().st_size == 0 else str(exc) or exc.__class__.__name__
        raise DnnprobeError(f"{path}: cannot read image ({reason})") from None


@functools.lru_cache(maxsize=1)
def _transform():
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(INPUT_SIZE),
            transforms.ToTensor(),
            transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        ]
    )


def preprocess(image: Image.Image):
    """DNNBrain's AlexNet test transform, as a (3, 224, 224) float32 tensor."""
    return _transform()(image)


class StimulusImages(Dataset):
    """The listed images, preprocessed as DNNBrain does; a bad image is reported, not raised.

    With `checksums`, each image's bytes must have its listed sha256 (checked as it is read, so the
    activations are of exactly the images the image list names). Errors travel back as values because
    DataLoader workers would wrap a raised error in a multi-line traceback; :func:`_collate` turns
    them into one clear message.
    """

    def __init__(self, paths: list[Path], checksums: list[str] | None = None) -> None:
        self.paths = paths
        self.checksums = checksums

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        expected = self.checksums[index] if self.checksums else None
        try:
            return preprocess(load_rgb(self.paths[index], expected)), None
        except DnnprobeError as exc:
            return None, f"stimulus row {index + 1}: {exc}"


def _collate(items):
    errors = [error for _, error in items if error is not None]
    if errors:
        return None, errors
    return torch.stack([tensor for tensor, _ in items]), None


class LayerRecorder:
    """Forward hooks that copy each requested layer's output (before any in-place op touches it).

    `module_paths` maps layer names to what :func:`dnnprobe.layers.resolve_layers` returns, or to
    plain module paths (a module's first call). A layer is one call of one module: the hooks count
    each module's calls within a forward pass of the whole model, so ResNet's ``layer1.0.relu`` (first
    call) and ``layer1.0.relu_1`` (second call) are told apart. After a pass, ``outputs`` holds the
    recorded layers and ``calls`` how many times each hooked module ran.
    """

    def __init__(self, model: torch.nn.Module, module_paths: Mapping[str, str]) -> None:
        modules = dict(model.named_modules())
        self.targets: dict[str, LayerCall] = {}
        for layer, target in module_paths.items():
            call = target if isinstance(target, LayerCall) else parse_layer_call(target, modules)
            if call is None or call.module not in modules:
                raise DnnprobeError(f"extract.layers: {layer}: {target} is not a module of the network")
            self.targets[layer] = call
        # module path -> call index -> the layers that record that call
        wanted: dict[str, dict[int, list[str]]] = {}
        for layer, call in self.targets.items():
            wanted.setdefault(call.module, {}).setdefault(call.call, []).append(layer)
        self.outputs: dict[str, torch.Tensor] = {}
        self.calls: dict[str, int] = {}
        # Counting restarts when the whole model starts a forward pass (one batch).
        self._handles = [model.register_forward_pre_hook(self._start_pass)]
        self._handles += [modules[path].register_forward_hook(self._hook(path, by_call)) for path, by_call in wanted.items()]

    def _start_pass(self, model, inputs) -> None:
        self.outputs, self.calls = {}, {}

    def _hook(self, path: str, layers_by_call: dict[int, list[str]]):
        def hook(module, inputs, output):
            call = self.calls.get(path, 0)
            self.calls[path] = call + 1
            layers = layers_by_call.get(call)
            if not layers:
                return
            if not isinstance(output, torch.Tensor):
                raise DnnprobeError(f"layer {layers[0]}: module {path} returns {type(output).__name__}, not a tensor")
            # Copy now: the next module may overwrite this tensor in place (ReLU(inplace=True), x += y).
            copy = output.detach().to("cpu", copy=True)
            for layer in layers:  # two names for one call (conv1_relu and relu) share the copy
                self.outputs[layer] = copy

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


class LayerShapes(dict):
    """Each layer's per-stimulus DNNBrain shape, in the requested order, as learned from a dry run.

    ``repeated`` maps each requested layer that names a module's first call, where that module runs
    several times per forward pass, to the FX names of all its calls; ``notes`` says so, one line each.
    """

    def __init__(self, shapes: Mapping[str, tuple], repeated: Mapping[str, list[str]]) -> None:
        super().__init__(shapes)
        self.repeated = dict(repeated)

    @property
    def notes(self) -> list[str]:
        notes = []
        for layer, names in self.repeated.items():
            subject = layer if layer == names[0] else f"{layer} (module {names[0]})"
            later = ", ".join(names[1:])
            notes.append(
                f"extract: {subject} runs {len(names)} times per forward pass; {layer} records its first call, "
                f"{later} the {'next' if len(names) == 2 else 'next ones'} (torchvision FX names)"
            )
        return notes


def _times(n: int) -> str:
    return "1 time" if n == 1 else f"{n} times"


def layer_unit_shapes(model: torch.nn.Module, module_paths: Mapping[str, str], device: torch.device) -> LayerShapes:
    """Per-stimulus DNNBrain shape of each layer, from a forward pass on one blank image.

    The same pass counts each module's calls: a requested call that never happens (``layer1.0.relu_5``
    when the module runs twice) fails here, before any work, and the result's ``repeated``/``notes``
    name the requested modules that run several times (their bare name records the first call).
    """
    recorder = LayerRecorder(model, module_paths)
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, *INPUT_SIZE, device=device))
        outputs, calls = recorder.take(), dict(recorder.calls)
    finally:
        recorder.remove()
    targets = recorder.targets
    missing = [layer for layer, target in targets.items() if not calls.get(target.module)]
    if missing:
        raise DnnprobeError(f"extract.layers: {', '.join(missing)} never run in the network's forward pass")
    beyond = [
        f"{layer}: module {target.module} runs {_times(calls[target.module])} per forward pass "
        f"({', '.join(fx_call_names(target.module, calls[target.module]))})"
        for layer, target in targets.items()
        if target.call >= calls[target.module]
    ]
    if beyond:
        raise DnnprobeError("extract.layers: " + "; ".join(beyond))
    repeated = {
        layer: fx_call_names(target.module, calls[target.module])
        for layer, target in targets.items()
        if target.call == 0 and calls[target.module] > 1
    }
    return LayerShapes({layer: dnnbrain_shape(tuple(outputs[layer].shape[1:])) for layer in targets}, repeated)


@dataclass
class ExtractionSummary:
    n_stimuli: int
    seconds: float
    device: str
    notes: list[str] = field(default_factory=list)  # e.g. which call of a module run twice was recorded

    @property
    def images_per_second(self) -> float:
        return self.n_stimuli / self.seconds if self.seconds else float("inf")


def extract_activations(
    images: ImageList | StimulusTable,
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
    """Run `model` once over the images and write every layer to `out_path` (.act.h5), row i = image i.

    `images` is the check stage's image list (each image's bytes are checked against its sha256) or a
    stimulus table (no checksums: for DNNBrain-style use and tests).
    """
    images.check_images_exist()
    name = images.path if isinstance(images, ImageList) else images.location or "stimulus table"
    checksums = images.checksums if isinstance(images, ImageList) else None
    target = pick_device(device)
    model = model.eval().to(target)
    unit_shapes = layer_unit_shapes(model, module_paths, target)
    loader = DataLoader(
        StimulusImages(images.image_paths(), checksums),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=target.type == "cuda",
        prefetch_factor=4 if num_workers else None,
    )
    attrs = {"preprocessing": "RGB, Resize((224, 224)), ToTensor, Normalize(ImageNet)"}
    attrs.update(file_attrs or {})
    recorder = LayerRecorder(model, module_paths)
    started = time.perf_counter()
    try:
        with ActivationWriter(
            out_path,
            n_stim=len(images),
            unit_shapes=unit_shapes,
            dtype=dtype,
            compression=compression,
            rows_per_chunk=batch_size,
            layer_attrs={layer: {"module": str(path)} for layer, path in module_paths.items()},
            file_attrs=attrs,
        ) as writer, torch.inference_mode():
            for batch, errors in tqdm(loader, desc="extract", unit="batch", disable=not progress):
                if errors:
                    raise DnnprobeError(f"{name}, {errors[0]}")
                model(batch.to(target, non_blocking=True))
                outputs = recorder.take()
                writer.write({layer: outputs[layer].reshape(len(batch), -1).numpy() for layer in module_paths})
    finally:
        recorder.remove()
    return ExtractionSummary(n_stimuli=len(images), seconds=time.perf_counter() - started, device=str(target),
                             notes=unit_shapes.notes)
