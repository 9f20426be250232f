"""The permutation null: its shuffles keep each fold's classes, and the null equals scikit-learn's
permutation_test_score on the probe's folds (one shuffle at a time, or all at once for binary logistic)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.model_selection import KFold, permutation_test_score
from sklearn.pipeline import make_pipeline

from helpers import low_rank_data
from dnnprobe.probe.crossval import cross_validate_gram
from dnnprobe.probe.decoders import ProbeSettings, make_estimator
from dnnprobe.probe.permutation import fold_of_each_stimulus, null_shuffles
from dnnprobe.probe.targets import folds


def gram_of(X):
    X64 = X.astype(np.float64)
    return X64 @ X64.T


def sklearn_permutation_test(X, y, settings: ProbeSettings, scoring: str = "accuracy"):
    """scikit-learn's permutation_test_score of PCA + the decoder on the probe's folds: classes shuffled
    within each test fold (groups), as the probe does; all values shuffled under KFold (regression)."""
    splits = folds(y, settings)
    groups = None if settings.is_regression else fold_of_each_stimulus(splits, len(y))
    # A StratifiedKFold object would re-stratify every shuffle; the probe keeps the observed folds.
    cv = KFold(settings.cv) if settings.is_regression else splits
    pipeline = make_pipeline(PCA(settings.n_components, svd_solver="full"), make_estimator(settings))
    return permutation_test_score(pipeline, X.astype(np.float64), y, cv=cv, groups=groups,
                                  n_permutations=settings.permutations, random_state=settings.seed, scoring=scoring)


def weak_task(kind: str, seed: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """64 stimuli, 30 features: a binary, a three-class or a continuous target, weakly encoded (so p is not minimal)."""
    X, y = low_rank_data(64, 30, seed=seed, signal=0.4)
    if kind == "multiclass":
        y = np.arange(64) % 3
        X = X + 0.15 * np.outer(y, np.ones(30)).astype(np.float32) * (np.arange(30) < 3)
    elif kind == "regression":
        y = X[:, :3].sum(axis=1).astype(np.float64) + np.random.default_rng(seed).normal(0, 3.0, 64)
    return X, y


@pytest.mark.parametrize(
    "classifier, standardize, scoring, kind",
    [
        ("logistic", False, "accuracy", "multiclass"),  # multi-class logistic: refit per shuffle
        ("logistic", True, "accuracy", "multiclass"),
        ("linear_svm", False, "accuracy", "binary"),
        ("linear_svm", True, "balanced_accuracy", "multiclass"),
        ("ridge", False, "accuracy", "multiclass"),
        ("ridge", True, "balanced_accuracy", "binary"),
        ("lda", False, "accuracy", "binary"),
        ("lda", True, "roc_auc", "binary"),
        ("ridge_regression", False, "r2", "regression"),
        ("ridge_regression", True, "r2", "regression"),
    ],
)
def test_permutation_null_equals_sklearn_permutation_test_score(classifier, standardize, scoring, kind):
    """Every decoder fitted one shuffle at a time: the same shuffles, folds and fits as scikit-learn's, so
    the same null distribution and p-value (to floating-point rounding)."""
    X, y = weak_task(kind)
    settings = ProbeSettings(n_components=5, cv=4, permutations=12, seed=4, classifier=classifier, C=0.5,
                             standardize=standardize, scoring=scoring)
    ours = cross_validate_gram(gram_of(X), y, settings)
    observed, null, p_value = sklearn_permutation_test(X, y, settings, scoring)
    assert ours.mean == pytest.approx(observed, abs=1e-12)
    np.testing.assert_allclose(ours.null, null, rtol=0, atol=1e-12)
    assert ours.p_value == pytest.approx(p_value, abs=1e-12)
    assert np.ptp(null) > 0  # the shuffles are distinct draws, not one repeated


@pytest.mark.parametrize("standardize", [False, True])
def test_batched_binary_logistic_null_matches_sklearn_permutation_test_score(standardize):
    """All shuffles fitted at once (Boehning's bound): the same optimum as scikit-learn's L-BFGS, so the
    null agrees but for a test item on a decision boundary."""
    X, y = low_rank_data(60, 80, seed=12)
    settings = ProbeSettings(n_components=5, cv=3, permutations=40, seed=4, standardize=standardize)
    ours = cross_validate_gram(gram_of(X), y, settings)
    observed, null, p_value = sklearn_permutation_test(X, y, settings)
    assert ours.mean == pytest.approx(observed)
    assert np.abs(ours.null - null).max() <= 1 / 20 + 1e-9  # at most one test item per fold
    assert np.mean(np.isclose(ours.null, null)) >= 0.9
    assert abs(ours.p_value - p_value) <= 3 / 41


def test_null_shuffles_keep_each_folds_classes_and_regression_shuffles_all():
    y = np.array([0] * 13 + [1] * 8 + [2] * 9)
    settings = ProbeSettings(cv=3, permutations=25, seed=2)
    splits = folds(y, settings)
    shuffles = null_shuffles(y, splits, settings)
    assert shuffles.shape == (25, 30)
    for _, test in splits:
        for shuffled in shuffles:
            assert sorted(shuffled[test]) == sorted(y[test])  # each test fold keeps its class counts
    assert len({tuple(s) for s in shuffles}) == 25
    target = np.linspace(0, 1, 30)
    regression = ProbeSettings(cv=3, permutations=25, seed=2, classifier="ridge_regression", scoring="r2")
    moved = null_shuffles(target, folds(target, regression), regression)
    first_fold = folds(target, regression)[0][1]
    assert any(sorted(s[first_fold]) != sorted(target[first_fold]) for s in moved)  # values cross folds


@pytest.mark.parametrize("scoring", ["balanced_accuracy", "roc_auc"])
def test_batched_null_scores_match_sklearn_scorers(scoring):
    X, y = low_rank_data(60, 80, seed=14)
    settings = ProbeSettings(n_components=5, cv=3, permutations=20, seed=1, scoring=scoring)
    ours = cross_validate_gram(gram_of(X), y, settings)
    _, null, _ = sklearn_permutation_test(X, y, settings, scoring)
    tolerance = 1 / 10 if scoring == "balanced_accuracy" else 0.02  # one boundary item per fold
    assert np.abs(ours.null - null).max() <= tolerance
