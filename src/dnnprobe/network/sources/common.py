"""What the model sources share: a network's initialisation drawn from a seed, and numbered block names."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def seeded(seed: int):
    """Draw a network's initialisation from `seed` without touching the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def blocks_as_friendly(prefix: str, paths: list[str]) -> dict[str, str]:
    """``block1``.. ``blockN`` (or another `prefix`) for a list of module paths, numbered from 1."""
    return {f"{prefix}{i}": path for i, path in enumerate(paths, start=1)}
