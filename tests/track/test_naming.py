"""Run names: the settings that tell a run apart first."""

from __future__ import annotations



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
