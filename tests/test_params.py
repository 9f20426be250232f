"""params.yaml is validated as a whole before any work, with the key path in every message."""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO
from dnnprobe.errors import DnnprobeError
from dnnprobe.params import TUTORIAL_LAYERS, Params, load_params


def test_repo_params_are_valid_and_match_the_tutorial():
    params = load_params(REPO / "params.yaml")
    assert params.pca == 100 and params.cv == 10
    assert params.extract.layers == TUTORIAL_LAYERS
    assert params.model.weights == "random" and params.stimuli.source == "demo"
    assert params == Params()  # the file states every default explicitly, and nothing else


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
        ("probe.classifier=forest", "probe.classifier must be one of logistic"),
        ("probe.scoring=f1", "probe.scoring must be one of"),
        ("extract.device=tpu", "extract.device must be auto, cpu, cuda or cuda:N"),
        ("extract.layers=[]", "extract.layers must be a non-empty list"),
        ("stimuli.source=web", "stimuli.source must be one of demo, stimcsv, folder, bold5000"),
        ("probe.permutatons=10", "unknown key probe.permutatons"),
        ("model.seed=true", "model.seed must be an integer"),
    ],
)
def test_bad_values_name_the_key_path(override, message):
    with pytest.raises(DnnprobeError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_params(REPO / "params.yaml", (override,))


def test_invalid_yaml_names_the_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("pca: [1,\n")
    with pytest.raises(DnnprobeError, match="params.yaml: not valid YAML"):
        load_params(bad)


def test_flat_view_for_tracking():
    flat = Params().flat()
    assert flat["probe.C"] == 1.0 and flat["pca"] == 100 and flat["extract.layers"][0] == "conv1"
