"""The gram stage's memory pre-check (dnnprobe.gram.budget): the estimate does not grow with the layer's
width beyond the stored matrix, and a matrix that cannot fit is refused in one line before any work."""

from __future__ import annotations

import pytest

from helpers import low_rank_data, one_line_error
from dnnprobe.compute import memory
from dnnprobe.compute.arrays import NUMPY
from dnnprobe.extract.writer import ActivationWriter
from dnnprobe.gram import budget
from dnnprobe.gram.writer import write_gram_file


def test_memory_precheck_refuses_a_matrix_that_cannot_fit_before_any_work(tmp_path, monkeypatch):
    X, _ = low_rank_data(200, 400, seed=2)
    acts = tmp_path / "a.act.h5"
    with ActivationWriter(acts, len(X), {"layer": (100, 2, 2)}, rows_per_chunk=16) as writer:
        writer.write({"layer": X})  # 400 units > 200 stimuli: a 200 x 200 Gram
    monkeypatch.setattr(memory, "available_bytes", lambda: memory.FIXED_BYTES + 100_000)  # 320,000 are needed
    monkeypatch.setattr("dnnprobe.gram.writer.layer_matrix", lambda *args, **kwargs: pytest.fail("work started"))
    one_line_error(lambda: write_gram_file(acts, tmp_path / "out" / "g.h5", progress=False),
                   r"^layer layer: needs 1.0 GiB of host memory \(200 x 200 matrix\), 1.0 GiB available; "
                   r"run on a GPU \(probe.device: cuda\), leave layer out of extract.layers")
    assert not (tmp_path / "out").exists()


def test_gram_estimate_does_not_grow_with_width_beyond_the_stored_matrix():
    for width in (43_264, 193_600):  # wider than n: the same n x n Gram
        assert budget.gram_stage_bytes(26_000, width) == budget.gram_stage_bytes(26_000, 30_000)
    # NSD: 73,000 stimuli, a 4,096-unit layer stores its 4,096 x 4,096 moments
    assert budget.gram_stage_bytes(73_000, 4_096) < 1.2 * memory.GIB


def test_gram_stage_precheck_refuses_an_nsd_sized_gram(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: 20 * memory.GIB)
    one_line_error(lambda: budget.check_gram_stage(73_000, 80_000, "wide", NUMPY),
                   r"^layer wide: needs 40.7 GiB of host memory \(73,000 x 73,000 matrix\), 20.0 GiB available; ")
    budget.check_gram_stage(73_000, 43_264, "conv5", NUMPY)  # its 43,264 x 43,264 moments: 15 GiB
