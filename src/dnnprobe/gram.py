"""Per-layer Gram matrices K = X X^T, streamed from the activation file.

The probe's PCA only ever needs inner products between stimuli: a training fold's principal
scores are the top eigenvectors of its centred Gram block, and held-out stimuli are projected with
the centred cross-Gram (see :mod:`dnnprobe.probe`). K is n_stim x n_stim whatever the layer's width,
so it is computed once per layer, streaming the layer in column blocks (memory stays bounded for
193,600-unit conv1), and cached as a DVC output: a new ``pca``, ``cv`` or classifier then costs
seconds. Products run in float32 (BLAS syrk) and accumulate in float64 across blocks.

The Gram file records where it comes from: the sha256 of the activation file's bytes (hashed by a
background thread while the products run) and the activation file's network_/stimuli_/images_
attributes, so that a later stage can check that its inputs belong together.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
from tqdm import tqdm

from dnnprobe.actfile import ActivationFile, io_reason, open_checked, refuse_data_outside_the_file
from dnnprobe.core.atomic import atomic_output
from dnnprobe.core.errors import DnnprobeError

# Room for HDF5's own bytes beside the matrices (superblock, object headers, attributes: a few KB
# per layer), so that the free-space check does not pass a disk that then fills on the last layer.
METADATA_MARGIN_BYTES = 1 << 20
HASH_BLOCK_BYTES = 4 << 20  # the hashing thread's reads: large enough for hashlib to release the GIL
# Root attributes of the activation file copied into the Gram file: which network, stimulus table
# and images (in row order) the activations come from, so that files that belong together can be checked.
PROVENANCE_PREFIXES = ("network_", "stimuli_", "images_")


def layer_gram(activations: ActivationFile, layer: str, block_bytes: int = 96 << 20) -> np.ndarray:
    """K = X X^T in float64 for one layer, X read as (n_stim, units) column blocks."""
    n = activations.n_stim
    gram = np.zeros((n, n), dtype=np.float64)
    product = np.empty((n, n), dtype=np.float32)  # reused: a fresh array per block costs page faults
    for block in activations.column_blocks(layer, max_bytes=block_bytes, reuse_buffers=True):
        np.matmul(block, block.T, out=product)  # numpy calls BLAS syrk for X @ X.T
        gram += product
    if not np.isfinite(np.trace(gram)):  # the diagonal is the largest: any overflow shows there
        raise DnnprobeError(f"{activations.path}: layer {layer} has activations that are not finite, or too large "
                            "for float32 products (above about 1e19); rescale them")
    return gram


def gram_bytes(n_stim: int, n_layers: int) -> int:
    """Bytes a Gram file takes on disk: one n_stim x n_stim float64 matrix per layer, plus metadata."""
    return n_layers * n_stim * n_stim * 8 + METADATA_MARGIN_BYTES


def check_free_space(out_path: Path, needed: int) -> None:
    """Refuse, before any work, when the output's disk has less than `needed` bytes free.

    Looks at the nearest existing folder above the output, so that a refusal creates nothing.
    """
    folder = out_path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DnnprobeError(
            f"{out_path}: needs {needed / 1e6:,.0f} MB but its disk has {free / 1e6:,.0f} MB free "
            f"(fewer extract.layers, or free some space)"
        )


class BackgroundSha256:
    """sha256 (hex) of a file's bytes, read sequentially in a thread while the caller works.

    Takes ownership of the descriptor `fd` (see :meth:`ActivationFile.duplicate_descriptor`) and
    reads it with positional reads in HASH_BLOCK_BYTES blocks; hashlib releases the GIL on large
    buffers, so the hash runs beside the Gram products (about 0.9 GB/s of one core). The file must
    not change meanwhile: its size and modification time are compared at the start and the end.
    """

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self._path = path
        self._before = self._identity()
        self._sha256 = hashlib.sha256()
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="act-sha256", daemon=True)
        self._thread.start()

    def _identity(self) -> tuple[int, int]:
        stat = os.fstat(self._fd)
        return stat.st_size, stat.st_mtime_ns

    def _run(self) -> None:
        offset = 0
        try:
            while not self._stop.is_set():
                block = os.pread(self._fd, HASH_BLOCK_BYTES, offset)  # positional: HDF5 shares the descriptor
                if not block:
                    return
                self._sha256.update(block)
                offset += len(block)
        except BaseException as exc:  # reported by hexdigest()
            self._error = exc

    def hexdigest(self) -> str:
        """Wait for the whole file to be hashed; raises DnnprobeError if it could not be read or changed."""
        self._thread.join()
        try:
            if self._error is not None:
                raise DnnprobeError(f"{self._path}: cannot be read ({io_reason(self._error)})") from self._error
            if self._identity() != self._before:
                raise DnnprobeError(
                    f"{self._path}: changed while the gram stage was reading it (another process writing it?); "
                    "rerun the gram stage"
                )
            return self._sha256.hexdigest()
        finally:
            self.close()

    def close(self) -> None:
        """Stop hashing (if still running) and close the descriptor; safe to call twice."""
        self._stop.set()
        self._thread.join()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def write_gram_file(
    activations_path: str | os.PathLike,
    out_path: str | os.PathLike,
    layers: list[str] | None = None,
    progress: bool = True,
) -> list[str]:
    """Write one (n_stim, n_stim) float64 dataset per layer; returns the layers written.

    Root attributes: n_stim, layer_order, activations (the file's name), activations_sha256 (sha256
    of its bytes, computed here while it is read), and its attributes starting with network_,
    stimuli_ or images_. Raises DnnprobeError (one line) for a bad activation file, a disk without
    room for n_layers * n_stim^2 * 8 bytes (checked before any work), or a write that fails (disk
    full meanwhile): then nothing is left at `out_path`.
    """
    out_path = Path(out_path)
    with ActivationFile(activations_path) as activations:
        layers = list(layers or activations.layers)
        for layer in layers:
            activations.dataset(layer)  # an unknown layer stops the stage before any work
        check_free_space(out_path, gram_bytes(activations.n_stim, len(layers)))
        provenance = {key: value for key, value in activations.attrs.items() if key.startswith(PROVENANCE_PREFIXES)}
        sha256 = BackgroundSha256(activations.duplicate_descriptor(), activations.path)
        try:
            with atomic_output(out_path) as temp:
                writer = _GramWriter(temp, out_path)
                try:
                    writer.write_attrs({
                        "n_stim": activations.n_stim,
                        "layer_order": layers,
                        "activations": Path(activations_path).name,
                        **provenance,
                    })
                    for layer in tqdm(layers, desc="gram", unit="layer", disable=not progress):
                        writer.write_layer(layer, layer_gram(activations, layer), activations.n_units(layer))
                    writer.write_attrs({"activations_sha256": sha256.hexdigest()})
                    writer.close()
                except BaseException:
                    writer.discard()
                    raise
        finally:
            sha256.close()
    return layers


class _GramWriter:
    """The Gram file being written: every write is flushed at once, so that a full disk fails inside
    the write with a Python exception, reported as one line naming the output.

    Why: HDF5 buffers metadata and writes it when the file is closed; a disk that fills then makes
    the close fail half way, with a multi-line error and the file half closed (a segfault was once
    reported there). A failed temporary is emptied before it is closed (:meth:`discard`), so that
    closing frees the disk and has room for whatever HDF5 still writes.
    """

    def __init__(self, temp: Path, out_path: Path) -> None:
        self._temp = temp
        self._out_path = out_path
        with _write_errors(self._out_path):
            self._file = h5py.File(temp, "w")

    def write_attrs(self, attrs: dict) -> None:
        with _write_errors(self._out_path):
            for key, value in attrs.items():
                self._file.attrs[key] = value
            self._file.flush()

    def write_layer(self, layer: str, gram: np.ndarray, n_units: int) -> None:
        with _write_errors(self._out_path):
            dataset = self._file.create_dataset(layer, data=gram, track_times=False)
            dataset.attrs["n_units"] = n_units
            self._file.flush()

    def close(self) -> None:
        with _write_errors(self._out_path):
            self._file.close()

    def discard(self) -> None:
        """Empty the temporary (freeing the disk), then close it, ignoring errors: it is deleted next."""
        try:
            os.truncate(self._temp, 0)
        except OSError:
            pass
        try:
            self._file.close()
        except Exception:
            pass


@contextlib.contextmanager
def _write_errors(out_path: Path) -> Iterator[None]:
    """Turn an h5py write error (an OSError or RuntimeError, several lines long) into one line."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        raise DnnprobeError(f"{out_path}: writing Gram matrices failed ({io_reason(exc)})") from exc


