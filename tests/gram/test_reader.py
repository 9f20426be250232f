"""The Gram file reader (GramFile): files of older formats, and bad or damaged files refused in one line
naming the file."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import one_line_error

from dnnprobe.gram.reader import GramFile


def test_gram_files_of_older_versions_have_an_empty_activation_hash(tmp_path):
    with h5py.File(tmp_path / "old.h5", "w") as f:
        f.attrs["n_stim"] = 2
        f.attrs["layer_order"] = ["fc1"]
        f.create_dataset("fc1", data=np.eye(2)).attrs["n_units"] = 4
    with GramFile(tmp_path / "old.h5") as grams:
        assert grams.activations_sha256 == ""
        np.testing.assert_array_equal(grams.gram("fc1"), np.eye(2))


def test_a_newer_gram_format_is_refused_in_one_line(tmp_path):
    with h5py.File(tmp_path / "g.h5", "w") as f:
        f.attrs["gram_format"] = 3
    one_line_error(lambda: GramFile(tmp_path / "g.h5"), "g.h5: Gram file format 3, newer than this dnnprobe reads")


# ---- bad input ---------------------------------------------------------------------------------


def gram_file_with(path: Path, make) -> None:
    """A Gram file (n_stim, layer_order attributes) whose layer fc1 is made by `make(file)`."""
    with h5py.File(path, "w") as f:
        f.attrs["n_stim"] = 3
        f.attrs["layer_order"] = ["fc1"]
        make(f)


def external_gram(f):
    with h5py.File(Path(f.filename).with_name("other.h5"), "w") as other:
        other.create_dataset("fc1", data=np.eye(3))
    f["fc1"] = h5py.ExternalLink("other.h5", "/fc1")


def virtual_gram(f):
    layout = h5py.VirtualLayout(shape=(3, 3), dtype=np.float64)
    layout[:] = h5py.VirtualSource("missing.h5", "fc1", shape=(3, 3))
    f.create_virtual_dataset("fc1", layout, fillvalue=0)


@pytest.mark.parametrize(
    "make, message",
    [
        (external_gram, "g.h5: layer fc1 is an external link to other.h5:/fc1; "
                        "DNNBrain layout stores each layer's data in the file itself"),
        (lambda f: f.__setitem__("fc1", h5py.SoftLink("/x")), "g.h5: layer fc1 is a link to /x, which does not exist"),
        (virtual_gram, "g.h5: layer fc1 is a virtual dataset \\(data kept in other files: missing.h5\\); "
                       "DNNBrain layout stores each layer's data in the file itself"),
    ],
    ids=["external-link", "dangling-soft-link", "virtual-dataset"],
)
def test_gram_files_whose_matrices_live_outside_the_file_are_refused(tmp_path, make, message):
    gram_file_with(tmp_path / "g.h5", make)
    one_line_error(lambda: GramFile(tmp_path / "g.h5"), f"^{re.escape(str(tmp_path))}/{message}$")


def test_a_folder_is_not_a_gram_file_and_a_missing_path_is_not_found(tmp_path):
    (tmp_path / "g.h5").mkdir()
    one_line_error(lambda: GramFile(tmp_path / "g.h5"), "g.h5: is a folder, not a Gram file$")
    one_line_error(lambda: GramFile(tmp_path / "none.h5"), "none.h5: Gram file not found")


def test_a_layer_listed_without_its_matrix_is_refused(tmp_path):
    gram_file_with(tmp_path / "g.h5", lambda f: None)
    one_line_error(lambda: GramFile(tmp_path / "g.h5"),
                   "g.h5: no matrix for layer fc1, which its layer_order lists; rerun the gram stage$")


def test_a_damaged_gram_matrix_is_one_line(tmp_path):
    gram_file_with(tmp_path / "g.h5", lambda f: f.create_dataset(
        "fc1", data=np.random.default_rng(3).standard_normal((3, 3)), compression="gzip", chunks=(3, 3)))
    with h5py.File(tmp_path / "g.h5", "r") as f:
        chunk = f["fc1"].id.get_chunk_info(0)
    with open(tmp_path / "g.h5", "r+b") as f:
        f.seek(chunk.byte_offset + chunk.size // 2)
        f.write(b"\xff" * 16)
    with GramFile(tmp_path / "g.h5") as grams:
        one_line_error(lambda: grams.gram("fc1"),
                       "g.h5: layer fc1 cannot be read \\(.+\\); the file is damaged: rerun the gram stage$")
