"""Stimulus sources: bold5000 (downloaded from a local HTTP server), stimcsv, folder."""

from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, closed_port_url
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.params import load_params
from dnnprobe.stages.stimuli import make_stimuli
from dnnprobe.stimuli import StimulusTable

PREFIX = "BOLD5000_Stimuli/Scene_Stimuli/Presented_Stimuli/"
STIM_IDS = [f"COCO/COCO_train2014_{i:012d}.jpg" for i in range(5)] + [f"ImageNet/n0{i}.JPEG" for i in range(3)]
LABELS = [1, 0, 1, 1, 0, 1, 0, 0]


def jpeg(seed: int, shape: tuple[int, int] = (40, 50)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*shape, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def bold5000_server(http_server, tmp_path):
    """A miniature BOLD5000: a zip of images under the real archive's folders, and DNNBrain's table."""
    base, folder, requests = http_server
    with zipfile.ZipFile(folder / "stimuli.zip", "w") as bundle:
        for index, stim_id in enumerate(STIM_IDS):
            bundle.writestr(PREFIX + stim_id, jpeg(index))
        bundle.writestr(PREFIX + "COCO/unused.jpg", jpeg(99))
    rows = "\n".join(f"{s},{label}" for s, label in zip(STIM_IDS, LABELS))
    (folder / "labels.csv").write_text(
        f"type=image\npath=/nfs/s2/userhome/BOLD5000/{PREFIX}\ntitle=all 5000 scenes\ndata=stimID,label\n{rows}\n")
    digest = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in ("stimuli.zip", "labels.csv")}
    settings = {
        "stimuli.source": "bold5000",
        "stimuli.bold5000.images_url": f"{base}/stimuli.zip",
        "stimuli.bold5000.table_url": f"{base}/labels.csv",
        "stimuli.bold5000.images_sha256": digest["stimuli.zip"],
        "stimuli.bold5000.table_sha256": digest["labels.csv"],
        "stimuli.bold5000.download_dir": str(tmp_path / "downloads"),
        "stimuli.bold5000.expected_stimuli": 8,
        "stimuli.bold5000.expected_class_sizes": "[4, 4]",
    }
    return settings, folder, requests


def params_with(settings: dict):
    return load_params(REPO / "params.yaml", tuple(f"{k}={v}" for k, v in settings.items()))


def test_bold5000_downloads_verifies_unpacks_and_writes_the_table(bold5000_server, tmp_path):
    settings, _, requests = bold5000_server
    table_path = tmp_path / "data" / "stimuli.stim.csv"
    make_stimuli(params_with(settings), table_path, tmp_path / "data" / "images")
    table = StimulusTable.read(table_path)
    assert table.header["path"] == "images" and table.header["source"] == "bold5000"
    assert table.stim_ids == STIM_IDS and table.integer_labels().tolist() == LABELS
    table.check_images_exist()
    assert (tmp_path / "data" / "images" / STIM_IDS[0]).read_bytes() == jpeg(0)
    assert not (tmp_path / "data" / "images" / "COCO" / "unused.jpg").exists()
    # A second run reuses the verified downloads: no new request.
    count = len(requests)
    make_stimuli(params_with(settings), table_path, tmp_path / "data" / "images")
    assert len(requests) == count


def test_corrupted_download_is_rejected_and_kept_and_not_fetched_again(bold5000_server, tmp_path):
    settings, folder, requests = bold5000_server
    data = bytearray((folder / "stimuli.zip").read_bytes())
    data[100] ^= 0xFF
    (folder / "stimuli.zip").write_bytes(bytes(data))
    kept = tmp_path / "downloads" / "BOLD5000_Stimuli.zip.rejected"
    with pytest.raises(DnnprobeError, match=rf"stimuli.zip: download rejected: sha256 .*; kept as {kept}; if the file"):
        make_stimuli(params_with(settings), tmp_path / "t.stim.csv", tmp_path / "images")
    assert not (tmp_path / "images").exists() and not (tmp_path / "t.stim.csv").exists()
    assert kept.read_bytes() == bytes(data) and not (tmp_path / "downloads" / "BOLD5000_Stimuli.zip").exists()
    count = len(requests)
    with pytest.raises(DnnprobeError, match=r"an earlier download from .* was rejected \(a zip, "):
        make_stimuli(params_with(settings), tmp_path / "t.stim.csv", tmp_path / "images")
    assert [path for path, _ in requests[count:]] == []  # the table is cached, the zip is not fetched again