class GramFile:
    """Read the Gram matrices written by :func:`write_gram_file`.

    ``layers`` (in the order written), ``n_stim``, ``attrs`` (the root attributes: provenance).
    Raises DnnprobeError (one line) for a missing path, a folder, a file that is not a Gram file,
    or one whose matrices are kept outside it (links, virtual datasets: DVC could not see them).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._file = open_checked(self.path, "a Gram file", "Gram file not found (run the gram stage: dvc repro gram)",
                                  self._check_layout)
        self.n_stim = int(self._file.attrs["n_stim"])
        self.layers = [str(layer) for layer in self._file.attrs["layer_order"]]
        self.attrs = dict(self._file.attrs)

    def _check_layout(self, file: h5py.File) -> None:
        if "n_stim" not in file.attrs or "layer_order" not in file.attrs:
            raise DnnprobeError(f"{self.path}: not a Gram file written by the gram stage (no n_stim/layer_order attributes)")
        refuse_data_outside_the_file(file, self.path)
        for layer in file.attrs["layer_order"]:
            if not isinstance(file.get(str(layer)), h5py.Dataset):
                raise DnnprobeError(f"{self.path}: no matrix for layer {layer}, which its layer_order lists; rerun the gram stage")

    @property
    def activations_sha256(self) -> str:
        """sha256 (hex) of the activation file the matrices were computed from; "" for Gram files
        written before the gram stage recorded it."""
        return str(self.attrs.get("activations_sha256", ""))

    def __enter__(self) -> "GramFile":
        return self

    def __exit__(self, *exc_info) -> None:
        self._file.close()

    def n_units(self, layer: str) -> int:
        return int(self._file[layer].attrs["n_units"])

    def gram(self, layer: str) -> np.ndarray:
        """The layer's (n_stim, n_stim) float64 Gram matrix K = X X^T."""
        if layer not in self.layers:
            raise DnnprobeError(f"{self.path}: no layer {layer!r} (layers: {', '.join(self.layers)})")
        try:
            return self._file[layer][()]
        except (OSError, RuntimeError) as exc:  # h5py's read errors
            raise DnnprobeError(
                f"{self.path}: layer {layer} cannot be read ({io_reason(exc)}); the file is damaged: rerun the gram stage"
            ) from exc
