"""The probe computes what DNNBrain's pipeline computes, checked against scikit-learn directly."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from helpers import low_rank_data, exactly_low_rank
from dnnprobe.probe.foldpca import fold_pca_scores
from dnnprobe.probe.decoders import ProbeSettings
from dnnprobe.probe.crossval import cross_validate_gram
from dnnprobe.probe.targets import folds


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
    from dnnprobe.probe.summary import score_details
    from dnnprobe.stages.probe import rank_warning

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
