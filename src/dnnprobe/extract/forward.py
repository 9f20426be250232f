"""Extraction: one forward pass over the stimuli records every requested layer.

Each requested module gets a forward hook that copies its output the moment it is computed.
The copy matters: torchvision's ReLUs run in place, so a conv layer's output tensor is overwritten
by the ReLU that follows it, and a hook that kept a reference would record post-ReLU values as
"conv". Images are decoded in DataLoader workers while the network computes, and each batch is
streamed to the ``.act.h5`` file, so memory is bounded by the batch, not by the number of stimuli.

The pipeline, per batch (the same code on CPU and GPU; only :class:`BatchBuffers` differs):

1. a DataLoader worker decodes and resizes the JPEGs and ships them as uint8 (a quarter of the
   bytes of float32); the main process converts the batch to normalised float32 on the device
   (:func:`to_model_input`, the same arithmetic as torchvision's ``ToTensor`` + ``Normalize``);
2. the hooks copy each layer, once, straight into a reusable buffer laid out as the activation
   file's chunks (and in the file's dtype, so float16 is converted by the same copy); on a GPU the
   copy goes to device memory and from there, on a second CUDA stream, to pinned host memory;
3. the writer thread writes those buffers chunk by chunk at each chunk's place in the file, on the
   CPU with O_DIRECT (no further copy at all: :class:`dnnprobe.extract.writer.ChunkWriter`), while
   the network computes the next batch; a small pool of buffer sets keeps the two in step.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from dnnprobe.extract.actfile import dnnbrain_shape
from dnnprobe.extract.budget import check_memory
from dnnprobe.extract.buffers import BUFFER_SETS, BatchBuffers
from dnnprobe.extract.writer import ActivationWriter, stored_bytes
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.progress import progress_bar
from dnnprobe.network.layers import LayerCall, fx_call_names, parse_layer_call
from dnnprobe.compute.device import full_float32, pick_device
from dnnprobe.compute.disk import size_line
from dnnprobe.compute.memory import SHM_PATH, shm_free_bytes
from dnnprobe.network.preprocess import DNNBRAIN, IMAGENET_MEAN, IMAGENET_STD, Preprocess, pil_transform
from dnnprobe.stimuli.images import decode_rgb, load_rgb, read_image_notes
from dnnprobe.stimuli.table import ImageList, StimulusTable
from dnnprobe.network.tokens import TokenLayout, hidden_state, reducer, token_layers

# DNNBrain's AlexNet test transform: squash to 224 x 224 (no crop), then ImageNet normalisation
# (extract.preprocess: dnnbrain; dnnprobe.network.preprocess holds it and the networks' own transforms).
INPUT_SIZE = DNNBRAIN.input_size


_resize = functools.lru_cache(maxsize=4)(pil_transform)


def resized_pixels(image: Image.Image, prep: Preprocess = DNNBRAIN) -> np.ndarray:
    """The PIL steps of the transform (DNNBrain's: squashed to 224 x 224; else `prep`'s resize and centre
    crop), as (height, width, 3) uint8."""
    return np.asarray(_resize(prep)(image))


@functools.lru_cache(maxsize=8)
def _normalisation(device: torch.device, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """255, the mean and the std (the transform's, ImageNet's by default) as float32 tensors on `device`.

    255 is a tensor on the device, not a Python number: CUDA's true division by a scalar computes
    ``x * (1/255)``, which differs from the CPU's ``x / 255`` in the last bit for 126 of the 256 pixel
    values; division by a device tensor is exact, as on the CPU.
    """
    shape = (1, 3, 1, 1)
    return (torch.tensor(255.0, dtype=torch.float32, device=device),
            torch.tensor(mean, dtype=torch.float32, device=device).view(shape),
            torch.tensor(std, dtype=torch.float32, device=device).view(shape))


def to_model_input(pixels: torch.Tensor, device: torch.device, prep: Preprocess = DNNBRAIN) -> torch.Tensor:
    """A batch of resized uint8 images (B, 224, 224, 3) as the network's float32 input (B, 3, 224, 224).

    The same float32 operations, in the same order, as torchvision's ``ToTensor`` (``/ 255``) and
    ``Normalize`` (``- mean``, ``/ std``), done once per batch on `device` instead of once per image
    in a worker. The result is contiguous in the usual (N, C, H, W) order: a channels-last input
    would make the convolutions pick other kernels, and other last bits.
    """
    if device.type == "cpu":
        return _cpu_model_input(pixels, prep)
    pixels = pixels.to(device, non_blocking=True)
    batch = torch.empty((pixels.shape[0], 3, *pixels.shape[1:3]), dtype=torch.float32, device=device)
    batch.copy_(pixels.permute(0, 3, 1, 2))
    scale, mean, std = _normalisation(device, prep.mean, prep.std)
    return batch.div_(scale).sub_(mean).div_(std)


@functools.lru_cache(maxsize=8)
def _numpy_normalisation(mean=IMAGENET_MEAN, std=IMAGENET_STD) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1), np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1))


def _cpu_model_input(pixels: torch.Tensor, prep: Preprocess) -> torch.Tensor:
    """:func:`to_model_input` on the CPU, in numpy: the same float32 divisions and subtraction (each
    rounded exactly, so the same bits; tested for every pixel value), in one thread and a quarter of the
    CPU time torch's threaded element-wise kernels take on a busy machine (docs/performance.md)."""
    array = pixels.numpy()
    batch = np.empty((array.shape[0], 3, *array.shape[1:3]), dtype=np.float32)
    np.copyto(batch, array.transpose(0, 3, 1, 2))
    mean, std = _numpy_normalisation(prep.mean, prep.std)
    batch /= np.float32(255.0)
    batch -= mean
    batch /= std
    return torch.from_numpy(batch)


