"""Statistics against direct computations: corrected t-test, Holm, chance, p-values, metrics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from dnnprobe.probe.decoders import ProbeSettings
from dnnprobe.probe.crossval import LayerResult
from dnnprobe.probe.stats import (
    chance_level,
    corrected_resampled_t_test,
    holm,
    kfold_test_train_ratio,
    paired_test,
    summarise,
)


def result(scores, null=None):
    return LayerResult(score=np.asarray(scores, float), conf_m=None, null=None if null is None else np.asarray(null, float))


def test_corrected_resampled_t_test_worked_example():
    """Nadeau and Bengio's t by hand: d = .10 .04 .11 .06 .03 over k = 5 folds, n_test / n_train = 1/4."""
    conv = result([0.60, 0.62, 0.58, 0.65, 0.61])
    relu = result([0.70, 0.66, 0.69, 0.71, 0.64])
    # mean 0.068; squared deviations .001024 .000784 .001764 .000064 .001444 sum to .00508, var = .00127
    t = 0.068 / np.sqrt((1 / 5 + 1 / 4) * 0.00127)
    assert t == pytest.approx(2.8445, abs=1e-4)
    test = paired_test(conv, relu)  # 5 folds of k-fold CV: n_test / n_train = 1/4
    assert test["mean_difference"] == pytest.approx(0.068)
    assert test["t"] == pytest.approx(t) and test["df"] == 4
    assert test["p_value"] == pytest.approx(2 * scipy_stats.t.sf(t, 4))
    assert test["p_value"] == pytest.approx(0.0467, abs=1e-4)
    # The correction only widens the plain paired t-test's variance var / k: t shrinks by sqrt((1/k) / (1/k + 1/4)).
    plain = scipy_stats.ttest_rel(relu.score, conv.score)
    assert test["t"] == pytest.approx(plain.statistic * np.sqrt(0.2 / 0.45))
    assert test["p_value"] > plain.pvalue


def test_corrected_t_test_sign_and_explicit_ratio():
    difference = np.array([-0.02, -0.05, 0.01, -0.04])
    test = corrected_resampled_t_test(difference, test_train_ratio=0.5)
    direct = difference.mean() / np.sqrt((1 / 4 + 0.5) * difference.var(ddof=1))
    assert test["t"] == pytest.approx(direct) and test["t"] < 0
    assert test["p_value"] == pytest.approx(2 * scipy_stats.t.cdf(direct, 3))


@pytest.mark.parametrize("n, k", [(4916, 10), (37, 4), (24, 3)])
def test_kfold_ratio_is_mean_test_over_mean_train_size(n, k):
    from sklearn.model_selection import StratifiedKFold

    y = np.arange(n) % 2
    splits = list(StratifiedKFold(k).split(np.zeros((n, 1)), y))
    mean_test = np.mean([len(test) for _, test in splits])
    mean_train = np.mean([len(train) for train, _ in splits])
    assert kfold_test_train_ratio(k) == pytest.approx(mean_test / mean_train)


def test_holm_worked_example():
    # sorted: .005 x4 = .02, .01 x3 = .03, .03 x2 = .06, .04 x1 = .04 -> kept monotone: .06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02]) == pytest.approx([0.02])  # one test: nothing to correct


def holm_rejects(p_values: np.ndarray, alpha: float) -> set[int]:
    """Holm's procedure as he describes it: test the smallest p at alpha / m, the next at alpha / (m - 1), ...,
    and stop at the first that is not rejected."""
    rejected = set()
    for step, index in enumerate(np.argsort(p_values, kind="stable")):
        if p_values[index] > alpha / (len(p_values) - step):
            break
        rejected.add(int(index))
    return rejected


@pytest.mark.parametrize("seed", range(5))
def test_holm_adjusted_p_is_the_smallest_level_that_rejects(seed):
    rng = np.random.default_rng(seed)
    p = np.round(rng.uniform(0, 0.2, size=7) ** 2, 3)  # rounded: ties happen
    adjusted = holm(p)
    assert np.all(adjusted >= p) and np.all(adjusted <= 1)
    for alpha in sorted(set(np.round(np.linspace(0.001, 0.5, 60), 6)) | set(adjusted)):
        assert holm_rejects(p, alpha) == {i for i in range(len(p)) if adjusted[i] <= alpha}, alpha


def test_paired_permutation_p_value_counts_null_differences():
    conv = result([0.6, 0.6], null=[0.50, 0.52, 0.49, 0.51])
    relu = result([0.7, 0.7], null=[0.55, 0.50, 0.60, 0.48])  # null differences .05 -.02 .11 -.03
    assert paired_test(conv, relu)["p_permutation"] == pytest.approx((1 + 1) / (4 + 1))  # only .11 >= .10


def test_identical_folds_give_no_evidence():
    test = paired_test(result([0.5, 0.6]), result([0.5, 0.6]))
    assert test["p_value"] == 1.0 and test["t"] is None and str(test["mean_difference"]) == "0.0"


