"""Statistics on probe results: SEM, chance level, permutation p-values, Conv-vs-ReLU tests.

- Per layer, with ``probe.permutations`` > 0: the null distribution of the mean fold score under
  shuffled labels (same folds, same PCA), its mean and 95th percentile, and the p-value
  ``(#null >= observed + 1) / (permutations + 1)`` as in scikit-learn's permutation_test_score
  (one-sided, not corrected across layers).
- Per depth (a layer and its ``_relu`` partner), ReLU minus Conv over the cross-validation folds:
  Nadeau and Bengio's corrected resampled t-test (two-sided), whose variance accounts for the
  folds' overlapping training sets, Holm-corrected across the depths tested. With permutations,
  also a one-sided permutation p-value for the difference (same shuffles for both layers), likewise
  Holm-corrected.

References: C. Nadeau and Y. Bengio (2003), Inference for the generalization error, Machine
Learning 52:239-281; S. Holm (1979), A simple sequentially rejective multiple test procedure,
Scandinavian Journal of Statistics 6:65-70.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import stats as scipy_stats

from dnnprobe.probe.pairing import depth_groups

if TYPE_CHECKING:  # only for annotations
    from dnnprobe.probe.decoders import ProbeSettings
    from dnnprobe.probe.crossval import LayerResult

CONV_VS_RELU_TEST = "Nadeau-Bengio corrected resampled t-test over folds (ReLU minus Conv, two-sided)"
CONV_VS_RELU_PERMUTATION = "label permutations, one-sided (ReLU minus Conv greater than under shuffled labels)"


def layer_extras(result: LayerResult) -> dict[str, float]:
    """Summary numbers beyond mean and SEM, for MLflow and metrics_detail.json: the permutation null's,
    ``pca_rank`` when ``pca`` exceeds the layer's rank (its directions with variance in the poorest
    training fold; the others score 0), and the median of the C chosen per fold when C was searched."""
    extras = {}
    if result.null is not None:
        extras.update({
            "p_value": result.p_value,
            "null_mean": float(np.mean(result.null)),
            "null_p95": float(np.percentile(result.null, 95)),
        })
    if result.pca_rank is not None:
        extras["pca_rank"] = result.pca_rank
    if result.C is not None:
        extras["C_median"] = float(np.median(result.C))
    return extras


def kfold_test_train_ratio(k: int) -> float:
    """n_test / n_train of k-fold cross-validation, from the mean fold sizes.

    Every stimulus is tested exactly once, so over n stimuli the mean test fold holds n / k and the
    mean training fold n - n / k, whatever the rounding of single folds: the ratio is 1 / (k - 1).
    """
    if k < 2:
        raise ValueError(f"k-fold cross-validation needs k >= 2 folds, got {k}")
    return 1.0 / (k - 1)


def corrected_resampled_t_test(difference: np.ndarray, test_train_ratio: float) -> dict[str, float | int | None]:
    """Nadeau and Bengio's corrected resampled t-test of a mean difference between two learners.

    `difference`: (k,) per-fold score differences (here ReLU minus Conv on the same folds);
    `test_train_ratio`: n_test / n_train of the folds (:func:`kfold_test_train_ratio`).

    The folds' training sets overlap (nine tenths for 10 folds), so the fold scores are positively
    correlated and the plain paired t-test's variance ``var / k`` is too small: its p-values are too
    small. Nadeau and Bengio (2003, Machine Learning 52:239-281, eq. 13 and section 5) replace it by
    ``(1 / k + n_test / n_train) * var``::

        t = mean(d) / sqrt((1 / k + n_test / n_train) * var(d, ddof=1)),  df = k - 1,

    and p is two-sided from Student's t with k - 1 degrees of freedom.

    Returns ``{"t", "df", "p_value"}``. Folds that all differ by the same amount leave the variance,
    and so t, undefined (``None``): p is 1 when that amount is 0 (no difference at all), otherwise
    ``None`` too, since k equal differences (say one stimulus per fold in 3 folds) are no evidence of
    significance the test can quantify; such a depth gets no mark and is left out of Holm's family.
    """
    difference = np.asarray(difference, dtype=np.float64)
    k = len(difference)
    df = k - 1
    if k < 2:
        raise ValueError(f"a t-test over folds needs at least 2 folds, got {k}")
    if np.allclose(difference, difference[0]):
        return {"t": None, "df": df, "p_value": 1.0 if np.allclose(difference, 0.0) else None}
    variance = np.var(difference, ddof=1) * (1.0 / k + test_train_ratio)
    t = float(np.mean(difference) / np.sqrt(variance))
    return {"t": t, "df": df, "p_value": float(2.0 * scipy_stats.t.sf(abs(t), df))}


def holm(p_values: list[float] | np.ndarray) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values, in the order given.

    With the m p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted value of the i-th is
    ``max over j <= i of min(1, (m - j + 1) * p_(j))``: the smallest family-wise error level at
    which Holm's procedure rejects that hypothesis. It controls the family-wise error rate under any
    dependence between the tests (the depths share stimuli and folds).
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def paired_test(conv: LayerResult, relu: LayerResult, test_train_ratio: float | None = None) -> dict[str, float | int | None]:
    """ReLU minus Conv over the same folds: mean difference, corrected resampled t-test and, when both
    layers have permutation nulls, the one-sided permutation p-value of the difference.

    `test_train_ratio` defaults to that of k-fold cross-validation over the layers' k folds. The
    permutation p-value compares the observed difference of mean scores with the differences under
    the same label shuffles, ``(#null_difference >= observed + 1) / (permutations + 1)``: its null is
    that neither layer carries the label, so it says whether the difference exceeds what shuffled
    labels give, not that the two layers decode equally well (that is the t-test's null).
    """
    difference = relu.score - conv.score
    ratio = kfold_test_train_ratio(len(difference)) if test_train_ratio is None else test_train_ratio
    out: dict[str, float | int | None] = {"mean_difference": float(difference.mean()) + 0.0,  # no -0.0
                                          **corrected_resampled_t_test(difference, ratio)}
    if conv.null is not None and relu.null is not None:
        null_difference = relu.null - conv.null
        observed = relu.mean - conv.mean
        out["p_permutation"] = float((np.sum(null_difference >= observed) + 1) / (len(null_difference) + 1))
    return out


CHANCE_ALPHA = 0.05  # a layer "beats chance" when its permutation p-value is below this


def grid_edge(C: np.ndarray, grid) -> dict | None:
    """Where C, chosen per fold from `grid` (``probe.C: auto`` or a list), sits: ``{"edge": "top" or
    "bottom", "C": the grid's end, "folds": how many folds chose it, "of": folds}`` when at least half the
    folds chose an end of the grid (the best C may lie beyond it), else None."""
    if C is None or not grid or len(grid) < 2:
        return None
    C = np.asarray(C)
    counts = {"top": int(np.sum(C == max(grid))), "bottom": int(np.sum(C == min(grid)))}
    edge = max(counts, key=counts.get)  # the top on a tie
    if 2 * counts[edge] < len(C):
        return None
    return {"edge": edge, "C": max(grid) if edge == "top" else min(grid), "folds": counts[edge], "of": int(len(C))}


def summarise(results: dict[str, LayerResult], layer_order: list[str], settings: ProbeSettings) -> dict:
    """The probe's numbers for summary.json: ``layers`` (mean, SEM, fold scores, permutation
    results per layer), ``conv_vs_relu`` (per depth label: the tests of :func:`paired_test` and
    their Holm-corrected p-values ``p_holm``, ``p_permutation_holm``) and ``conv_vs_relu_test``
    (which test and which correction, in words).

    Per layer also ``beats_chance`` (permutation p < .05) when permutations ran, and ``C_at_grid_edge``
    (:func:`grid_edge` against ``settings.C_grid``) when C was chosen at an end of its grid; the run's
    ``chance_test`` says which test against chance ran, or that none did.

    n_test / n_train is that of k-fold cross-validation over the layers' k fold scores.
    """
    layers = {}
    for layer in layer_order:
        result = results[layer]
        layers[layer] = {"mean": result.mean, "sem": result.sem, "scores": result.score.tolist(),
                         "convergence_warnings": result.convergence_warnings, **layer_extras(result)}
        if result.C is not None:
            layers[layer]["C"] = result.C.tolist()  # chosen per fold
            edge = grid_edge(result.C, getattr(settings, "C_grid", None))
            if edge:
                layers[layer]["C_at_grid_edge"] = edge
        if result.p_value is not None and result.null is not None:
            layers[layer]["beats_chance"] = bool(result.p_value < CHANCE_ALPHA)
    comparisons = {}
    ratio = kfold_test_train_ratio(len(results[layer_order[0]].score)) if layer_order else None
    for group in depth_groups(layer_order):
        if group.conv and group.relu:
            comparisons[group.label] = {"conv": group.conv, "relu": group.relu,
                                        **paired_test(results[group.conv], results[group.relu], ratio)}
    permutations = [len(results[layer].null) for layer in layer_order if results[layer].null is not None]
    chance_test = (f"permutation test per layer ({permutations[0]} label permutations, one-sided, p < "
                   f"{CHANCE_ALPHA:g}; beats_chance per layer)" if permutations else "none (probe.permutations: 0)")
    summary = {"layers": layers, "conv_vs_relu": comparisons, "chance_test": chance_test}
    if comparisons:
        # Holm across the depths: one family per p-value kind (t-test, permutation).
        for key, corrected in (("p_value", "p_holm"), ("p_permutation", "p_permutation_holm")):
            if all(key in test for test in comparisons.values()):
                tested = [test for test in comparisons.values() if test[key] is not None]  # undefined p: no test
                for test, value in zip(tested, holm([test[key] for test in tested])):
                    test[corrected] = float(value)
                for test in comparisons.values():
                    test.setdefault(corrected, None)
        depths = len(comparisons)
        described = {
            "test": CONV_VS_RELU_TEST,
            "reference": "Nadeau and Bengio (2003), Machine Learning 52:239-281",
            "test_train_ratio": ratio,
            "correction": f"Holm over {depths} {'depth' if depths == 1 else 'depths'}",
        }
        if "p_permutation" in next(iter(comparisons.values())):
            described["permutation"] = CONV_VS_RELU_PERMUTATION
        summary["conv_vs_relu_test"] = described
    return summary


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


def attribute_summaries(summary: dict) -> list[tuple[str | None, dict]]:
    """(attribute, its summary with the run's common keys) per decoded attribute; (None, summary) for a
    run of one attribute."""
    if "attributes" not in summary:
        return [(None, summary)]
    common = {key: value for key, value in summary.items() if key != "attributes"}
    return [(name, {**common, **part}) for name, part in summary["attributes"].items()]
