"""The torch array ops (dnnprobe.compute.arrays), exercised on the CPU (benchmarks/gpu_check.sh runs
them on a GPU): the dense eigensolver never runs on the device above its size limit, and the host
refuses in one line a fallback it cannot hold; the fold-ordered Gram is filled where the solver keeps it."""

from __future__ import annotations

import numpy as np
import torch

from helpers import low_rank_data, one_line_error
from dnnprobe.compute import arrays, memory
from dnnprobe.compute.arrays import NUMPY, TorchOps
from dnnprobe.probe import foldpca
from dnnprobe.probe.foldpca import GramPCASolver


def test_dense_fallback_above_the_device_limit_runs_on_the_host(monkeypatch):
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((60, 60)))[0]
    matrix = (basis * np.linspace(1, 2, 60)) @ basis.T
    ops = TorchOps("cpu")
    monkeypatch.setattr(arrays, "DEVICE_EIGH_LIMIT", 40)

    def device_eigh(*args, **kwargs):
        raise AssertionError("a dense eigensolver ran on the device above DEVICE_EIGH_LIMIT")

    monkeypatch.setattr(torch.linalg, "eigh", device_eigh)
    values, vectors = ops.dense_top(ops.asarray(matrix, np.float64), 5)
    expected_values, expected_vectors = NUMPY.dense_top(matrix, 5)
    np.testing.assert_allclose(values, expected_values, rtol=1e-12)
    np.testing.assert_allclose(np.abs(vectors.T @ expected_vectors), np.eye(5), atol=1e-8)


def test_dense_fallback_too_large_for_the_host_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(arrays, "DEVICE_EIGH_LIMIT", 40)
    monkeypatch.setattr(memory, "available_bytes", lambda: 1 << 20)
    ops = TorchOps("cpu")
    one_line_error(lambda: ops.dense_top(ops.asarray(np.eye(60), np.float64), 5),
                   r"^dense eigensolver on the host needs 1\.0 GiB \(60 x 60 matrix\), 0\.0 GiB available; "
                   r"block Lanczos did not converge on this layer: lower pca, or leave the layer out of "
                   r"extract\.layers$")


def test_fold_ordered_gram_lives_on_the_solver_device_and_gives_numpy_scores(monkeypatch):
    monkeypatch.setattr(foldpca, "DENSE_LIMIT", 50)  # the iterative path (float32 copy) at test size
    X, y = low_rank_data(n=120, d=300, seed=4)
    gram = X.astype(np.float64) @ X.T.astype(np.float64)
    test_folds = [np.arange(i, 120, 4) for i in range(4)]
    train, test = np.setdiff1d(np.arange(120), test_folds[1]), test_folds[1]
    ops = TorchOps("cpu")
    solver = GramPCASolver(gram, 6, test_folds, ops=ops)
    assert isinstance(solver.kp, torch.Tensor) and solver.kp.shape == (120, 120)
    reference = GramPCASolver(gram, 6, test_folds)
    with ops.precision():
        ours = solver.fold_scores(train, test)
    theirs = reference.fold_scores(train, test)
    for mine, other in zip(ours, theirs):
        np.testing.assert_allclose(np.abs(mine), np.abs(other), rtol=1e-3, atol=1e-3 * np.abs(other).max())
