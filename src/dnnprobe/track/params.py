"""The ``tracking`` section of params.yaml: the MLflow experiment of the probe's runs (:mod:`dnnprobe.core.params`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dnnprobe.core.params import checked


@dataclass(frozen=True)
class TrackingParams:
    SECTION: ClassVar[str] = "tracking"
    # MLflow refuses an experiment name over 500 characters (only when the probe creates it).
    experiment: str = checked("dnnprobe", lambda v: "must not be empty" if not v.strip() else
                              "must be at most 500 characters (MLflow's limit for an experiment name)" if len(v) > 500 else None)
