"""Will a stage's work fit in memory? Estimated before any work from the sizes involved, and refused with
one line instead of being killed by the operating system half way. What is available counts what the
kernel can reclaim, also inside a memory cgroup (containers, SLURM jobs): :func:`available_bytes`.

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

The probe stage's permutation null is estimated below (:func:`permutation_bytes`); what /dev/shm has
free, for the extract stage's estimate (:mod:`dnnprobe.extract.budget`), too (:func:`shm_free_bytes`).
"""

from __future__ import annotations

import os
from pathlib import Path

from dnnprobe.core.errors import DnnprobeError

GIB = 1 << 30
FIXED_BYTES = 1 * GIB


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def _read_stat(path: Path) -> dict[str, int]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    pairs = (line.split() for line in lines)
    return {pair[0]: int(pair[1]) for pair in pairs if len(pair) == 2 and pair[1].isdigit()}


CGROUP_ROOT = Path("/sys/fs/cgroup")

# (limit file, usage file, memory.stat keys of the file cache the group may drop, mapped file pages)
_CGROUP_FILES = {
    2: ("memory.max", "memory.current", ("inactive_file", "active_file"), "file_mapped"),
    1: ("memory.limit_in_bytes", "memory.usage_in_bytes", ("total_inactive_file", "total_active_file"),
        "total_mapped_file"),
}


def _own_groups(root: Path, proc_cgroup: Path) -> list[tuple[int, Path]]:
    """The memory cgroup folders of this process and their ancestors, as (version, folder).

    /proc/self/cgroup names this process's group ("0::/path" for cgroup v2, "N:memory:/path" for v1);
    inside a container that path is often not under the container's own /sys/fs/cgroup, whose root
    is then the container's group. A limit on any ancestor (a SLURM job above its step) applies too.
    """
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    found = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            version, base = 2, root
        elif "memory" in controllers.split(","):
            version, base = 1, root / "memory"
        else:
            continue
        folder = base / path.lstrip("/")
        while True:
            if folder.is_dir():
                found.append((version, folder))
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
        found.append((version, base))
    return list(dict.fromkeys(found)) or [(2, root), (1, root / "memory")]


def cgroup_available_bytes(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> int | None:
    """Memory the memory cgroups this process is in still let it take (containers, SLURM jobs,
    systemd slices), or None where no group sets a limit.

    For each group with a limit: the limit minus its usage, plus the page cache the kernel reclaims
    before it kills anything in the group: file pages (``memory.stat``'s inactive_file and active_file;
    v1: total_inactive_file, total_active_file) less those mapped by a running program (file_mapped,
    total_mapped_file: the libraries of the processes themselves). Usage counts that cache, so a file
    the group has just written (an extraction's activation file) would otherwise look like memory in
    use. `root` and `proc_cgroup` exist for tests (a fake cgroup folder).
    """
    available = None
    for version, folder in _own_groups(Path(root), Path(proc_cgroup)):
        limit_name, usage_name, cache_keys, mapped_key = _CGROUP_FILES[version]
        limit, usage = _read_int(folder / limit_name), _read_int(folder / usage_name)
        if limit is None or usage is None or limit >= 1 << 60:
            continue
        stat = _read_stat(folder / "memory.stat")
        reclaimable = max(0, sum(stat.get(key, 0) for key in cache_keys) - stat.get(mapped_key, 0))
        free = max(0, limit - usage + min(reclaimable, usage))
        available = free if available is None else min(available, free)
    return available


def available_bytes() -> int:
    """Memory this process can still take: /proc/meminfo's MemAvailable (or sysconf's free pages),
    and no more than what its memory cgroups leave (:func:`cgroup_available_bytes`)."""
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
    in_groups = cgroup_available_bytes()
    return available if in_groups is None else min(available, in_groups)


def device_available_bytes(ops) -> int | None:
    """Free memory of `ops`' CUDA device; None for the CPU."""
    device = getattr(ops, "device", None)
    if device is None or device.type != "cuda":
        return None
    return int(ops.torch.cuda.mem_get_info(device)[0])


def _krylov_bytes(rows: int, k: int) -> int:
    from dnnprobe.probe.foldpca import MAX_BLOCKS, OVERSAMPLE  # here: the extract stage uses this module without it

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


# ---- shared memory (/dev/shm) -------------------------------------------------------------

SHM_PATH = Path("/dev/shm")


def shm_free_bytes(path: Path = SHM_PATH) -> int | None:
    """Free bytes of the shared-memory file system DataLoader workers hand their batches through."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


# ---- probe.permutations ----------------------------------------------------------------------


def permutation_bytes(permutations: int, n_stim: int, k: int, batched: bool) -> int:
    """Peak host bytes of a layer's permutation null (:func:`dnnprobe.probe.crossval.null_distribution`).

    The shuffled labels are built as a list of (n,) arrays, then stacked: P x (n x 8 + 112) bytes and
    the (P, n) int64 stack. Binary logistic decoders fit every shuffle at once: float64 copies of the
    labels (the 0/1 targets, their training columns), three (n_train, P) products and the (k + 1, P)
    weights, step and gradient with their temporaries: about eight (n,)- and eight (k + 1,)-long float64
    vectors per shuffle, which bounds the peak measured by benchmarks/bench_permutation_memory.py.
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
    needed += FIXED_BYTES
    available = available_bytes()
    if needed > available:
        fit = max(0, permutations * (available - FIXED_BYTES) // (needed - FIXED_BYTES))
        raise DnnprobeError(
            f"probe.permutations: {permutations:,} label permutations of {n_stim:,} stimuli need "
            f"{needed / GIB:.1f} GiB of host memory, {available / GIB:.1f} GiB available; lower "
            f"probe.permutations (about {fit:,} fit), or use a machine with more memory")
