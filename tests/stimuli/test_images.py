"""Image files: every mode and pixel format to 8-bit RGB, unreadable files named in one line, what decodes
but is worth knowing, and the stimuli stage's cheap check (dnnprobe.stimuli.images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import corrupt_jpeg, one_line_error, rgb_image
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.stimuli.images import check_image, is_stimulus_file, load_rgb


@pytest.mark.parametrize(
    "mode, make",
    [
        ("L", lambda: Image.fromarray(np.full((20, 30), 77, np.uint8), "L")),
        ("RGBA", lambda: Image.new("RGBA", (30, 20), (10, 20, 30, 100))),
        ("P", lambda: Image.new("RGB", (30, 20), (200, 10, 10)).convert("P")),
        ("CMYK", lambda: Image.new("CMYK", (30, 20), (0, 255, 255, 0))),
    ],
)
def test_image_modes_become_rgb(tmp_path, mode, make):
    image = make()
    assert image.mode == mode
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    image.save(path)
    converted = load_rgb(path)
    assert converted.mode == "RGB" and converted.size == (30, 20)


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    array = np.linspace(0, 65535, 20 * 30).reshape(20, 30).astype(np.uint16)
    Image.fromarray(array).save(tmp_path / "deep.png")
    rgb = np.asarray(load_rgb(tmp_path / "deep.png"))
    assert rgb.min() == 0 and rgb.max() == 255
    assert 100 < rgb.mean() < 155  # a ramp, not a white image


def test_unreadable_images_give_one_clear_line(tmp_path):
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "full.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:300])
    for name, reason in (("zero.png", "empty file"), ("text.jpg", "cannot read image"), ("cut.jpg", "cannot read image")):
        with pytest.raises(DnnprobeError, match=reason) as caught:
            load_rgb(tmp_path / name)
        assert name in str(caught.value) and "\n" not in str(caught.value)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    Image.new("L", (200, 200)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)  # PIL's limit, scaled down for the test
    with pytest.raises(DnnprobeError, match="too large to decode safely"):
        load_rgb(tmp_path / "big.png")


# ---- every pixel format to 8-bit RGB, and what decodes but is worth knowing -------------------------


def _ramp(dtype, high: float) -> np.ndarray:
    return np.linspace(0, high, 20 * 30).reshape(20, 30).astype(dtype)


@pytest.mark.parametrize("name, array, expected", [
    ("unit.tiff", _ramp(np.float32, 1.0), _ramp(np.float64, 255.0)),          # float 0..1: was black
    ("bytes.tiff", _ramp(np.float32, 255.0), _ramp(np.float64, 255.0)),       # float 0..255: as before
    ("deep.tiff", _ramp(np.uint16, 65535), _ramp(np.float64, 255.0)),         # I;16 TIFF
    ("deep32.tiff", _ramp(np.int32, 65535), _ramp(np.float64, 255.0)),        # I with 16-bit values
    ("small32.tiff", _ramp(np.int32, 255), _ramp(np.float64, 255.0)),         # I with 8-bit values
])
def test_every_pixel_format_is_scaled_to_8_bits_not_clipped(tmp_path, name, array, expected):
    Image.fromarray(array).save(tmp_path / name)
    rgb = np.asarray(load_rgb(tmp_path / name)).astype(np.float64)
    assert np.abs(rgb[..., 0] - expected).max() <= 1  # the ramp, to rounding
    assert (rgb[..., 0] == rgb[..., 2]).all()


@pytest.mark.parametrize("array, shown", [
    (_ramp(np.float32, 2.0) - 1.0, "values from -1 to 1"),
    (np.full((20, 30), np.nan, np.float32), "NaN or infinite values"),
    (_ramp(np.float32, 1000.0), "values from 0 to 1000"),
])
def test_float_pixels_no_scale_fits_are_refused_naming_the_file(tmp_path, array, shown):
    Image.fromarray(array).save(tmp_path / "odd.tiff")
    one_line_error(lambda: load_rgb(tmp_path / "odd.tiff"), rf"odd\.tiff: float pixels \({shown}\); only 0\.\.1 or 0\.\.255")


def test_32_bit_integer_pixels_beyond_16_bits_are_refused(tmp_path):
    Image.fromarray(_ramp(np.int32, 1_000_000)).save(tmp_path / "wide.tiff")
    one_line_error(lambda: load_rgb(tmp_path / "wide.tiff"), r"wide\.tiff: 32-bit integer pixels from 0 to 1e\+06")


def test_corrupt_jpeg_data_is_named(tmp_path):
    notes = []
    load_rgb(corrupt_jpeg(tmp_path / "bad.jpg"), notes=notes)
    assert notes == [f"{tmp_path / 'bad.jpg'}: Corrupt JPEG data: 2507 extraneous bytes before marker 0xd9; "
                     "decoded as PIL decodes it"]
    rgb_image(tmp_path / "good.jpg")
    Image.new("CMYK", (30, 20), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("L", (30, 20), 90).save(tmp_path / "grey.jpg", progressive=True)
    for name in ("good.jpg", "cmyk.jpg", "grey.jpg"):
        notes = []
        load_rgb(tmp_path / name, notes=notes)
        assert notes == [], name


def test_animated_and_multi_page_files_are_named_and_their_first_frame_used(tmp_path):
    frames = [Image.new("RGB", (16, 16), (value, value, value)) for value in (10, 200, 90)]
    for name in ("moving.gif", "moving.webp", "pages.tiff"):
        frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], lossless=True)
        notes = []
        rgb = np.asarray(load_rgb(tmp_path / name, notes=notes))
        assert notes == [f"{tmp_path / name}: 3 frames (animated or multi-page); the first is used"]
        assert np.abs(rgb.astype(int) - 10).max() <= 2, name


def test_pil_warnings_are_named_with_the_file(tmp_path):
    """A palette image with transparency: PIL's warning, with the file's name (its transparent pixels keep
    their stored colour, as DNNBrain's convert('RGB') gives)."""
    image = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).convert("P")
    image.info["transparency"] = bytes([0] * 10 + [255] * 246)
    image.save(tmp_path / "clear.png")
    notes = []
    rgb = load_rgb(tmp_path / "clear.png", notes=notes)
    assert notes == [f"{tmp_path / 'clear.png'}: Palette images with Transparency expressed in bytes should be "
                     "converted to RGBA images"]
    with pytest.warns(UserWarning):
        assert np.asarray(rgb).tobytes() == Image.open(tmp_path / "clear.png").convert("RGB").tobytes()


