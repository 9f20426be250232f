"""The ``model`` section of params.yaml: which network, from which library (:mod:`dnnprobe.core.params`);
the network's choices other sections name (its input transform, its token reductions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dnnprobe.core.params import check, checked, one_of

# The names of dnnprobe.network.sources.SOURCES (tested to agree): that registry lists each source's
# module by name, so importing it here would make every stage that reads `model` depend on all sources.
MODEL_SOURCES = ("torchvision", "timm", "open_clip", "hf", "local")
PREPROCESS_CHOICES = ("dnnbrain", "model")  # extract.preprocess (dnnprobe.network.preprocess)
TOKEN_CHOICES = ("all", "cls", "mean", "cls+mean")  # extract.tokens (dnnprobe.network.tokens)


@dataclass(frozen=True)
class ModelParams:
    SECTION: ClassVar[str] = "model"
    source: str = checked("torchvision", one_of(MODEL_SOURCES))
    arch: str = "alexnet"
    # random | a pretrained tag of the source (imagenet, IMAGENET1K_V2, ...) | a weights file inside models/external/
    weights: str = "random"
    # What the network stage watches (dvc.yaml: ${model.file}), inside models/external/: the folder itself, or
    # (source local) the network's Python file, or a subfolder holding that file and its weights file.
    file: str = "models/external"
    seed: int = checked(0, check(lambda v: 0 <= v < 2 ** 63, "must be between 0 and 2**63 - 1"))
