"""The params stage's schema: every part's section, params.yaml checked as a whole (unknown keys refused)."""

from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

from helpers import REPO
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.params import load
from dnnprobe.network.sources.torchvision import TUTORIAL_LAYERS
from dnnprobe.stages import check, extract, gram, network, probe, report, stimuli
from dnnprobe.stages.params import Params, load_params


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


def test_flat_view_for_tracking():
    flat = Params().flat()
    assert flat["probe.C"] == 1.0 and flat["pca"] == 100 and flat["extract.layers"] == []



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


def test_a_key_no_section_knows_is_refused_by_the_params_stage_and_left_alone_by_the_others(tmp_path):
    """Every key of params.yaml belongs to a part's section, and the params stage (run first) refuses the rest;
    a stage reads its own sections only, so it does not depend on the others' code."""
    with pytest.raises(DnnprobeError, match=re.escape("unknown key classifier (known: cv, extract, gram, model, pca, "
                                                      "probe, report, stimuli, tracking)")):
        load_params(REPO / "params.yaml", ("classifier=ridge",))
    stage_fields = set()
    for stage in (stimuli, check, network, extract, gram, probe, report):
        params = load(stage.Params, REPO / "params.yaml", ("classifier=ridge", "extract.layers=[]"))
        assert params == stage.Params()  # the repository's file states the defaults
        stage_fields |= {field.name for field in dataclasses.fields(stage.Params)}
    assert stage_fields == {field.name for field in dataclasses.fields(Params)}  # every section is read by a stage
