"""The probe: cross-validated PCA + linear decoding of a stimulus attribute from one layer.

It computes what DNNBrain's tutorial computes, ``make_pipeline(PCA(pca), LogisticRegression())``
scored over ``StratifiedKFold(cv)`` without shuffling, with PCA refit inside each training fold,
but from the smaller of the layer's two second-moment matrices, stored by the gram stage: the Gram
matrix K = X X^T (:mod:`dnnprobe.foldpca`) or, for layers with fewer units than stimuli, the d x d
moments (:mod:`dnnprobe.covpca`, which also reads the layer's rows to project them). Fold
accuracies equal scikit-learn's with ``PCA(svd_solver='full')`` by either route (tested). The decoder is any of
scikit-learn's linear models (:mod:`dnnprobe.decoders`), fitted on each fold's principal scores; with ``permutations`` the
same folds and the same principal scores are reused for every shuffle of the labels, because PCA
does not look at labels.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import scipy.linalg
import scipy.special
import scipy.stats
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.preprocessing import StandardScaler

from dnnprobe.covpca import CovariancePCASolver, LayerMoments, covariance_fold_scores
from dnnprobe.decoders import ProbeSettings, make_estimator, score
from dnnprobe.foldpca import GramPCASolver
from dnnprobe.linalg import NUMPY, NumpyOps

# ---- cross-validation ---------------------------------------------------------------------


@dataclass
class LayerResult:
    """One layer's cross-validated decoding, in DNNBrain's names (score, conf_m)."""

    score: np.ndarray  # (cv,) fold scores
    conf_m: np.ndarray | None  # (cv, n_classes, n_classes) confusion matrix per fold; None for regression
    null: np.ndarray | None = None  # (permutations,) mean fold score under shuffled labels
    classes: np.ndarray | None = None
    convergence_warnings: int = 0
    extra: dict = field(default_factory=dict)
    pca_rank: int | None = None  # when pca exceeds it: the fewest directions with variance in a training fold

    @property
    def mean(self) -> float:
        return float(np.mean(self.score))

    @property
    def sem(self) -> float:
        return float(np.std(self.score, ddof=1) / np.sqrt(len(self.score))) if len(self.score) > 1 else 0.0

    @property
    def p_value(self) -> float | None:
        """Permutation p-value, (#null >= observed + 1) / (permutations + 1)."""
        if self.null is None or len(self.null) == 0:
            return None
        return float((np.sum(self.null >= self.mean) + 1) / (len(self.null) + 1))


def folds(y: np.ndarray, settings: ProbeSettings) -> list[tuple[np.ndarray, np.ndarray]]:
    """DNNBrain's split: StratifiedKFold(cv) without shuffling (KFold for a continuous target)."""
    splitter = KFold(settings.cv) if settings.is_regression else StratifiedKFold(settings.cv)
    return list(splitter.split(np.zeros((len(y), 1)), y))


def permuted_targets(
    y: np.ndarray, permutations: int, seed: int, groups: np.ndarray | None = None
) -> Iterator[np.ndarray]:
    """The shuffles scikit-learn's ``permutation_test_score(..., groups=groups, random_state=seed)`` draws.

    Without `groups`, the whole of `y` is shuffled; with them (an (n,) array), labels are shuffled
    only among stimuli of the same group, one group after another in sorted order, with one
    RandomState as scikit-learn's ``_shuffle`` does.
    """
    rng = np.random.RandomState(seed)
    for _ in range(permutations):
        if groups is None:
            yield y[rng.permutation(len(y))]
        else:
            indices = np.arange(len(y))
            for group in np.unique(groups):
                members = groups == group
                indices[members] = rng.permutation(indices[members])
            yield y[indices]


def fold_of_each_stimulus(splits: list[tuple[np.ndarray, np.ndarray]], n: int) -> np.ndarray:
    """(n,) the index of the fold in which each stimulus is tested."""
    fold_of = np.full(n, -1)
    for fold, (_, test) in enumerate(splits):
        fold_of[test] = fold
    return fold_of


def null_shuffles(y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]], settings: ProbeSettings) -> np.ndarray:
    """(permutations, n) shuffled label vectors for the permutation null.

    The folds and their PCA are computed once, from the observed labels, and kept for every shuffle.
    Stratified folds depend on the labels, so a shuffle of all labels would give folds that are no
    longer stratified for the shuffled labels: each training fold's class balance then leans
    against its test fold's, and the null's mean falls below chance (anti-conservative p-values).
    Classes are therefore shuffled within each test fold (scikit-learn's ``groups`` = the fold of
    each stimulus): every shuffle keeps each fold's class counts, and since such a permutation moves
    labels only between stimuli of the same fold, scoring it equals scoring the observed labels
    against activations permuted within folds, which under the null (activations independent of
    labels, stimuli exchangeable) have the observed data's distribution: the test is exact.
    KFold (regression) ignores the target, so there all values are shuffled, as scikit-learn does.
    """
    groups = None if settings.is_regression else fold_of_each_stimulus(splits, len(y))
    return np.array(list(permuted_targets(y, settings.permutations, settings.seed, groups)))


