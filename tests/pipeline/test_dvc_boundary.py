"""With real DVC: every file a stage reads is one DVC sees change, the user's files survive `dvc repro`
with the hardlink cache untouched, labels never re-extract, and bad settings stop before extraction.

A throwaway copy of the repository (conftest.copy_repo) runs the tiny pipeline on a user's own
.stim.csv and images kept outside the repository, with a weights file in models/external/.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from helpers import TINY, changed_stages, copy_repo, dvc, env_without_tracking_uri, merge, set_param, stages_run
from dnnprobe.stimuli.demo import write_demo_set
from dnnprobe.network.sources.torchvision import random_network


def snapshot(folder: Path) -> dict[str, tuple]:
    """Bytes, mode, owner, link count and inode of every file under `folder`."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        content = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        entries[path.relative_to(folder).as_posix()] = (content, info.st_mode, info.st_uid, info.st_gid,
                                                        info.st_nlink, info.st_ino)
    return entries


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A user's stimuli outside the repository, and a repository whose params point at them."""
    root = tmp_path_factory.mktemp("boundary")
    folder = root / "lab-stimuli"
    table = write_demo_set(folder / "photos", 12, 64, seed=3)
    table.header["path"] = "photos"
    table.write(folder / "labels.stim.csv")
    params = merge(json.loads(json.dumps(TINY)), {
        "stimuli": {"source": "stimcsv", "folder": str(folder), "table": "labels.stim.csv"},
        "model": {"weights": "models/external/lab.pt"},
        "extract": {"layers": ["conv5", "conv5_relu", "fc2", "fc2_relu"]},
    })
    repo = copy_repo(root / "repo", params)
    torch.save(random_network("alexnet", 7).state_dict(), repo / "models" / "external" / "lab.pt")
    before = snapshot(folder)
    log = dvc(repo, "repro")
    assert stages_run(log) == {"params", "stimuli", "check", "network", "extract", "gram", "probe", "report",
                               "similarity"}
    return {"repo": repo, "folder": folder, "before": before}


def test_the_users_files_are_unchanged_after_dvc_repro_with_the_hardlink_cache(lab):
    assert snapshot(lab["folder"]) == lab["before"]
    cache = {p.stat().st_ino for p in (lab["repo"] / ".dvc" / "cache").rglob("*") if p.is_file()}
    assert not cache & {p.stat().st_ino for p in lab["folder"].rglob("*") if p.is_file()}


def test_edits_outside_the_repo_are_seen_and_rerun_only_what_depends_on_them(lab):
    repo, table = lab["repo"], lab["folder"] / "labels.stim.csv"
    # A label changes and a column is added: DVC sees it; extraction and the Gram matrices are not rerun.
    original = table.read_text()
    edited = (original.replace("boxy/00000.png,0,boxy", "boxy/00000.png,1,curvy")
              .replace("data=stimID,label,condition", "data=stimID,label,condition,rt")
              .replace(",boxy\n", ",boxy,0.5\n").replace(",curvy\n", ",curvy,0.7\n"))
    assert edited.count(",0.7\n") == 13
    table.write_text(edited)
    assert changed_stages(repo) == {"stimuli"}
    assert stages_run(dvc(repo, "repro")) == {"stimuli", "check", "probe", "report", "similarity"}

    # An image changes: now extraction and everything after it reruns.
    write_demo_set(lab["folder"] / "other", 12, 64, seed=4)
    image = lab["folder"] / "photos" / "curvy" / "00001.png"
    image.write_bytes((lab["folder"] / "other" / "curvy" / "00001.png").read_bytes())
    assert changed_stages(repo) == {"stimuli"}
    assert stages_run(dvc(repo, "repro")) == {"stimuli", "check", "extract", "gram", "probe", "report", "similarity"}
    assert changed_stages(repo) == set()


def test_the_image_list_is_what_a_user_can_check_with_sha256sum(lab):
    result = subprocess.run(["sha256sum", "--check", "--quiet", "../images.sha256"], cwd=lab["repo"] / "data" / "images",
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(os.listdir(lab["repo"] / "data" / "images")) == ["boxy", "curvy"]


def test_a_new_weights_file_is_seen_and_bad_settings_stop_at_the_check_stage_before_extraction(lab):
    """New weights (so extraction would run) and a pca the folds cannot hold: DVC stops at check.
    (Last in this module: it leaves the repository mid-change.)"""
    repo = lab["repo"]
    torch.save(random_network("alexnet", 9).state_dict(), repo / "models" / "external" / "lab.pt")
    assert changed_stages(repo) == {"network"}
    set_param(repo, "pca", 20)
    result = subprocess.run(["dvc", "repro"], cwd=repo, capture_output=True, text=True,
                            env=env_without_tracking_uri())
    assert result.returncode != 0
    assert "dnnprobe check: error: pca=20 is larger than the smallest training fold (16 stimuli)" in result.stderr
    assert "extract" not in stages_run(result.stdout + result.stderr)
