"""Writing DNNBrain's activation file (``.act.h5``) batch by batch: :class:`ActivationWriter`.

Chunks span ``batch_size`` rows and a run of channels (a chunk column of all rows is about 32 MB):
the extractor fills whole chunks one batch at a time, and the Gram stage reads whole chunk columns
(all rows, some channels), so each byte is read once and neither side holds a full layer in memory.
Files are written to a temporary name and renamed when complete, and are byte-identical for
identical inputs (no timestamps: ``track_times=False``). The layout and the reader:
:mod:`dnnprobe.extract.actfile`.
"""

from __future__ import annotations

import errno
import os
import queue
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Mapping

import h5py
import numpy as np

from dnnprobe.compute.disk import check_free_space
from dnnprobe.core.atomic import atomic_output
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.extract.actfile import chunk_places, io_reason

CHUNK_BYTES = 4 << 20  # largest chunk
COLUMN_BYTES = 32 << 20  # a chunk column (all rows, one chunk's channels): the Gram stage reads a few at a time
# Uncompressed files place each chunk of at least this many bytes at a multiple of it, so that the
# extractor can write chunks with O_DIRECT (no copy into the page cache): addresses, lengths and file
# offsets must be multiples of the disk's block size, which is at most 4096 bytes on common disks.
ALIGNMENT = 4096


