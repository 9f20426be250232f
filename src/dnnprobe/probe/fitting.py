"""Fitting the decoders on a fold's principal scores: one labelling by scikit-learn, or many at once
(binary logistic regression, :func:`batched_logistic`), and the inner search of C (:func:`choose_C`)
that the observed labels and every shuffle of the permutation null share.
"""

from __future__ import annotations

import contextlib

import warnings

import numpy as np
import scipy.linalg
import scipy.special
import scipy.stats
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

from dnnprobe.probe.decoders import ProbeSettings, make_estimator, score
from dnnprobe.probe.splits import Splits


def fit_counting(estimator, z: np.ndarray, y: np.ndarray, counter: list[int]):
    """A fitted clone of `estimator`; the ConvergenceWarnings it raised are added to ``counter[0]``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        fitted = clone(estimator).fit(z, y)
    counter[0] += sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    return fitted


FoldScores = list[tuple[np.ndarray, np.ndarray]]  # per fold: (training scores, held-out scores) of its PCA


def choose_C(inner_scores: FoldScores, inner: Splits, labellings: np.ndarray, settings: ProbeSettings,
             warned: list[int]) -> np.ndarray:
    """(P,) the candidate C (``settings.C_grid``) with the best mean score over one training fold's inner
    folds, for each of the P labellings in `labellings` ((P, n): the observed labels, or shuffles), the
    first of equals, as ``GridSearchCV(...).best_params_`` picks it. `inner_scores` are PCA(k) refit in
    each inner training fold: nothing of the outer test fold is seen.

    Binary logistic decoders are fitted for all labellings at once (:func:`batched_logistic`: the
    optimum scikit-learn's solver approaches, in milliseconds); other decoders by scikit-learn, one
    labelling at a time.
    """
    grid = np.asarray(settings.C_grid, dtype=np.float64)
    classes = np.unique(labellings[0])
    means = np.zeros((len(grid), len(labellings)))
    for (z_train, z_test), (train, test) in zip(inner_scores, inner):
        if is_batched(settings, classes):
            z_train, z_test = standardized(settings, z_train, z_test)
            positive = (labellings == classes[-1]).astype(np.float64)
            for c, C in enumerate(grid):
                weights, intercepts = batched_logistic(z_train, positive[:, train].T, C)
                means[c] += batched_scores(settings.scoring, positive[:, test].T, z_test @ weights + intercepts)
        else:
            with one_blas_thread():
                for c, C in enumerate(grid):
                    estimator = make_estimator(settings, C)
                    for index, y in enumerate(labellings):
                        fitted = fit_counting(estimator, z_train, y[train], warned)
                        means[c, index] += score(settings.scoring, y[test], fitted, z_test)
    return grid[np.argmax(means / len(inner), axis=0)]


_controller = None


@contextlib.contextmanager
def one_blas_thread():
    """BLAS on one thread for scikit-learn's many small fits (a training fold's n x pca scores, one per
    labelling and C): at that size threads gain nothing, and on a shared machine their spin-waits
    dominate (measured, 2 busy cores: a 3-class ``C: auto`` probe of 24 stimuli with 5 permutations
    took 49.9 s on one BLAS thread and did not finish in 200 s on two)."""
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController  # installed with scikit-learn

        _controller = ThreadpoolController()
    with _controller.limit(limits=1, user_api="blas"):
        yield


def is_batched(settings: ProbeSettings, classes: np.ndarray) -> bool:
    """Whether the decoder is fitted for many labellings at once (binary logistic regression)."""
    return settings.decoder.batched_null and len(classes) == 2


def standardized(settings: ProbeSettings, z_train: np.ndarray, z_test: np.ndarray):
    """The scores scaled as probe.standardize's StandardScaler does (fitted on the training fold)."""
    if not settings.standardize:
        return z_train, z_test
    scaler = StandardScaler().fit(z_train)
    return scaler.transform(z_train), scaler.transform(z_test)


def batched_logistic(
    z: np.ndarray, targets: np.ndarray, C: float, tol: float = 1e-8, max_iter: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """L2-penalised binary logistic regressions sharing one design, one per column of `targets`.

    Minimises ``sum log(1 + exp(-s (z w + b))) + |w|^2 / (2 C)`` (scikit-learn's objective; the
    intercept is not penalised) by majorise-minimise steps with Boehning's fixed curvature bound
    ``Z^T Z / 4``: one Cholesky factor for all columns, two matrix products per step. It
    converges to the optimum that scikit-learn's L-BFGS approaches to its tolerance, so predictions
    agree but for test items on the decision boundary.
    """
    design = np.hstack([z, np.ones((len(z), 1))])
    bound = design.T @ design / 4.0
    bound[np.diag_indices(z.shape[1])] += 1.0 / C
    factor = scipy.linalg.cho_factor(bound)
    theta = np.zeros((design.shape[1], targets.shape[1]))
    penalty = np.full((design.shape[1], 1), 1.0 / C)
    penalty[-1] = 0.0
    for _ in range(max_iter):
        probability = scipy.special.expit(design @ theta)
        gradient = design.T @ (probability - targets) + penalty * theta
        step = scipy.linalg.cho_solve(factor, gradient)
        theta -= step
        if np.abs(step).max() <= tol * (1.0 + np.abs(theta).max()):
            break
    return theta[:-1], theta[-1]


def batched_scores(scoring: str, positive: np.ndarray, decision: np.ndarray) -> np.ndarray:
    """Per-column scores of binary decisions (class 1 where decision > 0, as scikit-learn predicts)."""
    predicted = decision > 0
    truth = positive > 0.5
    if scoring == "accuracy":
        return (predicted == truth).mean(axis=0)
    if scoring == "balanced_accuracy":
        recall_pos = (predicted & truth).sum(axis=0) / np.maximum(truth.sum(axis=0), 1)
        recall_neg = (~predicted & ~truth).sum(axis=0) / np.maximum((~truth).sum(axis=0), 1)
        return (recall_pos + recall_neg) / 2
    # roc_auc: the Mann-Whitney statistic from ranks of the decision values
    ranks = scipy.stats.rankdata(decision, axis=0)
    n_pos = truth.sum(axis=0)
    n_neg = len(truth) - n_pos
    return ((ranks * truth).sum(axis=0) - n_pos * (n_pos + 1) / 2) / np.maximum(n_pos * n_neg, 1)