def _fit(estimator, z: np.ndarray, y: np.ndarray, counter: list[int]):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        fitted = clone(estimator).fit(z, y)
    counter[0] += sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    return fitted


def cross_validate_scores(
    fold_scores: list[tuple[np.ndarray, np.ndarray]],
    splits: list[tuple[np.ndarray, np.ndarray]],
    y: np.ndarray,
    settings: ProbeSettings,
) -> LayerResult:
    """Fit and score the decoder on each fold's principal scores; permutations reuse them."""
    estimator = make_estimator(settings)
    classes = None if settings.is_regression else np.unique(y)
    warned = [0]
    scores, matrices = [], []
    for (z_train, z_test), (train, test) in zip(fold_scores, splits):
        fitted = _fit(estimator, z_train, y[train], warned)
        scores.append(score(settings.scoring, y[test], fitted, z_test))
        if classes is not None:
            matrices.append(confusion_matrix(y[test], fitted.predict(z_test), labels=classes))
    null = null_distribution(fold_scores, splits, y, settings, warned) if settings.permutations else None
    # Directions without variance (pca above the fold's rank) score 0 for every training row.
    rank = min(int(np.count_nonzero(np.any(z_train != 0, axis=0))) for z_train, _ in fold_scores)
    return LayerResult(
        score=np.asarray(scores),
        conf_m=np.asarray(matrices) if classes is not None else None,
        null=null,
        classes=classes,
        convergence_warnings=warned[0],
        pca_rank=rank if rank < min(z_train.shape[1] for z_train, _ in fold_scores) else None,
    )


def null_distribution(
    fold_scores: list[tuple[np.ndarray, np.ndarray]],
    splits: list[tuple[np.ndarray, np.ndarray]],
    y: np.ndarray,
    settings: ProbeSettings,
    warned: list[int],
) -> np.ndarray:
    """(permutations,) mean fold score for each shuffle of the labels (:func:`null_shuffles`): same
    folds, same principal scores. It equals scikit-learn's ``permutation_test_score(pipeline, X, y,
    cv=<these folds>, groups=<fold of each stimulus>, random_state=probe.seed)`` null (no groups for
    regression) for every decoder (tested).

    Binary logistic decoders (the default) are fitted for all shuffles at once
    (:func:`batched_logistic`, the same optimum to solver tolerance); every other decoder, multi-class
    logistic included, is refit one shuffle at a time by scikit-learn, exactly as scikit-learn does.
    """
    shuffles = null_shuffles(y, splits, settings)  # (P, n)
    classes = np.unique(y)
    batched = settings.decoder.batched_null and len(classes) == 2
    per_fold = np.empty((len(splits), len(shuffles)))
    estimator = make_estimator(settings)
    for fold, ((z_train, z_test), (train, test)) in enumerate(zip(fold_scores, splits)):
        if batched:
            if settings.standardize:
                scaler = StandardScaler().fit(z_train)
                z_train, z_test = scaler.transform(z_train), scaler.transform(z_test)
            positive = (shuffles == classes[1]).astype(np.float64)
            weights, intercepts = batched_logistic(z_train, positive[:, train].T, settings.C)
            decision = z_test @ weights + intercepts  # (n_test, P)
            per_fold[fold] = _batched_scores(settings.scoring, positive[:, test].T, decision)
        else:
            for index, shuffled in enumerate(shuffles):
                fitted = _fit(estimator, z_train, shuffled[train], warned)
                per_fold[fold, index] = score(settings.scoring, shuffled[test], fitted, z_test)
    return per_fold.mean(axis=0)


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


def _batched_scores(scoring: str, positive: np.ndarray, decision: np.ndarray) -> np.ndarray:
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


def cross_validate_gram(gram, y: np.ndarray, settings: ProbeSettings, ops: NumpyOps = NUMPY) -> LayerResult:
    """DNNBrain's cross-validated PCA + decoder for one layer, from its (n, n) Gram matrix (an array, or
    row-sliceable like :meth:`dnnprobe.gram.GramFile.gram_rows`)."""
    splits = folds(y, settings)
    solver = GramPCASolver(gram, settings.n_components, [test for _, test in splits], ops=ops)
    fold_scores = [solver.fold_scores(train, test) for train, test in splits]
    del solver  # the fold-ordered copy: freed before the decoders run
    return cross_validate_scores(fold_scores, splits, y, settings)


