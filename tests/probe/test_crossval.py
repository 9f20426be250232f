"""The probe computes what DNNBrain's pipeline computes, checked against scikit-learn directly."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score, permutation_test_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from helpers import low_rank_data, exactly_low_rank
from dnnprobe.probe.foldpca import fold_pca_scores
from dnnprobe.probe.decoders import ProbeSettings
from dnnprobe.probe.crossval import (
    cross_validate_gram,
    folds,
    load_refit_model,
    refit_decision_function,
)


def reference_fold_accuracies(X, y, pca, cv, decoder=None):
    pipe = make_pipeline(PCA(pca, svd_solver="full"), decoder or LogisticRegression())
    return cross_val_score(pipe, X, y, cv=StratifiedKFold(cv))


def gram_of(X):
    X64 = X.astype(np.float64)
    return X64 @ X64.T


@pytest.mark.parametrize("n, d, pca, cv", [(120, 400, 10, 10), (150, 60, 20, 5), (90, 2000, 30, 3)])
def test_fold_accuracies_match_sklearn_full_pca_within_one_sample(n, d, pca, cv):
    X, y = low_rank_data(n, d, seed=n + d)
    ours = cross_validate_gram(gram_of(X), y, ProbeSettings(n_components=pca, cv=cv)).score
    reference = reference_fold_accuracies(X, y, pca, cv)
    test_sizes = np.array([len(test) for _, test in StratifiedKFold(cv).split(X, y)])
    differing_samples = np.abs(ours - reference) * test_sizes
    assert differing_samples.max() <= 1.0 + 1e-9
    assert 0.5 < reference.mean() < 1.0  # a task between chance and ceiling, so the check means something


def test_pca_scores_equal_sklearn_up_to_sign():
    X, y = low_rank_data(80, 300, seed=3)
    train, test = folds(y, ProbeSettings(n_components=12, cv=4))[1]
    z_train, z_test = fold_pca_scores(gram_of(X), train, test, 12)
    pca = PCA(12, svd_solver="full").fit(X[train].astype(np.float64))
    ref_train, ref_test = pca.transform(X[train].astype(np.float64)), pca.transform(X[test].astype(np.float64))
    signs = np.sign(np.sum(z_train * ref_train, axis=0))
    np.testing.assert_allclose(z_train * signs, ref_train, rtol=1e-6, atol=1e-6 * np.abs(ref_train).max())
    np.testing.assert_allclose(z_test * signs, ref_test, rtol=1e-6, atol=1e-6 * np.abs(ref_test).max())


def test_confusion_matrices_per_fold_sum_to_test_sizes():
    X, y = low_rank_data(60, 100, seed=5)
    result = cross_validate_gram(gram_of(X), y, ProbeSettings(n_components=5, cv=4))
    assert result.score.shape == (4,)
    assert result.conf_m.shape == (4, 2, 2)
    for fold, (_, test) in enumerate(folds(y, ProbeSettings(cv=4))):
        assert result.conf_m[fold].sum() == len(test)
        assert np.trace(result.conf_m[fold]) / len(test) == pytest.approx(result.score[fold])


@pytest.mark.parametrize(
    "classifier, decoder",
    [("linear_svm", LinearSVC(C=0.5)), ("ridge", RidgeClassifier(alpha=2.0)), ("lda", LinearDiscriminantAnalysis())],
)
def test_other_classifiers_match_sklearn(classifier, decoder):
    X, y = low_rank_data(100, 150, seed=7)
    ours = cross_validate_gram(gram_of(X), y, ProbeSettings(n_components=8, cv=5, classifier=classifier, C=0.5)).score
    reference = reference_fold_accuracies(X, y, 8, 5, decoder)
    assert np.abs(ours - reference).max() * 20 <= 1.0 + 1e-9


def test_standardize_and_balanced_accuracy_match_sklearn():
    X, y = low_rank_data(100, 150, seed=8)
    settings = ProbeSettings(n_components=8, cv=5, standardize=True, scoring="balanced_accuracy")
    ours = cross_validate_gram(gram_of(X), y, settings).score
    pipe = make_pipeline(PCA(8, svd_solver="full"), StandardScaler(), LogisticRegression())
    reference = cross_val_score(pipe, X, y, cv=StratifiedKFold(5), scoring="balanced_accuracy")
    np.testing.assert_allclose(ours, reference, atol=1 / 20 + 1e-9)


def test_roc_auc_matches_sklearn():
    X, y = low_rank_data(100, 150, seed=9)
    ours = cross_validate_gram(gram_of(X), y, ProbeSettings(n_components=8, cv=5, scoring="roc_auc")).score
    pipe = make_pipeline(PCA(8, svd_solver="full"), LogisticRegression())
    reference = cross_val_score(pipe, X, y, cv=StratifiedKFold(5), scoring="roc_auc")
    np.testing.assert_allclose(ours, reference, atol=1e-6)


def test_multiclass_labels():
    X, _ = low_rank_data(90, 120, seed=10)
    y = np.arange(90) % 3
    X[:, :5] += 0.8 * y[:, None]
    ours = cross_validate_gram(gram_of(X), y, ProbeSettings(n_components=6, cv=3))
    reference = reference_fold_accuracies(X, y, 6, 3)
    assert ours.conf_m.shape == (3, 3, 3)
    assert np.abs(ours.score - reference).max() * 30 <= 1.0 + 1e-9


def test_continuous_target_ridge_regression_r2_matches_sklearn():
    X, _ = low_rank_data(80, 100, seed=11)
    rng = np.random.default_rng(0)
    target = X[:, :3].sum(axis=1).astype(np.float64) + rng.normal(0, 1.0, 80)
    settings = ProbeSettings(n_components=10, cv=4, classifier="ridge_regression", scoring="r2", C=0.5)
    ours = cross_validate_gram(gram_of(X), target, settings)
    pipe = make_pipeline(PCA(10, svd_solver="full"), Ridge(alpha=2.0))
    reference = cross_val_score(pipe, X.astype(np.float64), target, cv=KFold(4), scoring="r2")
    np.testing.assert_allclose(ours.score, reference, rtol=1e-6, atol=1e-8)
    assert ours.conf_m is None


def sklearn_permutation_test(X, y, settings: ProbeSettings, scoring: str = "accuracy"):
    """scikit-learn's permutation_test_score of PCA + the decoder on the probe's folds: classes shuffled
    within each test fold (groups), as the probe does; all values shuffled under KFold (regression)."""
    from dnnprobe.probe.decoders import make_estimator
    from dnnprobe.probe.crossval import fold_of_each_stimulus

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
    from dnnprobe.probe.crossval import null_shuffles

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


def test_batched_logistic_matches_sklearn_fits():
    from dnnprobe.probe.crossval import batched_logistic

    rng = np.random.default_rng(5)
    z = rng.standard_normal((300, 10)) * np.linspace(3, 0.3, 10)
    targets = rng.integers(0, 2, size=(300, 6)).astype(float)
    targets[:, 0] = (z[:, 0] + rng.normal(0, 1, 300) > 0)  # one column with signal
    weights, intercepts = batched_logistic(z, targets, C=0.7)
    for column in range(6):
        reference = LogisticRegression(C=0.7, tol=1e-10, max_iter=10000).fit(z, targets[:, column])
        np.testing.assert_allclose(weights[:, column], reference.coef_[0], atol=1e-5)
        assert intercepts[column] == pytest.approx(reference.intercept_[0], abs=1e-5)


@pytest.mark.parametrize("scoring", ["balanced_accuracy", "roc_auc"])
def test_batched_null_scores_match_sklearn_scorers(scoring):
    X, y = low_rank_data(60, 80, seed=14)
    settings = ProbeSettings(n_components=5, cv=3, permutations=20, seed=1, scoring=scoring)
    ours = cross_validate_gram(gram_of(X), y, settings)
    _, null, _ = sklearn_permutation_test(X, y, settings, scoring)
    tolerance = 1 / 10 if scoring == "balanced_accuracy" else 0.02  # one boundary item per fold
    assert np.abs(ours.null - null).max() <= tolerance


def test_refit_model_predicts_like_sklearn_pipeline_fit_on_all(tmp_path):
    from dnnprobe.extract.writer import ActivationWriter
    from dnnprobe.gram.reader import GramFile
    from dnnprobe.gram.writer import write_gram_file
    from dnnprobe.probe.crossval import save_refit_models

    X, y = low_rank_data(50, 60, seed=13)
    acts = tmp_path / "a.act.h5"
    with ActivationWriter(acts, 50, {"layer": (15, 2, 2)}, rows_per_chunk=16) as writer:
        writer.write({"layer": X})
    write_gram_file(acts, tmp_path / "g.h5", progress=False)
    with GramFile(tmp_path / "g.h5") as grams:
        assert save_refit_models(grams, acts, y, ProbeSettings(n_components=6, cv=3), tmp_path) == ["layer"]
    model = load_refit_model(tmp_path / "layer.npz")
    ours = refit_decision_function(model, X.astype(np.float64))
    reference = make_pipeline(PCA(6, svd_solver="full"), LogisticRegression()).fit(X.astype(np.float64), y)
    np.testing.assert_allclose(ours, reference.decision_function(X.astype(np.float64)), rtol=1e-4, atol=1e-4)


def test_rank_deficient_layer_gives_no_nan():
    X = np.repeat(np.random.default_rng(0).standard_normal((3, 20)), 10, axis=0).astype(np.float32)
    y = np.arange(30) % 2
    result = cross_validate_gram(gram_of(X), y, ProbeSettings(n_components=10, cv=3))
    assert np.all(np.isfinite(result.score))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("classifier, standardize, decoder", [
    ("logistic", True, [StandardScaler(), LogisticRegression()]),
    ("lda", False, [LinearDiscriminantAnalysis()]),
])
def test_pca_above_the_rank_equals_sklearn_at_the_rank(seed, classifier, standardize, decoder):
    """pca 20 on a rank-8 layer, its Gram stored in float32: the 12 directions beyond the rank hold only
    float32 rounding and must score 0, not be scaled to unit variance (they moved up to 3 test samples
    per fold). A direction with no variance adds nothing to these decoders, so the folds equal
    scikit-learn's PCA at the rank, exactly; and the result says that pca exceeds the rank."""
    X, y = exactly_low_rank(120, 200, 8, seed)
    X64 = X.astype(np.float64)
    centred = X64 - X64.mean(axis=0)
    settings = ProbeSettings(n_components=20, cv=5, classifier=classifier, standardize=standardize)
    result = cross_validate_gram((centred @ centred.T).astype(np.float32), y, settings)
    reference = cross_val_score(make_pipeline(PCA(8, svd_solver="full"), *decoder), X64, y, cv=StratifiedKFold(5))
    np.testing.assert_array_equal(result.score, reference)
    assert result.pca_rank == 8


