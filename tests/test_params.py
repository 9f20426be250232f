"""params.yaml is validated as a whole before any work, with the key path in every message."""

from __future__ import annotations

import re

import pytest
import yaml

from conftest import REPO
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.layers import TUTORIAL_LAYERS
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
    """YAML 1.1 (PyYAML) reads 1e-3 as a string; params.yaml users write it anyway."""
    assert load_params(REPO / "params.yaml", ("probe.C=1e-3",)).probe.C == 0.001
    assert load_params(REPO / "params.yaml", ("probe.C=2E+1",)).probe.C == 20.0
    with pytest.raises(DnnprobeError, match="probe.C must be a finite number, got 'one'"):
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


def test_an_experiment_name_longer_than_mlflow_allows_is_refused_before_any_stage_works():
    """MLflow refuses experiment names over 500 characters; that failed only at the probe."""
    with pytest.raises(DnnprobeError, match=r"params.yaml: tracking.experiment must be at most 500 characters "
                                             r"\(MLflow's limit for an experiment name\), got 'eeee"):
        load_params(REPO / "params.yaml", ("tracking.experiment=" + "e" * 501,))
    assert load_params(REPO / "params.yaml", ("tracking.experiment=" + "e" * 500,)).tracking.experiment == "e" * 500
