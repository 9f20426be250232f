"""The ``gram`` section of params.yaml: how the Gram file stores each layer (:mod:`dnnprobe.core.params`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dnnprobe.core.params import checked, one_of


@dataclass(frozen=True)
class GramParams:
    SECTION: ClassVar[str] = "gram"
    # Storage type of each layer's matrix in data/gram.h5 (products always accumulate in float64).
    dtype: str = checked("float32", one_of(("float32", "float64")))
