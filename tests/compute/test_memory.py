"""The memory probing of dnnprobe.compute.memory: what a memory cgroup really leaves (its reclaimable page
cache counted). The stages' estimates are tested with their stage: tests/<part>/test_budget.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnnprobe.compute import memory

GIB = memory.GIB


def fake_cgroup(root: Path, version: int, limit: int, usage: int, stat: dict[str, int], group: str = "") -> Path:
    """A cgroup folder as the kernel shows it (v2 at the root, v1 under memory/), and the
    /proc/self/cgroup that puts this process in `group`."""
    folder = (root if version == 2 else root / "memory") / group
    folder.mkdir(parents=True, exist_ok=True)
    names = ("memory.max", "memory.current") if version == 2 else ("memory.limit_in_bytes", "memory.usage_in_bytes")
    (folder / names[0]).write_text(f"{limit}\n")
    (folder / names[1]).write_text(f"{usage}\n")
    (folder / "memory.stat").write_text("".join(f"{key} {value}\n" for key, value in stat.items()))
    line = f"0::/{group}\n" if version == 2 else f"4:memory:/{group}\n"
    (root / "self.cgroup").write_text(line)
    return root / "self.cgroup"


def test_page_cache_in_a_cgroup_v2_counts_as_available(tmp_path):
    """3 GiB group that has just written a 2.5 GiB file: usage 2.6 GiB, nearly all of it page cache."""
    proc = fake_cgroup(tmp_path, 2, 3 * GIB, int(2.6 * GIB), {
        "anon": 100 << 20, "file": int(2.5 * GIB), "inactive_file": 2 * GIB, "active_file": GIB // 2,
        "file_mapped": 40 << 20, "shmem": 0})
    available = memory.cgroup_available_bytes(tmp_path, proc)
    assert available == 3 * GIB - int(2.6 * GIB) + int(2.5 * GIB) - (40 << 20)  # 2.86 GiB, not 0.4


def test_page_cache_in_a_cgroup_v1_counts_as_available(tmp_path):
    proc = fake_cgroup(tmp_path, 1, 3 * GIB, int(2.6 * GIB), {
        "cache": int(2.5 * GIB), "inactive_file": 0, "total_inactive_file": 2 * GIB,
        "total_active_file": GIB // 2, "total_mapped_file": 40 << 20}, group="slurm/uid_1/job_7")
    assert memory.cgroup_available_bytes(tmp_path, proc) == 3 * GIB - int(2.6 * GIB) + int(2.5 * GIB) - (40 << 20)


def test_the_tightest_of_a_group_and_its_ancestors_applies(tmp_path):
    """A SLURM step inside a job: the job's limit binds, though the step's own group has none."""
    proc = fake_cgroup(tmp_path, 2, 2 * GIB, GIB, {"inactive_file": 0}, group="job_7")
    step = tmp_path / "job_7" / "step_0"
    step.mkdir()
    (step / "memory.max").write_text("max\n")
    (step / "memory.current").write_text(f"{GIB}\n")
    proc.write_text("0::/job_7/step_0\n")
    assert memory.cgroup_available_bytes(tmp_path, proc) == GIB


def test_no_limit_means_no_cgroup_bound(tmp_path):
    proc = fake_cgroup(tmp_path, 2, 0, GIB, {})
    (tmp_path / "memory.max").write_text("max\n")
    assert memory.cgroup_available_bytes(tmp_path, proc) is None


def test_mapped_and_anonymous_memory_is_not_counted_as_reclaimable(tmp_path):
    proc = fake_cgroup(tmp_path, 2, 3 * GIB, int(2.9 * GIB), {
        "anon": int(2.5 * GIB), "inactive_file": 100 << 20, "active_file": 300 << 20, "file_mapped": 300 << 20})
    assert memory.cgroup_available_bytes(tmp_path, proc) == 3 * GIB - int(2.9 * GIB) + (100 << 20)




def _child_memory_cgroup() -> tuple[int, Path] | None:
    """A new memory cgroup under this process's own (root can make one on most Linux machines), or None."""
    import os

    for version, folder in memory._own_groups(memory.CGROUP_ROOT, Path("/proc/self/cgroup")):
        limit = folder / ("memory.max" if version == 2 else "memory.limit_in_bytes")
        if not limit.exists():
            continue
        child = folder / f"dnnprobe-test-{os.getpid()}"
        try:
            child.mkdir()
        except OSError:
            continue
        if (child / limit.name).exists():
            return version, child
        child.rmdir()
    return None


def test_a_real_cgroup_counts_the_file_it_has_just_written(tmp_path):
    """A process in a 512 MiB group writes a 300 MB file, as extraction does before gram and probe run:
    the group's usage then counts the file's page cache, which the kernel would drop for new memory."""
    import os
    import subprocess
    import sys

    made = _child_memory_cgroup()
    if made is None:
        pytest.skip("no memory cgroup can be made here")
    version, group = made
    try:
        (group / ("memory.max" if version == 2 else "memory.limit_in_bytes")).write_text(str(512 << 20))
        script = (f"echo $$ > {group}/cgroup.procs && dd if=/dev/zero of={tmp_path}/big bs=1M count=300 status=none && "
                  f"{sys.executable} -c 'from dnnprobe.compute import memory; print(memory.cgroup_available_bytes())' && "
                  f"cat {group}/{'memory.current' if version == 2 else 'memory.usage_in_bytes'}")
        result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=120,
                                env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")})
        available, usage = (int(line) for line in result.stdout.split())
        assert usage > 300 << 20  # the file's pages are charged to the group
        assert available > (512 << 20) - usage + (250 << 20)  # and counted as available again
    finally:
        group.rmdir()