class StimulusImages(Dataset):
    """The listed images, decoded and resized as DNNBrain does; a bad image is reported, not raised.

    Items are (224, 224, 3) uint8 arrays (:func:`resized_pixels`); :func:`to_model_input` finishes
    the preprocessing per batch. With `checksums`, each image's bytes must have its listed sha256
    (checked as it is read, so the activations are of exactly the images the image list names).
    `checked`: the check stage has checked every image and recorded its notes, so each is decoded once
    (:func:`dnnprobe.stimuli.images.decode_rgb`); otherwise each is checked as it is decoded (``load_rgb``).
    Errors and notes travel back as values because DataLoader workers would wrap a raised error in a
    multi-line traceback, and print warnings under no file's name; :func:`_collate` gathers them.
    """

    def __init__(self, paths: list[Path], checksums: list[str] | None = None, prep: Preprocess = DNNBRAIN,
                 checked: bool = False) -> None:
        self.paths = paths
        self.checksums = checksums
        self.prep = prep
        self.checked = checked

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        expected = self.checksums[index] if self.checksums else None
        notes: list[str] = []
        try:
            image = decode_rgb(self.paths[index], expected) if self.checked else load_rgb(self.paths[index], expected, notes)
            return resized_pixels(image, self.prep), None, notes
        except DnnprobeError as exc:
            return None, f"stimulus row {index + 1}: {exc}", notes


def _collate(items):
    """A batch as (one (B, 224, 224, 3) uint8 tensor, None, notes), or (None, errors, notes) when an image failed."""
    errors = [error for _, error, _ in items if error is not None]
    notes = [note for _, _, item_notes in items for note in item_notes]
    if errors:
        return None, errors, notes
    return torch.from_numpy(np.stack([pixels for pixels, _, _ in items])), None, notes