def test_check_image_names_a_file_that_is_not_an_image_in_one_line(tmp_path):
    """The stimuli stage's check: the same reasons as decoding, under its own words."""
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    one_line_error(lambda: check_image(tmp_path / "zero.png"), r"zero\.png: not a readable image \(empty file\)$")
    one_line_error(lambda: check_image(tmp_path / "text.jpg"), r"text\.jpg: not a readable image \(cannot identify")
    check_image(rgb_image(tmp_path / "good.png"))


def test_hidden_files_and_other_extensions_are_not_stimuli():
    assert is_stimulus_file("a.JPG") and is_stimulus_file("b.webp")
    assert not any(is_stimulus_file(name) for name in (".DS_Store", "._photo.jpg", "Thumbs.db", "notes.txt"))


# ---- the check stage's full check, once per stimulus set, and extraction's single decode --------------


def _every_kind(folder):
    """The files today's tests use, one of each kind: a corrupt JPEG scan, an animated GIF, a 16-bit PNG,
    a float TIFF, a palette PNG PIL warns about, and a plain JPEG."""
    folder.mkdir(parents=True, exist_ok=True)
    corrupt_jpeg(folder / "bad.jpg")
    frames = [Image.new("RGB", (16, 16), (value, value, value)) for value in (10, 200, 90)]
    frames[0].save(folder / "moving.gif", save_all=True, append_images=frames[1:])
    Image.fromarray(_ramp(np.uint16, 65535)).save(folder / "deep.png")
    Image.fromarray(_ramp(np.float32, 1.0)).save(folder / "unit.tiff")
    palette = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).convert("P")
    palette.info["transparency"] = bytes([0] * 10 + [255] * 246)
    palette.save(folder / "clear.png")
    rgb_image(folder / "good.jpg")
    return [folder / name for name in ("bad.jpg", "moving.gif", "deep.png", "unit.tiff", "clear.png", "good.jpg")]


