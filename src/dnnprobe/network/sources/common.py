"""What the model sources share: a network's initialisation drawn from a seed, numbered block names, and the
Hugging Face hub kept offline while a source reads its cache."""

from __future__ import annotations

import contextlib
import os

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


@contextlib.contextmanager
def hub_offline():
    """No request to the Hugging Face hub in the block, whatever the environment: huggingface_hub reads
    ``HF_HUB_OFFLINE`` once, when it is imported, and even a ``local_files_only`` load asks the hub for
    its agent registry (huggingface_hub 2.x) unless its constant says offline; so both are set, then restored."""
    from huggingface_hub import constants

    saved_env, saved_constant = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved_constant
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env
