"""The few array operations the probe's linear algebra needs, for numpy and for torch (CPU or GPU).

The Gram/covariance products (gram stage) and the fold eigensolves (probe stage) are written once,
against an ``ops`` object: :data:`NUMPY` (the default, no torch import) or :class:`TorchOps` on a
device, as :func:`resolve_device` picks for ``probe.device``. Matrix products, slicing and ``.T`` are
the arrays' own; what differs between the two libraries (concatenation, conversion, sums in float64,
dense eigensolvers) lives here. Small matrices (a Krylov basis's projection, a few hundred square) are
always solved on the CPU in float64 with numpy, so both paths take the same decisions on the same numbers.

torch is imported only when a torch device is asked for (``probe.device: cuda``, or ``auto`` on a
machine with an NVIDIA driver): its import takes seconds and the CPU path does not need it.
"""

from __future__ import annotations

import contextlib
import re

import numpy as np
import scipy.linalg

from dnnprobe.compute import memory
from dnnprobe.compute.device import DEVICE_PATTERN, check_cuda_device, full_float32, nvidia_driver_present
from dnnprobe.core.errors import DnnprobeError


class NumpyOps:
    """numpy arrays in host memory."""

    name = "cpu"
    float32, float64 = np.float32, np.float64

    def asarray(self, array, dtype=np.float32):
        return np.asarray(array, dtype=dtype)

    def like(self, array: np.ndarray, reference):
        """`array` (numpy) as an array of `reference`'s kind, dtype and device."""
        return np.asarray(array, dtype=reference.dtype)

    def numpy(self, array) -> np.ndarray:
        return np.asarray(array)

    def cat(self, arrays, axis: int):
        return np.concatenate(arrays, axis=axis)

    def zeros(self, shape, dtype):
        return np.zeros(shape, dtype=dtype)

    def eye(self, size: int, dtype):
        return np.eye(size, dtype=dtype)

    def cast(self, array, dtype):
        return array.astype(dtype, copy=False)

    def sum64(self, array, axis: int) -> np.ndarray:
        """Sums in float64 (host numpy), whatever the array's dtype."""
        return array.sum(axis=axis, dtype=np.float64)

    def colnorm(self, array) -> np.ndarray:
        return np.linalg.norm(array, axis=0)

    def centre_columns(self, block):
        """A host (rows, cols) block as float32 of `self`'s kind minus its column means (in float64)."""
        means = block.mean(axis=0, dtype=np.float64)
        return block.astype(np.float32, copy=False) - means.astype(np.float32)

    def take(self, array, rows: np.ndarray, cols: np.ndarray):
        return array[np.ix_(rows, cols)]

    def rank1_update_(self, matrix, vector: np.ndarray, alpha: float) -> None:
        """matrix += alpha * vector vector^T in place, in row bands (no d x d temporary)."""
        step = max(1, (32 << 20) // max(1, 8 * len(vector)))
        for lo in range(0, len(vector), step):
            matrix[lo:lo + step] += alpha * np.outer(vector[lo:lo + step], vector)

    def dense_top(self, matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k largest eigenpairs of a symmetric matrix (LAPACK), descending, as float64."""
        size = matrix.shape[0]
        values, vectors = scipy.linalg.eigh(matrix, subset_by_index=[size - k, size - 1], driver="evr",
                                            check_finite=False)
        return values[::-1].astype(np.float64), vectors[:, ::-1].astype(np.float64)

    def set_rows_(self, matrix, rows: np.ndarray, values: np.ndarray) -> None:
        """matrix[rows] = values (host numpy `values`), in place: fills a matrix slab by slab."""
        matrix[rows] = values

    def precision(self):
        """A context in which products are exact float32 (a no-op for numpy)."""
        return contextlib.nullcontext()

    def synchronize(self) -> None:
        pass


# A dense eigensolver on a GPU (cuSOLVER's syevd) needs several n^2 float64 workspaces and is reported
# to fail above roughly 23,000-25,000 rows (NVIDIA/CUDALibrarySamples#246): above this size the rare
# dense fallback runs on the host instead, on the top k eigenpairs only (LAPACK's MRRR).
DEVICE_EIGH_LIMIT = 8192


class TorchOps(NumpyOps):
    """torch tensors on one device (``cuda``, ``cuda:1`` or ``cpu``: the CPU one is for testing the torch
    code against numpy on machines without a GPU)."""

    def __init__(self, device: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.name = str(self.device)
        self.float32, self.float64 = torch.float32, torch.float64

    def precision(self):
        """Exact float32 products, as numpy's, inside the block (TF32's 10-bit mantissas would move PCA
        scores by 1e-3); the process's own settings are restored after it."""
        return full_float32()

    def _dtype(self, dtype):
        if isinstance(dtype, self.torch.dtype):
            return dtype
        return {np.dtype(np.float32): self.torch.float32, np.dtype(np.float64): self.torch.float64}[np.dtype(dtype)]

    def asarray(self, array, dtype=np.float32):
        if isinstance(array, self.torch.Tensor):
            return array.to(device=self.device, dtype=self._dtype(dtype))
        return self.torch.as_tensor(np.asarray(array), device=self.device).to(self._dtype(dtype))

    def like(self, array, reference):
        return self.torch.as_tensor(np.ascontiguousarray(array), device=reference.device).to(reference.dtype)

    def numpy(self, array) -> np.ndarray:
        if isinstance(array, self.torch.Tensor):
            return array.detach().cpu().numpy()
        return np.asarray(array)

    def cat(self, arrays, axis: int):
        return self.torch.cat(list(arrays), dim=axis)

    def zeros(self, shape, dtype):
        return self.torch.zeros(shape, dtype=self._dtype(dtype), device=self.device)

    def eye(self, size: int, dtype):
        return self.torch.eye(size, dtype=self._dtype(dtype), device=self.device)

    def cast(self, array, dtype):
        return array.to(self._dtype(dtype))

    def sum64(self, array, axis: int) -> np.ndarray:
        return array.sum(dim=axis, dtype=self.torch.float64).cpu().numpy()

    def colnorm(self, array) -> np.ndarray:
        return self.torch.linalg.vector_norm(array, dim=0).cpu().numpy()

    def centre_columns(self, block):
        # The means on the device (the host's single-threaded pass was the GPU gram stage's bottleneck).
        block = self.asarray(block, np.float32)
        return block - block.mean(0, dtype=self.torch.float64).to(self.torch.float32)

    def take(self, array, rows, cols):
        rows = self.torch.as_tensor(rows, device=array.device)
        cols = self.torch.as_tensor(cols, device=array.device)
        return array.index_select(0, rows).index_select(1, cols)

    def rank1_update_(self, matrix, vector, alpha: float) -> None:
        matrix.addr_(self.like(vector, matrix), self.like(vector, matrix), alpha=alpha)

    def set_rows_(self, matrix, rows: np.ndarray, values: np.ndarray) -> None:
        index = self.torch.as_tensor(rows, device=matrix.device)
        matrix.index_copy_(0, index, self.torch.as_tensor(values).to(device=matrix.device, dtype=matrix.dtype))

    def dense_top(self, matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k largest eigenpairs, descending, as numpy float64: on the device up to
        :data:`DEVICE_EIGH_LIMIT` rows, above it on the host (top k only), after a host memory check."""
        size = matrix.shape[0]
        if size > DEVICE_EIGH_LIMIT:
            memory.check_host_eigh(size)
            return NUMPY.dense_top(self.numpy(matrix).astype(np.float64, copy=False), k)
        values, vectors = self.torch.linalg.eigh(matrix.to(self.torch.float64))
        return (values.flip(0)[:k].cpu().numpy(), vectors.flip(1)[:, :k].cpu().numpy())

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)


NUMPY = NumpyOps()


def resolve_device(device: str = "cpu") -> NumpyOps:
    """The ops for ``probe.device``: ``cpu`` (numpy), ``cuda``/``cuda:N`` (torch), ``auto`` (CUDA when
    present), or ``torch-cpu`` (torch on the CPU: for tests and benchmarks of the torch code).

    Raises DnnprobeError (one line) for another name, or a CUDA device this machine does not have.
    """
    if not re.fullmatch(rf"cpu|torch-cpu|auto|{DEVICE_PATTERN}", device):
        raise DnnprobeError(f"probe.device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if device == "cpu":
        return NUMPY
    if device == "torch-cpu":
        return TorchOps("cpu")
    if device == "auto":
        if not nvidia_driver_present():
            return NUMPY
        import torch

        return TorchOps("cuda") if torch.cuda.is_available() else NUMPY
    check_cuda_device(device, "probe.device")
    return TorchOps(device)