class LayerRecorder:
    """Forward hooks that copy each requested layer's output (before any in-place op touches it).

    `module_paths` maps layer names to what :func:`dnnprobe.network.layers.resolve_layers` returns, or to
    plain module paths (a module's first call). A layer is one call of one module: the hooks count
    each module's calls within a forward pass of the whole model, so ResNet's ``layer1.0.relu`` (first
    call) and ``layer1.0.relu_1`` (second call) are told apart. After a pass, ``outputs`` holds the
    recorded layers and ``calls`` how many times each hooked module ran.
    """

    def __init__(self, model: torch.nn.Module, module_paths: Mapping[str, str],
                 store: Callable[[str, torch.Tensor], object] | None = None,
                 reducers: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None) -> None:
        """`store(layer, output)`, when given, copies a layer's output where it should go (the
        extractor's batch buffers) and returns what ``outputs`` keeps; by default, a CPU copy.
        `reducers` maps token layers to the token choice applied before storing (:mod:`dnnprobe.network.tokens`)."""
        self.store = store or (lambda layer, output: output.detach().to("cpu", copy=True))
        self.reducers = dict(reducers or {})
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
            state = hidden_state(output)  # a tuple or model output: its hidden state
            if state is None:
                raise DnnprobeError(f"layer {layers[0]}: module {path} returns {type(output).__name__}, not a tensor")
            # Copy now: the next module may overwrite this tensor in place (ReLU(inplace=True), x += y).
            for layer in layers:  # two names for one call (conv1_relu and relu): one dataset each
                reduce = self.reducers.get(layer)
                self.outputs[layer] = self.store(layer, reduce(state) if reduce else state)

        return hook

    def take(self) -> dict[str, torch.Tensor]:
        outputs, self.outputs = self.outputs, {}
        return outputs

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class LayerShapes(dict):
    """Each layer's per-stimulus DNNBrain shape, in the requested order, as learned from a dry run.

    ``repeated`` maps each requested layer that names a module's first call, where that module runs
    several times per forward pass, to the FX names of all its calls; ``notes`` says so, one line each.
    """

    def __init__(self, shapes: Mapping[str, tuple], repeated: Mapping[str, list[str]], largest_output: int = 0) -> None:
        super().__init__(shapes)
        self.repeated = dict(repeated)
        self.largest_output = largest_output
        self.reducers: dict = {}  # token layer -> the extract.tokens reduction (dnnprobe.network.tokens)
        self.token_layers: list[str] = []
        self.tokens = "all"  # extract.tokens
        self.stored_whole: list[str] = []  # with tokens other than all: the layers it does not apply to (no tokens)

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
        if self.stored_whole:  # said once, for every layer at once
            notes.append(f"extract: extract.tokens={self.tokens} does not apply to {', '.join(self.stored_whole)} "
                         "(not transformer token layers); stored whole (recorded in the file: tokens_not_applied)")
        return notes


def _times(n: int) -> str:
    return "1 time" if n == 1 else f"{n} times"


def layer_unit_shapes(model: torch.nn.Module, module_paths: Mapping[str, str], device: torch.device,
                      input_size: tuple[int, int] = INPUT_SIZE, tokens: str = "all",
                      token_layout: TokenLayout | None = None) -> LayerShapes:
    """Per-stimulus DNNBrain shape of each layer, from a forward pass on one blank image.

    The same pass counts each module's calls: a requested call that never happens (``layer1.0.relu_5``
    when the module runs twice) fails here, before any work, and the result's ``repeated``/``notes``
    name the requested modules that run several times (their bare name records the first call), and
    ``largest_output`` is the most values any module of the network outputs per stimulus.
    The result's ``reducers`` map the token layers (:func:`dnnprobe.network.tokens.token_layers`) to the
    `tokens` choice, and ``token_layers`` lists them; shapes are those stored, after that choice.
    """
    recorder = LayerRecorder(model, module_paths)
    largest = [0]  # the most values any module outputs (dnnprobe.extract.budget.extraction_bytes)

    def measure(module, inputs, output):
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output.numel())

    handles = [module.register_forward_hook(measure) for module in model.modules()]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, *input_size, device=device))
        outputs, calls = recorder.take(), dict(recorder.calls)
    finally:
        recorder.remove()
        for handle in handles:
            handle.remove()
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
    raw = {layer: tuple(outputs[layer].shape[1:]) for layer in targets}
    tokenised = token_layers(raw, token_layout)
    reducers = {layer: reducer(tokens, token_layout) for layer in tokenised}
    stored = {layer: tuple(reducers[layer](outputs[layer]).shape[1:]) if layer in reducers else raw[layer] for layer in targets}
    shapes = LayerShapes({layer: dnnbrain_shape(stored[layer]) for layer in targets}, repeated, largest[0])
    shapes.reducers, shapes.token_layers, shapes.tokens = reducers, tokenised, tokens
    shapes.stored_whole = [layer for layer in targets if layer not in tokenised] if tokens != "all" else []
    return shapes


