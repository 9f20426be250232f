"""The boundary with the user's own files: read from the folder DVC watches, copied (never linked),
never changed; links out of that folder refused; hidden and non-image files skipped; every image
checked at the stimuli stage; weights files only from models/external/."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
import torch

from helpers import REPO, assert_nothing_written, assert_one_line_error, cli, rgb_image
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.stages.params import load_params
from dnnprobe.stages.network import make_network
from dnnprobe.stages.stimuli import make_stimuli
from dnnprobe.stimuli.table import StimulusTable


def snapshot(folder: Path) -> dict[str, tuple]:
    """Bytes, mode, owner and link count of every entry under `folder` (links themselves, not followed)."""
    entries = {}
    for root, folders, files in os.walk(folder):
        for name in folders + files:
            path = Path(root) / name
            info = path.lstat()
            content = os.readlink(path) if path.is_symlink() else \
                hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
            entries[path.relative_to(folder).as_posix()] = (content, info.st_mode, info.st_uid, info.st_gid,
                                                            info.st_nlink)
    return entries


def params_with(**settings: object):
    return load_params(REPO / "params.yaml", tuple(f"{k}={v}" for k, v in settings.items()))


def class_folders(root: Path) -> Path:
    """cats/ and dogs/ with three images each, macOS and Windows litter, and a link to an image inside."""
    for index, name in enumerate(("cats", "dogs")):
        for i in range(3):
            rgb_image(root / name / f"{i}.jpg", value=40 * i + index)
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "cats" / "._0.jpg").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (root / "dogs" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / "dogs" / ".hidden.jpg").write_bytes(b"not even an image")
    (root / "README.md").write_text("my stimuli\n")
    os.chmod(root / "cats" / "1.jpg", 0o600)  # a private original keeps its mode
    (root / "dogs" / "3.jpg").symlink_to(root / "dogs" / "0.jpg")
    return root


def test_folder_source_copies_skips_litter_and_leaves_the_users_files_as_they_were(tmp_path, capsys):
    root = class_folders(tmp_path / "mine")
    before = snapshot(root)
    out = tmp_path / "data"
    table = make_stimuli(params_with(**{"stimuli.source": "folder", "stimuli.folder": root}),
                         out / "stimuli.stim.csv", out / "images")

    assert snapshot(root) == before
    assert table.stim_ids == ["cats/0.jpg", "cats/1.jpg", "cats/2.jpg", "dogs/0.jpg", "dogs/1.jpg", "dogs/2.jpg",
                              "dogs/3.jpg"]
    for stim_id in table.stim_ids:
        copy, original = out / "images" / stim_id, root / stim_id
        assert not copy.is_symlink() and copy.stat().st_ino != original.stat().st_ino
        assert copy.read_bytes() == original.read_bytes()
    assert "stimuli: skipped 5 entries of" in capsys.readouterr().err
    assert StimulusTable.read(out / "stimuli.stim.csv").header["images_sha256"]


def test_stimcsv_source_copies_and_leaves_the_users_files_as_they_were(tmp_path):
    root = tmp_path / "mine"
    for i in range(4):
        rgb_image(root / "photos" / f"{i}.png", value=50 * i)
    (root / "photos" / "4.png").symlink_to("0.png")  # a relative link inside the folder
    rows = "".join(f"{i}.png,{i % 2}\n" for i in range(5))
    (root / "mine.stim.csv").write_text(f"type=image\npath=photos\ndata=stimID,label\n{rows}")
    before = snapshot(root)
    out = tmp_path / "data"
    make_stimuli(params_with(**{"stimuli.source": "stimcsv", "stimuli.folder": root, "stimuli.table": "mine.stim.csv"}),
                 out / "stimuli.stim.csv", out / "images")
    assert snapshot(root) == before
    assert (out / "images" / "4.png").read_bytes() == (root / "photos" / "0.png").read_bytes()
    assert not (out / "images" / "4.png").is_symlink()
    assert all(p.stat().st_nlink == 1 for p in (out / "images").iterdir())


def secret(tmp_path: Path) -> Path:
    key = tmp_path / "home" / "id_ed25519"
    key.parent.mkdir()
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    os.chmod(key, 0o600)
    return key


@pytest.mark.parametrize("source", ["folder", "stimcsv"])
@pytest.mark.parametrize("link", ["file", "folder"])
def test_a_link_out_of_the_stimulus_folder_is_refused_and_nothing_is_copied(tmp_path, source, link):
    key = secret(tmp_path)
    root = tmp_path / "mine"
    images = root / "cats" if source == "folder" else root / "photos"
    for i in range(3):
        rgb_image(images / f"{i}.png", value=60 * i)
    rgb_image(root / "dogs" / "0.png")
    if link == "file":
        (images / "3.png").symlink_to(key)
        stim_id = "3.png"
    else:
        (images / "more").symlink_to(key.parent, target_is_directory=True)
        stim_id = "more/id_ed25519"
    rows = "".join(f"{i}.png,{i % 2}\n" for i in range(3)) + f"{stim_id},1\n"
    (root / "mine.stim.csv").write_text(f"type=image\npath=photos\ndata=stimID,label\n{rows}")
    key_mode = key.stat().st_mode
    out = tmp_path / "out"
    settings = ["--set", f"stimuli.source={source}", "--set", f"stimuli.folder={root}",
                "--set", "stimuli.table=mine.stim.csv"]
    result = cli("stimuli", *settings, "--table", out / "s.stim.csv", "--images", out / "images")
    line = assert_one_line_error(result, "stimuli", "link")
    assert "not followed" in line
    assert_nothing_written(out)
    assert key.stat().st_mode == key_mode and key.stat().st_nlink == 1


def test_a_file_that_is_not_an_image_stops_the_stimuli_stage_naming_it(tmp_path):
    root = tmp_path / "mine"
    for i in range(3):
        rgb_image(root / "photos" / f"{i}.png", value=60 * i)
    (root / "photos" / "2.png").write_text("<html>a web page saved as .png</html>\n")
    (root / "t.stim.csv").write_text("type=image\npath=photos\ndata=stimID,label\n0.png,0\n1.png,1\n2.png,0\n")
    out = tmp_path / "out"
    result = cli("stimuli", "--set", "stimuli.source=stimcsv", "--set", f"stimuli.folder={root}",
                 "--set", "stimuli.table=t.stim.csv", "--table", out / "s.stim.csv", "--images", out / "images")
    assert_one_line_error(result, "stimuli", "t.stim.csv, stimulus row 3:", "2.png: not a readable image")
    assert_nothing_written(out)


@pytest.mark.parametrize("layout, fragment", [
    ("table-outside", "stimuli.table {table} is outside stimuli.folder"),
    ("images-outside", "path={images} ({images}) is outside stimuli.folder"),
    ("no-folder", "stimuli.folder {root}/none is not found"),
])
def test_stimcsv_files_outside_the_watched_folder_are_refused(tmp_path, layout, fragment):
    root, images = tmp_path / "watched", tmp_path / "elsewhere"
    for i in range(2):
        rgb_image(images / f"{i}.png", value=90 * i)
    root.mkdir()
    table = (tmp_path if layout == "table-outside" else root) / "t.stim.csv"
    table.write_text(f"type=image\npath={images}\ndata=stimID,label\n0.png,0\n1.png,1\n")
    folder = root / "none" if layout == "no-folder" else root
    out = tmp_path / "out"
    result = cli("stimuli", "--set", "stimuli.source=stimcsv", "--set", f"stimuli.folder={folder}",
                 "--set", f"stimuli.table={table}", "--table", out / "s.stim.csv", "--images", out / "images")
    assert_one_line_error(result, "stimuli", fragment.format(table=table, images=images, root=root))
    assert_nothing_written(out)


def test_a_weights_file_must_be_in_models_external(tmp_path, monkeypatch):
    from dnnprobe.network.sources.torchvision import random_network

    monkeypatch.chdir(tmp_path)
    inside = tmp_path / "models" / "external" / "mine.pt"
    inside.parent.mkdir(parents=True)
    torch.save(random_network("alexnet", 5).state_dict(), inside)
    outside = tmp_path / "mine.pt"
    outside.write_bytes(inside.read_bytes())
    with pytest.raises(DnnprobeError, match=r"model.weights .*mine.pt is outside models/external/, the folder DVC"):
        make_network(params_with(**{"model.weights": outside}), tmp_path / "out" / "network.pt")
    (tmp_path / "models" / "external" / "link.pt").symlink_to(outside)
    with pytest.raises(DnnprobeError, match=r"link.pt \(a link to .*mine.pt\) is outside models/external/"):
        make_network(params_with(**{"model.weights": "models/external/link.pt"}), tmp_path / "out" / "network.pt")
    info = make_network(params_with(**{"model.weights": "models/external/mine.pt"}), tmp_path / "out" / "network.pt")
    assert info.source_name == "mine.pt" and stat.S_IMODE(inside.stat().st_mode) == 0o644



def test_a_class_folder_that_is_a_link_is_refused(tmp_path):
    root = class_folders(tmp_path / "mine")
    (root / "more cats").symlink_to(root / "cats", target_is_directory=True)  # the same images, a second class
    out = tmp_path / "out"
    result = cli("stimuli", "--set", "stimuli.source=folder", "--set", f"stimuli.folder={root}",
                 "--table", out / "s.stim.csv", "--images", out / "images")
    assert_one_line_error(result, "stimuli", "more cats: is a link to a folder; links are not followed")
    assert_nothing_written(out)


@pytest.mark.parametrize("output", ["images", "table"])
def test_outputs_that_overlap_the_users_folder_are_refused(tmp_path, output):
    root = class_folders(tmp_path / "mine")
    before = snapshot(root)
    table, images = tmp_path / "out" / "s.stim.csv", tmp_path / "out" / "images"
    if output == "images":
        images = root / "cats"
    else:
        table = root / "s.stim.csv"
    result = cli("stimuli", "--set", "stimuli.source=folder", "--set", f"stimuli.folder={root}",
                 "--table", table, "--images", images)
    assert_one_line_error(result, "stimuli", "cannot overlap stimuli.folder", "whose files are only read")
    assert snapshot(root) == before


def test_names_a_table_cannot_keep_are_refused_in_one_line(tmp_path):
    root = tmp_path / "mine"
    for name in (" cats", "dogs"):  # a leading space: a .stim.csv reader strips it
        for i in range(2):
            rgb_image(root / name / f"{i}.png", value=50 * i)
    out = tmp_path / "out"
    args = ("--set", "stimuli.source=folder", "--set", f"stimuli.folder={root}",
            "--table", out / "s.stim.csv", "--images", out / "images")
    assert_one_line_error(cli("stimuli", *args), "stimuli", "' cats/0.png' starts or ends with a space; rename it")
    assert_nothing_written(out)
    (root / " cats").rename(root / "cats")
    (root / "cats" / "0.png").rename(root / "cats" / os.fsdecode(b"caf\xe9.png"))  # Latin-1 bytes, not UTF-8
    assert_one_line_error(cli("stimuli", *args), "stimuli", "the name is not valid UTF-8; rename it")
    assert_nothing_written(out)


def test_a_stimid_no_file_system_can_hold_is_one_line(tmp_path):
    root = tmp_path / "mine"
    rgb_image(root / "photos" / "1.png", value=90)
    long_name = "a" * 300 + ".png"  # file names stop at 255 bytes
    (root / "t.stim.csv").write_text(f"type=image\npath=photos\ndata=stimID,label\n{long_name},0\n1.png,1\n")
    out = tmp_path / "out"
    result = cli("stimuli", "--set", "stimuli.source=stimcsv", "--set", f"stimuli.folder={root}",
                 "--set", "stimuli.table=t.stim.csv", "--table", out / "s.stim.csv", "--images", out / "images")
    assert_one_line_error(result, "stimuli", "t.stim.csv: stimulus row 1: stimID 'aaaa", "longer than 255 bytes")
    assert_nothing_written(out)


def test_fifos_and_other_special_files_in_a_folder_are_skipped(tmp_path):
    root = class_folders(tmp_path / "mine")
    os.mkfifo(root / "cats" / "zz.png")  # reading it would block forever
    table = make_stimuli(params_with(**{"stimuli.source": "folder", "stimuli.folder": root}),
                         tmp_path / "out" / "s.stim.csv", tmp_path / "out" / "images")
    assert "cats/zz.png" not in table.stim_ids and len(table) == 7


def test_a_flat_folder_of_images_is_refused_saying_how_to_arrange_class_subfolders(tmp_path):
    root = tmp_path / "mine"
    for i in range(4):
        rgb_image(root / f"{i}.png", value=50 * i)  # images, but no class subfolders
    out = tmp_path / "out"
    result = cli("stimuli", "--set", "stimuli.source=folder", "--set", f"stimuli.folder={root}",
                 "--table", out / "s.stim.csv", "--images", out / "images")
    assert_one_line_error(result, "stimuli", "no images (", "in class subfolders; 4 images lie directly in it",
                          f"needs one subfolder per class, named after it: {root}/cat/001.jpg, {root}/dog/001.jpg")
    assert_nothing_written(out)
