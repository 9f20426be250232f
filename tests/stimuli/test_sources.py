"""Stimulus sources: bold5000 (downloaded from a local HTTP server), stimcsv, folder."""

from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from helpers import (REPO, assert_nothing_written, assert_one_line_error, cli, closed_port_url, one_line_error,
                      rgb_image, write_table)
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.stages.params import load_params
from dnnprobe.stages.stimuli import make_stimuli
from dnnprobe.stimuli.table import StimulusTable

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
    with pytest.raises(DnnprobeError, match=r"it is a damaged or truncated zip \(no central directory\), not a zip") as error:
        make_stimuli(params_with(settings), tmp_path / "t.stim.csv", tmp_path / "images")
    assert "browser" not in str(error.value)  # a cut-short transfer, not a page served instead of the file
    assert "the download was cut short (a zip without its end); delete " in str(error.value)
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


def test_stimcsv_source_reads_float_labels_and_names_one_that_is_not_whole(tmp_path):
    mine = tmp_path / "mine"
    for i in range(4):
        rgb_image(mine / "photos" / f"{i}.png", value=i * 40, size=16)
    settings = {"stimuli.source": "stimcsv", "stimuli.folder": str(mine), "stimuli.table": "mine.stim.csv"}
    write_table(mine / "mine.stim.csv", "type=image\npath=photos\ndata=stimID,label\n",
                [f"{i}.png,{i % 2}.0" for i in range(4)])
    table = make_stimuli(params_with(settings), tmp_path / "data" / "s.stim.csv", tmp_path / "data" / "images")
    assert table.integer_labels().tolist() == [0, 1, 0, 1]
    write_table(mine / "mine.stim.csv", "type=image\npath=photos\ndata=stimID,label\n",
                ["0.png,0.0", "1.png,1.0", "2.png,0.5", "3.png,1"])
    one_line_error(lambda: make_stimuli(params_with(settings), tmp_path / "out" / "s.stim.csv", tmp_path / "out" / "images"),
                   r"mine.stim.csv: column 'label', stimulus row 3 \(2.png\): '0.5' is not an integer \(a class label is a whole")
    assert_nothing_written(tmp_path / "out")


# ---- the real archive's layout: the images twice under the same names, macOS twins, other folders ----

SCENE = "BOLD5000_Stimuli/Scene_Stimuli/"
REAL_IDS = ["COCO/COCO_train2014_000000023253.jpg", "COCO/COCO_train2014_000000429818.jpg",
            "ImageNet/n02090721_284.JPEG", "ImageNet/n03777568_7670.JPEG", "Scene/airport1.jpg", "Scene/kitchen2.jpg"]
REAL_LABELS = [0, 1, 0, 1, 1, 1]


def presented(index: int) -> bytes:
    return jpeg(index)


def original(index: int) -> bytes:  # the source image: another size, other bytes
    return jpeg(100 + index, (60, 80))


def real_zip(folders: list[str], skip: dict[str, str] | None = None) -> bytes:
    """A stand-in of BOLD5000_Stimuli.zip: each of `folders` (under Scene_Stimuli/) holds the table's
    images, in the order given, each with a macOS ``__MACOSX/._`` twin; plus the archive's other folders.
    `skip` leaves one image out of a folder."""
    members = {"BOLD5000_Stimuli/Image_Labels/imagenet_final_labels.txt": b"n02090721 dog\n",
               "BOLD5000_Stimuli/Stimuli_Presentation_Lists/CSI1/CSI01_sess01_run01.txt": b"airport1.jpg\n",
               "BOLD5000_Stimuli/Localizer_Stimuli/face1.jpg": jpeg(50)}
    for folder in folders:
        for index, stim_id in enumerate(REAL_IDS + ["Scene/unlisted3.jpg"]):
            if (skip or {}).get(folder) == stim_id:
                continue
            name = SCENE + folder + "/" + stim_id
            members[name] = original(index) if folder.startswith("Original") else presented(index)
            twin = name.rsplit("/", 1)
            members[f"__MACOSX/{twin[0]}/._{twin[1]}"] = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        "
    return zip_of(members)


def serve_real(http_server, tmp_path, zip_data: bytes, labels: list[str]) -> dict:
    base, folder, _ = http_server
    (folder / "stimuli.zip").write_bytes(zip_data)
    rows = "".join(f"{stim_id},{label}\n" for stim_id, label in zip(REAL_IDS, labels))
    (folder / "labels.csv").write_text(f"type=image\npath=path_to_presented_stimuli\ndata=stimID,label\n{rows}")
    pinned = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in ("stimuli.zip", "labels.csv")}
    return {"stimuli.source": "bold5000",
            "stimuli.bold5000.images_sha256": pinned["stimuli.zip"], "stimuli.bold5000.table_sha256": pinned["labels.csv"],
            "stimuli.bold5000.images_url": f"{base}/stimuli.zip", "stimuli.bold5000.table_url": f"{base}/labels.csv",
            "stimuli.bold5000.download_dir": str(tmp_path / "downloads"),
            "stimuli.bold5000.expected_stimuli": 6, "stimuli.bold5000.expected_class_sizes": "[2, 4]"}