def _tokens_attr(layer: str, shapes: LayerShapes) -> dict:
    """A layer's ``tokens`` attribute: the choice applied to a token layer, ``not applicable`` for a layer
    extract.tokens (other than all) could not apply to; none otherwise (the default's bytes stay)."""
    if layer in shapes.token_layers:
        return {"tokens": shapes.tokens}
    return {"tokens": "not applicable"} if layer in shapes.stored_whole else {}


# Decoded batches each worker prepares ahead, and how long the extractor waits for the next one: far
# longer than any batch takes to decode, but not forever (a worker that cannot place its batch in
# /dev/shm does not fail: PyTorch's queue drops the batch, and the wait would never end).
PREFETCH = 4
WORKER_TIMEOUT_S = 300


def _from_workers(loader: DataLoader, num_workers: int):
    """The loader's batches; a decoding worker that dies, fails or hangs is one line naming what to change."""
    batches = iter(loader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except RuntimeError as exc:
            text = str(exc)
            if not num_workers or not ("DataLoader worker" in text or "DataLoader timed out" in text):
                raise
            free = shm_free_bytes()
            shm = f"{free / (1 << 20):,.0f} MB free in {SHM_PATH}" if free is not None else f"{SHM_PATH} unreadable"
            what = (f"no batch from the image-decoding workers in {WORKER_TIMEOUT_S} s"
                    if "timed out" in text else f"an image-decoding worker failed ({text.strip().splitlines()[0]})")
            raise DnnprobeError(
                f"{what}; {shm}: set extract.num_workers: 0 (decode in the main process), "
                "or give the container more shared memory (docker run --shm-size=1g)") from None
        yield batch


@dataclass
class ExtractionSummary:
    n_stimuli: int
    seconds: float
    device: str
    notes: list[str] = field(default_factory=list)  # e.g. which call of a module run twice was recorded
    direct_io: bool = False  # the chunks were written with O_DIRECT where the file system allows it

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
    prep: Preprocess = DNNBRAIN,
    tokens: str = "all",
    token_layout: TokenLayout | None = None,
    announce: Callable[[str], None] | None = None,
    direct_io: bool | None = None,
) -> ExtractionSummary:
    """Run `model` once over the images and write every layer to `out_path` (.act.h5), row i = image i.

    `images` is the check stage's image list (each image's bytes are checked against its sha256) or a
    stimulus table (no checksums: for DNNBrain-style use and tests). `prep` is the transform
    (``extract.preprocess``); `tokens` what transformer layers of `token_layout` record
    (``extract.tokens``, :mod:`dnnprobe.network.tokens`). Before any work, `announce` gets one line with the
    file's size and the free disk space (:func:`dnnprobe.compute.disk.size_line`). `direct_io`: write the
    chunks with O_DIRECT (:class:`dnnprobe.extract.writer.ChunkWriter`); by default on the CPU, where the
    copy into the page cache takes CPU time from the network (4-5 ms per AlexNet image on two cores), and
    not on a GPU, where spare cores make that copy and the next stage reads the file from memory. The
    file's bytes are the same either way.
    """
    images.check_images_exist()
    target = pick_device(device)
    # Pinned host buffers and the loader's pinning thread belong to the current CUDA device: make it the
    # target, or with cuda:1 they would open a context (and take memory) on GPU 0 as well.
    with torch.cuda.device(target) if target.type == "cuda" else contextlib.nullcontext():
        return _extract(images, model, module_paths, out_path, batch_size, target, dtype, compression,
                        num_workers, file_attrs, progress, prep=prep, tokens=tokens, token_layout=token_layout,
                        announce=announce, direct_io=target.type == "cpu" if direct_io is None else direct_io)


