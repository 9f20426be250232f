"""The probe stage's memory pre-checks (dnnprobe.probe.budget): the layer's matrices, whose estimate does
not grow with the width beyond the stored matrix, and probe.permutations' null distribution; each
refused in one line, naming what to change, before any work."""

from __future__ import annotations

from helpers import one_line_error
from dnnprobe.compute import memory
from dnnprobe.compute.arrays import NUMPY
from dnnprobe.probe import budget

GIB = memory.GIB


def test_probe_estimate_does_not_grow_with_width_beyond_the_stored_matrix():
    n = 26_000
    for width in (43_264, 193_600):  # wider than n: the Gram route, the same bytes
        assert budget.probe_stage_bytes(n, width, 100, 10) == budget.probe_stage_bytes(n, 30_000, 100, 10)
    # NSD: 73,000 stimuli, a 4,096-unit layer takes the covariance route and stays small
    assert budget.probe_stage_bytes(73_000, 4_096, 100, 10) < 3 * GIB


def test_probe_memory_precheck_names_the_layer_and_what_to_change(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: 2 * GIB)
    one_line_error(lambda: budget.check_probe_stage(26_000, 43_264, 100, 10, "conv5", NUMPY),
                   r"^layer conv5: needs 4.8 GiB of host memory \(26,000 x 26,000 matrix\), 2.0 GiB available; "
                   r"run on a GPU \(probe.device: cuda\), leave conv5 out of extract.layers, "
                   r"or use a machine with more memory$")
    budget.check_probe_stage(26_000, 4_096, 100, 10, "fc1", NUMPY)  # the covariance route fits in 2 GiB


def test_permutations_that_cannot_fit_are_refused_naming_the_setting(monkeypatch):
    """1,000,000 shuffles of 40 stimuli were killed in a 1.5 GiB group."""
    monkeypatch.setattr(memory, "available_bytes", lambda: int(1.5 * GIB))
    message = one_line_error(lambda: budget.check_permutations(1_000_000, 40, 35, batched=True),
                             r"^probe\.permutations: 1,000,000 label permutations of 40 stimuli need [\d.]+ GiB "
                             r"of host memory, 1\.5 GiB available; lower probe\.permutations \(about [\d,]+ fit\)")
    fit = int(message.split("about ")[1].split(" fit")[0].replace(",", ""))
    budget.check_permutations(fit, 40, 35, batched=True)  # the number it suggests does fit
    budget.check_permutations(1000, 4916, 100, batched=True)  # BOLD5000 with the usual 1000
    budget.check_permutations(0, 10**6, 100, batched=True)


def test_the_probe_stage_refuses_permutations_before_any_work(tmp_path, monkeypatch, tiny_stimuli, tiny_gram,
                                                                 tiny_activations):
    """Killed half way before (its MLflow run left RUNNING, temporaries behind): now one line, nothing written."""
    from helpers import assert_nothing_written, assert_one_line_error, cli

    monkeypatch.setattr(memory, "available_bytes", lambda: int(1.5 * GIB))
    out = tmp_path / "out"
    result = cli("probe", "--set", "probe.permutations=1000000", "--table", tiny_stimuli, "--gram", tiny_gram,
                 "--activations", tiny_activations, "--out", out / "probe", "--metrics", out / "metrics.json",
                 "--models", out / "probes")
    assert_one_line_error(result, "probe", "probe.permutations: 1,000,000 label permutations of 24 stimuli need")
    assert_nothing_written(out)
    assert not (tmp_path / "mlflow.db").exists()  # refused before any MLflow run was started