@pytest.mark.parametrize("folders, labels", [
    (["Presented_Stimuli", "Original_Images"], [str(label) for label in REAL_LABELS]),
    (["Original_Images", "Presented_Stimuli"], [f"{label}.0" for label in REAL_LABELS]),  # floats, as numpy writes
], ids=["presented-first", "originals-first-float-labels"])
def test_the_real_zip_layout_gives_exactly_the_presented_images(http_server, tmp_path, capsys, folders, labels):
    settings = serve_real(http_server, tmp_path, real_zip(folders), labels)
    images = tmp_path / "data" / "images"
    table = make_stimuli(params_with(settings), tmp_path / "data" / "stimuli.stim.csv", images)
    assert sorted(p.relative_to(images).as_posix() for p in images.rglob("*") if p.is_file()) == sorted(REAL_IDS)
    for index, stim_id in enumerate(REAL_IDS):
        assert (images / stim_id).read_bytes() == presented(index), stim_id
    assert table.integer_labels().tolist() == REAL_LABELS
    assert (f"bold5000: images from {SCENE}Presented_Stimuli/; not from {SCENE}Original_Images/"
            in capsys.readouterr().err)


def test_an_incomplete_presented_folder_is_not_replaced_by_the_originals(http_server, tmp_path):
    zip_data = real_zip(["Original_Images", "Presented_Stimuli"], skip={"Presented_Stimuli": REAL_IDS[4]})
    settings = serve_real(http_server, tmp_path, zip_data, [str(label) for label in REAL_LABELS])
    result = cli("stimuli", *(f"--set={k}={v}" for k, v in settings.items()),
                 "--table", tmp_path / "data" / "stimuli.stim.csv", "--images", tmp_path / "data" / "images")
    assert_one_line_error(result, "stimuli", f"{SCENE}Presented_Stimuli/ lacks 1 of the table's 6 images: Scene/airport1.jpg; "
                                             f"{SCENE}Original_Images/ holds them all, but the tutorial's images are "
                                             "those in Presented_Stimuli")
    assert_nothing_written(tmp_path / "data")


@pytest.mark.parametrize("folders", [["copy_b", "copy_a"], ["a/Presented_Stimuli", "b/Presented_Stimuli"]])
def test_two_copies_without_one_presented_folder_are_refused_naming_them(http_server, tmp_path, folders):
    settings = serve_real(http_server, tmp_path, real_zip(folders), [str(label) for label in REAL_LABELS])
    result = cli("stimuli", *(f"--set={k}={v}" for k, v in settings.items()),
                 "--table", tmp_path / "data" / "stimuli.stim.csv", "--images", tmp_path / "data" / "images")
    named = ", ".join(f"{SCENE}{folder}/" for folder in sorted(folders))
    assert_one_line_error(result, "stimuli", f"BOLD5000_Stimuli.zip: 2 folders hold the table's images ({named}) "
                                             "and not exactly one is named Presented_Stimuli")
    assert_nothing_written(tmp_path / "data")


def test_a_download_that_is_not_a_zip_stops_the_stage_in_one_line(http_server, tmp_path):
    settings = serve_real(http_server, tmp_path, b"<!DOCTYPE html><html><body>Too many requests</body></html>",
                          [str(label) for label in REAL_LABELS])
    result = cli("stimuli", *(f"--set={k}={v}" for k, v in settings.items()),
                 "--table", tmp_path / "data" / "stimuli.stim.csv", "--images", tmp_path / "data" / "images")
    kept = tmp_path / "downloads" / "BOLD5000_Stimuli.zip.rejected"
    assert_one_line_error(result, "stimuli", "stimuli.zip: download rejected: it is an HTML page, not a zip "
                                             "(Content-Type ", f"kept as {kept}")
    assert kept.is_file()
    assert_nothing_written(tmp_path / "data")


def test_a_temporary_experiment_downloads_into_the_real_repository(bold5000_server, tmp_path, monkeypatch):
    """`dvc exp run --temp` and queued runs work in a copy (DVC sets $DVC_ROOT to the real repository): a
    relative stimuli.bold5000.download_dir is the real repository's, so they share one download."""
    settings, _, requests = bold5000_server
    real, copy = tmp_path / "repo", tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "run1"
    copy.mkdir(parents=True)
    monkeypatch.setenv("DVC_ROOT", str(real))
    monkeypatch.chdir(copy)
    relative = {**settings, "stimuli.bold5000.download_dir": "data/downloads"}
    make_stimuli(params_with(relative), copy / "data" / "stimuli.stim.csv", copy / "data" / "images")
    assert (real / "data" / "downloads" / "BOLD5000_Stimuli.zip").is_file()
    assert not (copy / "data" / "downloads").exists()
    count = len(requests)
    second = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "run2"
    second.mkdir()
    monkeypatch.chdir(second)
    make_stimuli(params_with(relative), second / "data" / "stimuli.stim.csv", second / "data" / "images")
    assert len(requests) == count  # the second experiment reuses the first one's verified download