def _extract(images, model, module_paths, out_path, batch_size, target, dtype, compression, num_workers,
             file_attrs, progress, prep: Preprocess = DNNBRAIN, tokens: str = "all",
             token_layout: TokenLayout | None = None, announce=None, direct_io: bool = True) -> ExtractionSummary:
    name = images.path if isinstance(images, ImageList) else images.location or "stimulus table"
    checksums = images.checksums if isinstance(images, ImageList) else None
    # The check stage's record of these exact images: then each image is decoded once and its notes are
    # the recorded ones; without it (a table, an older list) each image is checked as it is decoded.
    recorded = read_image_notes(images.path, images.sha256, images.stim_ids) if checksums else None
    model = model.eval().to(target)
    unit_shapes = layer_unit_shapes(model, module_paths, target, prep.input_size, tokens, token_layout)
    check_memory(unit_shapes, unit_shapes.largest_output, len(images), batch_size, dtype, num_workers, target.type,
                 BUFFER_SETS, PREFETCH)
    if announce:  # the writer refuses, before the first batch, a file the disk cannot hold
        announce(size_line(out_path, stored_bytes(len(images), unit_shapes, dtype, batch_size), len(unit_shapes),
                           len(images), dtype, compression))
    loader = DataLoader(
        StimulusImages(images.image_paths(), checksums, prep, checked=recorded is not None),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=target.type == "cuda",
        prefetch_factor=PREFETCH if num_workers else None,
        timeout=WORKER_TIMEOUT_S if num_workers else 0,
    )
    image_notes: list[str] = list(recorded or [])
    attrs = {"preprocessing": prep.describe()}
    attrs.update(file_attrs or {})
    if unit_shapes.stored_whole:  # extract.tokens that did not apply to these layers (a CNN's, patch_embed)
        attrs["tokens_not_applied"] = ",".join(unit_shapes.stored_whole)
    started = time.perf_counter()
    current: list[BatchBuffers] = []  # the set the hooks fill during this forward pass
    recorder = LayerRecorder(model, module_paths, store=lambda layer, output: current[0].store(layer, output),
                             reducers=unit_shapes.reducers)
    try:
        with ActivationWriter(
            out_path,
            n_stim=len(images),
            unit_shapes=unit_shapes,
            dtype=dtype,
            compression=compression,
            rows_per_chunk=batch_size,
            layer_attrs={layer: {"module": str(path), **_tokens_attr(layer, unit_shapes)} for layer, path in module_paths.items()},
            file_attrs=attrs,
            direct_io=direct_io,
        ) as writer, torch.inference_mode(), full_float32():
            shapes = {layer: writer.block_shape(layer) for layer in module_paths}
            copy_stream = torch.cuda.Stream(target) if target.type == "cuda" else None
            free: queue.Queue[BatchBuffers] = queue.Queue()
            for _ in range(min(BUFFER_SETS, len(loader))):
                free.put(BatchBuffers(shapes, getattr(torch, dtype), target, copy_stream))
            batches = _from_workers(loader, num_workers)
            for pixels, errors, notes in progress_bar(batches, desc="extract", unit="batch", total=len(loader),
                                                      enabled=progress):
                image_notes.extend(notes)
                if errors:
                    raise DnnprobeError(f"{name}, {errors[0]}")
                buffers = free.get()  # waits while the writer still holds every set
                current[:] = [buffers]
                model(to_model_input(pixels, target, prep))
                missing = set(module_paths) - set(recorder.take())
                if missing:  # cannot happen after the dry run, unless the network's control flow varies
                    raise DnnprobeError(f"extract.layers: {', '.join(sorted(missing))} not computed for a batch")
                buffers.check_range()
                ready = buffers.finish(len(pixels))
                writer.write_blocks(buffers.arrays, len(pixels), ready=ready, release=lambda b=buffers: free.put(b))
    finally:
        recorder.remove()
    return ExtractionSummary(n_stimuli=len(images), seconds=time.perf_counter() - started, device=str(target),
                             notes=unit_shapes.notes + image_notes, direct_io=direct_io and compression == "none")
