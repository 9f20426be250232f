"""The stimulus table: DNNBrain's format both ways, bad input named in one line."""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from helpers import write_table
from dnnprobe.core.errors import DnnprobeError
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


def test_values_that_would_break_the_format_are_refused(tmp_path):
    table = StimulusTable(header={"type": "image", "path": "."}, columns={"stimID": ["a,b.png"]})
    with pytest.raises(DnnprobeError, match="contains a comma"):
        table.write(tmp_path / "t.stim.csv")
    assert not (tmp_path / "t.stim.csv").exists()


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
