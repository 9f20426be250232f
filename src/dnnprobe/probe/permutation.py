"""The permutation null: shuffles of the labels that keep what the folds hold fixed (:func:`null_shuffles`),
and each shuffle scored on the same folds and the same principal scores (:func:`null_distribution`).
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from dnnprobe.probe.decoders import ProbeSettings, make_estimator, score
from dnnprobe.probe.fitting import (FoldScores, batched_logistic, batched_scores, choose_C, fit_counting, is_batched,
                                    one_blas_thread, standardized)
from dnnprobe.probe.splits import Splits


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


def null_distribution(
    fold_scores: FoldScores,
    splits: Splits,
    y: np.ndarray,
    settings: ProbeSettings,
    warned: list[int],
    groups: np.ndarray | None = None,
    inner_scores: list[FoldScores] | None = None,
    inner: list[Splits] | None = None,
    on_fold: Callable[[int], None] | None = None,
) -> np.ndarray:
    """(permutations,) mean fold score for each shuffle of the labels (:func:`null_shuffles`): same
    folds, same principal scores. It equals scikit-learn's ``permutation_test_score(pipeline, X, y,
    cv=<these folds>, groups=<fold of each stimulus>, random_state=probe.seed)`` null (no groups for
    regression) for every decoder (tested).

    Binary logistic decoders (the default) are fitted for all shuffles at once
    (:func:`dnnprobe.probe.fitting.batched_logistic`, the same optimum to solver tolerance); every other decoder, multi-class
    logistic included, is refit one shuffle at a time by scikit-learn, exactly as scikit-learn does.
    With a searched C, each shuffle chooses its own C per fold by the same inner search (:func:`dnnprobe.probe.fitting.choose_C`,
    on the same inner folds, those of the observed labels), as permutation_test_score of a GridSearchCV
    with those inner folds does.

    `on_fold(P)`, when given, is called after each fold with the number of shuffles it scored (a progress bar's update).
    """
    shuffles = null_shuffles(y, splits, settings, groups)  # (P, n)
    classes = np.unique(y)
    batched = is_batched(settings, classes)
    per_fold = np.empty((len(splits), len(shuffles)))
    for fold, ((z_train, z_test), (train, test)) in enumerate(zip(fold_scores, splits)):
        # Each shuffle's C: the fixed one, or its own inner search's choice.
        chosen = np.full(len(shuffles), settings.C) if settings.C_grid is None else \
            choose_C(inner_scores[fold], inner[fold], shuffles, settings, warned)
        if batched:
            z_train, z_test = standardized(settings, z_train, z_test)
            positive = (shuffles == classes[1]).astype(np.float64)
            for C in np.unique(chosen):
                these = chosen == C
                weights, intercepts = batched_logistic(z_train, positive[these][:, train].T, C)
                decision = z_test @ weights + intercepts  # (n_test, shuffles with this C)
                per_fold[fold, these] = batched_scores(settings.scoring, positive[these][:, test].T, decision)
        else:
            with one_blas_thread():  # many small fits: see one_blas_thread
                for index, shuffled in enumerate(shuffles):
                    fitted = fit_counting(make_estimator(settings, chosen[index]), z_train, shuffled[train], warned)
                    per_fold[fold, index] = score(settings.scoring, shuffled[test], fitted, z_test)
        if on_fold is not None:
            on_fold(len(shuffles))
    return per_fold.mean(axis=0)
