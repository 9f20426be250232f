"""docs/stimuli.md's example ``.stim.csv`` and the commands that make one cannot drift from the code: the
blocks are read from the page, the commands run, and the real reader and stimuli stage read the result."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import REPO, tiny_params
from dnnprobe.stimuli.table import StimulusTable

PAGE = REPO / "docs" / "stimuli.md"


def blocks() -> dict[str, str]:
    """The page's fenced blocks that carry a title (```csv title=labels.csv), by title."""
    found = re.findall(r"^```\w+ title=(\S+)\n(.*?)^```", PAGE.read_text(), flags=re.MULTILINE | re.DOTALL)
    return dict(found)


def example_params() -> dict[str, str]:
    """The stimuli section of the page's params.yaml block, as dotted overrides."""
    block = re.search(r"^```yaml\n(stimuli:\n.*?)^```", PAGE.read_text(), flags=re.MULTILINE | re.DOTALL).group(1)
    return {f"stimuli.{key}": value for key, value in yaml.safe_load(block)["stimuli"].items()}


def write_images(folder, names) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / name)


def test_the_example_table_is_read_by_the_stimulus_table_reader():
    text = blocks()["data/external/mystim/mystim.stim.csv"]
    table = StimulusTable.parse(text, REPO / "data/external/mystim/mystim.stim.csv")
    assert table.header == {"type": "image", "path": "images", "title": "my stimuli"}
    assert len(table) == 3 and list(table.columns) == ["stimID", "label", "condition"]
    assert table.integer_labels().tolist() == [0, 1, 0]
    assert table.column("condition") == ["animate", "inanimate", "animate"]


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("tail") is None, reason="needs bash and tail")
def test_the_two_commands_write_the_example_and_the_stimuli_stage_reads_it(tmp_path, monkeypatch):
    from dnnprobe.stages.stimuli import make_stimuli

    found = blocks()
    table_path = tmp_path / "data/external/mystim/mystim.stim.csv"
    example = StimulusTable.parse(found[str(table_path.relative_to(tmp_path))], table_path)
    write_images(table_path.parent / "images", example.stim_ids)
    # the label table as a spreadsheet exports it, with Windows line ends
    (tmp_path / "labels.csv").write_bytes(found["labels.csv"].replace("\n", "\r\n").encode())
    subprocess.run(["bash", "-euc", found["make-stim-csv"]], cwd=tmp_path, check=True)
    assert table_path.read_text() == found["data/external/mystim/mystim.stim.csv"]

    monkeypatch.chdir(tmp_path)  # params.yaml's stimuli.folder is relative to the repository
    table = make_stimuli(tiny_params(**example_params()), tmp_path / "data/stimuli.stim.csv",
                         tmp_path / "data/images", progress=False)
    assert table.stim_ids == example.stim_ids and table.column("label") == example.column("label")
    assert all((tmp_path / "data/images" / name).is_file() for name in example.stim_ids)


def test_the_class_folder_command_writes_a_table(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from dnnprobe.cli import main

    command = re.search(r"`(dnnprobe stimuli --set stimuli.source=folder [^`]+)`", PAGE.read_text()).group(1)
    write_images(tmp_path / "data/external/mystim/animate", ["cat01.jpg", "dog02.jpg"])
    write_images(tmp_path / "data/external/mystim/inanimate", ["car01.jpg"])
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [*shlex.split(command)[1:], "--quiet"])
    assert result.exit_code == 0, result.output
    table = StimulusTable.read(tmp_path / "data/stimuli.stim.csv")
    assert sorted(zip(table.stim_ids, table.column("label"), table.column("condition"))) == [
        ("animate/cat01.jpg", "0", "animate"), ("animate/dog02.jpg", "0", "animate"),
        ("inanimate/car01.jpg", "1", "inanimate")]


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sed") is None, reason="needs bash, head, sed and tail")
def test_the_commands_carry_a_label_tables_extra_columns(tmp_path):
    """A label table with `size` and `concept` (probe.groups, ridge regression): the `data=` line comes from
    its own header, so every column comes through (a fixed `data=stimID,label,condition` line made the
    reader stop at line 5: 6 fields, expected 3)."""
    table_path = tmp_path / "data/external/mystim/mystim.stim.csv"
    table_path.parent.mkdir(parents=True)
    rows = ["cat01.jpg,0,animate,3.5,cat", "car01.jpg,1,inanimate,12,car", "dog02.jpg,0,animate,4.25,dog"]
    (tmp_path / "labels.csv").write_bytes("\r\n".join(["image,label,condition,size,concept", *rows, ""]).encode())
    subprocess.run(["bash", "-euc", blocks()["make-stim-csv"]], cwd=tmp_path, check=True)
    table = StimulusTable.read(table_path)
    assert list(table.columns) == ["stimID", "label", "condition", "size", "concept"]
    assert table.stim_ids == ["cat01.jpg", "car01.jpg", "dog02.jpg"]
    assert table.column("concept") == ["cat", "car", "dog"] and table.column("size") == ["3.5", "12", "4.25"]