def cross_validate_covariance(moments: LayerMoments, read_rows, row_blocks, y: np.ndarray, settings: ProbeSettings,
                              ops: NumpyOps = NUMPY) -> LayerResult:
    """The same, from the layer's d x d moments; `read_rows(indices)` gives those stimuli's (len, d) float32
    activations and `row_blocks()` yields ``(first_row, block)`` over all of them (see :mod:`dnnprobe.covpca`)."""
    splits = folds(y, settings)
    solver = CovariancePCASolver(moments, settings.n_components, ops=ops)
    fold_scores = covariance_fold_scores(solver, splits, read_rows, row_blocks)
    del solver
    return cross_validate_scores(fold_scores, splits, y, settings)


def cross_validate_layer(grams, layer: str, y: np.ndarray, settings: ProbeSettings, activations=None,
                         ops: NumpyOps = NUMPY) -> LayerResult:
    """One layer of a :class:`dnnprobe.gram.GramFile`, by the route its matrix was stored for.

    `activations` (an open :class:`dnnprobe.actfile.ActivationFile`, the one the matrices came from) is
    read for covariance-route layers.
    """
    if grams.route(layer) == "gram":
        return cross_validate_gram(grams.gram_rows(layer), y, settings, ops)
    return cross_validate_covariance(grams.moments(layer), lambda rows: activations.read_rows(layer, rows),
                                     lambda: activations.row_blocks(layer), y, settings, ops)


# ---- outputs ------------------------------------------------------------------------------


def save_layer_result(result: LayerResult, folder: Path) -> None:
    """DNNBrain's per-layer files: score.npy (cv,), conf_m.npy (cv, n_classes, n_classes)."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "score.npy", result.score)
    if result.conf_m is not None:
        np.save(folder / "conf_m.npy", result.conf_m)
    if result.null is not None:
        np.save(folder / "null.npy", result.null)


# ---- probes refit on all stimuli (probe.save_models) ---------------------------------------


def save_refit_models(grams, activations_path, y: np.ndarray, settings: ProbeSettings, folder: Path) -> list[str]:
    """Refit PCA + decoder on all stimuli per layer and save each as ``<layer>.npz``.

    The PCA components in unit space need the activations themselves: ``V = Xc^T U / sqrt(lambda)``
    is accumulated one column block at a time, so memory stays bounded.
    """
    from dnnprobe.actfile import ActivationFile

    saved = []
    everyone = np.arange(len(y))
    with ActivationFile(activations_path) as activations:
        for layer in grams.layers:
            if grams.route(layer) == "covariance":  # components directly in unit space
                solver = CovariancePCASolver(grams.moments(layer), settings.n_components)
                pca = solver.fit_all()
                scores = solver.project([pca], activations.row_blocks(layer))[0]
                decoder = make_estimator(settings).fit(scores, y)
                means = [solver.shift + pca.shifted_mean]
                components = [pca.components]
                variances = pca.values
            else:
                pca = GramPCASolver(grams.gram_rows(layer), settings.n_components).fit(everyone)
                decoder = make_estimator(settings).fit(pca.train_scores(), y)
                variances = pca.scale ** 2
                means, components = [], []
                for block in activations.column_blocks(layer):
                    mean = block.mean(axis=0, dtype=np.float64)
                    means.append(mean.astype(np.float32))
                    part = np.zeros((block.shape[1], settings.n_components), dtype=np.float32)
                    part[:, pca.usable] = ((block - mean).T @ pca.vectors[:, pca.usable]) / pca.scale[pca.usable]
                    components.append(part)
            final = decoder[-1] if hasattr(decoder, "steps") else decoder
            scaler = decoder[0] if hasattr(decoder, "steps") else None
            np.savez(
                folder / f"{layer}.npz",
                layer=np.str_(layer),
                classifier=np.str_(settings.classifier),
                mean=np.concatenate(means).astype(np.float32),
                components=np.concatenate(components).T.astype(np.float32),
                explained_variance=variances / (len(y) - 1),
                scaler_mean=scaler.mean_ if scaler is not None else np.zeros(settings.n_components),
                scaler_scale=scaler.scale_ if scaler is not None else np.ones(settings.n_components),
                coef=np.atleast_2d(final.coef_),
                intercept=np.atleast_1d(final.intercept_),
                classes=getattr(final, "classes_", np.array([])),
            )
            saved.append(layer)
    return saved


def load_refit_model(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A saved probe as plain arrays (no pickle: safe to open from anywhere)."""
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def refit_decision_function(model: dict[str, np.ndarray], activations: np.ndarray) -> np.ndarray:
    """Decision values of a saved probe for (n, units) activations (flattened DNNBrain rows)."""
    z = (activations - model["mean"]) @ model["components"].T
    z = (z - model["scaler_mean"]) / model["scaler_scale"]
    decision = z @ model["coef"].T + model["intercept"]
    return decision[:, 0] if decision.shape[1] == 1 else decision
