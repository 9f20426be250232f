"""The stimulus table: DNNBrain's format both ways, bad input named in one line, image modes."""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from helpers import one_line_error, rgb_image, write_table, corrupt_jpeg
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.extract.forward import load_rgb
from dnnprobe.stimuli.table import StimulusTable

GOOD_HEADER = "type=image\npath=imgs\ntitle=t\ndata=stimID,label,condition\n"


def test_dnnbrain_written_table_is_read(tmp_path):
    """A table as DNNBrain writes it: header keys, an onset column, CRLF line ends, blank lines."""
    text = "type=image\r\npath=/abs/stimuli\r\ntitle=BOLD5000\r\n\r\ndata=stimID,label,onset\r\na/1.jpg,1,0.5\r\nb.jpg,0,1.5\r\n"
    table = StimulusTable.parse(text, tmp_path / "x.stim.csv")
    assert table.stim_ids == ["a/1.jpg", "b.jpg"]
    assert table.integer_labels().tolist() == [1, 0]
    assert table.numeric_column("onset").tolist() == [0.5, 1.5]
    assert str(table.image_folder) == "/abs/stimuli"  # absolute path= is used as it is


def test_relative_path_resolves_against_the_tables_folder(tmp_path):
    table = StimulusTable.read(write_table(tmp_path / "t.stim.csv", GOOD_HEADER, ["x.png,0,a"]))
    assert table.image_paths() == [tmp_path / "imgs" / "x.png"]


def dnnbrain_read(path):
    """DNNBrain's own parsing rules (dnnbrain.io.fileio.StimulusFile.read), for interop checks."""
    lines = [line for line in open(path).read().splitlines() if line != ""]
    data_idx = [line.startswith("data=") for line in lines].index(True)
    meta = dict(line.split("=") for line in lines[:data_idx])
    keys = lines[data_idx].split("=")[1].split(",")
    values = list(zip(*[line.split(",") for line in lines[data_idx + 1:]]))
    data = {}
    for index, key in enumerate(keys):
        if key in ("stimID", "condition"):
            data[key] = np.asarray(values[index], dtype=np.str_)
        elif key == "label":
            data[key] = np.asarray(values[index], dtype=int)
        else:
            data[key] = np.asarray(values[index], dtype=float)
    assert "type" in meta and "path" in meta and "stimID" in data
    return meta, data


def test_table_we_write_is_read_by_dnnbrains_rules(tiny_stimuli):
    meta, data = dnnbrain_read(tiny_stimuli)
    ours = StimulusTable.read(tiny_stimuli)
    assert meta["type"] == "image" and not meta["path"].startswith("/")
    assert data["stimID"].tolist() == ours.stim_ids
    assert data["label"].tolist() == ours.integer_labels().tolist()


def test_demo_set_is_balanced_and_large_enough(tiny_stimuli):
    table = StimulusTable.read(tiny_stimuli)
    labels = table.integer_labels()
    assert np.bincount(labels).tolist() == [12, 12]
    assert set(table.column("condition")) == {"boxy", "curvy"}
    assert table.header["source"] == "demo"
    with Image.open(table.image_paths()[0]) as image:
        assert image.mode == "RGB"


