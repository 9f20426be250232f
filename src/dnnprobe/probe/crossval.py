"""The probe: cross-validated PCA + linear decoding of a stimulus attribute from one layer.

It computes what DNNBrain's tutorial computes, ``make_pipeline(PCA(pca), LogisticRegression())``
scored over ``StratifiedKFold(cv)`` without shuffling, with PCA refit inside each training fold,
but from the smaller of the layer's two second-moment matrices, stored by the gram stage: the Gram
matrix K = X X^T (:mod:`dnnprobe.probe.foldpca`) or, for layers with fewer units than stimuli, the d x d
moments (:mod:`dnnprobe.probe.covpca`, which also reads the layer's rows to project them). Fold
accuracies equal scikit-learn's with ``PCA(svd_solver='full')`` by either route (tested). The decoder is any of
scikit-learn's linear models (:mod:`dnnprobe.probe.decoders`), fitted on each fold's principal scores; with ``permutations`` the
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
from sklearn.preprocessing import StandardScaler

from dnnprobe.gram.moments import LayerMoments
from dnnprobe.probe.covpca import CovariancePCASolver, covariance_fold_scores
from dnnprobe.probe.decoders import INNER_CV, ProbeSettings, Target, make_estimator, score
from dnnprobe.probe.foldpca import GramPCASolver
from dnnprobe.compute.arrays import NUMPY, NumpyOps
from dnnprobe.probe.splits import Splits, inner_splits, make_splits

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
    C: np.ndarray | None = None  # (cv,) C chosen per training fold by the inner search (probe.C: auto or a list)
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


def folds(y: np.ndarray, settings: ProbeSettings, groups: np.ndarray | None = None) -> Splits:
    """The outer folds (:mod:`dnnprobe.probe.splits`): DNNBrain's StratifiedKFold(cv) without shuffling (KFold
    for a continuous target); with `groups` ((n,) group of each stimulus) StratifiedGroupKFold
    (GroupKFold), so that no group is split between training and test."""
    return make_splits(y, settings.cv, settings.is_regression, groups, settings.shuffle, settings.seed)


@dataclass
class FoldDesign:
    """Which stimuli each fold trains and tests on: the outer folds and, when C is searched, each training
    fold's inner folds. PCA does not look at labels, so targets with the same design share fold PCAs."""

    splits: Splits
    inner: list[Splits] | None = None  # per outer fold, INNER_CV (train, test) pairs of its training stimuli

    def key(self) -> tuple:
        pairs = list(self.splits) + [pair for fold in self.inner or [] for pair in fold]
        return tuple(test.tobytes() for _, test in pairs) + tuple(train.tobytes() for train, _ in pairs)


def fold_design(y: np.ndarray, settings: ProbeSettings, groups: np.ndarray | None = None) -> FoldDesign:
    splits = folds(y, settings, groups)
    inner = None
    if settings.C_grid is not None:
        inner = inner_splits(splits, y, INNER_CV, settings.is_regression, groups, settings.shuffle, settings.seed)
    return FoldDesign(splits, inner)


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


