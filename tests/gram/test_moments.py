"""The covariance route's d x d moments: float32 products added band by band into a float64 accumulator."""

from __future__ import annotations

import numpy as np
import pytest

from dnnprobe.gram.moments import LayerMoments, add_outer_products


@pytest.mark.parametrize("band_bytes", [64 << 20, 4 * 7 * 3])  # one band; bands of 3 rows, the last one short
def test_outer_products_are_added_and_subtracted_band_by_band(monkeypatch, band_bytes):
    monkeypatch.setattr("dnnprobe.gram.moments.BAND_BYTES", band_bytes)
    rows = np.random.default_rng(0).standard_normal((11, 7)).astype(np.float32)
    accumulator = np.ones((7, 7))
    add_outer_products(accumulator, rows)
    expected = 1.0 + rows.astype(np.float64).T @ rows.astype(np.float64)
    np.testing.assert_allclose(accumulator, expected, rtol=1e-5)
    add_outer_products(accumulator, rows[:4], sign=-1.0)
    np.testing.assert_allclose(accumulator, expected - rows[:4].astype(np.float64).T @ rows[:4], rtol=1e-5, atol=1e-5)
    assert accumulator.dtype == np.float64


def test_layer_moments_counts_units_from_the_column_sums():
    assert LayerMoments(np.zeros((5, 5)), np.zeros(5), np.zeros(5, np.float32), n_stim=9).n_units == 5
