"""Per-layer second-moment matrices, streamed from the activation file: the probe's cache.

The probe's PCA of a training fold can be computed exactly from either of two matrices of a layer's
activations X (n_stim rows, d units), and the gram stage stores, per layer, the smaller one:

- ``gram`` (d >= n_stim): the n x n Gram matrix K = Xc Xc^T of the activations centred over all
  stimuli (centring keeps float32 products exact far from zero and changes no fold's PCA). A training fold's principal scores are
  the top eigenvectors of its centred Gram block, and held-out stimuli are projected with the
  centred cross-Gram (:mod:`dnnprobe.probe.foldpca`). K is streamed from the layer's column blocks, so
  memory stays bounded for 193,600-unit conv1.
- ``covariance`` (d < n_stim: fc layers at BOLD5000 scale, conv3-conv5 at THINGS/NSD scale): the
  d x d moments M = sum (x - c)(x - c)^T about a shift c, with the column sums s = sum (x - c)
  (:mod:`dnnprobe.gram.moments`; the probe's PCA from them: :mod:`dnnprobe.probe.covpca`). Streamed
  from the layer's row blocks. The probe reads this layer's activations again (the fold's held-out
  rows, and one pass to project), so the activation file stays a dependency of the probe.

Products run in float32 (BLAS, or cuBLAS with ``probe.device``) one band of the result at a time and
accumulate in float64; the result is stored as ``gram.dtype`` (float32 by default: fold accuracies
are the same as with float64, see docs/performance.md). Once cached, a new ``pca``, ``cv`` or
classifier costs seconds.

File layout (format 2): root attributes ``gram_format`` = 2, ``n_stim``, ``layers``, ``dtype``,
provenance (below); one group per layer with attributes ``route`` ("gram" or "covariance") and
``n_units``, holding ``matrix`` ((n, n) or (d, d), ``dtype``) and, for the covariance route,
``column_sums`` ((d,) float64) and ``shift`` ((d,) float32). Files of format 1 (a float64 Gram
dataset per layer at the root, listed in ``layer_order``) are still read; dnnprobe versions that only
read format 1 refuse format 2 files with one line (they find no ``layer_order`` attribute).

The Gram file records where it comes from: the sha256 of the activation file's bytes (hashed by a
background thread while the products run) and the activation file's network_/stimuli_/images_
attributes, so that a later stage can check that its inputs belong together.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
import os
import threading
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from dnnprobe.compute import disk
from dnnprobe.extract.actfile import ActivationFile, io_reason
from dnnprobe.core.atomic import atomic_output
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.progress import progress_bar
from dnnprobe.gram import budget
from dnnprobe.gram.moments import BAND_BYTES, add_outer_products
from dnnprobe.gram.reader import GRAM_FORMAT
from dnnprobe.compute.arrays import NUMPY, NumpyOps, resolve_device

# Room for HDF5's own bytes beside the matrices (superblock, object headers, attributes: a few KB
# per layer), so that the free-space check does not pass a disk that then fills on the last layer.
METADATA_MARGIN_BYTES = 1 << 20
HASH_BLOCK_BYTES = 4 << 20  # the hashing thread's reads: large enough for hashlib to release the GIL
# Root attributes of the activation file copied into the Gram file: which network, stimulus table
# and images (in row order) the activations come from, so that files that belong together can be checked.
PROVENANCE_PREFIXES = ("network_", "stimuli_", "images_")
STORAGE_DTYPES = ("float32", "float64")
BLOCK_BYTES = 96 << 20  # activation blocks read at a time (three in flight)


def choose_route(n_stim: int, n_units: int) -> str:
    """The smaller matrix: ``covariance`` (d x d) for layers with fewer units than stimuli, else ``gram``."""
    return "covariance" if n_units < n_stim else "gram"


@dataclass
class LayerMatrix:
    """One layer's stored matrix: K = X X^T (route ``gram``) or M, s, c (route ``covariance``)."""

    route: str
    matrix: np.ndarray  # (n, n) or (d, d) float64
    sums: np.ndarray | None = None  # covariance: (d,) float64 column sums of x - c
    shift: np.ndarray | None = None  # covariance: (d,) float32 shift c