def null_shuffles(y: np.ndarray, splits: Splits, settings: ProbeSettings, groups: np.ndarray | None = None) -> np.ndarray:
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

    With `groups` (grouped folds) the stimuli of one group are not exchangeable with other stimuli
    (they show one thing), so whole groups are exchanged instead (:func:`permuted_group_targets`).
    """
    if groups is not None:
        fold_of = None if settings.is_regression else fold_of_each_stimulus(splits, len(y))
        return np.array(list(permuted_group_targets(y, groups, fold_of, settings.permutations, settings.seed)))
    within = None if settings.is_regression else fold_of_each_stimulus(splits, len(y))
    return np.array(list(permuted_targets(y, settings.permutations, settings.seed, within)))


def permuted_group_targets(
    y: np.ndarray, groups: np.ndarray, fold_of: np.ndarray | None, permutations: int, seed: int
) -> Iterator[np.ndarray]:
    """Shuffles that move whole groups: each group takes the labels of another group of the same size and,
    with `fold_of` (class labels), the same test fold; the i-th stimulus of one (in table order) takes the
    i-th label of the other.

    Why: the null of a grouped design is that the attribute, as it falls on whole groups, is unrelated
    to the activations; the exchangeable units are the groups, not the stimuli. Shuffling stimuli (even
    within folds) breaks an attribute shared by a group's images (animacy of a concept) into one no real
    labelling has, whose null is narrower than the true one (p-values too small). Exchanging whole groups
    within a test fold (grouped folds hold whole groups) keeps each fold's class counts, as the
    stimulus-level null does; groups of the same size keep the counts exact. A group with no partner of
    its size in its fold keeps its labels (the test stays exact; it only loses power).

    Exchange units are drawn as scikit-learn's ``_shuffle`` draws (one RandomState(`seed`), each stratum
    in sorted order, ``permutation`` of its units): with one stimulus per group this is exactly
    :func:`permuted_targets` with ``groups=fold_of``, i.e. ``permutation_test_score(..., groups=fold_of)``.
    """
    codes = np.unique(groups, return_inverse=True)[1]
    members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
    sizes = np.array([len(m) for m in members])
    fold = np.zeros(len(members), dtype=int) if fold_of is None else np.array([fold_of[m[0]] for m in members])
    strata = {}
    for g in np.lexsort((np.arange(len(members)), sizes, fold)):  # units ordered by first stimulus within a stratum
        strata.setdefault((fold[g], sizes[g]), []).append(g)
    ordered = [np.array(sorted(units, key=lambda g: members[g][0])) for _, units in sorted(strata.items())]
    rng = np.random.RandomState(seed)
    for _ in range(permutations):
        shuffled = y.copy()
        for units in ordered:
            for target, source in zip(units, rng.permutation(units)):
                shuffled[members[target]] = y[members[source]]
        yield shuffled


def _fit(estimator, z: np.ndarray, y: np.ndarray, counter: list[int]):
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
        if _batched(settings, classes):
            z_train, z_test = _standardized(settings, z_train, z_test)
            positive = (labellings == classes[-1]).astype(np.float64)
            for c, C in enumerate(grid):
                weights, intercepts = batched_logistic(z_train, positive[:, train].T, C)
                means[c] += _batched_scores(settings.scoring, positive[:, test].T, z_test @ weights + intercepts)
        else:
            for c, C in enumerate(grid):
                estimator = make_estimator(settings, C)
                for index, y in enumerate(labellings):
                    fitted = _fit(estimator, z_train, y[train], warned)
                    means[c, index] += score(settings.scoring, y[test], fitted, z_test)
    return grid[np.argmax(means / len(inner), axis=0)]


def _batched(settings: ProbeSettings, classes: np.ndarray) -> bool:
    """Whether the decoder is fitted for many labellings at once (binary logistic regression)."""
    return settings.decoder.batched_null and len(classes) == 2


def _standardized(settings: ProbeSettings, z_train: np.ndarray, z_test: np.ndarray):
    if not settings.standardize:
        return z_train, z_test
    scaler = StandardScaler().fit(z_train)
    return scaler.transform(z_train), scaler.transform(z_test)


def cross_validate_scores(
    fold_scores: FoldScores,
    splits: Splits,
    y: np.ndarray,
    settings: ProbeSettings,
    groups: np.ndarray | None = None,
    inner_scores: list[FoldScores] | None = None,
    inner: list[Splits] | None = None,
) -> LayerResult:
    """Fit and score the decoder on each fold's principal scores; permutations reuse them.

    With ``settings.C_grid``, C is chosen per training fold (:func:`choose_C`) from `inner_scores` (per
    outer fold, its inner folds' principal scores) on the `inner` folds.
    """
    classes = None if settings.is_regression else np.unique(y)
    warned = [0]
    searched = settings.C_grid is not None
    chosen = [float(choose_C(inner_scores[fold], inner[fold], y[None], settings, warned)[0]) if searched
              else settings.C for fold in range(len(splits))]
    scores, matrices = [], []
    for (z_train, z_test), (train, test), C in zip(fold_scores, splits, chosen):
        fitted = _fit(make_estimator(settings, C), z_train, y[train], warned)
        scores.append(score(settings.scoring, y[test], fitted, z_test))
        if classes is not None:
            matrices.append(confusion_matrix(y[test], fitted.predict(z_test), labels=classes))
    null = None
    if settings.permutations:
        null = null_distribution(fold_scores, splits, y, settings, warned, groups, inner_scores, inner)
    # Directions without variance (pca above the fold's rank) score 0 for every training row.
    rank = min(int(np.count_nonzero(np.any(z_train != 0, axis=0))) for z_train, _ in fold_scores)
    return LayerResult(
        score=np.asarray(scores),
        conf_m=np.asarray(matrices) if classes is not None else None,
        null=null,
        classes=classes,
        convergence_warnings=warned[0],
        C=np.asarray(chosen, dtype=np.float64) if searched else None,
        pca_rank=rank if rank < min(z_train.shape[1] for z_train, _ in fold_scores) else None,
    )


def null_distribution(
    fold_scores: FoldScores,
    splits: Splits,
    y: np.ndarray,
    settings: ProbeSettings,
    warned: list[int],
    groups: np.ndarray | None = None,
    inner_scores: list[FoldScores] | None = None,
    inner: list[Splits] | None = None,
) -> np.ndarray:
    """(permutations,) mean fold score for each shuffle of the labels (:func:`null_shuffles`): same
    folds, same principal scores. It equals scikit-learn's ``permutation_test_score(pipeline, X, y,
    cv=<these folds>, groups=<fold of each stimulus>, random_state=probe.seed)`` null (no groups for
    regression) for every decoder (tested).

    Binary logistic decoders (the default) are fitted for all shuffles at once
    (:func:`batched_logistic`, the same optimum to solver tolerance); every other decoder, multi-class
    logistic included, is refit one shuffle at a time by scikit-learn, exactly as scikit-learn does.
    With a searched C, each shuffle chooses its own C per fold by the same inner search (:func:`choose_C`,
    on the same inner folds, those of the observed labels), as permutation_test_score of a GridSearchCV
    with those inner folds does.
    """
    shuffles = null_shuffles(y, splits, settings, groups)  # (P, n)
    classes = np.unique(y)
    batched = _batched(settings, classes)
    per_fold = np.empty((len(splits), len(shuffles)))
    for fold, ((z_train, z_test), (train, test)) in enumerate(zip(fold_scores, splits)):
        # Each shuffle's C: the fixed one, or its own inner search's choice.
        chosen = np.full(len(shuffles), settings.C) if settings.C_grid is None else \
            choose_C(inner_scores[fold], inner[fold], shuffles, settings, warned)
        if batched:
            z_train, z_test = _standardized(settings, z_train, z_test)
            positive = (shuffles == classes[1]).astype(np.float64)
            for C in np.unique(chosen):
                these = chosen == C
                weights, intercepts = batched_logistic(z_train, positive[these][:, train].T, C)
                decision = z_test @ weights + intercepts  # (n_test, shuffles with this C)
                per_fold[fold, these] = _batched_scores(settings.scoring, positive[these][:, test].T, decision)
        else:
            for index, shuffled in enumerate(shuffles):
                fitted = _fit(make_estimator(settings, chosen[index]), z_train, shuffled[train], warned)
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


def cross_validate_targets(fold_pcas, targets: list[Target], groups: np.ndarray | None = None) -> dict[str, LayerResult]:
    """Every target decoded from one layer, each fold's PCA computed once for all targets that share folds.

    `fold_pcas(design)` returns, for a :class:`FoldDesign`, the outer folds' :data:`FoldScores` and, when
    the design has inner folds, theirs (per outer fold). Continuous targets always share their folds
    (KFold, GroupKFold ignore the target); class targets are stratified each on its own classes, so that
    every target gets exactly the result a run decoding it alone gives.
    """
    shared: dict[tuple, tuple[FoldDesign, list[Target]]] = {}
    for target in targets:
        design = fold_design(target.y, target.settings, groups)
        shared.setdefault(design.key(), (design, []))[1].append(target)
    results = {}
    for design, members in shared.values():
        outer, inner = fold_pcas(design)
        for target in members:
            results[target.name] = cross_validate_scores(outer, design.splits, target.y, target.settings, groups,
                                                         inner, design.inner)
        del outer, inner
    return {target.name: results[target.name] for target in targets}


def gram_fold_pcas(gram, k: int, ops: NumpyOps = NUMPY):
    """`fold_pcas` for :func:`cross_validate_targets` from an (n, n) Gram matrix (array or row-sliceable)."""
    def fold_pcas(design: FoldDesign):
        solver = GramPCASolver(gram, k, [test for _, test in design.splits], ops=ops)
        outer = [solver.fold_scores(train, test) for train, test in design.splits]
        inner = None
        if design.inner is not None:  # any subset: the solver copies its block (dense below DENSE_LIMIT rows)
            inner = [[solver.fold_scores(train, test) for train, test in fold] for fold in design.inner]
        return outer, inner  # the solver's fold-ordered copy is freed before the decoders run
    return fold_pcas


def covariance_fold_pcas(moments: LayerMoments, read_rows, row_blocks, k: int, ops: NumpyOps = NUMPY):
    """`fold_pcas` from the layer's d x d moments (see :func:`cross_validate_covariance`)."""
    def fold_pcas(design: FoldDesign):
        solver = CovariancePCASolver(moments, k, ops=ops)
        pairs = list(design.splits) + [pair for fold in design.inner or [] for pair in fold]
        scores = covariance_fold_scores(solver, pairs, read_rows, row_blocks)
        outer, rest = scores[:len(design.splits)], scores[len(design.splits):]
        inner = None
        if design.inner is not None:
            inner = [rest[i * INNER_CV:(i + 1) * INNER_CV] for i in range(len(design.splits))]
        return outer, inner
    return fold_pcas


