"""The covariance route (d x d moments) equals the Gram route and scikit-learn's exact PCA, per fold;
the torch code equals the numpy code on the CPU; the gram stage stores the smaller matrix."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline

from helpers import low_rank_data
from dnnprobe.probe import foldpca
from dnnprobe.extract.actfile import ActivationFile
from dnnprobe.extract.writer import ActivationWriter
from dnnprobe.gram.moments import LayerMoments
from dnnprobe.probe.covpca import CovariancePCASolver, covariance_fold_scores
from dnnprobe.probe.decoders import ProbeSettings
from dnnprobe.probe.foldpca import GramPCASolver
from dnnprobe.gram.reader import GramFile
from dnnprobe.gram.writer import write_gram_file
from dnnprobe.compute.arrays import NUMPY, TorchOps
from dnnprobe.probe.crossval import cross_validate_covariance, cross_validate_layer
from dnnprobe.probe.targets import folds


def moments_of(X: np.ndarray, shift_rows: int = 16) -> LayerMoments:
    shift = X[:shift_rows].mean(axis=0).astype(np.float32)
    shifted = X.astype(np.float64) - shift
    return LayerMoments(shifted.T @ shifted, shifted.sum(axis=0), shift, len(X))


def readers(X: np.ndarray, block: int = 7):
    return (lambda rows: X[rows], lambda: ((lo, X[lo:lo + block]) for lo in range(0, len(X), block)))


def sklearn_fold_scores(X, train, test, k):
    pca = PCA(k, svd_solver="full").fit(X[train].astype(np.float64))
    return pca.transform(X[train].astype(np.float64)), pca.transform(X[test].astype(np.float64))


def assert_same_up_to_sign(ours, reference, rtol=1e-5):
    signs = np.sign(np.sum(ours * reference, axis=0))
    np.testing.assert_allclose(ours * signs, reference, rtol=rtol, atol=rtol * np.abs(reference).max())


def fold_scores_by_route(X, y, k, cv, ops=NUMPY):
    splits = folds(y, ProbeSettings(n_components=k, cv=cv))
    gram = X.astype(np.float64) @ X.astype(np.float64).T
    solver = GramPCASolver(gram, k, [test for _, test in splits], ops=ops)
    by_gram = [solver.fold_scores(train, test) for train, test in splits]
    by_cov = covariance_fold_scores(CovariancePCASolver(moments_of(X), k, ops=ops), splits, *readers(X))
    return splits, by_gram, by_cov


@pytest.fixture
def small_dense_limit(monkeypatch):
    """Make the block Lanczos paths (used from 1,200 rows or units up) run on test-sized data."""
    monkeypatch.setattr(foldpca, "DENSE_LIMIT", 50)


@pytest.mark.parametrize("n, d", [(160, 50), (90, 300)], ids=["d<n", "d>n"])
@pytest.mark.parametrize("iterative", [False, True], ids=["dense", "lanczos"])
def test_covariance_route_equals_gram_route_and_sklearn_per_fold(n, d, iterative, monkeypatch):
    if iterative:
        monkeypatch.setattr(foldpca, "DENSE_LIMIT", 20)
    X, y = low_rank_data(n, d, seed=n * d)
    X += 2.5  # a large common mean, as ReLU layers have: centring must not lose it
    k, cv = 8, 5
    splits, by_gram, by_cov = fold_scores_by_route(X, y, k, cv)
    tol = 1e-3 if iterative else 1e-6
    for (train, test), gram_scores, cov_scores in zip(splits, by_gram, by_cov):
        ref_train, ref_test = sklearn_fold_scores(X, train, test, k)
        assert_same_up_to_sign(cov_scores[0], ref_train, tol)
        assert_same_up_to_sign(cov_scores[1], ref_test, tol)
        assert_same_up_to_sign(gram_scores[0], ref_train, tol)
        assert_same_up_to_sign(gram_scores[1], ref_test, tol)


@pytest.mark.parametrize("n, d", [(200, 60), (100, 500)], ids=["d<n", "d>n"])
def test_covariance_route_fold_accuracies_match_sklearn_full(n, d):
    X, y = low_rank_data(n, d, seed=n + d + 1)
    settings = ProbeSettings(n_components=12, cv=10)
    ours = cross_validate_covariance(moments_of(X), *readers(X), y, settings).score
    reference = cross_val_score(make_pipeline(PCA(12, svd_solver="full"), LogisticRegression()), X, y,
                                cv=StratifiedKFold(10))
    sizes = np.array([len(test) for _, test in folds(y, settings)])
    assert np.abs(ours - reference).max() * sizes.max() <= 1.0 + 1e-9
    assert 0.5 < reference.mean() < 1.0


@pytest.mark.parametrize("iterative", [False, True], ids=["dense", "lanczos"])
def test_torch_code_on_the_cpu_equals_numpy_per_fold(iterative, monkeypatch):
    pytest.importorskip("torch")
    if iterative:
        monkeypatch.setattr(foldpca, "DENSE_LIMIT", 20)
    for n, d in [(150, 60), (80, 200)]:
        X, y = low_rank_data(n, d, seed=5 * n + d)
        _, numpy_gram, numpy_cov = fold_scores_by_route(X, y, 6, 4)
        _, torch_gram, torch_cov = fold_scores_by_route(X, y, 6, 4, ops=TorchOps("cpu"))
        for ours, theirs in zip(numpy_gram + numpy_cov, torch_gram + torch_cov):
            assert_same_up_to_sign(theirs[0], ours[0], 1e-3 if iterative else 1e-6)
            assert_same_up_to_sign(theirs[1], ours[1], 1e-3 if iterative else 1e-6)


def write_acts(path, X, shape):
    with ActivationWriter(path, len(X), {"layer": shape}, rows_per_chunk=16) as writer:
        writer.write({"layer": X})
    return path


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n, shape, route", [(120, (10, 2, 2), "covariance"), (40, (15, 2, 2), "gram")])
def test_gram_stage_stores_the_smaller_matrix_and_the_probe_matches_sklearn(tmp_path, dtype, n, shape, route):
    X, y = low_rank_data(n, int(np.prod(shape)), seed=n)
    acts = write_acts(tmp_path / "a.act.h5", X, shape)
    write_gram_file(acts, tmp_path / "g.h5", progress=False, dtype=dtype)
    settings = ProbeSettings(n_components=6, cv=4)
    with GramFile(tmp_path / "g.h5") as grams, ActivationFile(acts) as activations:
        assert grams.route("layer") == route and grams.matrix_dtype("layer") == np.dtype(dtype)
        side = min(n, X.shape[1])
        assert grams.gram_rows("layer").shape == (side, side) if route == "gram" else \
            grams.moments("layer").moments.shape == (side, side)
        assert grams.attrs["gram_format"] == 2 and "layer_order" not in grams.attrs  # older readers refuse it
        ours = cross_validate_layer(grams, "layer", y, settings, activations).score
    reference = cross_val_score(make_pipeline(PCA(6, svd_solver="full"), LogisticRegression()), X, y,
                                cv=StratifiedKFold(4))
    sizes = np.array([len(test) for _, test in folds(y, settings)])
    assert np.abs(ours - reference).max() * sizes.max() <= 1.0 + 1e-9


@pytest.mark.parametrize("n, shape", [(60, (30, 3, 3)), (300, (10, 2, 2))])  # the Gram route, the covariance route
def test_activations_far_from_zero_give_sklearns_folds_on_both_routes(tmp_path, n, shape):
    # a mean 10,000 times the spread (raw pixels, unnormalised units): float32 products of the raw
    # values would cancel the signal (fold accuracies at chance); centred/shifted ones keep it
    rng = np.random.default_rng(5)
    y = np.arange(n) % 2
    X = rng.normal(size=(n, int(np.prod(shape))))
    X[:, :4] += 4.0 * y[:, None]
    X = (X + 1e4).astype(np.float32)
    acts = write_acts(tmp_path / "a.act.h5", X, shape)
    write_gram_file(acts, tmp_path / "g.h5", progress=False)
    settings = ProbeSettings(n_components=5, cv=3)
    with GramFile(tmp_path / "g.h5") as grams, ActivationFile(acts) as activations:
        ours = cross_validate_layer(grams, "layer", y, settings, activations).score
    reference = cross_val_score(make_pipeline(PCA(5, svd_solver="full"), LogisticRegression()), X.astype(np.float64), y,
                                cv=StratifiedKFold(3))
    sizes = np.array([len(test) for _, test in folds(y, settings)])
    assert reference.min() >= 0.8  # the signal is there to find
    assert np.abs(ours - reference).max() * sizes.max() <= 1.0 + 1e-9


def test_row_readers_return_the_rows_asked_for(tmp_path):
    X, _ = low_rank_data(70, 12, seed=1)
    acts = write_acts(tmp_path / "a.act.h5", X, (3, 2, 2))
    with ActivationFile(acts) as activations:
        rows = np.array([0, 5, 15, 16, 17, 40, 69])
        np.testing.assert_array_equal(activations.read_rows("layer", rows, max_bytes=16 * 12 * 4), X[rows])
        blocks = list(activations.row_blocks("layer", max_bytes=16 * 12 * 4))
        assert [lo for lo, _ in blocks] == [0, 16, 32, 48, 64]
        np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), X)




@pytest.mark.parametrize("seed", [0, 1])
def test_covariance_route_with_pca_above_the_rank_equals_sklearn_at_the_rank(seed):
    """The covariance route's float32 products leave rounding in the directions a rank-8 layer does not
    span: they score 0 (not unit variance under probe.standardize), so the folds equal scikit-learn's."""
    from sklearn.preprocessing import StandardScaler

    from helpers import exactly_low_rank

    X, y = exactly_low_rank(120, 40, 8, seed)
    moments = moments_of(X)
    stored = LayerMoments(moments.moments.astype(np.float32), moments.sums, moments.shift, moments.n_stim)
    settings = ProbeSettings(n_components=20, cv=5, standardize=True)
    result = cross_validate_covariance(stored, *readers(X), y, settings)
    reference = cross_val_score(make_pipeline(PCA(8, svd_solver="full"), StandardScaler(), LogisticRegression()),
                                X.astype(np.float64), y, cv=StratifiedKFold(5))
    np.testing.assert_array_equal(result.score, reference)
    assert result.pca_rank == 8