def chunk_shape(n_stim: int, unit_shape: tuple[int, int, int], rows: int, itemsize: int) -> tuple[int, ...]:
    """`rows` stimuli (one extraction batch) by as many channels as keep a chunk column near
    COLUMN_BYTES, so that the Gram stage's blocks, and its memory, stay small at any n_stim."""
    rows = max(1, min(rows, n_stim))
    n_chn, n_row, n_col = unit_shape
    per_channel = n_row * n_col * itemsize
    channels = min(COLUMN_BYTES // max(1, n_stim * per_channel), CHUNK_BYTES // max(1, rows * per_channel))
    return (rows, max(1, min(n_chn, channels)), n_row, n_col)


# HDF5's own bytes, measured (h5py 3, default file format, uncompressed), rounded up so that the estimate
# bounds the file from above: the superblock, root group and attributes; each dataset's object header and
# its chunk index's first B-tree node (room for 32 chunks, about 4 KB); about 70 B per further chunk.
FILE_OVERHEAD = 16 << 10
DATASET_OVERHEAD = 4300
CHUNK_OVERHEAD = 72
CHUNKS_IN_FIRST_NODE = 32


def stored_bytes(n_stim: int, unit_shapes: Mapping[str, tuple[int, int, int]], dtype: str, rows_per_chunk: int) -> int:
    """The size of the uncompressed ``.act.h5`` :class:`ActivationWriter` writes, from above (within a few
    kB): HDF5 stores every chunk whole, edge chunks padded to the full chunk shape (a layer of 64 channels in
    chunks of 43 stores 86), each chunk of at least :data:`ALIGNMENT` bytes at a multiple of it (the gaps
    are never written: holes in the file, counted here as the disk space they may take), plus HDF5's
    metadata (:data:`FILE_OVERHEAD` and the others)."""
    itemsize = np.dtype(dtype).itemsize
    total = FILE_OVERHEAD
    for unit_shape in unit_shapes.values():
        rows, channels, n_row, n_col = chunk_shape(n_stim, unit_shape, rows_per_chunk, itemsize)
        n_chunks = -(-n_stim // rows) * -(-unit_shape[0] // channels)
        chunk_bytes = rows * channels * n_row * n_col * itemsize
        per_chunk = CHUNK_OVERHEAD
        if chunk_bytes >= ALIGNMENT:  # each chunk starts at a multiple of ALIGNMENT: a gap before each
            chunk_bytes = -(-chunk_bytes // ALIGNMENT) * ALIGNMENT
            total += ALIGNMENT  # the gap before the layer's first chunk
            # Each B-tree node of the chunk index (about 3.7 kB, one per 57 or so chunks: HDF5 splits a full
            # rightmost node 9:1) lands between two aligned chunks and pushes the next one on by up to ALIGNMENT.
            per_chunk = ALIGNMENT // 48
        total += DATASET_OVERHEAD + per_chunk * max(0, n_chunks - CHUNKS_IN_FIRST_NODE) + n_chunks * chunk_bytes
    return total


class ActivationWriter:
    """Stream activations into a new ``.act.h5``; the file appears only when all rows are written.

    Use as a context manager; call :meth:`write` with consecutive row blocks, or
    :meth:`write_blocks` with one batch already laid out as the file's chunks (the extractor's
    route: nothing is copied between the network's hooks and the operating system; with `direct_io`, nor
    into the page cache: :class:`ChunkWriter`). Writes run in a
    background thread so the network keeps computing while HDF5 writes (at most two batches queued).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        n_stim: int,
        unit_shapes: Mapping[str, tuple[int, int, int]],
        dtype: str = "float32",
        compression: str = "none",
        rows_per_chunk: int = 64,
        layer_attrs: Mapping[str, Mapping[str, str]] | None = None,
        file_attrs: Mapping[str, str | int] | None = None,
        direct_io: bool = True,
    ) -> None:
        self.path = Path(path)
        self.direct_io = direct_io
        self.n_stim = n_stim
        self.unit_shapes = dict(unit_shapes)
        self.dtype = np.dtype(dtype)
        self.compression = None if compression == "none" else compression
        self.rows_per_chunk = rows_per_chunk
        self.layer_attrs = layer_attrs or {}
        self.file_attrs = file_attrs or {}
        self.rows_written = 0
        self._stack = ExitStack()
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._error: BaseException | None = None

    def __enter__(self) -> "ActivationWriter":
        self._check_free_space()
        temp = self._stack.enter_context(atomic_output(self.path))
        self._temp = temp
        self._discarding = False
        try:
            # Uncompressed: chunks at multiples of ALIGNMENT, so :meth:`write_blocks` can write them with O_DIRECT.
            aligned = {} if self.compression else {"alignment_threshold": ALIGNMENT, "alignment_interval": ALIGNMENT}
            self._file = h5py.File(temp, "w", **aligned)
            self._stack.callback(self._close_file)
            self._create_datasets()
            self._chunk_writer = None
            if self.compression is None and ChunkWriter.usable():
                places = {layer: chunk_places(dataset) for layer, dataset in self._datasets.items()}
                if all(place is not None for place in places.values()):
                    self._chunk_writer = self._stack.enter_context(ChunkWriter(temp, places, direct_io=self.direct_io))
        except BaseException as failure:  # __exit__ will not run: remove the temporary here
            self._discard()
            self._stack.__exit__(type(failure), failure, failure.__traceback__)
            raise
        self._thread = threading.Thread(target=self._drain, name="act-h5-writer", daemon=True)
        self._thread.start()
        return self

    def _create_datasets(self) -> None:
        self._datasets = {}
        for key, value in self.file_attrs.items():
            self._file.attrs[key] = value
        self._file.attrs["layer_order"] = list(self.unit_shapes)
        for layer, unit_shape in self.unit_shapes.items():
            placement = {}
            if self.compression is None:
                # Every chunk gets its place in the file now (nothing is written yet: no fill values), so the
                # extractor can write each chunk's bytes at its own offset (:class:`ChunkWriter`).
                dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
                placement = {"dcpl": dcpl, "fill_time": "never"}
            dataset = self._file.create_dataset(
                layer,
                shape=(self.n_stim, *unit_shape),
                dtype=self.dtype,
                chunks=chunk_shape(self.n_stim, unit_shape, self.rows_per_chunk, self.dtype.itemsize),
                compression=self.compression,
                track_times=False,
                **placement,
            )
            for key, value in self.layer_attrs.get(layer, {}).items():
                dataset.attrs[key] = value
            # Kept open: h5py ignores (only prints) write errors raised when a dataset object is freed.
            self._datasets[layer] = dataset

    def block_shape(self, layer: str) -> tuple[int, int, int, int, int]:
        """Shape of one batch of `layer` laid out as the file's chunks, for :meth:`write_blocks`.

        ``(n_blocks, rows, channels, n_row, n_col)``: block j is the chunk holding the batch's rows
        and channels ``j * channels`` to ``(j + 1) * channels - 1``. The last block is padded with zero
        channels when the channel count is not a multiple of ``channels`` (HDF5 stores edge chunks
        whole), and a last, short batch leaves zero rows after its own.
        """
        rows, channels, n_row, n_col = self._datasets[layer].chunks
        n_blocks = -(-self.unit_shapes[layer][0] // channels)
        return (n_blocks, rows, channels, n_row, n_col)

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            start, count, arrays, ready, release = item
            try:
                if self._error is not None:
                    continue  # keep draining so the producer never blocks on a dead writer
                if ready is not None:
                    ready()  # e.g. wait for the GPU's copies into these buffers
                for layer, array in arrays.items():
                    if count is None:  # rows as (count, units): HDF5 reorders them into its chunks
                        self._datasets[layer][start:start + len(array)] = array.reshape(len(array), *self.unit_shapes[layer])
                    else:
                        self._store_blocks(layer, start, count, array)
                # HDF5 buffers writes; flushing each batch makes a full disk fail here, at once.
                self._file.flush()
            except BaseException as exc:  # disk full, ...: reported by the next write or by close
                self._error = exc
            finally:
                if release is not None:
                    release()  # the buffers may be refilled now

    def _store_blocks(self, layer: str, start: int, count: int, blocks: np.ndarray) -> None:
        """One batch in chunk layout (see :meth:`block_shape`) into `layer`'s rows start..start+count."""
        dataset = self._datasets[layer]
        n_blocks, rows, channels, n_row, n_col = blocks.shape
        if self.compression is None:
            # Each block is exactly the bytes of one stored chunk: written as is at the chunk's place in the
            # file (HDF5's own write path would gather it again from an (n, units) array: a second copy).
            for block in range(n_blocks):
                if self._chunk_writer is not None:
                    self._chunk_writer.write(layer, (start, block * channels, 0, 0), blocks[block])
                else:  # no pwrite (Windows) or no chunk index to read places from: HDF5 writes the chunk
                    dataset.id.write_direct_chunk((start, block * channels, 0, 0), blocks[block])
        else:  # the filter compresses whole chunks itself: give HDF5 the rows in dataset order
            n_chn = dataset.shape[1]
            ordered = blocks[:, :count].swapaxes(0, 1).reshape(count, n_blocks * channels, n_row, n_col)
            dataset[start:start + count] = ordered[:, :n_chn]

    def _check_free_space(self) -> None:
        """Refuse to start when the disk cannot hold the file (uncompressed sizes are known in advance)."""
        if self.compression is not None:
            return
        needed = stored_bytes(self.n_stim, self.unit_shapes, self.dtype.name, self.rows_per_chunk)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        check_free_space(self.path, needed, "extract.dtype=float16 halves the file; extract.compression=gzip shrinks "
                         "it; extract.tokens=cls or mean stores one vector per transformer layer")

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            exc = self._error
            if isinstance(exc, (OSError, RuntimeError)):  # h5py reports I/O errors as either
                raise DnnprobeError(f"{self.path}: writing activations failed ({io_reason(exc)})") from exc
            raise exc

    def _discard(self) -> None:
        """The temporary will be deleted: empty it so that closing it frees the disk, and let closing fail
        quietly (after a failed write HDF5 often cannot close cleanly; the error was already reported)."""
        self._discarding = True
        try:
            os.truncate(self._temp, 0)
        except OSError:
            pass

    def _close_file(self) -> None:
        try:
            self._file.close()
        except Exception:
            if not self._discarding:
                raise

    def write(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Queue the next block of rows for every layer (same number of rows each)."""
        self._raise_if_failed()
        counts = {len(a) for a in arrays.values()}
        if set(arrays) != set(self.unit_shapes) or len(counts) != 1:
            raise ValueError("write() needs one block per layer, all with the same number of rows")
        count = counts.pop()
        if self.rows_written + count > self.n_stim:
            raise ValueError("more rows written than stimuli")
        converted = {layer: np.asarray(a, dtype=self.dtype) for layer, a in arrays.items()}
        self._queue.put((self.rows_written, None, converted, None, None))
        self.rows_written += count

    def write_blocks(self, blocks: Mapping[str, np.ndarray], count: int, ready=None, release=None) -> None:
        """Queue the next batch of `count` rows for every layer, each laid out as :meth:`block_shape` says.

        The batch must start a chunk (rows_written a multiple of the chunk's rows) and fill it, unless it
        is the last one. The writer thread calls ``ready()`` (when given) before reading the arrays and
        ``release()`` (when given) once it no longer needs them, also after a failure, so a producer
        that recycles a few buffers never waits forever. Raises DnnprobeError if an earlier write failed.
        """
        self._raise_if_failed()
        if set(blocks) != set(self.unit_shapes):
            raise ValueError("write_blocks() needs one block array per layer")
        for layer, array in blocks.items():
            shape = self.block_shape(layer)
            if array.shape != shape or array.dtype != self.dtype or not all(block.flags.c_contiguous for block in array):
                raise ValueError(f"layer {layer}: blocks of shape {array.shape} {array.dtype}, "
                                 f"expected {shape} {self.dtype}, each block C-contiguous")
            rows = shape[1]
            if self.rows_written % rows or not 0 < count <= rows or (count < rows and self.rows_written + count != self.n_stim):
                raise ValueError(f"layer {layer}: rows {self.rows_written}..{self.rows_written + count} do not fill "
                                 f"whole chunks of {rows} rows")
        if self.rows_written + count > self.n_stim:
            raise ValueError("more rows written than stimuli")
        self._queue.put((self.rows_written, count, dict(blocks), ready, release))
        self.rows_written += count

    def __exit__(self, exc_type, exc, tb) -> None:
        self._queue.put(None)
        self._thread.join()
        try:
            if exc_type is None:
                self._raise_if_failed()
                if self.rows_written != self.n_stim:
                    raise RuntimeError(f"only {self.rows_written} of {self.n_stim} rows were written")
                try:
                    self._file.flush()  # the last metadata: a full disk fails here rather than in close
                except (OSError, RuntimeError) as error:
                    raise DnnprobeError(f"{self.path}: writing activations failed ({io_reason(error)})") from error
        except BaseException as failure:
            self._discard()
            self._stack.__exit__(type(failure), failure, failure.__traceback__)
            raise
        if exc_type is not None:
            self._discard()
        self._stack.__exit__(exc_type, exc, tb)


class ChunkWriter:
    """Writes whole chunks of an uncompressed ``.act.h5`` at their places in the file, by their file offsets.

    The datasets must have their chunks allocated at creation (``ALLOC_TIME_EARLY``), so every chunk's
    offset is known (HDF5's chunk index), and the file must place chunks at multiples of
    :data:`ALIGNMENT`. A chunk whose block starts at an aligned address in memory (:func:`dnnprobe.extract.buffers.aligned_blocks`)
    is written with O_DIRECT, from the process's memory to the disk without a copy into the page cache (on
    two cores that copy cost about 4 ms of CPU per AlexNet image: docs/performance.md), its last partial
    disk block through the page cache; anything else (a small chunk HDF5 did not align, a file system
    without O_DIRECT, an unaligned array) is written through the page cache. Both write the
    same bytes at the same places: the file does not depend on which route was taken. Write errors
    (a full disk) raise OSError.
    """

    def __init__(self, path: Path, places: Mapping[str, Mapping[tuple[int, ...], tuple[int, int]]],
                 direct_io: bool = True) -> None:
        """`places`: each layer's chunks' (byte offset, size) by first element (:func:`chunk_places`)."""
        self.offsets = places
        self.buffered = os.open(path, os.O_WRONLY | getattr(os, "O_BINARY", 0))
        self.direct = None
        if direct_io and hasattr(os, "O_DIRECT"):
            try:
                self.direct = os.open(path, os.O_WRONLY | os.O_DIRECT)
            except OSError:  # some network and FUSE file systems have no O_DIRECT
                self.direct = None

    @staticmethod
    def usable() -> bool:
        """Positional writes exist here (not on Windows, where HDF5 writes the chunks)."""
        return hasattr(os, "pwrite")

    def __enter__(self) -> "ChunkWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        for fd in (self.buffered, self.direct):
            if fd is not None:
                os.close(fd)

    def write(self, layer: str, chunk: tuple[int, ...], block: np.ndarray) -> None:
        """Write `block`, the whole bytes of `layer`'s chunk that starts at element `chunk`."""
        offset, size = self.offsets[layer][chunk]
        data = block.reshape(-1).view(np.uint8)
        if len(data) != size:
            raise ValueError(f"layer {layer}: a block of {len(data)} bytes for a chunk of {size}")
        head = size - size % ALIGNMENT
        if self.direct is not None and head and not offset % ALIGNMENT and not data.ctypes.data % ALIGNMENT:
            try:
                self._write_all(self.direct, data[:head], offset)
            except OSError as error:
                if error.errno != errno.EINVAL:  # EINVAL: this disk wants larger blocks; anything else is real
                    raise
                os.close(self.direct)
                self.direct = None
                head = 0
        else:
            head = 0
        self._write_all(self.buffered, data[head:], offset + head)

    @staticmethod
    def _write_all(fd: int, data: np.ndarray, offset: int) -> None:
        view = memoryview(data)
        while view.nbytes:
            done = os.pwrite(fd, view, offset)
            if done <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view, offset = view[done:], offset + done
