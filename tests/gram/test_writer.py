"""The gram stage (write_gram_file): provenance, bad input, full disks.

Each error is checked to be one line naming the file, and a failed stage to leave nothing behind
(no output, no temporary).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import one_line_error, can_mount_tmpfs

import dnnprobe.gram.writer
from dnnprobe.extract.writer import ActivationWriter
from dnnprobe.gram.reader import GramFile
from dnnprobe.gram.writer import write_gram_file


def write_activations(path: Path, n_stim: int = 12, widths: dict[str, int] | None = None, attrs: dict | None = None,
                      compression: str = "none") -> Path:
    """An activation file with fully connected layers (n_stim, width, 1, 1) of seeded random values."""
    widths = widths or {"fc1": 5, "fc2": 3}
    rng = np.random.default_rng(7)
    with ActivationWriter(path, n_stim, {layer: (width, 1, 1) for layer, width in widths.items()},
                          compression=compression, file_attrs=attrs) as writer:
        writer.write({layer: rng.standard_normal((n_stim, width)) for layer, width in widths.items()})
    return path


def folder_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---- provenance --------------------------------------------------------------------------------


def test_gram_file_records_the_hash_of_its_activation_file_and_the_image_digest(tmp_path, monkeypatch):
    monkeypatch.setattr("dnnprobe.gram.writer.HASH_BLOCK_BYTES", 1000)  # several blocks, the last one short
    acts = write_activations(tmp_path / "a.act.h5", attrs={
        "images_sha256": "ab" * 32, "network_arch": "alexnet", "stimuli_sha256": "cd" * 32, "other": "x"})
    write_gram_file(acts, tmp_path / "g.h5", progress=False)
    with GramFile(tmp_path / "g.h5") as grams:
        assert grams.activations_sha256 == hashlib.sha256(acts.read_bytes()).hexdigest()
        assert grams.attrs["images_sha256"] == "ab" * 32
        assert grams.attrs["network_arch"] == "alexnet" and grams.attrs["stimuli_sha256"] == "cd" * 32
        assert "other" not in grams.attrs and grams.attrs["activations"] == "a.act.h5"


# ---- bad input ---------------------------------------------------------------------------------


def test_damaged_activations_stop_the_gram_stage_and_write_nothing(tmp_path):
    acts = write_activations(tmp_path / "a.act.h5", n_stim=50, widths={"fc1": 40}, compression="gzip")
    with h5py.File(acts, "r") as f:
        chunk = f["fc1"].id.get_chunk_info(0)
    with open(acts, "r+b") as f:  # overwrite the middle of the stored gzip chunk, as a bad disk would
        f.seek(chunk.byte_offset + chunk.size // 2)
        f.write(b"\xff" * 16)
    one_line_error(lambda: write_gram_file(acts, tmp_path / "out" / "g.h5", progress=False),
                   "a.act.h5: layer fc1 cannot be read \\(.+\\); the file is damaged: rerun the extract stage$")
    assert folder_entries(tmp_path / "out") == []


# ---- full disk ---------------------------------------------------------------------------------


def test_disk_too_small_for_the_gram_matrices_is_refused_before_any_work(tmp_path, monkeypatch):
    # 2 layers wider than 400 stimuli: two 400 x 400 float32 Grams, 1.3 MB + margin
    acts = write_activations(tmp_path / "a.act.h5", n_stim=400, widths={"fc1": 450, "fc2": 420})
    monkeypatch.setattr("dnnprobe.compute.disk.shutil.disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 10**6, 10**6))
    monkeypatch.setattr("dnnprobe.gram.writer.layer_matrix", lambda *args, **kwargs: pytest.fail("work started"))
    one_line_error(lambda: write_gram_file(acts, tmp_path / "out" / "g.h5", progress=False),
                   "g.h5: needs 2 MB but its disk has 1 MB free \\(fewer extract.layers, or free some space\\)$")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("failing", ["create_dataset", "flush"])
def test_disk_full_while_writing_gram_matrices_leaves_nothing(tmp_path, monkeypatch, failing):
    """In-process stand-in for the real small disk below (which needs user namespaces)."""
    acts = write_activations(tmp_path / "a.act.h5")
    real = getattr(h5py.Group if failing == "create_dataset" else h5py.File, failing)
    calls = []

    def fails_the_second_time(*args, **kwargs):
        calls.append(failing)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(h5py.Group if failing == "create_dataset" else h5py.File, failing, fails_the_second_time)
    one_line_error(lambda: write_gram_file(acts, tmp_path / "out" / "g.h5", progress=False),
                   "out/g.h5: writing Gram matrices failed \\(No space left on device\\)$")
    assert folder_entries(tmp_path / "out") == []


# Run in a subprocess on the small disk: once the first layer's matrix is computed (after the
# free-space check passed), a second process fills the disk, leaving `leave` bytes free.
FILL_THEN_GRAM = """
import os, subprocess, sys
import dnnprobe.gram.writer as gram
from dnnprobe.core.errors import DnnprobeError

