"""params.yaml is validated as a whole before any work, with the key path in every message."""

from __future__ import annotations

import re

import pytest
import yaml

from helpers import REPO
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.network.sources.torchvision import TUTORIAL_LAYERS
from dnnprobe.core.params import Params, load_params


def test_repo_params_are_valid_and_match_the_tutorial():
    params = load_params(REPO / "params.yaml")
    assert params.pca == 100 and params.cv == 10
    assert params.extract.layers == TUTORIAL_LAYERS  # spelled out; the default () means the same layers
    assert params.model.weights == "random" and params.stimuli.source == "demo"
    # the file states every default explicitly, and nothing else
    assert load_params(REPO / "params.yaml", ("extract.layers=[]",)) == Params()




def test_dvc_exp_run_keys_exist_at_top_level():
    """`dvc exp run -S pca=50` needs top-level keys (Hydra syntax), listed by the probe stage."""
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert "pca" in data and "cv" in data
    assert {"pca", "cv", "probe"} <= set(stages["probe"]["params"])


def test_overrides_are_parsed_as_yaml():
    params = load_params(REPO / "params.yaml", ("pca=50", "probe.C=0.5", "extract.layers=[conv1,fc2]"))
    assert params.pca == 50 and params.probe.C == 0.5 and params.extract.layers == ("conv1", "fc2")


@pytest.mark.parametrize(
    "override, message",
    [
        ("probe.C=-1", "probe.C must be > 0, got -1.0"),
        ("cv=1", "cv must be >= 2, got 1"),
        ("pca=ten", "pca must be an integer, got 'ten'"),
        ("extract.device=tpu", "extract.device must be auto, cpu, cuda or cuda:N"),
        ("extract.layers=[fc1,fc1]", "extract.layers must be a list of distinct names"),
        ("stimuli.source=web", "stimuli.source must be one of demo, stimcsv, folder, bold5000"),
        ("probe.permutatons=10", "unknown key probe.permutatons"),
        ("model.seed=true", "model.seed must be an integer"),
    ],
)
def test_bad_values_name_the_key_path(override, message):
    with pytest.raises(DnnprobeError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_params(REPO / "params.yaml", (override,))


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


def test_numbers_in_exponent_notation_are_numbers():
    """YAML 1.2 (DVC's reader, and ours) reads 1e-3 as a number, where YAML 1.1 (PyYAML) reads a string."""
    assert load_params(REPO / "params.yaml", ("probe.C=1e-3",)).probe.C == 0.001
    assert load_params(REPO / "params.yaml", ("probe.C=2E+1",)).probe.C == 20.0
    with pytest.raises(DnnprobeError, match="probe.C must be a number > 0, auto, or a list of numbers > 0, got 'one'"):
        load_params(REPO / "params.yaml", ("probe.C=one",))
    with pytest.raises(DnnprobeError, match="probe.C must be a finite number"):
        load_params(REPO / "params.yaml", ("probe.C=.inf",))


@pytest.mark.parametrize("override, message", [
    ("probe.seed=-1", "probe.seed must be between 0 and 2**32 - 1 (numpy's seed range), got -1"),
    ("probe.seed=4294967296", "probe.seed must be between 0 and 2**32 - 1"),
    ("model.seed=99999999999999999999", "model.seed must be between 0 and 2**63 - 1, got 99999999999999999999"),
    ("model.seed=-3", "model.seed must be between 0 and 2**63 - 1, got -3"),
    ("stimuli.demo.seed=-1", "stimuli.demo.seed must be >= 0, got -1"),
])
def test_seeds_out_of_range_are_refused_before_any_work(override, message):
    with pytest.raises(DnnprobeError, match=re.escape(message)):
        load_params(REPO / "params.yaml", (override,))


def test_flat_view_for_tracking():
    flat = Params().flat()
    assert flat["probe.C"] == 1.0 and flat["pca"] == 100 and flat["extract.layers"] == []


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


@pytest.mark.parametrize("override", ["pca=50", "probe.C=0.1", "report.confusion_layer=fc1",
                                      "stimuli.bold5000.download_dir=elsewhere", "tracking.experiment=mine"])
def test_dvc_exp_run_set_rewrites_params_yaml_as_a_one_line_diff(tmp_path, override):
    """params.yaml is written in the style DVC writes back (block lists, its quoting), so that
    `dvc exp run -S key=value` changes one line, not every list and quote in the file."""
    from dvc.utils.hydra import apply_overrides  # what `dvc exp run -S` does to params.yaml
    from dvc.utils.serialize import modify_yaml

    path = tmp_path / "params.yaml"
    original = (REPO / "params.yaml").read_text()
    path.write_text(original)
    with modify_yaml(path):  # read and written back unchanged: the same bytes
        pass
    assert path.read_text() == original
    apply_overrides(path, [override])
    changed = [(a, b) for a, b in zip(original.splitlines(), path.read_text().splitlines()) if a != b]
    assert len(original.splitlines()) == len(path.read_text().splitlines()) and len(changed) == 1, changed
    key, value = override.split("=")
    assert changed[0][1].strip().startswith(f"{key.split('.')[-1]}: {value}")


def test_an_experiment_name_longer_than_mlflow_allows_is_refused_before_any_stage_works():
    """MLflow refuses experiment names over 500 characters; that failed only at the probe."""
    with pytest.raises(DnnprobeError, match=r"params.yaml: tracking.experiment must be at most 500 characters "
                                             r"\(MLflow's limit for an experiment name\), got 'eeee"):
        load_params(REPO / "params.yaml", ("tracking.experiment=" + "e" * 501,))
    assert load_params(REPO / "params.yaml", ("tracking.experiment=" + "e" * 500,)).tracking.experiment == "e" * 500
