"""PCA of a training fold from the layer's Gram matrix: what the probe fits in every fold.

PCA(k) of rows X_t depends on the data only through their Gram block K_tt = X_t X_t^T:

- the training rows' principal scores are ``u_j * sqrt(lambda_j)``, where (lambda_j, u_j) are the
  top eigenpairs of the double-centred block ``A = H K_tt H`` (what ``PCA.fit_transform`` returns);
- a held-out row x is projected with its centred Gram with the training rows:
  ``(x - mean) . v_j = kc(x, train) . u_j / sqrt(lambda_j)`` (what ``PCA.transform`` returns).

Scores equal scikit-learn's ``PCA(svd_solver='full')`` up to each component's sign, which no
linear decoder with a symmetric penalty can see (tests/test_probe.py checks fold accuracies).

Only the top k eigenpairs are needed. For small folds LAPACK computes them directly. For large
ones (BOLD5000: 4,424 training rows) a dense solver spends seconds per fold reducing the whole
matrix to tridiagonal form, so :class:`GramPCASolver` uses block Lanczos instead, with three
savings that make a fold cost about one matrix product:

1. every fold starts from the leading eigenvectors W of the whole set's centred Gram, which are
   close to each fold's (computed once per layer);
2. the first product A W_t of every fold comes from one product K W shared by all folds, minus a
   correction from the fold's held-out rows (a tenth of the work);
3. the Gram is stored once in float32 with each held-out fold's rows contiguous, so a fold's
   training block is four views of it rather than a 78 MB copy, and products run at float32 speed.

Iterations stop when every one of the k Ritz pairs has residual ``||A u - lambda u|| <=
TOLERANCE * lambda_1``; if that never happens, LAPACK decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.linalg

DENSE_LIMIT = 1200  # up to this many training rows LAPACK's dense solver is fast enough
OVERSAMPLE = 28  # extra directions in each Krylov block: speeds convergence of the k-th pair
TOLERANCE = 1e-4  # residual ||A u - lambda u|| allowed, relative to the largest eigenvalue
MAX_BLOCKS = 20


def centre_gram(gram_tt: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Double-centre a training Gram block in place; return it, its row means and grand mean."""
    row_means = gram_tt.mean(axis=1, dtype=np.float64)
    grand_mean = float(row_means.mean())
    gram_tt -= row_means[:, None].astype(gram_tt.dtype)
    gram_tt -= row_means[None, :].astype(gram_tt.dtype)
    gram_tt += gram_tt.dtype.type(grand_mean)
    return gram_tt, row_means, grand_mean


def uses_iterative_solver(size: int, k: int) -> bool:
    return size > DENSE_LIMIT and 3 * (k + OVERSAMPLE) < size


def top_eigenpairs(
    matrix: np.ndarray, k: int, start: np.ndarray | None = None, tol: float = TOLERANCE
) -> tuple[np.ndarray, np.ndarray]:
    """The k largest eigenvalues (descending, float64) and eigenvectors of a symmetric PSD matrix."""
    size = matrix.shape[0]
    if not uses_iterative_solver(size, k):
        return _dense_top(matrix, k)
    block = k + OVERSAMPLE
    have = 0 if start is None else start.shape[1]
    if have < block:
        extra = np.random.default_rng(0).standard_normal((size, block - have)).astype(matrix.dtype)
        start = extra if start is None else np.hstack([start.astype(matrix.dtype), extra])
    basis, _ = _orthonormal(start.astype(matrix.dtype, copy=False))
    found = block_lanczos(lambda q: matrix @ q, k, basis, matrix @ basis, tol)
    return found if found is not None else _dense_top(matrix, k)


