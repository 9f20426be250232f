"""Fitting decoders on principal scores: all binary logistic fits at once equal scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from dnnprobe.probe.fitting import batched_logistic


def test_batched_logistic_matches_sklearn_fits():
    rng = np.random.default_rng(5)
    z = rng.standard_normal((300, 10)) * np.linspace(3, 0.3, 10)
    targets = rng.integers(0, 2, size=(300, 6)).astype(float)
    targets[:, 0] = (z[:, 0] + rng.normal(0, 1, 300) > 0)  # one column with signal
    weights, intercepts = batched_logistic(z, targets, C=0.7)
    for column in range(6):
        reference = LogisticRegression(C=0.7, tol=1e-10, max_iter=10000).fit(z, targets[:, column])
        np.testing.assert_allclose(weights[:, column], reference.coef_[0], atol=1e-5)
        assert intercepts[column] == pytest.approx(reference.intercept_[0], abs=1e-5)
