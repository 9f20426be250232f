"""A layer's d x d second moments about a shift: what the gram stage stores for the covariance route.

For layers with fewer units d than stimuli the gram stage keeps, instead of the n x n Gram matrix::

    M = sum_i (x_i - c)(x_i - c)^T    (d, d)        s = sum_i (x_i - c)    (d,)

about a shift c (the mean of the first rows read: products of shifted rows lose no digits to a large
common mean). The probe's fold PCA from these moments is :mod:`dnnprobe.probe.covpca`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dnnprobe.compute.arrays import NUMPY, NumpyOps

BAND_BYTES = 64 << 20  # float32 product temporaries: (band, d) at a time


@dataclass
class LayerMoments:
    """What the gram stage stores for the covariance route (see the module docstring)."""

    moments: object  # (d, d) M: an array, or an h5py dataset (read in row slabs)
    sums: np.ndarray  # (d,) float64, s
    shift: np.ndarray  # (d,) float32, c
    n_stim: int

    @property
    def n_units(self) -> int:
        return len(self.sums)


def add_outer_products(accumulator, rows, ops: NumpyOps = NUMPY, sign: float = 1.0) -> None:
    """accumulator += sign * rows^T rows, in place, for (r, d) float32 `rows` into a (d, d) float64 array.

    Products run in float32 (BLAS/cuBLAS speed) one band of `accumulator`'s rows at a time, so the
    only temporary is a (band, d) float32 block, and are added in float64.
    """
    d = accumulator.shape[0]
    band = max(1, BAND_BYTES // max(1, 4 * d))
    for lo in range(0, d, band):
        product = rows[:, lo:lo + band].T @ rows
        if sign > 0:
            accumulator[lo:lo + band] += product
        else:
            accumulator[lo:lo + band] -= product
