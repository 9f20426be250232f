"""Reading `dvc exp show --json`: which experiments count, and repeats (synthetic, fast)."""

from __future__ import annotations

from dnnprobe.experiments.exp_show import experiments_from_exp_show

LAYERS = ["conv1", "conv1_relu", "conv2", "conv2_relu", "fc1", "fc1_relu"]


def _entry(rev: str, pca: int, name: str | None = None) -> dict:
    data = {"params": {"params.yaml": {"data": {"pca": pca, "cv": 10}}},
            "metrics": {"reports/metrics.json": {"data": {layer: 0.6 for layer in LAYERS}}}}
    return {"rev": rev, "name": name, "data": data}


def test_a_named_experiment_with_the_same_numbers_as_another_can_still_be_asked_for():
    """Two experiments may give the same settings and scores (the same -S run twice): `dnnprobe compare
    NAME...` still finds each by its name (the workspace and commits that only repeat one are left out),
    while the sweep figure draws such a repeat once."""
    exp_show = [
        {**_entry("workspace", 50)},
        {**_entry("a" * 40, 100, "main"),
         "experiments": [{"revs": [_entry("b" * 40, 50, "pca50")]}, {"revs": [_entry("c" * 40, 50, "adept-wide")]}]},
        {**_entry("d" * 40, 100)},  # an earlier commit with the same numbers as main
    ]
    names = [experiment.name for experiment in experiments_from_exp_show(exp_show, keep_named_repeats=True)]
    assert names == ["main", "pca50", "adept-wide"]
    assert [experiment.name for experiment in experiments_from_exp_show(exp_show)] == ["main", "pca50"]
