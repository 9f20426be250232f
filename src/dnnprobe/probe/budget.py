"""Will the probe stage's work fit in memory? Estimated before any work and refused with one line
instead of being killed by the operating system half way.

Per layer (layers are done one at a time), the peak bytes are:

- Gram route: the fold-ordered float32 copy, 4 n^2, plus a fold's cross block (a tenth of it, in
  float32 and float64), the Krylov bases and fixed room (:data:`dnnprobe.compute.memory.FIXED_BYTES`);
- covariance route: the float64 moments, a fold's float64 and float32 scatter (8 + 8 + 4 = 20 d^2),
  a fold's held-out rows, every fold's projections (n x cv x pca float32), the Krylov bases and the
  fixed room.

Neither grows with the layer's width beyond the stored matrix (for d >= n_stim they do not depend on
d at all). With a CUDA ``probe.device`` the matrices live in GPU memory, checked against what the GPU
has free; the host then holds only the row blocks. ``probe.permutations``' null distribution is
estimated apart (:func:`permutation_bytes`).
"""

from __future__ import annotations

from dnnprobe.compute import memory
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.probe.foldpca import MAX_BLOCKS, OVERSAMPLE

GIB = memory.GIB


def _krylov_bytes(rows: int, k: int, max_blocks: int, oversample: int) -> int:
    """The block Lanczos basis and its image, float32, at the solver's largest (`max_blocks` blocks of
    k + `oversample` columns)."""
    return 2 * rows * max_blocks * (k + oversample) * 4


def probe_stage_bytes(n_stim: int, n_units: int, k: int, cv: int) -> int:
    """Peak bytes of the probe stage for one layer (host, or GPU with a CUDA device)."""
    if n_units < n_stim:  # covariance route
        d = n_units
        held_out = -(-n_stim // cv) * d * 4 * 2
        return (20 * d * d + held_out + n_stim * cv * k * 4 + _krylov_bytes(d, k, MAX_BLOCKS, OVERSAMPLE)
                + memory.FIXED_BYTES)
    n = n_stim
    return 4 * n * n + 12 * n * n // cv + _krylov_bytes(n, k, MAX_BLOCKS, OVERSAMPLE) + memory.FIXED_BYTES


def check_probe_stage(n_stim: int, n_units: int, k: int, cv: int, layer: str, ops) -> None:
    """Raise DnnprobeError (one line) if the probe stage cannot hold this layer's matrices."""
    memory.check_layer(probe_stage_bytes(n_stim, n_units, k, cv), layer, min(n_stim, n_units), ops)


def permutation_bytes(permutations: int, n_stim: int, k: int, batched: bool) -> int:
    """Peak host bytes of a layer's permutation null (:func:`dnnprobe.probe.crossval.null_distribution`).

    The shuffled labels are built as a list of (n,) arrays, then stacked: P x (n x 8 + 112) bytes and
    the (P, n) int64 stack. Binary logistic decoders fit every shuffle at once: float64 copies of the
    labels (the 0/1 targets, their training columns), three (n_train, P) products and the (k + 1, P)
    weights, step and gradient with their temporaries: about eight (n,)- and eight (k + 1,)-long float64
    vectors per shuffle, which bounds the peak measured by benchmarks/bench_permutations.py --memory.
    """
    P, n = permutations, n_stim
    if P == 0:
        return 0
    building = P * (8 * n + 112) + 8 * P * n
    if not batched:
        return building
    return max(building, 8 * P * (8 * n + 8 * (k + 1)))


def check_permutations(permutations: int, n_stim: int, k: int, batched: bool) -> None:
    """Raise DnnprobeError (one line) if probe.permutations' null distribution cannot fit in memory."""
    needed = permutation_bytes(permutations, n_stim, k, batched)
    if needed == 0:
        return
    needed += memory.FIXED_BYTES
    available = memory.available_bytes()
    if needed > available:
        fit = max(0, permutations * (available - memory.FIXED_BYTES) // (needed - memory.FIXED_BYTES))
        raise DnnprobeError(
            f"probe.permutations: {permutations:,} label permutations of {n_stim:,} stimuli need "
            f"{needed / GIB:.1f} GiB of host memory, {available / GIB:.1f} GiB available; lower "
            f"probe.permutations (about {fit:,} fit), or use a machine with more memory")