def cross_validate_gram(gram, y: np.ndarray, settings: ProbeSettings, ops: NumpyOps = NUMPY,
                        groups: np.ndarray | None = None) -> LayerResult:
    """DNNBrain's cross-validated PCA + decoder for one layer, from its (n, n) Gram matrix (an array, or
    row-sliceable like :meth:`dnnprobe.gram.reader.GramFile.gram_rows`)."""
    target = Target("", y, settings)
    return cross_validate_targets(gram_fold_pcas(gram, settings.n_components, ops), [target], groups)[""]


def cross_validate_covariance(moments: LayerMoments, read_rows, row_blocks, y: np.ndarray, settings: ProbeSettings,
                              ops: NumpyOps = NUMPY, groups: np.ndarray | None = None) -> LayerResult:
    """The same, from the layer's d x d moments; `read_rows(indices)` gives those stimuli's (len, d) float32
    activations and `row_blocks()` yields ``(first_row, block)`` over all of them (see :mod:`dnnprobe.probe.covpca`)."""
    fold_pcas = covariance_fold_pcas(moments, read_rows, row_blocks, settings.n_components, ops)
    return cross_validate_targets(fold_pcas, [Target("", y, settings)], groups)[""]


def layer_fold_pcas(grams, layer: str, k: int, activations=None, ops: NumpyOps = NUMPY):
    """`fold_pcas` for one layer of a :class:`dnnprobe.gram.reader.GramFile`, by the route its matrix was stored
    for; `activations` (an open :class:`dnnprobe.extract.actfile.ActivationFile`, the one the matrices came from)
    is read for covariance-route layers."""
    if grams.route(layer) == "gram":
        return gram_fold_pcas(grams.gram_rows(layer), k, ops)
    return covariance_fold_pcas(grams.moments(layer), lambda rows: activations.read_rows(layer, rows),
                                lambda: activations.row_blocks(layer), k, ops)


