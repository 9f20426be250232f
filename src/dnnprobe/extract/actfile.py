"""DNNBrain's activation file (``.act.h5``): its layout, and the reader that validates it and reads it in
column or row blocks (:class:`ActivationFile`); the writer is :mod:`dnnprobe.extract.writer`.

Layout (readable by DNNBrain): one dataset per layer at the root, named by the layer, shape
``(n_stim, n_chn, n_row, n_col)`` (fully connected layers as ``(n_stim, n_units, 1, 1)``), row i =
stimulus i of the ``.stim.csv``. DNNBrain writes float32 without attributes; the attributes added
here (network, weights hash, stimulus-table hash, module path) are ignored by its reader.
"""

from __future__ import annotations

import os
import queue
import re
import threading
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from dnnprobe.core.errors import DnnprobeError


def dnnbrain_shape(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Per-stimulus output shape as DNNBrain's (n_chn, n_row, n_col)."""
    if len(shape) == 1:
        return (shape[0], 1, 1)
    if len(shape) == 2:
        return (shape[0], shape[1], 1)
    if len(shape) == 3:
        return tuple(shape)
    raise DnnprobeError(f"a layer output of shape {shape} per stimulus has no DNNBrain layout")


def io_reason(exc: BaseException) -> str:
    """One line from an I/O error; h5py packs the OS error into a multi-line message."""
    if isinstance(exc, OSError) and exc.strerror and not str(exc).count("\n"):
        return exc.strerror
    text = str(exc)
    found = re.search(r"error message = '([^']*)'", text)
    if found:
        return found.group(1)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def refuse_data_outside_the_file(file: h5py.File, path: Path) -> None:
    """Raise DnnprobeError unless every root member keeps its data in `file` itself.

    DVC versions a file by the hash of its bytes, so a layer whose values live elsewhere (an
    external link, a virtual dataset, external raw storage) could change, or vanish (h5py then reads
    the fill value, silently), without DVC noticing; a soft link names another member of the file.
    Only links and dataset metadata are looked at, never data: a missing target file is never opened.
    """
    for name in file.keys():
        link = file.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            raise DnnprobeError(
                f"{path}: layer {name} is an external link to {link.filename}:{link.path}; "
                "DNNBrain layout stores each layer's data in the file itself"
            )
        if isinstance(link, h5py.SoftLink):
            if link.path not in file:
                raise DnnprobeError(f"{path}: layer {name} is a link to {link.path}, which does not exist")
            raise DnnprobeError(
                f"{path}: layer {name} is a link to {link.path}; DNNBrain layout stores each layer as a dataset of its own"
            )
        item = file[name]  # a hard link: the object is stored in this file (its data may not be)
        if not isinstance(item, h5py.Dataset):
            continue
        if item.is_virtual:
            sources = sorted({source.file_name for source in item.virtual_sources()})
            raise DnnprobeError(
                f"{path}: layer {name} is a virtual dataset (data kept in other files: {', '.join(sources)}); "
                "DNNBrain layout stores each layer's data in the file itself"
            )
        if item.external:
            raw_files = sorted({str(entry[0]) for entry in item.external})
            raise DnnprobeError(
                f"{path}: layer {name} keeps its data in external raw files ({', '.join(raw_files)}); "
                "DNNBrain layout stores each layer's data in the file itself"
            )


def open_checked(path: Path, kind: str, missing: str, check) -> h5py.File:
    """Open an HDF5 file for reading and run `check()` on it (closing it if that raises).

    One-line DnnprobeError for a folder (``is a folder, not <kind>``), a missing path (`missing`), a
    file another process holds open for writing (HDF5's file lock), and a file that is not HDF5.
    """
    if path.is_dir():
        raise DnnprobeError(f"{path}: is a folder, not {kind}")
    if not path.is_file():
        raise DnnprobeError(f"{path}: {missing}")
    try:
        file = h5py.File(path, "r")
    except OSError as exc:
        if "unable to lock file" in str(exc):  # HDF5 locks a file another process holds open for writing
            raise DnnprobeError(
                f"{path}: open for writing in another process (a notebook or script holding it with h5py.File "
                "mode 'a', 'r+' or 'w'), which HDF5 locks; close it there (or set HDF5_USE_FILE_LOCKING=FALSE "
                "to read it anyway, safe only if nothing writes it)") from None
        raise DnnprobeError(f"{path}: not an HDF5 file ({io_reason(exc)})") from None
    try:
        check(file)
    except BaseException:
        file.close()
        raise
    return file


def chunk_places(dataset: h5py.Dataset) -> dict[tuple[int, ...], tuple[int, int]] | None:
    """Every chunk's (byte offset, size) in the file, by the chunk's first element, from HDF5's chunk index.

    None unless the dataset is chunked and unfiltered (no compression) and every chunk is stored at its
    full uncompressed size: only then are a chunk's bytes its values, in C order.
    """
    chunks = dataset.chunks
    if chunks is None or dataset.id.get_create_plist().get_nfilters():
        return None
    if dataset.id.get_type() != h5py.h5t.py_create(dataset.dtype):  # stored bytes that are not numpy's
        return None
    size = int(np.prod(chunks)) * dataset.dtype.itemsize
    expected = int(np.prod([-(-extent // step) for extent, step in zip(dataset.shape, chunks)]))
    places: dict[tuple[int, ...], tuple[int, int]] = {}
    note = lambda info: places.__setitem__(tuple(info.chunk_offset), (info.byte_offset, info.size))  # noqa: E731
    try:
        if hasattr(dataset.id, "chunk_iter"):  # h5py 3.8 with HDF5 1.12.3 or later: one pass over the index
            dataset.id.chunk_iter(note)
        else:
            for index in range(dataset.id.get_num_chunks()):
                note(dataset.id.get_chunk_info(index))
    except (AttributeError, OSError, RuntimeError):  # an HDF5 older than 1.10.5 cannot say
        return None
    if len(places) != expected or any(stored != size or offset is None for offset, stored in places.values()):
        return None
    # Only chunks on the grid inside the extent (a chunk written beyond it must not stand in for a missing one).
    if any(start % step or start >= extent for chunk in places for start, step, extent in zip(chunk, chunks, dataset.shape)):
        return None
    return places


def _preadv_all(fd: int, buffers: list, offset: int) -> None:
    """Fill `buffers` from the file at `offset`, reading again after a short read (Linux returns at most
    about 2 GiB per call; network file systems may return less). OSError at the end of the file."""
    views = [memoryview(buffer).cast("B") for buffer in buffers]
    while views:
        done = os.preadv(fd, views, offset)
        if done <= 0:
            raise OSError(5, f"short read: the file ends before byte {offset + sum(v.nbytes for v in views)} (truncated?)")
        offset += done
        while views and done >= views[0].nbytes:
            done -= views[0].nbytes
            views.pop(0)
        if done:
            views[0] = views[0][done:]


class ChunkReader:
    """Reads blocks of an uncompressed chunked layer straight from its chunks' bytes, bypassing HDF5's copies.

    HDF5 reads a chunk and then copies the wanted part into the caller's array, at about 1.2 GB/s on the
    machines measured (docs/performance.md), slower than the page cache (15 GB/s) or a fast disk. Here
    each chunk's place comes from HDF5's chunk index (``chunk_iter``), and one ``preadv`` per chunk
    scatters its rows into the caller's array (the kernel's copy only). :meth:`for_dataset` returns None
    where this does not apply (compressed or filtered chunks, chunks never written, a contiguous
    layout, files whose chunks are not all the uncompressed size): HDF5 reads those.
    """

    MAX_IOVECS = 1000  # under Linux's IOV_MAX (1024): rows and skipped gaps per preadv

    def __init__(self, fd: int, dataset: h5py.Dataset, places: dict[tuple[int, ...], int]) -> None:
        self.fd = fd
        self.chunks = dataset.chunks
        self.itemsize = dataset.dtype.itemsize
        self.places = places
        self.per_channel = int(np.prod(dataset.shape[2:])) * self.itemsize  # bytes of one channel of one stimulus
        self._gap = np.empty(self.chunks[1] * self.per_channel, dtype=np.uint8)  # skipped channels land here

    @classmethod
    def for_dataset(cls, fd: int, dataset: h5py.Dataset) -> "ChunkReader | None":
        if not hasattr(os, "preadv"):  # Windows
            return None
        places = chunk_places(dataset)
        if places is None or tuple(dataset.chunks[2:]) != tuple(dataset.shape[2:]):
            return None
        return cls(fd, dataset, {chunk: offset for chunk, (offset, _) in places.items()})

    def read_into(self, out: np.ndarray, rows: tuple[int, int], channels: tuple[int, int]) -> None:
        """Fill `out`, C-contiguous (rows[1] - rows[0], channels[1] - channels[0], n_row, n_col) in the file's
        dtype, with those rows and channels. OSError for a short read (a truncated file)."""
        (r_lo, r_hi), (c_lo, c_hi) = rows, channels
        if not out.flags.c_contiguous or out.dtype.itemsize != self.itemsize:
            raise ValueError("read_into needs a C-contiguous array of the file's dtype")
        rows_per, chans_per = self.chunks[:2]
        flat = out.reshape(r_hi - r_lo, -1).view(np.uint8)  # a row of bytes per stimulus
        for r0 in range(r_lo - r_lo % rows_per, r_hi, rows_per):
            a, b = max(r_lo, r0), min(r_hi, r0 + rows_per)
            for c0 in range(c_lo - c_lo % chans_per, c_hi, chans_per):
                p, q = max(c_lo, c0), min(c_hi, c0 + chans_per)
                start = self.places[(r0, c0, 0, 0)] + ((a - r0) * chans_per + (p - c0)) * self.per_channel
                used = (q - p) * self.per_channel
                skip = chans_per * self.per_channel - used  # the chunk's other channels between two rows
                left = (p - c_lo) * self.per_channel
                for first in range(a, b, self.MAX_IOVECS // 2):
                    last = min(b, first + self.MAX_IOVECS // 2)
                    buffers: list = []
                    for row in range(first, last):
                        buffers.append(flat[row - r_lo, left:left + used])
                        if skip and row + 1 < last:
                            buffers.append(self._gap[:skip])
                    _preadv_all(self.fd, buffers, start + (first - a) * (used + skip))


class ActivationFile:
    """Read a DNNBrain ``.act.h5`` (ours or DNNBrain's), validating its layout.

    Every layer must be a floating-point dataset of shape (n_stim, n_chn, n_row, n_col), n_stim > 0
    and the same for all layers, stored in the file itself (no links, no virtual datasets). Anything
    else raises DnnprobeError with one line naming the file and the layer.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._file = open_checked(self.path, "an activation file", "activation file not found", self._check_layout)
        self._fd: int | None = None  # a descriptor of the file for ChunkReader, made when first needed
        self._readers: dict[str, ChunkReader | None] = {}
        # Keep the order the file was written in when the writer recorded it.
        order = self._file.attrs.get("layer_order")
        if order is not None and sorted(order) == sorted(self.layers):
            self.layers = [str(layer) for layer in order]

    def _check_layout(self, file: h5py.File) -> None:
        refuse_data_outside_the_file(file, self.path)  # before touching any layer's data
        self.layers: list[str] = []
        for name, item in file.items():
            if isinstance(item, h5py.Group):
                raise DnnprobeError(f"{self.path}: /{name} is a group; DNNBrain layout has one dataset per layer at the root")
            if not isinstance(item, h5py.Dataset):
                raise DnnprobeError(f"{self.path}: /{name} is not a dataset; DNNBrain layout has one dataset per layer at the root")
            if item.ndim != 4:
                raise DnnprobeError(
                    f"{self.path}: layer {name} has shape {item.shape}; DNNBrain layout is (n_stim, n_chn, n_row, n_col)"
                )
            if item.dtype.kind != "f":
                raise DnnprobeError(f"{self.path}: layer {name} has dtype {item.dtype}; expected floating point")
            if item.shape[0] == 0:
                raise DnnprobeError(f"{self.path}: layer {name} has 0 rows (no stimuli)")
            if 0 in item.shape[1:]:
                raise DnnprobeError(f"{self.path}: layer {name} has shape {item.shape}: 0 units per stimulus")
            self.layers.append(name)
        if not self.layers:
            raise DnnprobeError(f"{self.path}: no layer datasets")
        rows = {file[name].shape[0] for name in self.layers}
        if len(rows) != 1:
            raise DnnprobeError(f"{self.path}: layers have different numbers of rows {sorted(rows)}")
        self.n_stim = rows.pop()

    def __enter__(self) -> "ActivationFile":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._file.close()

    def _chunk_reader(self, layer: str) -> ChunkReader | None:
        """The layer's :class:`ChunkReader`, or None where HDF5 must read it (made once per layer)."""
        if layer not in self._readers:
            self._readers[layer] = None
            if self._file.driver == "sec2":  # its handle is a file descriptor (core, stdio, ... have none)
                if self._fd is None:
                    self._fd = self.duplicate_descriptor()
                self._readers[layer] = ChunkReader.for_dataset(self._fd, self.dataset(layer))
        return self._readers[layer]

    @property
    def attrs(self) -> dict:
        return dict(self._file.attrs)

    def duplicate_descriptor(self) -> int:
        """A new OS file descriptor (the caller closes it) on the very file HDF5 has open.

        For hashing the file's bytes: a descriptor, unlike reopening the path, cannot reach a file
        renamed over the path since this one was opened. Read it with ``os.pread``
        (positional reads), which leave HDF5's own reads of the shared descriptor undisturbed.
        """
        return os.dup(self._file.id.get_vfd_handle())

    def dataset(self, layer: str) -> h5py.Dataset:
        if layer not in self.layers:
            raise DnnprobeError(f"{self.path}: no layer {layer!r} (layers: {', '.join(self.layers)})")
        return self._file[layer]

    def n_units(self, layer: str) -> int:
        return int(np.prod(self.dataset(layer).shape[1:]))

    def check_rows(self, n_stim: int, table_name: str) -> None:
        if self.n_stim != n_stim:
            raise DnnprobeError(f"{self.path}: {self.n_stim} rows, but {table_name} lists {n_stim} stimuli")

    def column_blocks(self, layer: str, max_bytes: int = 256 << 20, reuse_buffers: bool = False) -> Iterator[np.ndarray]:
        """Yield the layer as float32 blocks of shape (n_stim, some units), all rows at once.

        Blocks follow the dataset's chunk columns, so each chunk is read once; a reader thread
        fetches the next block while the caller works on the current one. Non-finite values are an
        error. With `reuse_buffers`, blocks live in three recycled buffers (no fresh memory per
        block, which costs page faults): a block is valid only until the caller asks for the next.
        """
        dataset = self.dataset(layer)
        n_stim, n_chn = dataset.shape[:2]
        per_channel = int(np.prod(dataset.shape[2:]))
        step = dataset.chunks[1] if dataset.chunks else 1
        channels = max(1, max_bytes // max(1, n_stim * per_channel * 4))
        channels = max(step, channels - channels % step)
        bounds = [(c, min(c + channels, n_chn)) for c in range(0, n_chn, channels)]
        widest = max(hi - lo for lo, hi in bounds) * per_channel
        # One slot per block in flight: the caller's, the queued one, the one being read.
        slots = [np.empty(n_stim * widest, dtype=dataset.dtype) for _ in range(3)] if reuse_buffers else None
        converted = [np.empty(n_stim * widest, dtype=np.float32) for _ in range(3)] \
            if reuse_buffers and dataset.dtype != np.float32 else None

        reader = self._chunk_reader(layer)

        def read(index: int, lo: int, hi: int) -> np.ndarray:
            shape = (n_stim, hi - lo, *dataset.shape[2:])
            try:
                if slots is None and reader is None:
                    block = np.ascontiguousarray(dataset[:, lo:hi].reshape(n_stim, -1), dtype=np.float32)
                else:
                    raw = np.empty(shape, dataset.dtype) if slots is None else \
                        slots[index % 3][: int(np.prod(shape))].reshape(shape)
                    if reader is not None:
                        reader.read_into(raw, (0, n_stim), (lo, hi))
                    else:
                        dataset.read_direct(raw, source_sel=np.s_[:, lo:hi])
                    block = raw.reshape(n_stim, -1)
                    if slots is None and block.dtype != np.float32:
                        block = block.astype(np.float32)
            except (OSError, RuntimeError) as exc:  # h5py's read errors: a corrupt chunk, a truncated file
                raise DnnprobeError(
                    f"{self.path}: layer {layer} cannot be read ({io_reason(exc)}); "
                    "the file is damaged: rerun the extract stage"
                ) from exc
            if converted is not None:  # float16 files: widen into a recycled float32 buffer
                target = converted[index % 3][: block.size].reshape(block.shape)
                np.copyto(target, block)
                block = target
            # One float64 sum is NaN or inf exactly when some value is (a cheap pass; no mask array).
            if not np.isfinite(block.sum(dtype=np.float64)):
                rows, cols = np.nonzero(~np.isfinite(block))
                raise DnnprobeError(
                    f"{self.path}: layer {layer} has non-finite values (first at stimulus row {rows[0] + 1}, "
                    f"unit {lo * per_channel + cols[0]})"
                )
            return block

        yield from _prefetched(read, bounds)

    def _rows_per_read(self, layer: str, max_bytes: int) -> int:
        """Rows read at a time by the row readers: whole chunk rows, about `max_bytes` of float32."""
        dataset = self.dataset(layer)
        step = dataset.chunks[0] if dataset.chunks else 1
        rows = max(1, max_bytes // max(1, self.n_units(layer) * 4))
        return max(step, rows - rows % step)

    def _read_row_span(self, layer: str, lo: int, hi: int) -> np.ndarray:
        """Rows lo:hi of the layer as (hi - lo, n_units) float32; one-line errors for damage and non-finite values."""
        dataset = self.dataset(layer)
        reader = self._chunk_reader(layer)
        try:
            if reader is None:
                block = np.ascontiguousarray(dataset[lo:hi].reshape(hi - lo, -1), dtype=np.float32)
            else:
                raw = np.empty((hi - lo, *dataset.shape[1:]), dataset.dtype)
                reader.read_into(raw, (lo, hi), (0, dataset.shape[1]))
                block = raw.reshape(hi - lo, -1).astype(np.float32, copy=False)
        except (OSError, RuntimeError) as exc:
            raise DnnprobeError(
                f"{self.path}: layer {layer} cannot be read ({io_reason(exc)}); the file is damaged: rerun the extract stage"
            ) from exc
        if not np.isfinite(block.sum(dtype=np.float64)):
            rows, cols = np.nonzero(~np.isfinite(block))
            raise DnnprobeError(f"{self.path}: layer {layer} has non-finite values (first at stimulus row "
                                f"{lo + rows[0] + 1}, unit {cols[0]})")
        return block

    def row_blocks(self, layer: str, max_bytes: int = 96 << 20) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_row, block)`` for the whole layer, blocks of shape (rows, n_units) float32.

        The reading side for the covariance route (X^T X, projections): blocks are whole chunk rows
        (the extractor's batches), so each chunk is read once, and about `max_bytes` each, read one
        ahead in a thread. Memory stays bounded at any n_stim.
        """
        step = self._rows_per_read(layer, max_bytes)
        bounds = [(lo, min(lo + step, self.n_stim)) for lo in range(0, self.n_stim, step)]
        for (lo, _), block in zip(bounds, _prefetched(lambda index, lo, hi: self._read_row_span(layer, lo, hi), bounds)):
            yield lo, block

    def read_rows(self, layer: str, rows: np.ndarray, max_bytes: int = 96 << 20) -> np.ndarray:
        """The given stimulus rows (increasing indices) as (len(rows), n_units) float32.

        Reads, per span of whole chunk rows that holds any of them, from the first wanted row to the last
        (cross-validation folds without shuffling are nearly contiguous), so a fold costs about its own bytes.
        """
        rows = np.asarray(rows)
        if len(rows) and np.any(np.diff(rows) <= 0):
            raise ValueError("read_rows needs increasing row indices")
        out = np.empty((len(rows), self.n_units(layer)), dtype=np.float32)
        step = self._rows_per_read(layer, max_bytes)
        done = 0
        while done < len(rows):
            span_end = (rows[done] // step + 1) * step
            last = int(np.searchsorted(rows, span_end))
            lo, hi = int(rows[done]), int(rows[last - 1]) + 1
            out[done:last] = self._read_row_span(layer, lo, hi)[rows[done:last] - lo]
            done = last
        return out

    def read_layer(self, layer: str) -> np.ndarray:
        """The whole layer as (n_stim, n_units) float32: for small files and tests only."""
        return np.concatenate(list(self.column_blocks(layer)), axis=1)


def _prefetched(read, bounds: list[tuple[int, int]]) -> Iterator[np.ndarray]:
    """Call read(index, lo, hi) for each bound one step ahead in a thread (HDF5 reads overlap BLAS work)."""
    if not bounds:
        return
    results: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def work() -> None:
        for index, (lo, hi) in enumerate(bounds):
            if stop.is_set():
                return
            try:
                results.put((read(index, lo, hi), None))
            except BaseException as exc:
                results.put((None, exc))
                return

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        for _ in bounds:
            block, exc = results.get()
            if exc is not None:
                raise exc
            yield block
    finally:
        # The caller may stop early: tell the reader, and unblock it if it waits to hand over a block.
        stop.set()
        while thread.is_alive():
            try:
                results.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()