def test_equal_nonzero_differences_are_no_test_not_p_zero():
    # ReLU one stimulus (of 8) better in each of 3 folds: no variance, so no p; never "p = 0, ***"
    conv, relu = result([0.5, 0.625, 0.5]), result([0.625, 0.75, 0.625])
    assert paired_test(conv, relu)["p_value"] is None
    results = {"conv1": conv, "conv1_relu": relu, "conv2": result([0.5, 0.6, 0.7]), "conv2_relu": result([0.6, 0.6, 0.9])}
    summary = summarise(results, list(results), ProbeSettings(cv=3))
    assert summary["conv_vs_relu"]["Conv1"]["p_holm"] is None  # left out of Holm's family: Conv2 is corrected alone
    assert summary["conv_vs_relu"]["Conv2"]["p_holm"] == pytest.approx(summary["conv_vs_relu"]["Conv2"]["p_value"])


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
    summary["layer_order"] = ["conv1", "conv1_relu", "fc3"]
    from dnnprobe.probe.summary import layer_means, score_details

    assert layer_means(summary) == {"conv1": pytest.approx(0.61), "conv1_relu": pytest.approx(0.695), "fc3": pytest.approx(0.805)}
    details = score_details(summary)
    assert details["sem"]["conv1"] == pytest.approx(scipy_stats.sem([0.6, 0.62]), abs=1e-6)
    assert "p_value" in details["conv_vs_relu"]["Conv1"]
    assert details["conv_vs_relu"]["Conv1"]["p_holm"] == pytest.approx(summary["conv_vs_relu"]["Conv1"]["p_holm"], abs=1e-6)
    assert "p_value" not in details  # no permutations ran


def test_summary_holm_corrects_each_depths_tests():
    rng = np.random.default_rng(3)
    layers, results = [], {}
    for depth in range(1, 5):
        base = rng.uniform(0.5, 0.9, size=5)
        results[f"conv{depth}"] = result(base, null=rng.uniform(0.4, 0.6, 50))
        results[f"conv{depth}_relu"] = result(base + rng.normal(0.02 * depth, 0.03, 5), null=rng.uniform(0.4, 0.6, 50))
        layers += [f"conv{depth}", f"conv{depth}_relu"]
    summary = summarise(results, layers, ProbeSettings())
    tests = summary["conv_vs_relu"]
    assert list(tests) == ["Conv1", "Conv2", "Conv3", "Conv4"]
    for label, test in tests.items():
        assert set(test) == {"conv", "relu", "mean_difference", "t", "df", "p_value", "p_holm",
                             "p_permutation", "p_permutation_holm"}
        direct = paired_test(results[test["conv"]], results[test["relu"]], test_train_ratio=1 / 4)
        assert test["t"] == pytest.approx(direct["t"]) and test["p_value"] == pytest.approx(direct["p_value"])
    np.testing.assert_allclose([t["p_holm"] for t in tests.values()], holm([t["p_value"] for t in tests.values()]))
    np.testing.assert_allclose([t["p_permutation_holm"] for t in tests.values()],
                               holm([t["p_permutation"] for t in tests.values()]))
    described = summary["conv_vs_relu_test"]
    assert described["test"].startswith("Nadeau-Bengio corrected resampled t-test")
    assert described["correction"] == "Holm over 4 depths" and described["test_train_ratio"] == pytest.approx(0.25)
    assert "permutation" in described


def test_no_permutations_no_permutation_keys():
    results = {"conv1": result([0.6, 0.62, 0.6]), "conv1_relu": result([0.7, 0.69, 0.72])}
    summary = summarise(results, ["conv1", "conv1_relu"], ProbeSettings())
    assert set(summary["conv_vs_relu"]["Conv1"]) == {"conv", "relu", "mean_difference", "t", "df", "p_value", "p_holm"}
    assert summary["conv_vs_relu"]["Conv1"]["p_holm"] == summary["conv_vs_relu"]["Conv1"]["p_value"]  # one depth
    assert summary["conv_vs_relu_test"]["correction"] == "Holm over 1 depth"
    assert "permutation" not in summary["conv_vs_relu_test"]


def test_grid_edge_names_where_the_chosen_C_sits():
    from dnnprobe.probe.stats import grid_edge

    grid = (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3)
    assert grid_edge(np.array([1e3, 1e3, 1e2]), grid) == {"edge": "top", "C": 1e3, "folds": 2, "of": 3}
    assert grid_edge(np.array([1e-3, 1e-3, 1e-2, 1.0]), grid) == {"edge": "bottom", "C": 1e-3, "folds": 2, "of": 4}
    assert grid_edge(np.array([1.0, 1e3, 1e-3]), grid) is None  # inside the grid: nothing to say
    assert grid_edge(None, grid) is None and grid_edge(np.array([1.0]), None) is None
