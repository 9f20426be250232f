"""Will a stage's matrices fit in memory? Estimated from n_stim, the layer's width and the route before
any work, and refused with one line instead of being killed by the operating system half way.

The estimates (bytes) are what the stages hold at their peak, per layer (layers are done one at a
time). With side = min(n_stim, d), the matrix the gram stage stores for the layer:

- gram stage: the float64 accumulator, 8 side^2, plus fixed room (:data:`FIXED_BYTES`: the
  interpreter and libraries, three activation blocks of 96 MB in flight, a 64 MB product band);
- probe stage, Gram route: the fold-ordered float32 copy, 4 n^2, plus a fold's cross block (a tenth
  of it, in float32 and float64), the Krylov bases and the fixed room;
- probe stage, covariance route: the float64 moments, a fold's float64 and float32 scatter
  (8 + 8 + 4 = 20 d^2), a fold's held-out rows, every fold's projections (n x cv x pca float32), the
  Krylov bases and the fixed room.

None of these grows with the layer's width beyond the stored matrix (for d >= n_stim they do not
depend on d at all). With a CUDA ``probe.device`` the matrices live in GPU memory, checked against
what the GPU has free; the host then holds only the final matrix (gram stage) or the row blocks.
"""

from __future__ import annotations

import os
from pathlib import Path

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.foldpca import MAX_BLOCKS, OVERSAMPLE

GIB = 1 << 30
FIXED_BYTES = 1 * GIB


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def available_bytes() -> int:
    """Memory this process can still take: /proc/meminfo's MemAvailable (or sysconf's free pages),
    and no more than what the cgroup's limit leaves (containers, systemd slices, batch jobs)."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    if available is None:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 1 << 60:
            available = min(available, max(0, limit - usage))
    return available


def device_available_bytes(ops) -> int | None:
    """Free memory of `ops`' CUDA device; None for the CPU."""
    device = getattr(ops, "device", None)
    if device is None or device.type != "cuda":
        return None
    return int(ops.torch.cuda.mem_get_info(device)[0])


def _krylov_bytes(rows: int, k: int) -> int:
    return 2 * rows * MAX_BLOCKS * (k + OVERSAMPLE) * 4  # basis and image, float32


def gram_stage_bytes(n_stim: int, n_units: int) -> int:
    """Peak bytes of the gram stage for one layer (host, or GPU with a CUDA device)."""
    side = min(n_stim, n_units)
    return 8 * side * side + FIXED_BYTES


def probe_stage_bytes(n_stim: int, n_units: int, k: int, cv: int) -> int:
    """Peak bytes of the probe stage for one layer (host, or GPU with a CUDA device)."""
    if n_units < n_stim:  # covariance route
        d = n_units
        held_out = -(-n_stim // cv) * d * 4 * 2
        return 20 * d * d + held_out + n_stim * cv * k * 4 + _krylov_bytes(d, k) + FIXED_BYTES
    n = n_stim
    return 4 * n * n + 12 * n * n // cv + _krylov_bytes(n, k) + FIXED_BYTES


def _refuse(needed: int, available: int, where: str, layer: str, side: int, advice: str) -> None:
    if needed > available:
        raise DnnprobeError(
            f"layer {layer}: needs {needed / GIB:.1f} GiB of {where} memory ({side:,} x {side:,} matrix), "
            f"{available / GIB:.1f} GiB available; {advice}")


def _check(needed: int, layer: str, side: int, ops) -> None:
    device_free = device_available_bytes(ops)
    leave_out = f"leave {layer} out of extract.layers"
    if device_free is None:
        _refuse(needed, available_bytes(), "host", layer, side,
                f"run on a GPU (probe.device: cuda), {leave_out}, or use a machine with more memory")
    else:
        _refuse(needed, device_free, "GPU", layer, side,
                f"{leave_out}, or use probe.device: cpu on a machine with that much memory")


def check_gram_stage(n_stim: int, n_units: int, layer: str, ops) -> None:
    """Raise DnnprobeError (one line) if the gram stage cannot hold this layer's matrix (on a GPU, the
    host still receives the finished float64 matrix)."""
    side = min(n_stim, n_units)
    _check(gram_stage_bytes(n_stim, n_units), layer, side, ops)
    if device_available_bytes(ops) is not None:
        _refuse(gram_stage_bytes(n_stim, n_units), available_bytes(), "host", layer, side,
                f"leave {layer} out of extract.layers, or use a machine with more memory")


def check_probe_stage(n_stim: int, n_units: int, k: int, cv: int, layer: str, ops) -> None:
    """Raise DnnprobeError (one line) if the probe stage cannot hold this layer's matrices."""
    _check(probe_stage_bytes(n_stim, n_units, k, cv), layer, min(n_stim, n_units), ops)


def check_host_eigh(size: int) -> None:
    """Raise DnnprobeError (one line) if the host cannot hold a dense eigensolve of a size x size matrix
    (the rare fallback when block Lanczos does not converge on a matrix too large for the GPU's dense
    solver): the float64 matrix, LAPACK's copy of it and its workspace, 3 x 8 size^2 bytes."""
    needed = 3 * 8 * size * size + FIXED_BYTES
    _refuse(needed, available_bytes(), "host", "(dense eigensolver fallback)", size,
            "block Lanczos did not converge on this layer; lower pca, or leave the layer out of extract.layers")