def _dense_top(matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    size = matrix.shape[0]
    values, vectors = scipy.linalg.eigh(matrix, subset_by_index=[size - k, size - 1], driver="evr",
                                        check_finite=False)
    return values[::-1].astype(np.float64), vectors[:, ::-1].astype(np.float64)


def _orthonormal(block: np.ndarray, against: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """An orthonormal basis Q of `block`'s columns (made orthogonal to `against` first), and M.

    Without `against`, Q = block @ M. SVQB (eigendecomposition of the small Gram B^T B, done
    twice) rather than Householder QR: only BLAS-3 products, and directions already in `against`
    (a converged Krylov space) are dropped instead of being amplified into noise.
    """
    transform = None
    for _ in range(2):
        if against is not None:
            block = block - against @ (against.T @ block)
        gram = (block.T @ block).astype(np.float64)
        values, vectors = np.linalg.eigh((gram + gram.T) / 2)
        keep = values > 1e-10 * max(float(values[-1]), 1e-300)
        step = (vectors[:, keep] / np.sqrt(values[keep])).astype(block.dtype)
        block = block @ step
        transform = step if transform is None else transform @ step
    return block, transform


def block_lanczos(
    apply: Callable[[np.ndarray], np.ndarray], k: int, basis: np.ndarray, image: np.ndarray,
    tol: float = TOLERANCE, max_blocks: int = MAX_BLOCKS,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Top-k eigenpairs of the symmetric operator `apply`, from an orthonormal start and its image.

    Grows a block Krylov basis (each new block: the operator applied to the newest one, made
    orthogonal to the rest) and takes Rayleigh-Ritz pairs of the basis until converged.
    """
    projected = basis.T @ image  # V^T A V, grown block by block
    last = basis.shape[1]

    def ritz_pairs():
        """Rayleigh-Ritz pairs of the current basis, if all k are converged; else None."""
        values, vectors = np.linalg.eigh((projected + projected.T).astype(np.float64) / 2)
        order = np.argsort(values)[::-1][:k]
        ritz_values, ritz = values[order], vectors[:, order].astype(basis.dtype)
        approx = basis @ ritz
        residual = np.linalg.norm(image @ ritz - approx * ritz_values.astype(basis.dtype), axis=0)
        if ritz_values[0] > 0 and residual.max() <= tol * ritz_values[0]:
            return ritz_values, approx.astype(np.float64)
        return None

    for blocks in range(max_blocks):
        # A start block alone never holds the answer to this accuracy: check from the second on.
        found = ritz_pairs() if blocks else None
        if found is not None:
            return found
        new, _ = _orthonormal(image[:, -last:], basis)
        if new.shape[1] == 0:  # the Krylov space stopped growing: it is invariant, Ritz pairs exact
            return ritz_pairs()
        last = new.shape[1]
        new_image = apply(new)
        projected = np.block([[projected, basis.T @ new_image], [new.T @ image, new.T @ new_image]])
        basis = np.hstack([basis, new])
        image = np.hstack([image, new_image])
    return None


@dataclass
class GramPCA:
    """PCA(k) of some training rows, held as the eigenpairs of their centred Gram block."""

    vectors: np.ndarray  # (n_train, k) eigenvectors u_j, rows in the order of the training indices
    scale: np.ndarray  # (k,) singular values sqrt(lambda_j)
    usable: np.ndarray  # (k,) False for directions with no variance (k above the fold's rank)
    row_means: np.ndarray  # (n_train,) row means of the uncentred training Gram
    grand_mean: float

    @classmethod
    def from_eigenpairs(cls, values, vectors, row_means, grand_mean) -> "GramPCA":
        scale = np.sqrt(np.clip(values, 0.0, None))
        # Directions with (numerically) no variance score 0 for every row; a decoder gets nothing
        # from them, as from PCA's. They only appear when k exceeds the training fold's rank.
        usable = scale > scale[0] * 1e-7 if scale[0] > 0 else np.zeros(len(scale), dtype=bool)
        return cls(vectors, scale, usable, row_means, grand_mean)

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
    """PCA(k) of any subset of a layer's stimuli, fastest for "all but one held-out fold".

    `test_folds` (the cross-validation's held-out index sets) lets the solver store the Gram with
    each fold's rows contiguous; other subsets still work, through a copy of their block.
    """

    def __init__(self, gram: np.ndarray, k: int, test_folds: list[np.ndarray] | None = None) -> None:
        self.gram = gram
        self.k = k
        n = gram.shape[0]
        smallest_train = n - max((len(t) for t in test_folds), default=0) if test_folds else n
        self.iterative = uses_iterative_solver(smallest_train, k)
        if not self.iterative:
            return
        self.order = np.concatenate(test_folds) if test_folds else np.arange(n)
        if len(self.order) != n or len(np.unique(self.order)) != n:
            raise ValueError("test_folds must partition the stimuli")
        self.fold_bounds: dict[int, tuple[int, int, int]] = {}
        start = 0
        for index, test in enumerate(test_folds or []):
            self.fold_bounds[int(np.min(test))] = (start, start + len(test), index)
            start += len(test)
        # The Gram in fold order, float32: a fold's training block is then four views of it.
        self.kp = np.take(gram[self.order].astype(np.float32), self.order, axis=1)
        # Row sums over each fold's training columns, exactly (float64): they centre the fold and
        # its held-out projections, where float32 sums would lose digits to cancellation.
        held_out = np.zeros((n, max(1, len(test_folds or []))))
        for index, test in enumerate(test_folds or []):
            held_out[test, index] = 1.0
        self.train_row_sums = (gram.sum(axis=1)[:, None] - gram @ held_out)[self.order]
        centred, _, _ = centre_gram(self.kp.copy())
        self.start = top_eigenpairs(centred, k + OVERSAMPLE, tol=1e-3)[1].astype(np.float32)
        del centred
        self.k_start = self.kp @ self.start  # shared by every fold's first product

    def fit(self, train: np.ndarray) -> GramPCA:
        if self.iterative:
            held_out = np.setdiff1d(np.arange(self.gram.shape[0]), train, assume_unique=True)
            bounds = self.fold_bounds.get(int(held_out.min())) if len(held_out) else None
            if bounds and np.array_equal(np.sort(self.order[bounds[0]:bounds[1]]), held_out):
                return self._fit_fold(*bounds)
        return self._fit_copy(train)

    def _fit_copy(self, train: np.ndarray) -> GramPCA:
        """Any subset: copy its block, centre it, solve (dense for small blocks)."""
        source = self.kp if self.iterative else self.gram
        rows = np.argsort(self.order)[train] if self.iterative else train
        centred, row_means, grand_mean = centre_gram(source[np.ix_(rows, rows)])
        start = self.start[rows] if self.iterative else None
        values, vectors = top_eigenpairs(centred, self.k, start)
        return GramPCA.from_eigenpairs(values, vectors, row_means, grand_mean)

    def _fit_fold(self, a: int, b: int, fold: int) -> GramPCA:
        """Training rows = all but the held-out rows a:b (fold `fold`) of the fold-ordered Gram."""
        kp = self.kp
        m = kp.shape[0] - (b - a)
        top, bottom = slice(0, a), slice(b, None)

        def gram_times(q: np.ndarray) -> np.ndarray:  # K_tt @ q, from views of kp
            out = np.empty_like(q)
            out[:a] = kp[top, top] @ q[:a] + kp[top, bottom] @ q[a:]
            out[a:] = kp[bottom, top] @ q[:a] + kp[bottom, bottom] @ q[a:]
            return out

        def apply(q: np.ndarray) -> np.ndarray:  # H K_tt H q
            product = gram_times(q - q.mean(axis=0))
            return product - product.mean(axis=0)

        # First product from the shared K W: K_tt W_t = (K W)_t - K_ts W_s, then centre.
        held_out_cols = slice(a, b)
        cross = np.vstack([kp[top, held_out_cols], kp[bottom, held_out_cols]])  # K_ts, (m, b - a)
        start_t = np.vstack([self.start[top], self.start[bottom]])
        k_start_t = np.vstack([self.k_start[top], self.k_start[bottom]]) - cross @ self.start[held_out_cols]
        row_sums = np.concatenate([self.train_row_sums[top, fold], self.train_row_sums[bottom, fold]])
        product = k_start_t - np.outer(row_sums, start_t.mean(axis=0)).astype(np.float32)
        image = product - product.mean(axis=0)  # = H K_tt H W_t
        basis, transform = _orthonormal(start_t - start_t.mean(axis=0))
        # H W_t spans what W_t does inside the centred space, and A (H W_t) = A W_t: same image.
        found = block_lanczos(apply, self.k, basis, image @ transform)
        row_means = row_sums / m
        if found is None:
            block = np.block([[kp[top, top], kp[top, bottom]], [kp[bottom, top], kp[bottom, bottom]]])
            found = _dense_top(centre_gram(block)[0], self.k)
        values, vectors = found
        # Rows of the fold-ordered Gram back to ascending stimulus index (the order of `train`).
        original = np.concatenate([self.order[top], self.order[bottom]])
        ascending = np.argsort(original)
        return GramPCA.from_eigenpairs(values, vectors[ascending], row_means[ascending], float(row_means.mean()))

    def fold_scores(self, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Principal scores of the training rows and of the held-out rows, as PCA(k) fitted on train."""
        pca = self.fit(train)
        return pca.train_scores(), pca.project(self.gram[np.ix_(test, train)])


def fold_pca_scores(gram: np.ndarray, train: np.ndarray, test: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One fold's principal scores (a convenience over :class:`GramPCASolver`)."""
    return GramPCASolver(gram, k).fold_scores(train, test)
