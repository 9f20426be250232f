"""Statistics on probe results: SEM, chance level, permutation p-values, Conv-vs-ReLU tests.

- Per layer, with ``probe.permutations`` > 0: the null distribution of the mean fold score under
  shuffled labels (same folds, same PCA), its mean and 95th percentile, and the p-value
  ``(#null >= observed + 1) / (permutations + 1)`` as in scikit-learn's permutation_test_score.
- Per depth (a layer and its ``_relu`` partner): a paired t-test over folds of ReLU minus Conv
  (two-sided), and with permutations a one-sided permutation p-value for the difference, using the
  same shuffles for both layers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import stats as scipy_stats

from dnnprobe.layers import depth_groups

if TYPE_CHECKING:  # only for annotations
    from dnnprobe.decoders import ProbeSettings
    from dnnprobe.probe import LayerResult


def layer_extras(result: LayerResult) -> dict[str, float]:
    """Summary numbers beyond mean and SEM, for MLflow and metrics.json."""
    if result.null is None:
        return {}
    return {
        "p_value": result.p_value,
        "null_mean": float(np.mean(result.null)),
        "null_p95": float(np.percentile(result.null, 95)),
    }


def paired_test(conv: LayerResult, relu: LayerResult) -> dict[str, float]:
    difference = relu.score - conv.score
    out = {"mean_difference": float(difference.mean())}
    if np.allclose(difference, difference[0]):
        # No spread: the t statistic is undefined; identical folds mean no evidence of a difference.
        out.update({"t": 0.0, "p_value": 1.0 if difference[0] == 0 else 0.0})
    else:
        test = scipy_stats.ttest_rel(relu.score, conv.score)
        out.update({"t": float(test.statistic), "p_value": float(test.pvalue)})
    if conv.null is not None and relu.null is not None:
        null_difference = relu.null - conv.null
        observed = relu.mean - conv.mean
        out["p_permutation"] = float((np.sum(null_difference >= observed) + 1) / (len(null_difference) + 1))
    return out


def summarise(results: dict[str, LayerResult], layer_order: list[str], settings: ProbeSettings) -> dict:
    layers = {}
    for layer in layer_order:
        result = results[layer]
        layers[layer] = {"mean": result.mean, "sem": result.sem, "scores": result.score.tolist(),
                         "convergence_warnings": result.convergence_warnings, **layer_extras(result)}
    comparisons = {}
    for group in depth_groups(layer_order):
        if group.conv and group.relu:
            comparisons[group.label] = {"conv": group.conv, "relu": group.relu,
                                        **paired_test(results[group.conv], results[group.relu])}
    return {"layers": layers, "conv_vs_relu": comparisons}


def chance_level(results: dict[str, LayerResult], y: np.ndarray, scoring: str) -> tuple[float, str]:
    """The permutation null's mean over layers when permutations ran, else the score of a
    decoder that ignores the activations (majority class for accuracy)."""
    nulls = [r.null for r in results.values() if r.null is not None]
    if nulls:
        return float(np.mean([np.mean(n) for n in nulls])), "permutation null"
    if scoring == "r2":
        return 0.0, "R2 of the mean"
    if scoring == "roc_auc":
        return 0.5, "no information"
    counts = np.unique(y, return_counts=True)[1]
    if scoring == "balanced_accuracy":
        return float(1.0 / len(counts)), "1 / classes"
    return float(counts.max() / counts.sum()), "majority class"


def metrics_json(summary: dict, scoring: str) -> dict:
    """reports/metrics.json for DVC: per layer mean and SEM (and p-values when computed)."""
    metrics: dict = {}
    for layer, values in summary["layers"].items():
        entry = {f"{scoring}_mean": round(values["mean"], 6), f"{scoring}_sem": round(values["sem"], 6)}
        for key in ("p_value", "null_mean", "null_p95"):
            if key in values:
                entry[key] = round(values[key], 6)
        metrics[layer] = entry
    if summary.get("conv_vs_relu"):
        metrics["conv_vs_relu"] = {
            label: {k: round(v, 6) for k, v in test.items() if isinstance(v, float)}
            for label, test in summary["conv_vs_relu"].items()
        }
    return metrics