def layer_gram(activations: ActivationFile, layer: str, block_bytes: int = BLOCK_BYTES, ops: NumpyOps = NUMPY) -> np.ndarray:
    """K = Xc Xc^T, (n_stim, n_stim) float64 on the host, X read as (n_stim, units) column blocks and
    centred: Xc = X minus its column means over all stimuli.

    Centring changes nothing the probe computes (every fold double-centres its block and projects
    with the centred cross-Gram, which a constant shift of a column leaves as they are), but float32
    products of activations far from zero (a mean 1,000 times their spread) would lose the digits
    that carry the signal. Only the upper triangle is computed (one band of rows at a time, float32
    products added into a float64 K on `ops`' device), then mirrored: memory is K plus a (band, n)
    float32 temporary.
    """
    n = activations.n_stim
    gram = ops.zeros((n, n), np.float64)
    band = max(1, BAND_BYTES // max(1, 4 * n))
    for block in activations.column_blocks(layer, max_bytes=block_bytes, reuse_buffers=True):
        block = ops.centre_columns(block)  # a column block holds every stimulus: exact means
        for lo in range(0, n, band):
            gram[lo:lo + band, lo:] += block[lo:lo + band] @ block[lo:].T
    for lo in range(band, n, band):  # the lower triangle from the upper
        gram[lo:lo + band, :lo] = gram[:lo, lo:lo + band].T
    gram = ops.numpy(gram)
    _refuse_overflow(activations, layer, gram)
    return gram


def layer_moments(activations: ActivationFile, layer: str, block_bytes: int = BLOCK_BYTES,
                  ops: NumpyOps = NUMPY) -> LayerMatrix:
    """M = sum (x - c)(x - c)^T ((d, d) float64) and s = sum (x - c), X read in row blocks.

    c is the mean of the first block read (float32): products of shifted rows keep the digits that a
    large common mean would cancel when the probe centres M.
    """
    d = activations.n_units(layer)
    moments = ops.zeros((d, d), np.float64)
    sums = ops.zeros(d, np.float64)  # on the device: no synchronisation per block
    shift = shift_dev = None
    for _, block in activations.row_blocks(layer, max_bytes=block_bytes):
        if shift is None:
            shift = block.mean(axis=0, dtype=np.float64).astype(np.float32)
            shift_dev = ops.asarray(shift, np.float32)
        rows = ops.asarray(block, np.float32) - shift_dev
        sums += rows.sum(0, dtype=ops.float64)
        with np.errstate(over="ignore"):  # overflow is reported below, as one line
            add_outer_products(moments, rows, ops)
    moments, sums = ops.numpy(moments), ops.numpy(sums)
    _refuse_overflow(activations, layer, moments)
    return LayerMatrix("covariance", moments, sums, shift)


def layer_matrix(activations: ActivationFile, layer: str, ops: NumpyOps = NUMPY) -> LayerMatrix:
    """The layer's smaller matrix (see :func:`choose_route`)."""
    if choose_route(activations.n_stim, activations.n_units(layer)) == "covariance":
        return layer_moments(activations, layer, ops=ops)
    return LayerMatrix("gram", layer_gram(activations, layer, ops=ops))


def _refuse_overflow(activations: ActivationFile, layer: str, matrix: np.ndarray) -> None:
    if not np.isfinite(np.trace(matrix)):  # the diagonal is the largest: any overflow shows there
        raise DnnprobeError(f"{activations.path}: layer {layer} has activations that are not finite, or too large "
                            "for float32 products (above about 1e19); rescale them")


def matrix_side(n_stim: int, n_units: int) -> int:
    """The side of the matrix stored for a layer: min(n_stim, n_units)."""
    return n_units if choose_route(n_stim, n_units) == "covariance" else n_stim


def gram_bytes(n_stim: int, units: list[int], dtype: str = "float32") -> int:
    """Bytes a Gram file takes on disk: per layer its smaller matrix in `dtype` (plus 12 bytes per unit
    of column sums and shift for the covariance route), plus metadata."""
    itemsize = np.dtype(dtype).itemsize
    total = 0
    for d in units:
        side = matrix_side(n_stim, d)
        total += side * side * itemsize + (12 * d if side == d < n_stim else 0)
    return total + METADATA_MARGIN_BYTES


def check_free_space(out_path: Path, needed: int) -> None:
    """Refuse, before any work, when the output's disk has less than `needed` bytes free.

    Looks at the nearest existing folder above the output, so that a refusal creates nothing.
    """
    disk.check_free_space(out_path, needed, "fewer extract.layers, or free some space")


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
    dtype: str = "float32",
    device: str = "cpu",
) -> list[str]:
    """Write each layer's smaller matrix (see the module docstring); returns the layers written.

    `dtype` (``gram.dtype``) is the stored matrices' type; `device` (``probe.device``) where the
    products run. Root attributes: gram_format, n_stim, layers, dtype, activations (the file's name),
    activations_sha256 (sha256 of its bytes, computed here while it is read), and its attributes
    starting with network_, stimuli_ or images_. Raises DnnprobeError (one line), before any work, for
    a bad activation file, a disk without room for the matrices, or a layer whose matrix needs more
    memory than this machine has available; and for a write that fails (disk full meanwhile): then
    nothing is left at `out_path`.
    """

    if dtype not in STORAGE_DTYPES:
        raise DnnprobeError(f"gram.dtype must be one of {', '.join(STORAGE_DTYPES)}, got {dtype!r}")
    out_path = Path(out_path)
    ops = resolve_device(device)
    with ActivationFile(activations_path) as activations:
        layers = list(layers or activations.layers)
        units = [activations.n_units(layer) for layer in layers]  # an unknown layer stops the stage here
        check_free_space(out_path, gram_bytes(activations.n_stim, units, dtype))
        for layer, d in zip(layers, units):
            budget.check_gram_stage(activations.n_stim, d, layer, ops)
        provenance = {key: value for key, value in activations.attrs.items() if key.startswith(PROVENANCE_PREFIXES)}
        sha256 = BackgroundSha256(activations.duplicate_descriptor(), activations.path)
        try:
            with atomic_output(out_path) as temp:
                writer = _GramWriter(temp, out_path)
                try:
                    writer.write_attrs({
                        "gram_format": GRAM_FORMAT,
                        "n_stim": activations.n_stim,
                        "layers": layers,
                        "dtype": dtype,
                        "activations": Path(activations_path).name,
                        **provenance,
                    })
                    with ops.precision():
                        for layer, d in progress_bar(list(zip(layers, units)), desc="gram", unit="layer", enabled=progress):
                            writer.write_layer(layer, layer_matrix(activations, layer, ops=ops), d, dtype)
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

    def write_layer(self, layer: str, stored: LayerMatrix, n_units: int, dtype: str) -> None:
        """The layer's group; the matrix converted to `dtype` in row slabs (no second full copy)."""
        with _write_errors(self._out_path):
            group = self._file.create_group(layer)
            group.attrs["route"] = stored.route
            group.attrs["n_units"] = n_units
            matrix = stored.matrix
            dataset = group.create_dataset("matrix", shape=matrix.shape, dtype=dtype, track_times=False)
            step = max(1, BAND_BYTES // max(1, 8 * matrix.shape[1]))
            for lo in range(0, matrix.shape[0], step):
                dataset[lo:lo + step] = matrix[lo:lo + step].astype(dtype)
            if stored.route == "covariance":
                group.create_dataset("column_sums", data=stored.sums.astype(np.float64), track_times=False)
                group.create_dataset("shift", data=stored.shift.astype(np.float32), track_times=False)
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
