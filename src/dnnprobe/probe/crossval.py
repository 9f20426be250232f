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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from sklearn.metrics import confusion_matrix

from dnnprobe.compute.arrays import NUMPY, NumpyOps
from dnnprobe.gram.moments import LayerMoments
from dnnprobe.probe.covpca import CovariancePCASolver, covariance_fold_scores
from dnnprobe.probe.decoders import INNER_CV, ProbeSettings, make_estimator, score
from dnnprobe.probe.fitting import FoldScores, choose_C, fit_counting
from dnnprobe.probe.foldpca import GramPCASolver
from dnnprobe.probe.permutation import null_distribution
from dnnprobe.probe.splits import Splits, inner_splits
from dnnprobe.probe.targets import Target, folds


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


def cross_validate_scores(
    fold_scores: FoldScores,
    splits: Splits,
    y: np.ndarray,
    settings: ProbeSettings,
    groups: np.ndarray | None = None,
    inner_scores: list[FoldScores] | None = None,
    inner: list[Splits] | None = None,
    on_fold: Callable[[int], None] | None = None,
) -> LayerResult:
    """Fit and score the decoder on each fold's principal scores; permutations reuse them (`on_fold`: see
    :func:`dnnprobe.probe.permutation.null_distribution`).

    With ``settings.C_grid``, C is chosen per training fold (:func:`dnnprobe.probe.fitting.choose_C`) from `inner_scores` (per
    outer fold, its inner folds' principal scores) on the `inner` folds.
    """
    classes = None if settings.is_regression else np.unique(y)
    warned = [0]
    searched = settings.C_grid is not None
    chosen = [float(choose_C(inner_scores[fold], inner[fold], y[None], settings, warned)[0]) if searched
              else settings.C for fold in range(len(splits))]
    scores, matrices = [], []
    for (z_train, z_test), (train, test), C in zip(fold_scores, splits, chosen):
        fitted = fit_counting(make_estimator(settings, C), z_train, y[train], warned)
        scores.append(score(settings.scoring, y[test], fitted, z_test))
        if classes is not None:
            matrices.append(confusion_matrix(y[test], fitted.predict(z_test), labels=classes))
    null = None
    if settings.permutations:
        null = null_distribution(fold_scores, splits, y, settings, warned, groups, inner_scores, inner, on_fold)
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


def cross_validate_targets(fold_pcas, targets: list[Target], groups: np.ndarray | None = None,
                           on_fold: Callable[[int], None] | None = None) -> dict[str, LayerResult]:
    """Every target decoded from one layer, each fold's PCA computed once for all targets that share folds.

    `fold_pcas(design)` returns, for a :class:`FoldDesign`, the outer folds' :data:`dnnprobe.probe.fitting.FoldScores` and, when
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
                                                         inner, design.inner, on_fold)
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


