"""Run names: the settings that tell a run apart first."""

from __future__ import annotations

import pytest

from helpers import REPO
from dnnprobe.track.naming import run_name


def test_run_names_begin_with_the_settings_that_differ():
    """MLflow's runs table shows about 20 characters of a name: what tells runs apart comes first."""
    defaults = {"pca": 100, "cv": 10, "probe.classifier": "logistic", "probe.C": 1.0, "probe.standardize": False}
    same = dict(defaults)
    assert run_name("alexnet", "random", same, defaults) == "alexnet random pca=100 cv=10"
    changed = {**defaults, "pca": 50, "probe.classifier": "ridge", "probe.C": 1}  # 1 == 1.0: not a change
    assert (run_name("alexnet", "models/external/mine.pt", changed, defaults)
            == "weights=mine.pt pca=50 classifier=ridge | alexnet mine.pt cv=10")
    assert run_name("vgg16", "random", {**defaults, "probe.C": 0.1}, defaults) == (
        "arch=vgg16 C=0.1 | vgg16 random pca=100 cv=10")


# (model.arch, preprocessing, tokens, changed params) -> the run name docs/tracking.md gives for it
DOCUMENTED = [
    ("alexnet", "dnnbrain", "n/a", {}, "alexnet random prep=dnnbrain n=400 pca=100 cv=10"),
    ("alexnet", "dnnbrain", "n/a", {"pca": 50, "probe.classifier": "ridge", "probe.C": 0.1},
     "pca=50 classifier=ridge C=0.1 | alexnet random prep=dnnbrain n=400 cv=10"),
    ("vit_tiny_patch16_224", "model", "cls", {},
     "arch=vit_tiny_patch16_224 prep=model tokens=cls | vit_tiny_patch16_224 random n=400 pca=100 cv=10"),
    ("vit_tiny_patch16_224", "dnnbrain", "all", {},
     "arch=vit_tiny_patch16_224 | vit_tiny_patch16_224 random prep=dnnbrain tokens=all n=400 pca=100 cv=10"),
    ("resnet18", "model", "n/a", {}, "arch=resnet18 prep=model | resnet18 random n=400 pca=100 cv=10"),
]


@pytest.mark.parametrize("arch, preprocess, tokens, changed, expected", DOCUMENTED)
def test_probe_run_names_are_the_documented_ones_and_say_prep_and_tokens_once(arch, preprocess, tokens, changed, expected):
    """The probe's run name says the preprocessing always and the tokens of a token network, each once:
    before ` | ` when off its default, after it otherwise; docs/tracking.md gives these very names."""
    from dnnprobe.stages.params import load_params
    from dnnprobe.stages.probe import _run_name

    params = load_params(REPO / "params.yaml", tuple(f"{key}={value}" for key, value in changed.items()))
    summary = {"preprocess": preprocess, "tokens": tokens, "weights": "random", "arch": arch,
               "label": params.probe.label, "classifier": params.probe.classifier, "scoring": params.probe.scoring}
    name = _run_name(params, 400, summary, {})
    assert name == expected
    assert name.count("prep=") == 1 and name.count("tokens=") == (tokens != "n/a")
    assert f"`{expected}`" in (REPO / "docs" / "tracking.md").read_text()
