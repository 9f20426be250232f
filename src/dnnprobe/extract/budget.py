"""Will an extraction fit? Its host memory (the batch buffers, the forward pass, the decoded batches in
flight) and its decoding workers' shared memory (/dev/shm), estimated from the dry run's layer shapes and
refused in one line before any work (host probing: :mod:`dnnprobe.compute.memory`). The activation
file's size and the free disk space are stated by :func:`dnnprobe.compute.disk.size_line`; the writer
refuses a file the disk cannot hold.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from dnnprobe.compute import memory
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.extract.writer import chunk_shape

# Room beyond the estimate for extraction: the network and the libraries are already loaded when it
# checks (so already counted as used), this is for what the forward pass allocates besides.
EXTRACTION_ROOM = 256 << 20
PIXEL_BYTES = 224 * 224 * 3  # one resized uint8 image, as decoding workers ship it


def extraction_bytes(n_stim: int, batch_size: int, padded_units: int, itemsize: int, buffer_sets: int,
                     largest_output: int, batches_in_flight: int) -> int:
    """Peak host bytes of the extract stage beyond the loaded network.

    `padded_units`: the units of every recorded layer together, per stimulus, as laid out in the
    file's chunks; `itemsize`: bytes per stored value (extract.dtype); `buffer_sets`: batch buffers in
    turn (every recorded layer at batch size, each); `largest_output`: the most values one module
    outputs per stimulus (its input and output are alive together, in float32);
    `batches_in_flight`: decoded batches the loader holds.
    """
    rows = max(1, min(batch_size, n_stim))
    buffers = buffer_sets * rows * padded_units * itemsize
    forward = 2 * rows * largest_output * 4
    return buffers + forward + batches_in_flight * rows * PIXEL_BYTES + EXTRACTION_ROOM


def check_extraction(needed: int, n_layers: int, batch_size: int) -> None:
    """Raise DnnprobeError (one line) if extraction's buffers (:func:`extraction_bytes`) do not fit."""
    available = memory.available_bytes()
    if needed > available:
        raise DnnprobeError(
            f"extraction needs {needed / memory.GIB:.1f} GiB of host memory ({n_layers} layers at extract.batch_size "
            f"{batch_size}), {available / memory.GIB:.1f} GiB available; lower extract.batch_size, record fewer "
            "extract.layers, or use extract.dtype: float16")


def check_shared_memory(num_workers: int, batch_size: int, n_stim: int, prefetch: int) -> None:
    """Raise DnnprobeError (one line) if /dev/shm cannot hold the batches the decoding workers prepare.

    Each of `num_workers` keeps up to `prefetch` decoded batches (rows x 224 x 224 x 3 bytes) in
    /dev/shm, and the main process holds one more. A worker that cannot place a batch there does not
    fail: PyTorch's queue drops the batch and the main process would wait for it forever (Docker gives
    a container 64 MB of /dev/shm unless told ``--shm-size``).
    """
    if num_workers == 0:
        return
    free = memory.shm_free_bytes()
    batch = max(1, min(batch_size, n_stim)) * PIXEL_BYTES
    needed = (num_workers * prefetch + 1) * batch
    if free is not None and needed > free:
        fit = max(0, (free // batch - 1) // prefetch)
        workers = "1 image-decoding worker needs" if num_workers == 1 else f"{num_workers} image-decoding workers need"
        fewer = f"{fit} (fits) or " if fit else ""
        raise DnnprobeError(
            f"{workers} {needed / (1 << 20):,.0f} MB of shared memory in {memory.SHM_PATH}, "
            f"{free / (1 << 20):,.0f} MB free; "
            f"set extract.num_workers: {fewer}0 (decode in the main process), lower extract.batch_size, "
            "or give the container more (docker run --shm-size=1g)")


def check_memory(unit_shapes: Mapping[str, tuple[int, int, int]], largest_output: int, n_stim: int, batch_size: int,
                 dtype: str, num_workers: int, device_type: str, buffer_sets: int, prefetch: int) -> None:
    """Refuse, in one line and before any work, an extraction whose batch buffers do not fit in host
    memory, or whose decoding workers do not fit in /dev/shm.

    `unit_shapes`: each layer's per-stimulus (n_chn, n_row, n_col) as stored; `largest_output`: the most
    values one module outputs per stimulus; `device_type`: where the network runs (``cpu``, ``cuda``);
    `buffer_sets`: batch buffers in turn; `prefetch`: decoded batches each worker prepares ahead.
    """
    itemsize = np.dtype(dtype).itemsize
    padded = 0
    for n_chn, n_row, n_col in unit_shapes.values():
        channels = chunk_shape(n_stim, (n_chn, n_row, n_col), batch_size, itemsize)[1]
        padded += -(-n_chn // channels) * channels * n_row * n_col
    sets = min(buffer_sets, -(-n_stim // batch_size))
    # The forward pass runs on the GPU there; the host then holds the (pinned) buffers only.
    largest = largest_output if device_type == "cpu" else 0
    needed = extraction_bytes(n_stim, batch_size, padded, itemsize, sets, largest, num_workers * prefetch + 1)
    check_extraction(needed, len(unit_shapes), batch_size)
    check_shared_memory(num_workers, batch_size, n_stim, prefetch)