def test_truncated_download_is_rejected_by_size(bold5000_server, tmp_path):
    settings, folder, _ = bold5000_server
    size = (folder / "stimuli.zip").stat().st_size
    (folder / "stimuli.zip").write_bytes((folder / "stimuli.zip").read_bytes()[: size // 2])
    settings = {**settings, "stimuli.bold5000.images_sha256": "", "stimuli.bold5000.images_size": size}
    with pytest.raises(DnnprobeError, match=rf"it is a damaged or truncated zip \(no central directory\), not a zip"):
        make_stimuli(params_with(settings), tmp_path / "t.stim.csv", tmp_path / "images")
    (tmp_path / "downloads" / "BOLD5000_Stimuli.zip.rejected").unlink()
    (folder / "stimuli.zip").write_bytes(zip_of({"BOLD5000_Stimuli/other.txt": b"a smaller zip"}))
    with pytest.raises(DnnprobeError, match=rf"download rejected: \d+ bytes, expected {size}"):
        make_stimuli(params_with(settings), tmp_path / "t.stim.csv", tmp_path / "images")


def test_partial_download_is_resumed_with_a_range_request(bold5000_server, tmp_path):
    settings, folder, requests = bold5000_server
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    whole = (folder / "stimuli.zip").read_bytes()
    (downloads / "BOLD5000_Stimuli.zip.part").write_bytes(whole[:300])  # an interrupted earlier download
    make_stimuli(params_with(settings), tmp_path / "t.stim.csv", tmp_path / "images")
    assert ("/stimuli.zip", "bytes=300-") in requests
    assert (downloads / "BOLD5000_Stimuli.zip").read_bytes() == whole
    assert not (downloads / "BOLD5000_Stimuli.zip.part").exists()


def test_unreachable_server_says_how_to_resume(bold5000_server, tmp_path):
    settings, _, _ = bold5000_server
    settings = {**settings, "stimuli.bold5000.table_url": f"{closed_port_url()}/labels.csv"}
    with pytest.raises(DnnprobeError, match="download failed .*rerun to resume, or put the file at"):
        make_stimuli(params_with(settings), tmp_path / "t.stim.csv", tmp_path / "images")


def test_wrong_counts_are_an_error(bold5000_server, tmp_path):
    settings, _, _ = bold5000_server
    with pytest.raises(DnnprobeError, match=r"8 stimuli, expected 4916"):
        make_stimuli(params_with({**settings, "stimuli.bold5000.expected_stimuli": 4916}), tmp_path / "t.stim.csv", tmp_path / "i")
    with pytest.raises(DnnprobeError, match=r"class sizes \[4, 4\], expected \[2369, 2547\]"):
        make_stimuli(params_with({**settings, "stimuli.bold5000.expected_class_sizes": "[2369, 2547]"}),
                     tmp_path / "t.stim.csv", tmp_path / "i")


def test_zip_missing_images_names_them(bold5000_server, tmp_path):
    settings, folder, _ = bold5000_server
    with zipfile.ZipFile(folder / "stimuli.zip", "w") as bundle:
        bundle.writestr(PREFIX + STIM_IDS[0], jpeg(0))
    settings = {**settings, "stimuli.bold5000.images_sha256": ""}
    with pytest.raises(DnnprobeError, match=r"lacks 7 of the table's 8 images"):
        make_stimuli(params_with(settings), tmp_path / "t.stim.csv", tmp_path / "images")


def test_folder_source_labels_sorted_class_names(tmp_path):
    for name, count in (("dogs", 3), ("cats", 2)):
        (tmp_path / "src" / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (20, 20), (i, 0, 0)).save(tmp_path / "src" / name / f"{i}.png")
    (tmp_path / "src" / "cats" / "notes.txt").write_text("not an image")
    table = make_stimuli(params_with({"stimuli.source": "folder", "stimuli.folder": str(tmp_path / "src")}),
                         tmp_path / "data" / "s.stim.csv", tmp_path / "data" / "images")
    assert table.column("condition") == ["cats", "cats", "dogs", "dogs", "dogs"]
    assert table.integer_labels().tolist() == [0, 0, 1, 1, 1]
    StimulusTable.read(tmp_path / "data" / "s.stim.csv").check_images_exist()


def test_stimcsv_source_with_an_absolute_path_is_made_relative(tmp_path):
    mine = tmp_path / "mine"
    (mine / "photos").mkdir(parents=True)
    for i in range(4):
        Image.new("L", (16, 16), i * 40).save(mine / "photos" / f"{i}.png")
    rows = "\n".join(f"{i}.png,{i % 2},{['a', 'b'][i % 2]},{i * 0.5}" for i in range(4))
    (mine / "mine.stim.csv").write_text(f"type=image\npath={mine / 'photos'}\ndata=stimID,label,condition,rt\n{rows}\n")
    make_stimuli(params_with({"stimuli.source": "stimcsv", "stimuli.folder": str(mine),
                              "stimuli.table": str(mine / "mine.stim.csv")}),
                 tmp_path / "data" / "s.stim.csv", tmp_path / "data" / "images")
    table = StimulusTable.read(tmp_path / "data" / "s.stim.csv")
    assert table.header["path"] == "images" and table.numeric_column("rt").tolist() == [0.0, 0.5, 1.0, 1.5]
    table.check_images_exist()
    assert table.header["title"] == "table 'mine.stim.csv'"  # untitled: named after the user's table, not s.stim.csv