acts, out, leave = sys.argv[1], sys.argv[2], int(sys.argv[3])
filler = os.path.join(os.path.dirname(out), "filler")
real_layer_matrix = gram.layer_matrix

def layer_matrix_then_fill(activations, layer, **kwargs):
    result = real_layer_matrix(activations, layer, **kwargs)
    if layer == activations.layers[0]:
        subprocess.run(["sh", "-c", f"cat /dev/zero > {filler}"], stderr=subprocess.DEVNULL)  # ends at 'disk full'
        os.truncate(filler, os.path.getsize(filler) - leave)
    return result

gram.layer_matrix = layer_matrix_then_fill
try:
    gram.write_gram_file(acts, out, progress=False)
except DnnprobeError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(1)
"""


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs user namespaces to mount a small tmpfs (unshare -r -m)")
@pytest.mark.parametrize("leave", [0, 300 * 300 * 4 + 65536], ids=["full-before-the-first-layer", "room-for-one-layer"])
def test_disk_full_while_writing_gram_matrices_on_a_real_small_disk(tmp_path, leave):
    """A 4 MB tmpfs passes the free-space check for 3 layers of 300 x 300 float32 Grams (1.1 MB), then
    another process fills it: one line, exit status 1, and only the filler left on the disk."""
    acts = write_activations(tmp_path / "a.act.h5", n_stim=300, widths={"fc1": 320, "fc2": 320, "fc3": 320})
    mount = tmp_path / "small_disk"
    mount.mkdir()
    command = [sys.executable, "-c", FILL_THEN_GRAM, str(acts), str(mount / "g.h5"), str(leave)]
    script = (f"mount -t tmpfs -o size=4m tmpfs {mount} && {subprocess.list2cmdline(command)}; "
              f"echo exit=$?; ls -A {mount}")  # the mount lives as long as this shell: list it from inside
    result = subprocess.run(["unshare", "-r", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert result.stderr.strip().splitlines() == [
        f"error: {mount / 'g.h5'}: writing Gram matrices failed (No space left on device)"]
    assert result.stdout.strip().splitlines() == ["exit=1", "filler"]  # no output, no temporary


def test_an_activation_file_changed_during_the_gram_stage_is_refused(tmp_path, monkeypatch):
    """The recorded hash must be that of the bytes the matrices came from: a file rewritten meanwhile is an error."""
    acts = write_activations(tmp_path / "a.act.h5")
    real_layer_matrix = dnnprobe.gram.writer.layer_matrix

    def layer_matrix_then_touch(activations, layer, **kwargs):
        result = real_layer_matrix(activations, layer, **kwargs)
        os.utime(acts, ns=(0, 0))  # as another process writing into the file would
        return result

    monkeypatch.setattr("dnnprobe.gram.writer.layer_matrix", layer_matrix_then_touch)
    one_line_error(lambda: write_gram_file(acts, tmp_path / "out" / "g.h5", progress=False),
                   "a.act.h5: changed while the gram stage was reading it \\(another process writing it\\?\\); "
                   "rerun the gram stage$")
    assert folder_entries(tmp_path / "out") == []


@pytest.mark.parametrize("widths, values, message", [
    ({"fc1": 0}, None, "layer fc1 has shape (6, 0, 1, 1): 0 units per stimulus"),
    ({"fc1": 4}, 1e30, "layer fc1 has activations that are not finite, or too large for float32 products"),
])
def test_activations_without_a_usable_gram_are_one_line(tmp_path, widths, values, message):
    acts = tmp_path / "a.act.h5"
    with h5py.File(acts, "w") as f:
        for layer, width in widths.items():
            data = np.full((6, width, 1, 1), values or 1.0, dtype=np.float32)
            data[::2] *= -1  # values that differ: no shift about their mean makes them small
            f[layer] = data
    one_line_error(lambda: write_gram_file(acts, tmp_path / "out" / "g.h5", progress=False), re.escape(message))
    assert folder_entries(tmp_path / "out") == []
