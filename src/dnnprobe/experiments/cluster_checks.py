"""What a cluster sweep is checked for before anything is submitted, besides SLURM itself
(:mod:`dnnprobe.experiments.slurm`): that every node reaches the repository and the DVC cache, and that
each experiment's parameters are ones the pipeline accepts.

**Paths every node reaches.** A job on another node clones the repository from its path, pushes its
experiment back to it, and reads and writes the DVC cache: both must be on the cluster's shared file
system. A path under /tmp, /var/tmp, /dev/shm or /run, or on a tmpfs, ramfs or overlay file system (a
container's own root), is this node's alone and is refused. A local disk (ext4, xfs) cannot be told from
a shared one by its type, so it passes. The cache must also be set explicitly: DVC's default, the
``.dvc/cache`` inside the workspace, is this checkout's alone (colleagues' sweeps cannot share its
stages, ``dvc gc`` there deletes what running jobs restore from). ``single_node: true`` (``--single-node``)
turns these two checks off for a cluster that is this one machine (the tests' cluster), which
:func:`dnnprobe.experiments.slurm.check_cluster` confirms with ``sinfo``.

**Parameters.** Each experiment's params.yaml is made as its job's ``dvc exp run -S`` will make it (the
file at the experiment's commit, DVC's own Hydra override code applied) and read by
:func:`dnnprobe.stages.params.load_params`, the check of the ``params`` stage, then by the probe's check
of its decoder and scoring names (:class:`dnnprobe.probe.decoders.ProbeSettings`): an unknown key, a
value of the wrong type or out of range, an unknown classifier fails here, in one line, not in a job an
hour later. Checks that need the data (layer names, stimulus columns) stay with the stages.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.experiments.cluster_plan import Planned, git
from dnnprobe.stages.params import load_params

NODE_LOCAL_FOLDERS = ("/tmp", "/var/tmp", "/dev/shm", "/run")
NODE_LOCAL_TYPES = ("tmpfs", "ramfs", "devtmpfs", "overlay")
HOW_TO_SHARE = ("put the cache on the cluster's shared file system: `dvc cache dir /shared/dvc-cache` and "
                "`dvc config cache.shared group` (or `cache:` in .dnnprobe/cluster.yaml, --cache); on a cluster "
                "that is this one machine, --single-node")


def _mounts() -> list[tuple[str, str]]:
    """(mount point, file system type) of each mount, from /proc/mounts (empty where there is none)."""
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return []
    octal = re.compile(r"\\([0-7]{3})")  # a space in a mount point is written \040
    return [(octal.sub(lambda m: chr(int(m.group(1), 8)), parts[1]), parts[2])
            for parts in (line.split() for line in lines) if len(parts) > 2]


def node_local(path: Path, mounts: list[tuple[str, str]] | None = None) -> str | None:
    """Why `path` is this node's alone (``under /tmp``, ``on a tmpfs file system (/scratch)``), or None."""
    resolved = os.path.realpath(path)
    for folder in NODE_LOCAL_FOLDERS:
        if resolved == folder or resolved.startswith(folder + "/"):
            return f"under {folder}"
    inside = [(point, kind) for point, kind in (_mounts() if mounts is None else mounts)
              if resolved == point or resolved.startswith(point.rstrip("/") + "/")]
    if inside:
        longest = max(len(point) for point, _ in inside)  # the innermost mount holding the path; of two on one
        point, kind = [mount for mount in inside if len(mount[0]) == longest][-1]  # point, the later one
        if kind in NODE_LOCAL_TYPES:
            return f"on a {kind} file system ({point})"
    return None


def sweep_cache(repo: Path, cache: str | None, default_cache: str | None) -> str:
    """The sweep's DVC cache as an absolute path (`cache`, relative to the repository, else `default_cache`)."""
    return os.path.realpath(Path(repo, os.path.expanduser(cache))) if cache else os.path.realpath(default_cache)


def check_storage(repo: Path, cache: str, single_node: bool) -> None:
    """Refuse a repository or cache that jobs on other nodes cannot reach, and DVC's default in-workspace cache."""
    if single_node:
        return
    where = node_local(repo)
    if where:
        raise DnnprobeError(f"the repository {repo} is {where}, this node's alone: jobs on other nodes clone it and "
                            "push their experiments back to it; work in a clone on the cluster's shared file system "
                            "(or, on a cluster that is this one machine, --single-node)")
    where = node_local(Path(cache))
    if where:
        raise DnnprobeError(f"the DVC cache {cache} is {where}, this node's alone: jobs on other nodes read and write "
                            f"it; {HOW_TO_SHARE}")
    if Path(cache).is_relative_to(os.path.realpath(repo)):
        default = " (DVC's default)" if cache == os.path.realpath(Path(repo, ".dvc", "cache")) else ""
        raise DnnprobeError(f"the DVC cache {cache} is inside the workspace{default}, this checkout's alone: "
                            f"a sweep needs the cluster's shared cache; {HOW_TO_SHARE}")


def _apply(path: Path, sets: list[str]) -> None:
    """`sets` applied to params file `path` as `dvc exp run -S` applies them (DVC's own code)."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides

    try:
        apply_overrides(path, sets)
    except InvalidArgumentError as exc:
        reason = str(exc.__cause__ or exc).splitlines()[0]
        missing = re.match(r"Could not override '([^']+)'", reason)
        if not missing:
            raise DnnprobeError(f"-S {' -S '.join(sets)}: DVC cannot read it ({reason})") from None
        key = missing.group(1)
        try:  # with a + it would be added: is it a key no stage reads? The params stage's message, then
            apply_overrides(path, [f"+{s}" if s.startswith(key + "=") else s for s in sets])
        except InvalidArgumentError:
            pass
        else:
            load_params(path)
        raise DnnprobeError(f"params.yaml has no key {key}, so `dvc exp run -S {key}=...` cannot set it: add it to "
                            f"params.yaml or write +{key}=...") from None


def check_params(repo: Path, planned: list[Planned]) -> None:
    """Each experiment's params.yaml, made as its job will make it, passes the params stage's check."""
    # scikit-learn (the decoders) and Hydra: imported only when submitting, not for `status`
    from dvc.utils.cli_parse import to_path_overrides

    from dnnprobe.probe.decoders import ProbeSettings, label_entries

    with tempfile.TemporaryDirectory(prefix="dnnprobe-params-") as folder:
        path = Path(folder) / "params.yaml"
        for item in planned:
            try:
                others = sorted(set(to_path_overrides(item.sets)) - {"params.yaml"})
                if others:
                    raise DnnprobeError(f"-S {others[0]}:...: dnnprobe's stages read params.yaml only")
                path.write_text(git(repo, "show", f"{item.rev}:params.yaml"))
                _apply(path, item.sets)
                params = load_params(path)
                for entry in label_entries(params.probe.label):  # the decoder and scoring names, as the probe checks
                    ProbeSettings.from_params(params, entry)
            except DnnprobeError as exc:
                raise DnnprobeError(f"experiment {item.name}: {str(exc).replace(str(path), 'params.yaml')}") from None
