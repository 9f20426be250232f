"""The committed dvc.lock matches the committed params, code and metrics, and what docs/reproducibility.md promises
is bit-identical on any machine (the stimuli, the image list and the network) is reproduced here."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import REPO, dvc, env_without_tracking_uri, git


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The files of a fresh clone (tracked and new files, dvc.lock included), without any output."""
    target = tmp_path_factory.mktemp("clone")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    git(target, "init", "-q")
    git(target, "add", "-A")
    git(target, "commit", "-qm", "clone")
    return target


def test_dvc_lock_records_the_committed_params_code_and_metrics(clone):
    result = subprocess.run(["dvc", "status", "--json"], cwd=clone, capture_output=True, text=True,
                            env=env_without_tracking_uri())
    assert result.returncode == 0, result.stderr
    for stage, changes in json.loads(result.stdout).items():
        for change in changes:
            # Without outputs and cache (no `dvc pull` here) DVC reports outputs, and the dependencies
            # that are earlier stages' outputs, as missing; anything modified, a changed parameter or
            # command, means a stale lock.
            assert set(change) <= {"changed outs", "changed deps"}, f"dvc.lock is stale for stage {stage}: {change}"
            for paths in change.values():
                assert set(paths.values()) <= {"deleted", "not in cache"}, f"dvc.lock is stale for {stage}: {change}"
    assert "reports/metrics.json" not in result.stdout  # committed metrics = the lock's (cache: false, in git)


def test_stimuli_image_list_and_network_are_bit_identical_to_the_committed_ones(clone):
    """docs/reproducibility.md promises these bytes on any machine; activations and later outputs depend on the CPU."""
    log = dvc(clone, "repro", "check", "network")
    assert "Running stage 'stimuli'" in log and "Running stage 'network'" in log
    assert git(clone, "status", "--porcelain", "dvc.lock") == "", git(clone, "diff", "dvc.lock")
