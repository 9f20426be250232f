"""The ``report`` section of params.yaml: what the figures show (:mod:`dnnprobe.core.params`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class ReportParams:
    SECTION: ClassVar[str] = "report"
    confusion_layer: str = ""  # layer whose confusion matrices get a figure; empty: the last layer