def cross_validate_layer(grams, layer: str, y: np.ndarray, settings: ProbeSettings, activations=None,
                         ops: NumpyOps = NUMPY, groups: np.ndarray | None = None) -> LayerResult:
    """One layer of a :class:`dnnprobe.gram.reader.GramFile`, one target (see :func:`layer_fold_pcas`)."""
    fold_pcas = layer_fold_pcas(grams, layer, settings.n_components, activations, ops)
    return cross_validate_targets(fold_pcas, [Target("", y, settings)], groups)[""]


# ---- outputs ------------------------------------------------------------------------------


def save_layer_result(result: LayerResult, folder: Path) -> None:
    """DNNBrain's per-layer files: score.npy (cv,), conf_m.npy (cv, n_classes, n_classes); null.npy
    (permutations,) with permutations; C.npy (cv,), the C chosen per fold, with probe.C auto or a list."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "score.npy", result.score)
    if result.conf_m is not None:
        np.save(folder / "conf_m.npy", result.conf_m)
    if result.null is not None:
        np.save(folder / "null.npy", result.null)
    if result.C is not None:
        np.save(folder / "C.npy", result.C)


# ---- probes refit on all stimuli (probe.save_models) ---------------------------------------


def save_refit_models(grams, activations_path, y: np.ndarray, settings: ProbeSettings, folder: Path,
                      C_per_layer: dict[str, float] | None = None) -> list[str]:
    """Refit PCA + decoder on all stimuli per layer and save each as ``<layer>.npz`` (`C_per_layer`: a C
    for some layers in place of ``settings.C``).

    The PCA components in unit space need the activations themselves: ``V = Xc^T U / sqrt(lambda)``
    is accumulated one column block at a time, so memory stays bounded.
    """
    from dnnprobe.extract.actfile import ActivationFile

    saved = []
    everyone = np.arange(len(y))
    with ActivationFile(activations_path) as activations:
        for layer in grams.layers:
            if grams.route(layer) == "covariance":  # components directly in unit space
                solver = CovariancePCASolver(grams.moments(layer), settings.n_components)
                pca = solver.fit_all()
                scores = solver.project([pca], activations.row_blocks(layer))[0]
                decoder = make_estimator(settings, (C_per_layer or {}).get(layer)).fit(scores, y)
                means = [solver.shift + pca.shifted_mean]
                components = [pca.components]
                variances = pca.values
            else:
                pca = GramPCASolver(grams.gram_rows(layer), settings.n_components).fit(everyone)
                decoder = make_estimator(settings, (C_per_layer or {}).get(layer)).fit(pca.train_scores(), y)
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
