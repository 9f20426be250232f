"""Fold PCA from a Gram matrix: the iterative solver agrees with LAPACK and with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline

from helpers import low_rank_data
from dnnprobe.probe import foldpca
from dnnprobe.probe.foldpca import GramPCASolver, _dense_top, centre_gram, top_eigenpairs
from dnnprobe.probe.decoders import ProbeSettings
from dnnprobe.probe.crossval import cross_validate_gram
from dnnprobe.probe.targets import folds


@pytest.fixture
def small_dense_limit(monkeypatch):
    """Make the iterative path (used from 1,200 training rows up) run on test-sized data."""
    monkeypatch.setattr(foldpca, "DENSE_LIMIT", 50)


def test_block_lanczos_finds_the_leading_eigenpairs(small_dense_limit):
    rng = np.random.default_rng(3)
    basis = np.linalg.qr(rng.standard_normal((400, 400)))[0]
    matrix = (basis * (1.0 / np.arange(1, 401))) @ basis.T  # a slowly decaying spectrum, as in layers
    values, vectors = top_eigenpairs(matrix, 20, tol=1e-8)
    exact_values, exact_vectors = _dense_top(matrix, 20)
    np.testing.assert_allclose(values, exact_values, rtol=1e-7)
    np.testing.assert_allclose(np.abs(np.sum(vectors * exact_vectors, axis=0)), 1.0, atol=1e-6)


def test_each_fold_uses_the_view_path_and_matches_lapack(small_dense_limit, monkeypatch):
    X, y = low_rank_data(500, 800, seed=22)
    gram = X.astype(np.float64) @ X.astype(np.float64).T
    splits = folds(y, ProbeSettings(n_components=12, cv=5))
    solver = GramPCASolver(gram, 12, [test for _, test in splits])
    assert solver.iterative
    used = []
    original = GramPCASolver._fit_fold
    monkeypatch.setattr(GramPCASolver, "_fit_fold", lambda self, *fold: used.append(fold) or original(self, *fold))
    for train, test in splits:
        pca = solver.fit(train)
        centred, row_means, _ = centre_gram(gram[np.ix_(train, train)])
        exact_values, exact_vectors = _dense_top(centred, 12)
        np.testing.assert_allclose(pca.scale ** 2, exact_values, rtol=1e-3)
        np.testing.assert_allclose(np.abs(np.sum(pca.vectors * exact_vectors, axis=0)), 1.0, atol=1e-3)
        np.testing.assert_allclose(pca.row_means, row_means, rtol=1e-10)
    assert len(used) == 5  # every fold took the fast path
    everyone = solver.fit(np.arange(500))  # any other subset: the copy path
    assert everyone.vectors.shape == (500, 12)


def test_iterative_path_fold_accuracies_match_sklearn_full(small_dense_limit):
    X, y = low_rank_data(500, 800, seed=21)
    ours = cross_validate_gram(X.astype(np.float64) @ X.astype(np.float64).T, y, ProbeSettings(n_components=12, cv=5)).score
    reference = cross_val_score(make_pipeline(PCA(12, svd_solver="full"), LogisticRegression()), X, y, cv=StratifiedKFold(5))
    assert np.abs(ours - reference).max() * 100 <= 1.0 + 1e-9
