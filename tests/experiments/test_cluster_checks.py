"""The checks of a cluster sweep besides SLURM's: paths every node reaches (the repository, the DVC cache)
and each experiment's parameters, made as its job's `dvc exp run -S` makes them."""

from __future__ import annotations

import re

import pytest

from helpers import copy_repo, dvc, git, one_line_error

MOUNTS = [("/", "ext4"), ("/shared", "nfs4"), ("/scratch", "tmpfs"), ("/scratch/disk", "xfs"), ("/", "overlay")]


@pytest.mark.parametrize("path, says", [
    ("/tmp/me/repo", "under /tmp"), ("/var/tmp/cache", "under /var/tmp"), ("/dev/shm/cache", "under /dev/shm"),
    ("/scratch/cache", "on a tmpfs file system (/scratch)"), ("/shared/lab/dvc-cache", None),
    ("/scratch/disk/cache", None),  # the innermost mount decides: a local disk cannot be told from a shared one
    ("/tmpfiles/cache", None),  # /tmp is a folder, not a prefix
])
def test_slurm_node_local_paths_are_told_by_folder_and_file_system(path, says):
    from dnnprobe.experiments.cluster_checks import node_local

    assert node_local(path, MOUNTS[:4]) == says


def test_slurm_a_containers_own_root_is_node_local():
    from dnnprobe.experiments.cluster_checks import node_local

    # Two mounts on /: the later one is what the path is on (an overlay, a container's root).
    assert node_local("/home/me/repo", MOUNTS) == "on a overlay file system (/)"


@pytest.fixture
def tmp_counts_as_shared(monkeypatch):
    """/tmp taken for a shared file system: the rule for the cache, apart from the rule for /tmp."""
    from dnnprobe.experiments import cluster_checks

    monkeypatch.setattr(cluster_checks, "NODE_LOCAL_FOLDERS", ("/dev/shm",))
    monkeypatch.setattr(cluster_checks, "_mounts", lambda: [("/", "ext4"), ("/dev/shm", "tmpfs")])


def test_slurm_the_sweep_cache_must_be_set_and_shared(tmp_path, tmp_counts_as_shared):
    from dnnprobe.experiments.cluster_checks import check_storage, sweep_cache

    repo = tmp_path / "repo"
    (repo / ".dvc" / "cache").mkdir(parents=True)
    default = sweep_cache(repo, None, str(repo / ".dvc" / "cache"))
    message = one_line_error(lambda: check_storage(repo, default, False), r"inside the workspace \(DVC's default\)")
    chosen = sweep_cache(repo, "relative-cache", None)  # the user's choice: not called DVC's default
    one_line_error(lambda: check_storage(repo, chosen, False), "is inside the workspace, this checkout's alone")
    assert "`dvc cache dir /shared/dvc-cache` and `dvc config cache.shared group`" in message
    one_line_error(lambda: check_storage(repo, "/dev/shm/cache", False), re.escape("is under /dev/shm, this node's"))
    shared = sweep_cache(repo, "../lab-cache", None)  # relative to the repository, as the jobs will see it
    assert shared == str(tmp_path / "lab-cache")
    check_storage(repo, shared, False)  # accepted
    check_storage(repo, default, True)  # one machine: every path is everyone's


def test_slurm_each_experiments_params_pass_the_params_stages_check(tmp_path):
    from dnnprobe.experiments.cluster_checks import check_params
    from dnnprobe.experiments.cluster_plan import Planned, queued_experiments

    repo = copy_repo(tmp_path / "repo")
    head = git(repo, "rev-parse", "HEAD").strip()

    def refused(sets: list[str], says: str) -> str:
        return one_line_error(lambda: check_params(repo, [Planned("ok", head, ["pca=8"]), Planned("x", head, sets)]),
                              "^experiment x: " + re.escape(says))

    check_params(repo, [Planned("a", head, ["pca=8", "probe.classifier=lda", "extract.layers=[conv1,fc1]", "~cv"])])
    refused(["pca=abc"], "params.yaml: pca must be an integer, got 'abc'")
    refused(["probe.C=-1"], "params.yaml: probe.C must be > 0, got -1.0")
    refused(["probe.classifier=nosuch"], "params.yaml: probe.classifier must be one of ")  # the probe's
    refused(["probe.Cx=1"], "params.yaml: unknown key probe.Cx (known: C, ")  # the params stage's words
    refused(["+probe.Cx=1"], "params.yaml: unknown key probe.Cx (known: C, ")
    refused(["classifier=lda"], "params.yaml: unknown key classifier (known: ")  # at the wrong level
    refused(["pca=[1,"], "-S pca=[1,: DVC cannot read it (no viable alternative at input '[1,')")
    refused(["other.yaml:x=1"], "-S other.yaml:...: dnnprobe's stages read params.yaml only")
    # A queued experiment is checked as its job will run it: its overrides on its baseline.
    dvc(repo, "exp", "run", "--queue", "-n", "negative-c", "-S", "probe.C=-0.5")
    one_line_error(lambda: check_params(repo, queued_experiments(repo)),
                   re.escape("experiment negative-c: params.yaml: probe.C must be > 0, got -0.5"))
