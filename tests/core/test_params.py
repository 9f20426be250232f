"""The loader (dnnprobe.core.params): params.yaml read as DVC reads it, --set overrides, one-line errors,
and a schema composed of the sections a stage reads."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

import pytest

from helpers import REPO
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.params import check, checked, load, schema
from dnnprobe.stages.params import load_params


@dataclass(frozen=True)
class TopParams:
    SECTION: ClassVar[str] = ""
    n: int = checked(3, check(lambda v: v >= 2, "must be >= 2"))


@dataclass(frozen=True)
class PartParams:
    SECTION: ClassVar[str] = "part"
    name: str = "x"


def test_a_schema_puts_each_section_under_its_key_and_a_top_level_one_at_the_top(tmp_path):
    Params = schema(TopParams, PartParams)
    assert Params().n == 3 and Params().part == PartParams() and Params().flat() == {"n": 3, "part.name": "x"}
    path = tmp_path / "params.yaml"
    path.write_text("n: 5\npart:\n  name: y\nother:\n  anything: [1, 2]\n")
    params = load(Params, path, ("part.name=z",))  # another part's section is left to the params stage
    assert (params.n, params.part.name) == (5, "z") and params.flat(("part",)) == {"part.name": "z"}
    with pytest.raises(DnnprobeError, match=re.escape(f"{path}: unknown key other (known: n, part)")):
        load(Params, path, every_key=True)
    with pytest.raises(DnnprobeError, match=re.escape(f"{path}: unknown key part.colour (known: name)")):  # its own sections: every key
        load(Params, path, ("part.colour=red",))
    with pytest.raises(DnnprobeError, match=re.escape(f"{path}: n must be >= 2, got 1")):
        load(Params, path, ("n=1",))


def test_invalid_yaml_names_the_file_and_line_in_one_line(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("pca: 100\nprobe:\n  C: [1,\n")
    with pytest.raises(DnnprobeError) as caught:
        load_params(bad)
    assert str(caught.value) == (f"{bad}, line 4, column 1: not valid YAML "
                                 "(expected the node content, but found '<stream end>')")


def test_a_named_params_file_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(DnnprobeError, match=r"myparams.yaml: parameter file not found$"):
        load_params(tmp_path / "myparams.yaml")
    with pytest.raises(DnnprobeError, match="is a folder, not a parameter file"):
        load_params(tmp_path)


@pytest.mark.parametrize("text, key, expected", [
    ("pca: 010\n", "pca", 10),        # YAML 1.1 (PyYAML): octal, 8
    ("pca: 0o10\n", "pca", 8),        # YAML 1.2's octal
    ("probe:\n  C: 1e-3\n", "probe.C", 0.001),  # YAML 1.1: the string '1e-3'
])
def test_params_yaml_is_read_exactly_as_dvc_reads_it(tmp_path, text, key, expected):
    """dvc.lock, `dvc exp show` and the sweep labels show what DVC reads; the stages must compute with it."""
    from dvc.utils.serialize import parse_yaml  # how DVC reads params.yaml

    path = tmp_path / "params.yaml"
    path.write_text(text)
    dvc_value = parse_yaml(text, str(path))
    for part in key.split("."):
        dvc_value = dvc_value[part]
    assert load_params(path).flat()[key] == dvc_value == expected


def test_values_yaml_1_1_reads_otherwise_are_refused_as_dvc_reads_them(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("cv: 1:30\n")  # YAML 1.1: 90 (sexagesimal); DVC: the string '1:30'
    with pytest.raises(DnnprobeError, match=re.escape("params.yaml: cv must be an integer, got '1:30'")):
        load_params(path)
    path.write_text("probe:\n  standardize: yes\n")  # YAML 1.1: true; DVC: the string 'yes'
    with pytest.raises(DnnprobeError, match=re.escape("probe.standardize must be true or false, got 'yes'")):
        load_params(path)


@pytest.mark.parametrize("value", ["@lab", "`lab`", "\tlab", "lab\there"])
def test_set_values_yaml_cannot_read_fail_in_one_line_saying_how_to_quote(value):
    with pytest.raises(DnnprobeError) as caught:
        load_params(REPO / "params.yaml", (f"stimuli.folder={value}",))
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"--set {'stimuli.folder=' + value!r}, line 1, column")
    assert "not valid YAML (found character" in message and "to pass it as text, quote the value in YAML: " in message
    quoted = message.split("quote the value in YAML: ")[1]  # what the message says to pass
    assert load_params(REPO / "params.yaml", (quoted,)).stimuli.folder == value


@pytest.mark.parametrize("override, message", [
    ("probe.C=true", "probe.C must be a number > 0, auto, or a list of numbers > 0, not a boolean: got true"),
    ("probe.C=[0.1,false]", "probe.C must be a number > 0, auto, or a list of numbers > 0, not a boolean: got [0.1, false]"),
    ("pca=true", "pca must be an integer, not a boolean: got true"),
    ("extract.batch_size=false", "extract.batch_size must be an integer, not a boolean: got false"),
    ("stimuli.bold5000.expected_class_sizes=[2369,true]",
     "stimuli.bold5000.expected_class_sizes must be a list of integers, not a boolean: got [2369, true]"),
])
def test_a_boolean_where_a_number_belongs_is_named_a_boolean(override, message):
    """YAML reads true and false as booleans; a number key given one says so (not "finite number, got True")."""
    with pytest.raises(DnnprobeError) as caught:
        load_params(REPO / "params.yaml", (override,))
    assert str(caught.value) == f"{REPO / 'params.yaml'}: {message}"