def test_pca_within_the_rank_reports_no_rank():
    X, y = low_rank_data(100, 150, seed=8)
    assert cross_validate_gram(gram_of(X), y, ProbeSettings(n_components=8, cv=5)).pca_rank is None


def test_the_probe_stage_says_when_pca_exceeds_a_layers_rank(tmp_path):
    from dnnprobe.probe import stats
    from dnnprobe.stages.probe import rank_warning, score_details

    X, y = exactly_low_rank(60, 80, 5, seed=0)
    centred = X.astype(np.float64) - X.astype(np.float64).mean(axis=0)
    result = cross_validate_gram(centred @ centred.T, y, ProbeSettings(n_components=12, cv=3))
    assert rank_warning("fc1", 12, result.pca_rank) == ("probe: warning: layer fc1: pca 12 exceeds its rank: a training "
                                                        "fold has variance in 5 directions only; the others score 0 "
                                                        "(pca_rank in metrics_detail.json)")
    assert stats.layer_extras(result) == {"pca_rank": 5}  # logged to MLflow as pca_rank/fc1
    summary = {"layer_order": ["fc1"], "layers": {"fc1": {"mean": result.mean, "sem": result.sem,
                                                          **stats.layer_extras(result)}}}
    assert score_details(summary)["pca_rank"] == {"fc1": 5}


