"""The ``extract`` section of params.yaml: which layers, on which device, stored how (:mod:`dnnprobe.core.params`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dnnprobe.compute.device import DEVICE_PATTERN
from dnnprobe.core.params import check, checked, device_choice, one_of, positive
from dnnprobe.network.params import PREPROCESS_CHOICES, TOKEN_CHOICES

DTYPES = ("float32", "float16")
COMPRESSIONS = ("none", "gzip", "lzf")


@dataclass(frozen=True)
class ExtractParams:
    SECTION: ClassVar[str] = "extract"
    # Empty: DNNBrain's 14 tutorial layers (dnnprobe.network.layers, which owns layer naming).
    layers: tuple[str, ...] = checked((), check(lambda v: len(set(v)) == len(v), "must be a list of distinct names"))
    batch_size: int = checked(64, check(positive, "must be > 0"))
    device: str = checked("auto", device_choice(DEVICE_PATTERN))
    dtype: str = checked("float32", one_of(DTYPES))
    compression: str = checked("none", one_of(COMPRESSIONS))
    num_workers: int = checked(1, check(lambda v: v >= 0, "must be >= 0"))
    preprocess: str = checked("dnnbrain", one_of(PREPROCESS_CHOICES))
    tokens: str = checked("all", one_of(TOKEN_CHOICES))
