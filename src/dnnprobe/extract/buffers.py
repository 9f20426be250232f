"""The extractor's batch buffers: one batch of every layer in host memory, laid out as the activation
file's chunks, filled by the forward hooks and written by the writer thread
(:class:`dnnprobe.extract.writer.ActivationWriter`); on a GPU, staged in device memory and copied to
pinned host memory on a second CUDA stream.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.extract.actfile import dnnbrain_shape
from dnnprobe.extract.writer import ALIGNMENT

FLOAT16_MAX = float(torch.finfo(torch.float16).max)  # 65,504

# Buffer sets in flight: one filled by the network while the writer stores the other. Writing a batch
# takes a fraction of its forward pass, so a third set (256 MB more at batch 64) would rarely be used.
BUFFER_SETS = 2


def copy_into_blocks(blocks: torch.Tensor, output: torch.Tensor) -> None:
    """Copy a layer's output (B, n_chn, n_row, n_col) into chunk layout (n_blocks, rows, channels, n_row, n_col).

    Block j receives channels ``j * channels`` onward of the B rows; see
    :meth:`dnnprobe.extract.writer.ActivationWriter.block_shape`. One strided copy for the whole blocks, one
    for a last, partial block; a dtype change (float16 files) happens in the same copy.
    """
    channels = blocks.shape[2]
    count, n_chn = output.shape[:2]
    whole = n_chn // channels
    if whole:
        split = output[:, :whole * channels].unflatten(1, (whole, channels))  # (B, whole, channels, row, col)
        blocks[:whole, :count].copy_(split.transpose(0, 1))
    if n_chn > whole * channels:
        blocks[whole, :count, :n_chn - whole * channels].copy_(output[:, whole * channels:])


def copy_into_blocks_numpy(blocks: np.ndarray, output: np.ndarray) -> None:
    """:func:`copy_into_blocks` between host arrays of one dtype, by numpy: the same bytes, in one thread
    (numpy copies each block's contiguous runs as memcpy does). On a busy CPU, torch's threaded strided
    copy took about three times its CPU time (docs/performance.md)."""
    channels = blocks.shape[2]
    count, n_chn = output.shape[:2]
    whole = n_chn // channels
    if whole:
        split = output[:, :whole * channels].reshape(count, whole, channels, *output.shape[2:])
        np.copyto(blocks[:whole, :count], split.swapaxes(0, 1))
    if n_chn > whole * channels:
        np.copyto(blocks[whole, :count, :n_chn - whole * channels], output[:, whole * channels:])


def aligned_blocks(shape: tuple[int, ...], dtype: torch.dtype, pin_memory: bool = False) -> torch.Tensor:
    """Zeros of `shape` (n_blocks, ...), each block starting at a multiple of :data:`ALIGNMENT` in memory.

    A block's bytes are one chunk of the file (:meth:`~dnnprobe.extract.writer.ActivationWriter.block_shape`); with each block's
    start aligned, :class:`~dnnprobe.extract.writer.ChunkWriter` can hand the block to the disk with O_DIRECT. The gap after each
    block (under ALIGNMENT bytes) is never written. Pinned for a GPU's copies when `pin_memory`.
    """
    itemsize = torch.empty((), dtype=dtype).element_size()
    block_elems = math.prod(shape[1:])
    stride_bytes = -(-block_elems * itemsize // ALIGNMENT) * ALIGNMENT
    total = shape[0] * stride_bytes
    raw = torch.zeros(total + ALIGNMENT, dtype=torch.uint8, pin_memory=pin_memory)
    skip = -raw.data_ptr() % ALIGNMENT
    flat = raw[skip:skip + total].view(dtype)
    inner = torch.empty(shape[1:], device="meta").stride()
    return flat.as_strided(shape, (stride_bytes // itemsize, *inner))


def _whole(blocks: torch.Tensor) -> torch.Tensor:
    """The contiguous memory under :func:`aligned_blocks`'s blocks, gaps included (1-D, same dtype)."""
    return blocks.as_strided((blocks.shape[0] * blocks.stride(0),), (1,))


class BatchBuffers:
    """One batch of every layer in host memory, laid out as the activation file's chunks.

    The hooks fill it (:meth:`store`), the writer thread writes it, and the extractor reuses a few
    such sets in turn, so no batch allocates (and page-faults in) fresh memory. On the CPU the hooks
    copy straight into these arrays. On a GPU the buffers are pinned; each layer is copied into chunk
    layout in device memory, then to the host on `copy_stream` while the network computes on; the
    ``ready`` function of :meth:`finish` waits for those copies.
    """

    def __init__(self, block_shapes: Mapping[str, tuple[int, ...]], dtype: torch.dtype, device: torch.device,
                 copy_stream=None) -> None:
        self.device = device
        self.dtype = dtype
        self.copy_stream = copy_stream
        cuda = device.type == "cuda"
        # Zeros: the padding channels of a last block are never written and must be deterministic.
        self.host = {layer: aligned_blocks(shape, dtype, pin_memory=cuda) for layer, shape in block_shapes.items()}
        self.arrays = {layer: tensor.numpy() for layer, tensor in self.host.items()}  # the same memory
        self.peaks: dict[str, torch.Tensor] = {}  # float16 files: each layer's largest |value| in this batch

    def store(self, layer: str, output: torch.Tensor) -> torch.Tensor:
        host = self.host[layer]
        output = output.detach().reshape(output.shape[0], *dnnbrain_shape(tuple(output.shape[1:])))
        if self.dtype == torch.float16:  # a value beyond float16's range would be stored as inf
            self.peaks[layer] = output.abs().amax()
        if self.device.type != "cuda":
            if output.dtype == self.dtype and output.device.type == "cpu":
                copy_into_blocks_numpy(self.arrays[layer], output.numpy())
            else:  # a dtype change (float16 files): torch's conversion, as before
                copy_into_blocks(host, output)
            return host
        # Staged in the host buffer's own layout (aligned blocks and the gaps between them), so that one
        # contiguous asynchronous copy moves it (a copy into a strided host tensor would synchronise).
        staged = torch.zeros(_whole(host).shape, dtype=self.dtype, device=output.device)
        copy_into_blocks(staged.as_strided(host.shape, host.stride()), output)
        self.copy_stream.wait_stream(torch.cuda.current_stream(output.device))
        with torch.cuda.stream(self.copy_stream):
            _whole(host).copy_(staged, non_blocking=True)
        staged.record_stream(self.copy_stream)  # not reused by the allocator before the copy is done
        return host

    def check_range(self) -> None:
        """Raise DnnprobeError (one line) if a layer of this batch holds a value float16 cannot store."""
        for layer, peak in self.peaks.items():
            if float(peak) > FLOAT16_MAX:
                raise DnnprobeError(
                    f"layer {layer}: activations reach {float(peak):,.0f}, beyond float16's largest value "
                    f"({FLOAT16_MAX:,.0f}), and would be stored as inf; use extract.dtype: float32")
        self.peaks = {}

    def finish(self, count: int):
        """Call after the forward pass of a batch of `count` rows; returns the writer's ``ready`` (or None)."""
        if self.device.type == "cuda":
            # A blocking event: the writer thread sleeps until the copies are done instead of spinning
            # on a core the decoding workers need.
            done = torch.cuda.Event(blocking=True)
            done.record(self.copy_stream)
            return done.synchronize
        rows = next(iter(self.host.values())).shape[1]
        if count < rows:  # a last, short batch: rows left over from the previous batch become zeros
            for tensor in self.host.values():
                tensor[:, count:].zero_()
        return None

