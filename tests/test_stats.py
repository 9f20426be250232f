"""Statistics against scipy/sklearn computed directly: paired tests, chance, p-values, metrics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from dnnprobe.decoders import ProbeSettings
from dnnprobe.probe import LayerResult
from dnnprobe.stats import chance_level, metrics_json, paired_test, summarise


def result(scores, null=None):
    return LayerResult(score=np.asarray(scores, float), conf_m=None, null=None if null is None else np.asarray(null, float))


def test_paired_test_is_scipys_ttest_rel():
    conv = result([0.60, 0.62, 0.58, 0.65, 0.61])
    relu = result([0.70, 0.66, 0.69, 0.71, 0.64])
    test = paired_test(conv, relu)
    expected = scipy_stats.ttest_rel(relu.score, conv.score)
    assert test["t"] == pytest.approx(expected.statistic) and test["p_value"] == pytest.approx(expected.pvalue)
    assert test["mean_difference"] == pytest.approx(np.mean(relu.score - conv.score))


def test_paired_permutation_p_value_counts_null_differences():
    conv = result([0.6, 0.6], null=[0.50, 0.52, 0.49, 0.51])
    relu = result([0.7, 0.7], null=[0.55, 0.50, 0.60, 0.48])  # null differences .05 -.02 .11 -.03
    assert paired_test(conv, relu)["p_permutation"] == pytest.approx((1 + 1) / (4 + 1))  # only .11 >= .10


def test_identical_folds_give_no_evidence():
    assert paired_test(result([0.5, 0.6]), result([0.5, 0.6]))["p_value"] == 1.0


def test_permutation_p_value_formula():
    layer = result([0.7, 0.8], null=[0.5, 0.76, 0.9, 0.6])
    assert layer.p_value == pytest.approx((2 + 1) / (4 + 1))


def test_chance_levels():
    y = np.array([0] * 30 + [1] * 70)
    assert chance_level({}, y, "accuracy") == (0.7, "majority class")
    assert chance_level({}, y, "balanced_accuracy")[0] == 0.5
    assert chance_level({}, y, "roc_auc")[0] == 0.5
    assert chance_level({"a": result([0.6], null=[0.49, 0.51])}, y, "accuracy") == (pytest.approx(0.5), "permutation null")


def test_summary_and_metrics_pair_layers_by_depth():
    results = {"conv1": result([0.6, 0.62]), "conv1_relu": result([0.7, 0.69]), "fc3": result([0.8, 0.81])}
    summary = summarise(results, ["conv1", "conv1_relu", "fc3"], ProbeSettings())
    assert list(summary["conv_vs_relu"]) == ["Conv1"]
    metrics = metrics_json(summary, "accuracy")
    assert metrics["conv1"]["accuracy_mean"] == pytest.approx(0.61)
    assert metrics["conv1"]["accuracy_sem"] == pytest.approx(scipy_stats.sem([0.6, 0.62]), abs=1e-6)
    assert "conv_vs_relu" in metrics and "p_value" in metrics["conv_vs_relu"]["Conv1"]
