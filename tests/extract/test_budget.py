"""The extract stage's memory pre-checks (dnnprobe.extract.budget): its batch buffers in host memory,
the decoding workers' /dev/shm."""

from __future__ import annotations

import pytest

from helpers import one_line_error
from dnnprobe.compute import memory
from dnnprobe.extract import budget

GIB = memory.GIB


def test_extraction_estimate_foresees_the_oom_kill_of_vgg11():
    """VGG11's 16 conv and ReLU layers (float32): at batch 64 the two buffer sets alone are 7.6 GB; 40
    images (one batch, one set) were killed in a 4 GiB group: the estimate, with what the process holds
    before it checks (0.53 GB of weights; 0.9 GB resident after importing torch, h5py and dnnprobe,
    measured on the test VM), must exceed 4 GiB."""
    per_stimulus = 2 * (64 * 224 * 224 + 128 * 112 * 112 + 2 * 256 * 56 * 56 + 2 * 512 * 28 * 28 + 2 * 512 * 14 * 14)
    assert budget.extraction_bytes(4916, 64, per_stimulus, 4, 2, 64 * 224 * 224, 5) > 7.6e9
    assert budget.extraction_bytes(40, 64, per_stimulus, 4, 1, 64 * 224 * 224, 5) + 0.53e9 + 0.9e9 > 4 * GIB


def test_extraction_that_cannot_fit_is_refused_naming_the_settings(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: 4 * GIB)
    one_line_error(lambda: budget.check_extraction(int(7.9 * GIB), 16, 64),
                   r"^extraction needs 7\.9 GiB of host memory \(16 layers at extract\.batch_size 64\), 4\.0 GiB "
                   r"available; lower extract\.batch_size, record fewer extract\.layers, or use extract\.dtype: float16$")


@pytest.mark.parametrize("free_mb, workers, allowed", [(64, 6, 1), (4, 1, 0)])
def test_a_small_dev_shm_is_refused_before_workers_start(monkeypatch, free_mb, workers, allowed):
    """Docker's 64 MB /dev/shm with 6 workers, and a 4 MB one with the single default worker."""
    monkeypatch.setattr(memory, "shm_free_bytes", lambda: free_mb << 20)
    who = "1 image-decoding worker needs" if workers == 1 else f"{workers} image-decoding workers need"
    fewer = f"{allowed} \\(fits\\) or " if allowed else ""
    one_line_error(lambda: budget.check_shared_memory(workers, 64, 4916, 4),
                   rf"^{who} \d+ MB of shared memory in /dev/shm, {free_mb} MB free; "
                   rf"set extract\.num_workers: {fewer}0 \(decode in the main process\)")
    budget.check_shared_memory(allowed, 64, 4916, 4)
    budget.check_shared_memory(0, 64, 4916, 4)  # no workers: nothing goes through /dev/shm