@pytest.mark.parametrize("classifier", ["lda", "logistic", "linear_svm", "ridge"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_an_all_zero_layer_gives_every_decoder_the_majority_class(classifier, n_classes):
    """A dead layer (every activation 0): nothing to decode. scikit-learn's LDA raised IndexError, after
    the earlier layers were computed; every decoder now predicts each training fold's most frequent class."""
    y = np.repeat(np.arange(n_classes), [14, 10, 6][:n_classes])
    settings = ProbeSettings(n_components=4, cv=3, classifier=classifier, permutations=5)
    result = cross_validate_gram(np.zeros((len(y), len(y))), y, settings)
    majority = [np.mean(y[test] == np.bincount(y[train]).argmax()) for train, test in folds(y, settings)]
    np.testing.assert_allclose(result.score, majority)
    assert result.null is not None and np.all(np.isfinite(result.null))


def test_lda_on_data_that_varies_is_scikit_learns():
    from dnnprobe.probe.decoders import PriorLDA

    X, y = low_rank_data(60, 20, seed=3)
    ours, theirs = PriorLDA().fit(X, y), LinearDiscriminantAnalysis().fit(X, y)
    np.testing.assert_array_equal(ours.decision_function(X), theirs.decision_function(X))
    zero = PriorLDA().fit(np.zeros((5, 3)), [0, 0, 0, 1, 1])
    np.testing.assert_allclose(zero.predict_proba(np.ones((2, 3))), [[0.6, 0.4]] * 2)
