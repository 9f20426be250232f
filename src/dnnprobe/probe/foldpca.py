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
3. the Gram is held once in float32 with each held-out fold's rows contiguous, so a fold's
   training block is four views of it rather than a 78 MB copy, and products run at float32 speed.
   It is filled from the stored matrix in row slabs, so the solver holds one n x n float32 matrix
   (4 n^2 bytes) and no float64 copy.

Iterations stop when every one of the k Ritz pairs has residual ``||A u - lambda u|| <=
TOLERANCE * lambda_1``; if that never happens, LAPACK decides.

All linear algebra goes through an ``ops`` object (:mod:`dnnprobe.compute.arrays`): numpy by default, torch
on a GPU with ``probe.device``; the algorithm is the same code for both (tests compare them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.linalg

from dnnprobe.compute.arrays import NUMPY, NumpyOps

DENSE_LIMIT = 1200  # up to this many training rows LAPACK's dense solver is fast enough
OVERSAMPLE = 28  # extra directions in each Krylov block: speeds convergence of the k-th pair
TOLERANCE = 1e-4  # residual ||A u - lambda u|| allowed, relative to the largest eigenvalue
MAX_BLOCKS = 20
# Eigenvalues below NO_VARIANCE x the largest are directions with no variance: activations are float32,
# and so are the products of the Gram and covariance matrices, whose rounding leaves eigenvalues of
# about 0.1 float32 epsilon (relative) in every direction the data do not span (k above a fold's rank;
# tests/test_probe.py). Kept, they would be noise that probe.standardize and lda scale up to unit variance.
NO_VARIANCE = 16 * float(np.finfo(np.float32).eps)
SLAB_BYTES = 64 << 20  # rows of the stored matrix read at a time when filling the fold-ordered copy


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
    if not uses_iterative_solver(matrix.shape[0], k):
        return _dense_top(matrix, k)
    return top_eigenpairs_of(lambda q: matrix @ q, matrix.shape[0], k, matrix.dtype, start, tol,
                             dense=lambda: _dense_top(matrix, k))


def top_eigenpairs_of(
    apply: Callable, size: int, k: int, dtype, start=None, tol: float = TOLERANCE, ops: NumpyOps = NUMPY,
    dense: Callable | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k eigenpairs (numpy float64, descending) of the symmetric PSD operator `apply` on `size` rows.

    `apply(q)` multiplies an (size, b) array of `ops`' kind; `start` (size, <= k + OVERSAMPLE), if
    given, seeds the Krylov basis. Small operators (and any block Lanczos that does not converge)
    are solved densely: by `dense()` when given, else from ``apply(I)``.
    """
    if dense is None:
        dense = lambda: ops.dense_top(apply(ops.eye(size, dtype)), k)  # noqa: E731
    if not uses_iterative_solver(size, k):
        return dense()
    block = k + OVERSAMPLE
    have = 0 if start is None else start.shape[1]
    if have < block:
        extra = ops.asarray(np.random.default_rng(0).standard_normal((size, block - have)), dtype)
        start = extra if start is None else ops.cat([ops.cast(start, dtype), extra], 1)
    basis, _ = _orthonormal(ops.cast(start, dtype), ops=ops)
    found = block_lanczos(apply, k, basis, apply(basis), tol, ops=ops)
    return found if found is not None else dense()


def _dense_top(matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    return NUMPY.dense_top(matrix, k)


_single_thread = None


def _small_eigh(matrix: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eigenpairs (ascending) of a small symmetric float64 matrix (a Krylov projection, at most a few
    hundred square): all of them, or the top k (LAPACK's MRRR on that subset only).

    Runs BLAS on one thread: at this size threads gain nothing, and on a shared machine their
    spin-waits made each call 5-7x slower (measured: 5.4 s instead of 0.8 s for 768 x 768).
    """
    global _single_thread
    if _single_thread is None:
        from threadpoolctl import ThreadpoolController  # installed with scikit-learn

        _single_thread = ThreadpoolController()
    with _single_thread.limit(limits=1):
        if k is None or k >= len(matrix):
            return np.linalg.eigh(matrix)
        return scipy.linalg.eigh(matrix, subset_by_index=[len(matrix) - k, len(matrix) - 1], driver="evr",
                                 check_finite=False)


def _orthonormal(block, against=None, ops: NumpyOps = NUMPY):
    """An orthonormal basis Q of `block`'s columns (made orthogonal to `against` first), and M.

    Without `against`, Q = block @ M. SVQB (eigendecomposition of the small Gram B^T B, done
    twice) rather than Householder QR: only BLAS-3 products, and directions already in `against`
    (a converged Krylov space) are dropped instead of being amplified into noise.
    """
    transform = None
    for _ in range(2):
        if against is not None:
            block = block - against @ (against.T @ block)
        gram = ops.numpy(block.T @ block).astype(np.float64)
        values, vectors = _small_eigh((gram + gram.T) / 2)
        keep = values > 1e-10 * max(float(values[-1]), 1e-300)
        step = ops.like(vectors[:, keep] / np.sqrt(values[keep]), block)
        block = block @ step
        transform = step if transform is None else transform @ step
    return block, transform


def block_lanczos(
    apply: Callable, k: int, basis, image, tol: float = TOLERANCE, max_blocks: int = MAX_BLOCKS,
    ops: NumpyOps = NUMPY,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Top-k eigenpairs of the symmetric operator `apply`, from an orthonormal start and its image.

    Grows a block Krylov basis (each new block: the operator applied to the newest one, made
    orthogonal to the rest) and takes Rayleigh-Ritz pairs of the basis until converged. The
    projected matrix V^T A V is small and kept on the host in float64. Returns numpy float64.
    """
    projected = ops.numpy(basis.T @ image).astype(np.float64)  # V^T A V, grown block by block
    last = basis.shape[1]

    def ritz_pairs():
        """Rayleigh-Ritz pairs of the current basis, if all k are converged; else None."""
        values, vectors = _small_eigh((projected + projected.T) / 2, k)
        order = np.argsort(values)[::-1][:k]
        ritz_values, ritz = values[order], ops.like(vectors[:, order], basis)
        approx = basis @ ritz
        residual = ops.colnorm(image @ ritz - approx * ops.like(ritz_values, basis))
        if ritz_values[0] > 0 and residual.max() <= tol * ritz_values[0]:
            return ritz_values, ops.numpy(approx).astype(np.float64)
        return None

    for blocks in range(max_blocks):
        # A start block alone never holds the answer to this accuracy: check from the second on.
        found = ritz_pairs() if blocks else None
        if found is not None:
            return found
        new, _ = _orthonormal(image[:, -last:], basis, ops=ops)
        if new.shape[1] == 0:  # the Krylov space stopped growing: it is invariant, Ritz pairs exact
            return ritz_pairs()
        last = new.shape[1]
        new_image = apply(new)
        top = np.hstack([projected, ops.numpy(basis.T @ new_image).astype(np.float64)])
        bottom = np.hstack([ops.numpy(new.T @ image), ops.numpy(new.T @ new_image)]).astype(np.float64)
        projected = np.vstack([top, bottom])
        basis = ops.cat([basis, new], 1)
        image = ops.cat([image, new_image], 1)
    return None


def has_variance(values: np.ndarray) -> np.ndarray:
    """(k,) bool: which of the eigenvalues `values` (largest first) stand above float32 rounding
    (:data:`NO_VARIANCE`); False for all when the largest is not positive."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values) or values[0] <= 0:
        return np.zeros(len(values), dtype=bool)
    return values > values[0] * NO_VARIANCE


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
        return cls(vectors, scale, has_variance(values), row_means, grand_mean)

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

    `gram` is the (n, n) Gram matrix, as an array of any float dtype or anything sliced by rows like
    one (an h5py dataset: it is then read in slabs, never whole). The solver keeps one copy with
    each held-out fold's rows contiguous (`test_folds`: the cross-validation's held-out index sets),
    in float32 for large folds (float64 for small ones, solved densely), on `ops`' device. Other
    subsets still work, through a copy of their block.
    """

    def __init__(self, gram, k: int, test_folds: list[np.ndarray] | None = None, ops: NumpyOps = NUMPY) -> None:
        self.k = k
        self.ops = ops
        n = gram.shape[0]
        self.n = n
        test_folds = list(test_folds or [])
        smallest_train = n - max((len(t) for t in test_folds), default=0)
        self.iterative = uses_iterative_solver(smallest_train, k)
        self.order = np.concatenate(test_folds) if test_folds else np.arange(n)
        if len(self.order) != n or len(np.unique(self.order)) != n:
            raise ValueError("test_folds must partition the stimuli")
        self.position = np.argsort(self.order)  # position[i]: row of stimulus i in the fold-ordered copy
        self.fold_bounds: dict[int, tuple[int, int, int]] = {}
        start = 0
        for index, test in enumerate(test_folds):
            self.fold_bounds[int(np.min(test))] = (start, start + len(test), index)
            start += len(test)
        dtype = np.float32 if self.iterative else np.float64
        # Row sums over each fold's training columns, in float64 from the stored values: they centre
        # the fold and its held-out projections, where float32 sums would lose digits to cancellation.
        # The Gram in fold order, filled slab by slab where it lives (GPU memory with a CUDA device): no
        # n x n copy on the host besides it.
        self.kp = ops.zeros((n, n), dtype)
        held_out_sums = np.zeros((n, max(1, len(test_folds))))
        total_sums = np.zeros(n)
        step = max(1, SLAB_BYTES // max(1, n * 8))
        for lo in range(0, n, step):
            rows = np.asarray(gram[lo:lo + step])
            total_sums[lo:lo + step] = rows.sum(axis=1, dtype=np.float64)
            for index, test in enumerate(test_folds):
                held_out_sums[lo:lo + step, index] = rows[:, test].sum(axis=1, dtype=np.float64)
            ops.set_rows_(self.kp, self.position[lo:lo + step], rows[:, self.order].astype(dtype, copy=False))
        self.total_row_sums = total_sums[self.order]
        self.train_row_sums = (total_sums[:, None] - held_out_sums)[self.order]
        if not self.iterative:
            return
        # Start vectors: the whole set's leading principal directions (H K H, never formed).
        self.start = ops.like(top_eigenpairs_of(self._centred_all, n, k + OVERSAMPLE, self.kp.dtype, tol=1e-3,
                                                ops=ops)[1], self.kp)
        self.k_start = self.kp @ self.start  # shared by every fold's first product

    def _centred_all(self, q):
        """H K H q over all stimuli (fold order), without forming the centred matrix."""
        product = self.kp @ (q - q.mean(0))
        return product - product.mean(0)

    def fit(self, train: np.ndarray) -> GramPCA:
        if self.iterative:
            held_out = np.setdiff1d(np.arange(self.n), train, assume_unique=True)
            bounds = self.fold_bounds.get(int(held_out.min())) if len(held_out) else None
            if bounds and np.array_equal(np.sort(self.order[bounds[0]:bounds[1]]), held_out):
                return self._fit_fold(*bounds)
        return self._fit_copy(train)

    def _fit_copy(self, train: np.ndarray) -> GramPCA:
        """Any subset: copy its block, solve its centred form (dense for small blocks)."""
        ops = self.ops
        rows = self.position[train]
        block = ops.take(self.kp, rows, rows)
        row_means = ops.sum64(block, 1) / len(train)
        grand_mean = float(row_means.mean())
        means = ops.like(row_means, block)

        def apply(q):  # H B H q = B q - mean corrections, from the uncentred block
            product = block @ (q - q.mean(0))
            return product - product.mean(0)

        def dense():
            centred = block - means[:, None] - means[None, :] + grand_mean
            return ops.dense_top(centred, self.k)

        start = self.start[rows] if self.iterative else None
        values, vectors = top_eigenpairs_of(apply, len(train), self.k, block.dtype, start, ops=ops, dense=dense)
        return GramPCA.from_eigenpairs(values, vectors, row_means, grand_mean)

    def _fit_fold(self, a: int, b: int, fold: int) -> GramPCA:
        """Training rows = all but the held-out rows a:b (fold `fold`) of the fold-ordered Gram."""
        ops, kp = self.ops, self.kp
        m = kp.shape[0] - (b - a)
        top, bottom = slice(0, a), slice(b, None)

        def gram_times(q):  # K_tt @ q, from views of kp
            return ops.cat([kp[top, top] @ q[:a] + kp[top, bottom] @ q[a:],
                            kp[bottom, top] @ q[:a] + kp[bottom, bottom] @ q[a:]], 0)

        def apply(q):  # H K_tt H q
            product = gram_times(q - q.mean(0))
            return product - product.mean(0)

        # First product from the shared K W: K_tt W_t = (K W)_t - K_ts W_s, then centre.
        held_out_cols = slice(a, b)
        cross = ops.cat([kp[top, held_out_cols], kp[bottom, held_out_cols]], 0)  # K_ts, (m, b - a)
        start_t = ops.cat([self.start[top], self.start[bottom]], 0)
        k_start_t = ops.cat([self.k_start[top], self.k_start[bottom]], 0) - cross @ self.start[held_out_cols]
        del cross
        row_sums = np.concatenate([self.train_row_sums[top, fold], self.train_row_sums[bottom, fold]])
        product = k_start_t - ops.like(np.outer(row_sums, ops.numpy(start_t.mean(0))), k_start_t)
        image = product - product.mean(0)  # = H K_tt H W_t
        basis, transform = _orthonormal(start_t - start_t.mean(0), ops=ops)
        # H W_t spans what W_t does inside the centred space, and A (H W_t) = A W_t: same image.
        found = block_lanczos(apply, self.k, basis, image @ transform, ops=ops)
        row_means = row_sums / m
        if found is None:
            train_rows = np.r_[0:a, b:self.n]
            block = ops.take(kp, train_rows, train_rows)
            means = ops.like(row_means, block)
            found = ops.dense_top(block - means[:, None] - means[None, :] + float(row_means.mean()), self.k)
        values, vectors = found
        # Rows of the fold-ordered Gram back to ascending stimulus index (the order of `train`).
        original = np.concatenate([self.order[top], self.order[bottom]])
        ascending = np.argsort(original)
        return GramPCA.from_eigenpairs(values, vectors[ascending], row_means[ascending], float(row_means.mean()))

    def cross_gram(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The Gram block K[rows, cols] (stimulus indices), float64 on the host."""
        return self.ops.numpy(self.ops.take(self.kp, self.position[rows], self.position[cols])).astype(np.float64)

    def fold_scores(self, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Principal scores of the training rows and of the held-out rows, as PCA(k) fitted on train."""
        pca = self.fit(train)
        return pca.train_scores(), pca.project(self.cross_gram(test, train))


def fold_pca_scores(gram: np.ndarray, train: np.ndarray, test: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One fold's principal scores (a convenience over :class:`GramPCASolver`)."""
    return GramPCASolver(gram, k).fold_scores(train, test)
