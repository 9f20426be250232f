"""How much memory a stage may still take, probed before any work, and the one-line refusal when an
estimate exceeds it (instead of a kill by the operating system half way). What is available counts
what the kernel can reclaim, also inside a memory cgroup (containers, SLURM jobs): :func:`available_bytes`;
a CUDA device's free memory: :func:`device_available_bytes`; /dev/shm's: :func:`shm_free_bytes`.

The stages' own estimates live with their stage: :mod:`dnnprobe.gram.budget`,
:mod:`dnnprobe.probe.budget` and :mod:`dnnprobe.extract.budget`. This module imports no other part of
dnnprobe beyond the core.
"""

from __future__ import annotations

import os
from pathlib import Path

from dnnprobe.core.errors import DnnprobeError

GIB = 1 << 30
# Room every stage's estimate adds: the interpreter and libraries, three activation blocks of 96 MB in
# flight, a 64 MB product band.
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


def refuse_layer(needed: int, available: int, where: str, layer: str, side: int, advice: str) -> None:
    """Raise DnnprobeError (one line) if `layer`'s side x side matrix needs more `where` memory than is available."""
    if needed > available:
        raise DnnprobeError(
            f"layer {layer}: needs {needed / GIB:.1f} GiB of {where} memory ({side:,} x {side:,} matrix), "
            f"{available / GIB:.1f} GiB available; {advice}")


def check_layer(needed: int, layer: str, side: int, ops) -> None:
    """Raise DnnprobeError (one line) if a stage's `needed` bytes for `layer` do not fit where `ops` computes:
    the GPU's free memory with a CUDA device, else the host's."""
    device_free = device_available_bytes(ops)
    leave_out = f"leave {layer} out of extract.layers"
    if device_free is None:
        refuse_layer(needed, available_bytes(), "host", layer, side,
                     f"run on a GPU (probe.device: cuda), {leave_out}, or use a machine with more memory")
    else:
        refuse_layer(needed, device_free, "GPU", layer, side,
                     f"{leave_out}, or use probe.device: cpu on a machine with that much memory")


def check_host_eigh(size: int) -> None:
    """Raise DnnprobeError (one line) if the host cannot hold a dense eigensolve of a size x size matrix
    (the rare fallback when block Lanczos does not converge on a matrix too large for the GPU's dense
    solver): the float64 matrix, LAPACK's copy of it and its workspace, 3 x 8 size^2 bytes."""
    needed = 3 * 8 * size * size + FIXED_BYTES
    available = available_bytes()
    if needed > available:
        raise DnnprobeError(
            f"dense eigensolver on the host needs {needed / GIB:.1f} GiB ({size:,} x {size:,} matrix), "
            f"{available / GIB:.1f} GiB available; block Lanczos did not converge on this layer: lower pca, "
            "or leave the layer out of extract.layers")


# ---- shared memory (/dev/shm) -------------------------------------------------------------

SHM_PATH = Path("/dev/shm")


def shm_free_bytes(path: Path = SHM_PATH) -> int | None:
    """Free bytes of the shared-memory file system DataLoader workers hand their batches through."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize
