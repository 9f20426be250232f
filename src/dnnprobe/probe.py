"""The probe: cross-validated PCA + linear decoding of a stimulus attribute from one layer.

It computes exactly what DNNBrain's tutorial computes, ``make_pipeline(PCA(pca),
LogisticRegression())`` scored over ``StratifiedKFold(cv)`` without shuffling, with PCA refit inside
each training fold, but from the layer's Gram matrix K = X X^T instead of X itself:

- the training fold's centred Gram ``Kc = H K_tt H`` has eigenpairs (lambda_j, u_j), and the
  training rows' principal scores are ``u_j * sqrt(lambda_j)`` (what ``PCA.fit_transform`` returns);
- a held-out row x is projected with the centred cross-Gram: ``(x - mean) . v_j = kc(x, train) . u_j
  / sqrt(lambda_j)``.

Scores equal sklearn's ``PCA(svd_solver='full')`` up to each component's sign, which no linear
classifier with a symmetric penalty can see, so fold accuracies match the reference (tested).
Only the top ``pca`` eigenpairs are computed.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import scipy.linalg
from sklearn.base import clone
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, r2_score, roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from dnnprobe.errors import DnnprobeError

REGRESSORS = ("ridge_regression",)


@dataclass(frozen=True)
class ProbeSettings:
    """What a probe run computes; mirrors ``pca``, ``cv`` and ``probe.*`` in params.yaml."""

    n_components: int = 100
    cv: int = 10
    classifier: str = "logistic"
    C: float = 1.0
    standardize: bool = False
    scoring: str = "accuracy"
    permutations: int = 0
    seed: int = 0

    @property
    def is_regression(self) -> bool:
        return self.classifier in REGRESSORS


def make_estimator(settings: ProbeSettings):
    """The decoder fitted on each fold's principal scores (scikit-learn defaults, as DNNBrain)."""
    C = settings.C
    decoder = {
        "logistic": lambda: LogisticRegression(C=C),
        "linear_svm": lambda: LinearSVC(C=C),
        "ridge": lambda: RidgeClassifier(alpha=1.0 / C),
        "lda": lambda: LinearDiscriminantAnalysis(),
        "ridge_regression": lambda: Ridge(alpha=1.0 / C),
    }[settings.classifier]()
    return make_pipeline(StandardScaler(), decoder) if settings.standardize else decoder


def score(scoring: str, y_true: np.ndarray, estimator, z_test: np.ndarray) -> float:
    if scoring == "roc_auc":
        return float(roc_auc_score(y_true, estimator.decision_function(z_test)))
    predicted = estimator.predict(z_test)
    metric = {"accuracy": accuracy_score, "balanced_accuracy": balanced_accuracy_score, "r2": r2_score}[scoring]
    return float(metric(y_true, predicted))


# ---- PCA from a Gram matrix ---------------------------------------------------------------


def centre_gram(gram_tt: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Double-centre a training Gram block in place; return it, its row means and grand mean."""
    row_means = gram_tt.mean(axis=1, dtype=np.float64)
    grand_mean = float(row_means.mean())
    gram_tt -= row_means[:, None].astype(gram_tt.dtype)
    gram_tt -= row_means[None, :].astype(gram_tt.dtype)
    gram_tt += gram_tt.dtype.type(grand_mean)
    return gram_tt, row_means, grand_mean


DENSE_LIMIT = 1200  # up to this many training rows LAPACK's dense solver is fast enough
OVERSAMPLE = 28  # extra directions in each Krylov block: speeds convergence of the k-th pair
TOLERANCE = 1e-4  # residual ||A u - lambda u|| allowed, relative to the largest eigenvalue


def top_eigenpairs(
    matrix: np.ndarray, k: int, start: np.ndarray | None = None, tol: float = TOLERANCE, max_blocks: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """The k largest eigenvalues (descending) and their eigenvectors of a symmetric PSD matrix.

    Small matrices go to LAPACK. Large ones use block Lanczos (a block Krylov subspace with
    Rayleigh-Ritz), started from `start` when given, and stop once each of the k pairs has a
    residual ``||A u - lambda u|| <= tol * lambda_1``; should that never happen, LAPACK decides.
    Block Lanczos needs only BLAS-3 products with the matrix, 2 to 4 per fold from a warm start,
    where LAPACK spends seconds reducing the whole matrix to tridiagonal form.
    """
    size = matrix.shape[0]
    block = k + OVERSAMPLE
    if not uses_iterative_solver(size, k):
        return _dense_top(matrix, k)
    if start is None or start.shape[1] < block:
        rng = np.random.default_rng(0)
        extra = rng.standard_normal((size, block - (0 if start is None else start.shape[1])))
        start = extra if start is None else np.hstack([start, extra])
    found = _block_lanczos(matrix, k, start.astype(matrix.dtype, copy=False), tol, max_blocks)
    return found if found is not None else _dense_top(matrix, k)


def uses_iterative_solver(size: int, k: int) -> bool:
    return size > DENSE_LIMIT and 3 * (k + OVERSAMPLE) < size


def _dense_top(matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    size = matrix.shape[0]
    values, vectors = scipy.linalg.eigh(
        matrix, subset_by_index=[size - k, size - 1], driver="evr", check_finite=False
    )
    return values[::-1].astype(np.float64), vectors[:, ::-1].astype(np.float64)


def _orthonormal(block: np.ndarray, against: np.ndarray | None = None) -> np.ndarray:
    """Orthonormal basis of `block`'s columns, first made orthogonal to `against`.

    SVQB (an eigendecomposition of the small Gram B^T B, done twice) instead of Householder QR:
    only BLAS-3 products, and directions already in `against` (a converged Krylov space) are
    dropped rather than amplified into noise.
    """
    for _ in range(2):
        if against is not None:
            block = block - against @ (against.T @ block)
        gram = (block.T @ block).astype(np.float64)
        values, vectors = np.linalg.eigh((gram + gram.T) / 2)
        keep = values > 1e-10 * max(float(values[-1]), 1e-300)
        block = block @ (vectors[:, keep] / np.sqrt(values[keep])).astype(block.dtype)
    return block


def _block_lanczos(A: np.ndarray, k: int, start: np.ndarray, tol: float, max_blocks: int):
    basis = _orthonormal(start)
    image = A @ basis
    projected = basis.T @ image  # Rayleigh quotient matrix V^T A V, grown block by block
    last = basis.shape[1]  # width of the newest block
    for _ in range(max_blocks):
        values, vectors = np.linalg.eigh((projected + projected.T).astype(np.float64) / 2)
        order = np.argsort(values)[::-1][:k]
        ritz_values, ritz = values[order], vectors[:, order].astype(A.dtype)
        approx = basis @ ritz
        residual = np.linalg.norm(image @ ritz - approx * ritz_values.astype(A.dtype), axis=0)
        if ritz_values[0] > 0 and residual.max() <= tol * ritz_values[0]:
            return ritz_values, approx.astype(np.float64)
        new = _orthonormal(image[:, -last:], basis)  # next Krylov block: A times the newest one
        if new.shape[1] == 0:
            return None
        last = new.shape[1]
        new_image = A @ new
        projected = np.block([[projected, basis.T @ new_image], [new.T @ image, new.T @ new_image]])
        basis = np.hstack([basis, new])
        image = np.hstack([image, new_image])
    return None


@dataclass
class GramPCA:
    """PCA(k) of some training rows, held as the eigenpairs of their centred Gram block."""

    vectors: np.ndarray  # (n_train, k) eigenvectors u_j
    scale: np.ndarray  # (k,) singular values sqrt(lambda_j)
    usable: np.ndarray  # (k,) False for directions with no variance (k above the fold's rank)
    row_means: np.ndarray  # (n_train,) row means of the uncentred training Gram
    grand_mean: float

    def train_scores(self) -> np.ndarray:
        """What ``PCA.fit_transform`` returns for the training rows (up to each component's sign)."""
        return np.where(self.usable, self.vectors * self.scale, 0.0)

    def project(self, cross: np.ndarray) -> np.ndarray:
        """What ``PCA.transform`` returns for rows whose Gram with the training rows is `cross`."""
        cross = cross - cross.mean(axis=1)[:, None] - self.row_means[None, :] + self.grand_mean
        scores = np.zeros((len(cross), len(self.scale)))
        scores[:, self.usable] = (cross @ self.vectors[:, self.usable]) / self.scale[self.usable]
        return scores


class GramPCASolver:
    """PCA(k) of any subset of a layer's stimuli, from the layer's Gram matrix.

    For large folds it keeps a float32 copy of the Gram for the iterative eigensolver (products
    twice as fast; float32 products were as accurate as float64 for fold accuracies) and the whole
    set's leading eigenvectors as the start for every fold. Held-out projections stay float64.
    """

    def __init__(self, gram: np.ndarray, k: int) -> None:
        self.gram = gram
        self.k = k
        self.iterative = uses_iterative_solver(int(gram.shape[0] * 0.8), k)
        self.solver_gram = gram.astype(np.float32) if self.iterative else gram
        self.start = None
        if self.iterative:
            centred, _, _ = centre_gram(self.solver_gram.copy())
            self.start = top_eigenpairs(centred, k + OVERSAMPLE, tol=1e-2)[1].astype(np.float32)

    def fit(self, train: np.ndarray) -> GramPCA:
        centred, row_means, grand_mean = centre_gram(self.solver_gram[np.ix_(train, train)])
        start = None if self.start is None else self.start[train]
        values, vectors = top_eigenpairs(centred, self.k, start)
        scale = np.sqrt(np.clip(values, 0.0, None))
        # Directions with (numerically) no variance score 0 for every row; a decoder gets nothing from
        # them, as from PCA's. They only appear when k exceeds the training fold's rank.
        usable = scale > scale[0] * 1e-7 if scale[0] > 0 else np.zeros(self.k, dtype=bool)
        return GramPCA(vectors, scale, usable, row_means, grand_mean)

    def fold_scores(self, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Principal scores of the training rows and of the held-out rows, as PCA(k) fitted on train."""
        pca = self.fit(train)
        return pca.train_scores(), pca.project(self.gram[np.ix_(test, train)])


def fold_pca_scores(gram: np.ndarray, train: np.ndarray, test: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One fold's principal scores (a convenience over :class:`GramPCASolver`)."""
    return GramPCASolver(gram, k).fold_scores(train, test)


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


def check_targets(
    y: np.ndarray, settings: ProbeSettings, n_units: int | None = None, label: str = "label",
    layer: str | None = None, table: str | None = None,
) -> None:
    """Reject settings that cannot give a meaningful cross-validation, before any work.

    `layer` and `table` only make the messages name the layer and the stimulus table at fault.
    """
    n = len(y)
    column = f"{table}: column {label!r}" if table else f"column {label!r}"
    if settings.cv > n:
        raise DnnprobeError(f"cv={settings.cv} is larger than the number of stimuli ({n})")
    if settings.scoring == "r2" and not settings.is_regression:
        raise DnnprobeError("probe.scoring=r2 needs probe.classifier=ridge_regression")
    if settings.is_regression and settings.scoring != "r2":
        raise DnnprobeError("probe.classifier=ridge_regression is scored by r2: set probe.scoring=r2")
    if not settings.is_regression:
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            raise DnnprobeError(f"{column} has a single class ({classes[0]}); nothing to decode")
        if counts.min() < settings.cv:
            small = classes[np.argmin(counts)]
            raise DnnprobeError(
                f"{column}: class {small} has {counts.min()} stimuli, fewer than cv={settings.cv} folds"
            )
        if settings.scoring == "roc_auc" and len(classes) != 2:
            raise DnnprobeError(f"probe.scoring=roc_auc needs two classes; {column} has {len(classes)}")
    smallest_train = n - int(np.ceil(n / settings.cv))
    if settings.n_components > smallest_train:
        raise DnnprobeError(
            f"pca={settings.n_components} is larger than the smallest training fold ({smallest_train} stimuli)"
        )
    if n_units is not None and settings.n_components > n_units:
        what = f"layer {layer}'s" if layer else "the layer's"
        raise DnnprobeError(f"pca={settings.n_components} is larger than {what} {n_units} units")


def folds(y: np.ndarray, settings: ProbeSettings) -> list[tuple[np.ndarray, np.ndarray]]:
    """DNNBrain's split: StratifiedKFold(cv) without shuffling (KFold for a continuous target)."""
    splitter = KFold(settings.cv) if settings.is_regression else StratifiedKFold(settings.cv)
    return list(splitter.split(np.zeros((len(y), 1)), y))


def permuted_targets(y: np.ndarray, permutations: int, seed: int) -> Iterator[np.ndarray]:
    """The shuffles scikit-learn's permutation_test_score draws for random_state=seed."""
    rng = np.random.RandomState(seed)
    for _ in range(permutations):
        yield y[rng.permutation(len(y))]


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
    null = None
    if settings.permutations:
        null = np.empty(settings.permutations)
        for index, shuffled in enumerate(permuted_targets(y, settings.permutations, settings.seed)):
            fold_values = []
            for (z_train, z_test), (train, test) in zip(fold_scores, splits):
                fitted = _fit(estimator, z_train, shuffled[train], warned)
                fold_values.append(score(settings.scoring, shuffled[test], fitted, z_test))
            null[index] = np.mean(fold_values)
    return LayerResult(
        score=np.asarray(scores),
        conf_m=np.asarray(matrices) if classes is not None else None,
        null=null,
        classes=classes,
        convergence_warnings=warned[0],
    )


def cross_validate_gram(gram: np.ndarray, y: np.ndarray, settings: ProbeSettings) -> LayerResult:
    """DNNBrain's cross-validated PCA + decoder for one layer, from its Gram matrix."""
    splits = folds(y, settings)
    solver = GramPCASolver(gram, settings.n_components)
    fold_scores = [solver.fold_scores(train, test) for train, test in splits]
    return cross_validate_scores(fold_scores, splits, y, settings)


def reference_pipeline(settings: ProbeSettings, svd_solver: str = "full"):
    """The tutorial's pipeline on raw activations, for tests and benchmarks."""
    from sklearn.decomposition import PCA

    return make_pipeline(PCA(settings.n_components, svd_solver=svd_solver), make_estimator(settings))


# ---- outputs ------------------------------------------------------------------------------


def save_layer_result(result: LayerResult, folder: Path) -> None:
    """DNNBrain's per-layer files: score.npy (cv,), conf_m.npy (cv, n_classes, n_classes)."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "score.npy", result.score)
    if result.conf_m is not None:
        np.save(folder / "conf_m.npy", result.conf_m)
    if result.null is not None:
        np.save(folder / "null.npy", result.null)


def load_scores(folder: str | os.PathLike, layer: str) -> np.ndarray:
    path = Path(folder) / layer / "score.npy"
    if not path.is_file():
        raise DnnprobeError(f"{path}: no probe scores for layer {layer} (run the probe stage)")
    return np.load(path, allow_pickle=False)


ProgressCallback = Callable[[str, LayerResult], None]


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
            pca = GramPCASolver(grams.gram(layer), settings.n_components).fit(everyone)
            decoder = make_estimator(settings).fit(pca.train_scores(), y)
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
                mean=np.concatenate(means),
                components=np.concatenate(components).T,
                explained_variance=pca.scale ** 2 / (len(y) - 1),
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
