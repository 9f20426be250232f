"""PCA of a training fold from the layer's d x d second moments: the probe's route for layers with fewer
units than stimuli (fc1, fc2 at BOLD5000 scale; conv3-conv5 too at THINGS and NSD scale).

The gram stage stores, per such layer, sums about a shift c (the mean of the first rows it read:
products of shifted rows lose no digits to a large common mean, as ReLU layers have)::

    M = sum_i (x_i - c)(x_i - c)^T    (d, d)        s = sum_i (x_i - c)    (d,)

A training fold (every row but the held-out rows T, n_t of them) then has, exactly,

    mean   m_t = c + (s - s_T) / n_t
    scatter C_t = (M - M_T) - n_t (m_t - c)(m_t - c)^T

where M_T and s_T are the held-out rows' own sums, read from the activation file (a tenth of it per
fold). PCA(k) of the training rows is the top k eigenvectors V of C_t (scikit-learn's
``PCA(svd_solver='full')`` computes the same directions as right singular vectors of the centred
rows), and its scores are ``(x - m_t) V`` for training rows (``fit_transform``) and held-out rows
(``transform``) alike, up to each component's sign. The scores need the rows themselves: once every
fold's V is known, one pass over the layer computes ``(X - c) [V_1 ... V_cv]`` in row blocks, so the
activations are read about twice in all and memory does not grow with n.

The eigenvectors come from the same block Lanczos as the Gram route (:mod:`dnnprobe.probe.foldpca`),
started from the whole set's leading directions, which are close to every fold's; the scatter is
assembled in float64 (the subtraction of the held-out rows is where digits could be lost) and
iterated on in float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from dnnprobe.compute.arrays import NUMPY, NumpyOps
from dnnprobe.gram.moments import BAND_BYTES, LayerMoments, add_outer_products
from dnnprobe.probe.foldpca import OVERSAMPLE, has_variance, top_eigenpairs_of, uses_iterative_solver


@dataclass
class CovariancePCA:
    """PCA(k) of one training fold: its components and mean, in unit space."""

    components: np.ndarray  # (d, k) float64 eigenvectors V of the fold's scatter; zero where not usable
    values: np.ndarray  # (k,) float64 eigenvalues of the scatter (sum of squares along each component)
    usable: np.ndarray  # (k,) False for directions with no variance (k above the fold's rank)
    shifted_mean: np.ndarray  # (d,) float64, m_t - c

    @classmethod
    def from_eigenpairs(cls, values, vectors, shifted_mean) -> "CovariancePCA":
        usable = has_variance(values)  # float32 rounding is no variance (dnnprobe.probe.foldpca.NO_VARIANCE)
        return cls(np.where(usable, vectors, 0.0), values, usable, shifted_mean)

    @property
    def offset(self) -> np.ndarray:
        """(k,) (m_t - c) V: subtracted from (x - c) V to give the scores (x - m_t) V."""
        return self.shifted_mean @ self.components


class CovariancePCASolver:
    """PCA(k) of training folds of a layer from its stored second moments; fold rows are passed in.

    Holds the (d, d) moments in float64 on `ops`' device (8 d^2 bytes), plus per fold one float64 and
    one float32 d x d scatter (12 d^2 bytes).
    """

    def __init__(self, layer: LayerMoments, k: int, ops: NumpyOps = NUMPY) -> None:
        self.k, self.ops = k, ops
        self.n, self.d = layer.n_stim, layer.n_units
        self.sums = np.asarray(layer.sums, dtype=np.float64)
        self.shift = np.asarray(layer.shift, dtype=np.float32)
        self.shift_dev = ops.asarray(self.shift, np.float32)
        self.moments = ops.zeros((self.d, self.d), np.float64)
        step = max(1, BAND_BYTES // max(1, 8 * self.d))
        for lo in range(0, self.d, step):  # row slabs: no second full copy on the host
            self.moments[lo:lo + step] = ops.asarray(np.asarray(layer.moments[lo:lo + step]), np.float64)
        self.iterative = uses_iterative_solver(self.d, k)
        self.start = None
        if self.iterative:  # every fold's leading directions are close to the whole set's: start there
            self.start = ops.asarray(self.whole_set(k + OVERSAMPLE, tol=1e-3)[1], np.float32)

    def _whole_scatter_apply(self, q):
        """C q for the whole set's scatter C = M - n (s/n)(s/n)^T, never formed."""
        ops = self.ops
        mean = ops.like(self.sums / self.n, self.moments)
        q64 = ops.cast(q, self.moments.dtype)
        product = self.moments @ q64 - self.n * mean[:, None] * (mean[None, :] @ q64)
        return ops.cast(product, q.dtype)

    def whole_set(self, k: int, tol: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k eigenpairs of the whole set's scatter (start vectors; the refit on all stimuli)."""
        ops = self.ops
        kwargs = {} if tol is None else {"tol": tol}

        def dense():
            scatter = self.moments.clone() if hasattr(self.moments, "clone") else self.moments.copy()
            ops.rank1_update_(scatter, self.sums / self.n, -self.n)
            return ops.dense_top(scatter, k)

        return top_eigenpairs_of(self._whole_scatter_apply, self.d, k, ops.float64, None, ops=ops, dense=dense, **kwargs)

    def fit_all(self) -> CovariancePCA:
        """PCA(k) of every stimulus (what a refit on all stimuli uses)."""
        values, vectors = self.whole_set(self.k)
        return CovariancePCA.from_eigenpairs(values, vectors, self.sums / self.n)

    def fit_fold(self, held_out_rows: np.ndarray) -> CovariancePCA:
        """PCA(k) of all rows but `held_out_rows` ((n_t, d) float32 activations of the held-out stimuli)."""
        ops = self.ops
        rows = ops.asarray(held_out_rows, np.float32) - self.shift_dev
        n_train = self.n - rows.shape[0]
        shifted_mean = (self.sums - ops.sum64(rows, 0)) / n_train
        scatter = self.moments.clone() if hasattr(self.moments, "clone") else self.moments.copy()
        add_outer_products(scatter, rows, ops, sign=-1.0)
        del rows
        ops.rank1_update_(scatter, shifted_mean, -n_train)
        if self.iterative:
            scatter32 = ops.cast(scatter, ops.float32)
            del scatter
            values, vectors = top_eigenpairs_of(lambda q: scatter32 @ q, self.d, self.k, ops.float32, self.start,
                                                ops=ops, dense=lambda: ops.dense_top(ops.cast(scatter32, ops.float64), self.k))
        else:
            values, vectors = ops.dense_top(scatter, self.k)
        return CovariancePCA.from_eigenpairs(values, vectors, shifted_mean)

    def project(self, pcas: list[CovariancePCA], row_blocks: Iterable[tuple[int, np.ndarray]]) -> list[np.ndarray]:
        """Scores ``(x - m_t) V`` of every stimulus under each PCA in `pcas`: one (n, k) float64 array each.

        `row_blocks` yields ``(first_row, (rows, d) float32 block)`` covering all n rows once
        (:meth:`dnnprobe.extract.actfile.ActivationFile.row_blocks`); all PCAs are applied in the same pass.
        """
        ops = self.ops
        components = ops.asarray(np.hstack([pca.components for pca in pcas]), np.float32)  # (d, len(pcas) k)
        # (x - c) V is close to the scores (c is near every fold's mean): float32 holds it to 1e-7.
        projected = np.empty((self.n, components.shape[1]), dtype=np.float32)
        for lo, block in row_blocks:
            shifted = ops.asarray(block, np.float32) - self.shift_dev
            projected[lo:lo + len(block)] = ops.numpy(shifted @ components)
        k = self.k
        return [projected[:, i * k:(i + 1) * k].astype(np.float64) - pca.offset for i, pca in enumerate(pcas)]


def covariance_fold_scores(
    solver: CovariancePCASolver,
    splits: list[tuple[np.ndarray, np.ndarray]],
    read_rows: Callable[[np.ndarray], np.ndarray],
    row_blocks: Callable[[], Iterator[tuple[int, np.ndarray]]],
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every fold's (training scores, held-out scores), as PCA(k) refitted inside each training fold
    (`splits`: (train, test) pairs; test need not be all the rest of the stimuli).

    `read_rows(indices)` returns those stimuli's (len, d) float32 activations; `row_blocks()` iterates
    over all of them in row blocks.
    """
    # Held out: every stimulus outside the training set (the test fold; for an inner fold also the outer
    # test fold). Row order does not matter to sums.
    everyone = np.arange(solver.n)
    pcas = [solver.fit_fold(read_rows(np.setdiff1d(everyone, train, assume_unique=True))) for train, _ in splits]
    scores = solver.project(pcas, row_blocks())
    return [(z[train], z[test]) for z, (train, test) in zip(scores, splits)]