@pytest.mark.parametrize("processes", [1, 2])
def test_check_images_records_the_notes_load_rgb_gives_and_decode_rgb_the_same_pixels(tmp_path, monkeypatch, processes):
    from dnnprobe.stimuli import images

    monkeypatch.setattr(images, "PARALLEL_FROM", 2)  # two processes for a handful of images
    paths = _every_kind(tmp_path)
    problems = images.check_images(paths, "t.stim.csv", processes=processes)
    for path, recorded in zip(paths, problems):
        notes = []
        with __import__("warnings").catch_warnings():
            __import__("warnings").simplefilter("ignore")
            expected = load_rgb(path, notes=notes)
        assert [f"{path}: {note}" for note in recorded] == notes
        assert images.decode_rgb(path).tobytes() == expected.tobytes(), path.name
    assert [len(notes) for notes in problems] == [1, 1, 0, 0, 1, 0]


@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize("name, array, message", [
    ("odd.tiff", _ramp(np.float32, 2.0) - 1.0, r"odd\.tiff: float pixels \(values from -1 to 1\); only 0\.\.1 or 0\.\.255"),
    ("wide.tiff", _ramp(np.int32, 1_000_000), r"wide\.tiff: 32-bit integer pixels from 0 to 1e\+06"),
    ("cut.jpg", None, r"cut\.jpg: cannot read image \("),
])
def test_check_images_refuses_the_first_unreadable_image_naming_its_row(tmp_path, monkeypatch, processes, name,
                                                                       array, message):
    from dnnprobe.stimuli import images

    monkeypatch.setattr(images, "PARALLEL_FROM", 2)
    paths = _every_kind(tmp_path)
    if array is None:
        (tmp_path / name).write_bytes((tmp_path / "good.jpg").read_bytes()[:300])
    else:
        Image.fromarray(array).save(tmp_path / name)
    paths.insert(2, tmp_path / name)
    one_line_error(lambda: images.check_images(paths, "t.stim.csv", processes=processes),
                   rf"^t\.stim\.csv, stimulus row 3: .*{message}")
    one_line_error(lambda: images.decode_rgb(tmp_path / name), message)  # extraction's decode says the same


# ---- the check's worker processes end with it, however it ends -----------------------------------------

_CHECK_SCRIPT = """
import json, signal, sys
from pathlib import Path
from dnnprobe.core.command import _terminate
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.stimuli import images
handlers = {"stage": _terminate, "returns": lambda signum, frame: None}  # the stage's; one that does not end it
signal.signal(signal.SIGTERM, handlers[sys.argv[2]])
images.PARALLEL_FROM = 2
try:
    images.check_images([Path(p) for p in json.loads(Path(sys.argv[1]).read_text())], "t.stim.csv", processes=2)
except DnnprobeError as exc:
    print(exc)
"""