def test_demo_images_are_deterministic_and_at_least_224_px_by_default(tmp_path):
    from dnnprobe.stimuli.demo import demo_image, write_demo_set

    assert np.array_equal(np.asarray(demo_image("curvy", 5)), np.asarray(demo_image("curvy", 5)))
    assert not np.array_equal(np.asarray(demo_image("curvy", 5)), np.asarray(demo_image("curvy", 6)))
    assert demo_image("boxy", 1).size == (256, 256)
    first = write_demo_set(tmp_path / "a", 2, 64, seed=3)
    second = write_demo_set(tmp_path / "b", 2, 64, seed=3)
    for stim_id in first.stim_ids:
        assert (tmp_path / "a" / stim_id).read_bytes() == (tmp_path / "b" / stim_id).read_bytes()
    assert second.column("condition") == ["boxy", "curvy", "boxy", "curvy"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("path=x\ndata=stimID\na.png\n", "no 'type=' line"),
        ("type=image\ndata=stimID\na.png\n", "no 'path=' line"),
        ("type=image\npath=x\nstimID\na.png\n", "no 'data=' line"),
        ("type=image\npath=x\ndata=label\n1\n", "no 'stimID' column"),
        ("type=image\npath=x\ndata=stimID,label\na.png,1\nb.png\n", r"line 5: 1 fields, expected 2"),
        ("type=image\npath=x\ndata=stimID,label\n", "data section is empty"),
        ("type=image\npath=x\ndata=stimID\na.png\nb.png\na.png\n", r"'a.png' appears twice \(stimulus rows 1 and 3\)"),
        ("type=image\npath=x\ndata=stimID\n../secret.png\n", "points outside the path= folder"),
        ("type=image\npath=x\ndata=stimID\n/etc/passwd\n", "points outside the path= folder"),
        ("type=image\npath=x\nnonsense\ndata=stimID\na.png\n", r"line 3: header line 'nonsense' is not key=value"),
    ],
)
def test_bad_tables_are_named_in_one_line(tmp_path, text, message):
    path = tmp_path / "bad.stim.csv"
    path.write_text(text)
    with pytest.raises(DnnprobeError, match=message) as caught:
        StimulusTable.read(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_non_integer_label_names_row_and_value(tmp_path):
    table = StimulusTable.read(write_table(tmp_path / "t.stim.csv", GOOD_HEADER, ["a.png,0,x", "b.png,cat,y"]))
    with pytest.raises(DnnprobeError, match=r"row 2 \(b.png\): 'cat' is not an integer"):
        table.integer_labels()
    for value in ("0.5", "nan", "inf"):
        table = StimulusTable.read(write_table(tmp_path / "t.stim.csv", GOOD_HEADER, ["a.png,0.0,x", f"b.png,{value},y"]))
        with pytest.raises(DnnprobeError, match=rf"t.stim.csv: column 'label', stimulus row 2 \(b.png\): '{value}' is not "
                                                r"an integer \(a class label is a whole number; 1.0 is read as 1\)"):
            table.integer_labels()
    with pytest.raises(DnnprobeError, match="no column 'missing'"):
        table.integer_labels("missing")


def test_labels_written_as_floats_are_read_as_dnnbrain_reads_them(tmp_path):
    """DNNBrain reads labels as floats and casts them to int: numpy's and pandas' 0.0 and 1.0 are classes."""
    rows = ["a.png,0.0,x", "b.png,1.0,y", "c.png,1e0,y", "d.png, 2 ,z", "e.png,-1.00,w"]
    table = StimulusTable.read(write_table(tmp_path / "t.stim.csv", GOOD_HEADER, rows))
    assert table.integer_labels().tolist() == [0, 1, 1, 2, -1]


def test_missing_images_are_counted_and_listed(tmp_path):
    (tmp_path / "imgs").mkdir()
    rows = [f"{i}.png,{i % 2},c" for i in range(8)]
    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "0.png")
    table = StimulusTable.read(write_table(tmp_path / "t.stim.csv", GOOD_HEADER, rows))
    with pytest.raises(DnnprobeError, match=r"7 of 8 images missing under .*imgs: 1.png, 2.png, 3.png, 4.png, 5.png, \.\.\."):
        table.check_images_exist()


def test_missing_path_folder(tmp_path):
    table = StimulusTable.read(write_table(tmp_path / "t.stim.csv", GOOD_HEADER, ["a.png,0,x"]))
    with pytest.raises(DnnprobeError, match="path=imgs is not a folder"):
        table.check_images_exist()


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


def test_values_that_would_break_the_format_are_refused(tmp_path):
    table = StimulusTable(header={"type": "image", "path": "."}, columns={"stimID": ["a,b.png"]})
    with pytest.raises(DnnprobeError, match="contains a comma"):
        table.write(tmp_path / "t.stim.csv")
    assert not (tmp_path / "t.stim.csv").exists()


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


def test_a_title_longer_than_mlflow_allows_is_refused_when_the_table_is_read(tmp_path):
    """The probe logs title= as its run's dataset name (MLflow: at most 500 characters); a longer one
    failed only at the probe, after extraction, as "MLflow store cannot write"."""
    (tmp_path / "imgs").mkdir()
    text = GOOD_HEADER.replace("title=t", "title=" + "x" * 501) + "a.png,0,cat\n"
    (tmp_path / "long.stim.csv").write_text(text)
    with pytest.raises(DnnprobeError) as caught:
        StimulusTable.read(tmp_path / "long.stim.csv")
    assert str(caught.value) == (f"{tmp_path / 'long.stim.csv'}, line 3: title= has 501 characters, more than the 500 "
                                 "MLflow allows for the dataset name the probe logs it as; shorten it")
    (tmp_path / "ok.stim.csv").write_text(text.replace("x" * 501, "x" * 500))
    assert len(StimulusTable.read(tmp_path / "ok.stim.csv").header["title"]) == 500