def _start_check(tmp_path, paths, handler: str):
    """`check_images(paths)` on two workers in a new process (and process group) whose SIGTERM handler is
    `handler`; this checkout's src/ first."""
    import json
    import os
    import subprocess
    import sys

    import dnnprobe

    listed = tmp_path / "paths.json"
    listed.write_text(json.dumps([str(path) for path in paths]))
    env = dict(os.environ, PYTHONPATH=str(Path(dnnprobe.__file__).parents[1]))
    return subprocess.Popen([sys.executable, "-c", _CHECK_SCRIPT, str(listed), handler], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def _ended(check, seconds: float = 60) -> tuple[str, str]:
    """The check's output once it and every process of its group ended; fails the test if it hangs."""
    import os
    import signal
    import subprocess

    try:
        stdout, stderr = check.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(check.pid, signal.SIGKILL)  # its workers too
        check.communicate()
        pytest.fail("the check hung: a worker outlived it, or it waits for a dead one")
    try:
        os.killpg(check.pid, 0)
    except ProcessLookupError:
        return stdout, stderr
    os.killpg(check.pid, signal.SIGKILL)
    pytest.fail("a worker of the check outlived it")


def _started_workers(check) -> list[int]:
    """The pids of the check's two workers, once both are forked (or whatever it has when it ends first)."""
    import time

    def workers() -> list[int]:
        return [int(child) for child in Path(f"/proc/{check.pid}/task/{check.pid}/children").read_text().split()]

    deadline = time.monotonic() + 60
    while len(workers()) < 2 and check.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    return workers()


def _many_images(tmp_path, unreadable_first: bool) -> list[Path]:
    """Enough images that two workers are still busy a while after the check starts (chunks of 16 each)."""
    rgb_image(tmp_path / "large.jpg", size=600)
    paths = [tmp_path / "large.jpg"] * 600
    if unreadable_first:
        (tmp_path / "cut.jpg").write_bytes((tmp_path / "large.jpg").read_bytes()[:300])
        paths[0] = tmp_path / "cut.jpg"
    return paths


forked_linux = pytest.mark.skipif(not Path("/proc/self/task").is_dir() or not hasattr(__import__("os"), "fork"),
                                  reason="forked workers, counted in /proc")


@forked_linux
def test_an_inherited_sigterm_handler_does_not_keep_a_worker_alive_after_the_first_unreadable_image(tmp_path):
    """The check stops at the first unreadable image while the workers are busy with later images. A worker that
    kept the stage's Python handler could survive being stopped (its exception dropped while the worker
    starts; here, a handler that returns) and block on the task queue forever: the stage hung."""
    stdout, stderr = _ended(_start_check(tmp_path, _many_images(tmp_path, unreadable_first=True), "returns"))
    assert stdout.startswith("t.stim.csv, stimulus row 1: ") and "cut.jpg: cannot read image" in stdout, stderr


@forked_linux
def test_sigterm_to_the_process_group_as_the_workers_start_ends_every_process(tmp_path):
    """What `timeout` and `kill -- -PGID` send: each worker dies by its default action, perhaps holding a queue's
    lock (multiprocessing.Pool then deadlocked stopping), and the stage ends by its own handler."""
    import os
    import signal

    paths = _many_images(tmp_path, unreadable_first=False)
    for _ in range(4):  # the race is at the start: a few tries
        check = _start_check(tmp_path, paths, "stage")
        _started_workers(check)
        os.killpg(check.pid, signal.SIGTERM)
        _ended(check)
        assert check.returncode in (143, -signal.SIGTERM), check.returncode


@forked_linux
def test_a_worker_killed_while_checking_is_one_line_not_a_hang(tmp_path):
    """A worker killed (out of memory, kill -9) or crashed mid-check: multiprocessing.Pool waited forever for
    its images; the check says so in one line and ends its other worker."""
    import os
    import signal
    import time

    check = _start_check(tmp_path, _many_images(tmp_path, unreadable_first=False) * 3, "stage")
    _started_workers(check)
    time.sleep(0.3)  # both busy checking
    os.kill(_started_workers(check)[0], signal.SIGKILL)
    stdout, stderr = _ended(check)
    assert stdout == ("t.stim.csv: a process checking the images ended before it finished (killed, out of memory, "
                      "or a decoder crashed); run the check stage again\n"), stdout + stderr


def test_image_notes_are_read_back_only_for_the_list_they_were_written_for(tmp_path):
    from dnnprobe.core.hashing import file_sha256
    from dnnprobe.stimuli.images import check_images, image_notes_path, read_image_notes, write_image_notes

    paths = _every_kind(tmp_path / "images")
    stim_ids = [path.name for path in paths]
    image_list = tmp_path / "images.sha256"
    image_list.write_text("".join(f"{file_sha256(path)}  {path.name}\n" for path in paths))
    write_image_notes(image_list, stim_ids, check_images(paths, "t.stim.csv", processes=1))
    notes = read_image_notes(image_list, file_sha256(image_list), stim_ids)
    expected = []
    for path in paths:
        with __import__("warnings").catch_warnings():
            __import__("warnings").simplefilter("ignore")
            load_rgb(path, notes=expected)
    assert notes == expected and len(notes) == 3
    assert read_image_notes(image_list, "0" * 64, stim_ids) is None  # another list's record
    assert read_image_notes(image_list, file_sha256(image_list), stim_ids[::-1]) is None
    image_notes_path(image_list).write_text("{not json")
    assert read_image_notes(image_list, file_sha256(image_list), stim_ids) is None
    image_notes_path(image_list).unlink()
    assert read_image_notes(image_list, file_sha256(image_list), stim_ids) is None
