"""Model sources (``model.source``): the libraries a network can come from, one module each.

``SOURCES`` maps each name to its module path; a module (and its library) is imported only when
chosen, so the default AlexNet run never imports timm or transformers. Adding a source is one module
here, one entry below, one section in docs/models.md and one test with a tiny random-weight model.

What a source module provides (plain functions; ``arch`` is ``model.arch``):

- ``archs() -> list[str]``: the architecture names it knows, offline (for error messages).
- ``build(arch, seed) -> nn.Module``: the network (the image tower, for CLIP models) with the
  library's own initialisation drawn from `seed`, offline, in eval mode.
- ``pretrained(arch, tag) -> (state_dict, provenance)``: the library's pretrained weights named by
  `tag`, from the local cache only (nothing is downloaded); `provenance` is a dict of strings
  (the file, its sha256, the hub id or URL, the revision). Offline with nothing cached: one
  :class:`~dnnprobe.core.errors.DnnprobeError` line naming the ways out.
- ``preprocessing(model, arch) -> Preprocess``: the network's own eval transform, as numbers
  (:mod:`dnnprobe.network.preprocess`).
- ``friendly_layers(model, arch) -> dict[str, str]``: friendly layer names -> module paths, in depth
  order; ``default_layers(model, arch) -> list[str]``: what an empty ``extract.layers`` records.
- ``token_layout(model, input_size) -> TokenLayout | None``: the token sequence of a transformer
  (:mod:`dnnprobe.network.tokens`), None for a convolutional network.

Module outputs that are tuples or model-output objects record their hidden state
(:func:`dnnprobe.network.tokens.hidden_state`).
"""

from __future__ import annotations

import contextlib
import sys
from types import ModuleType

from dnnprobe.core.errors import DnnprobeError

SOURCES = {
    "torchvision": "dnnprobe.network.sources.torchvision",
    "timm": "dnnprobe.network.sources.timm",
    "open_clip": "dnnprobe.network.sources.open_clip",
    "hf": "dnnprobe.network.sources.hf",
}
DEFAULT_SOURCE = "torchvision"


def get_source(name: str) -> ModuleType:
    """The module of model source `name`; an unknown name lists the known ones."""
    if name not in SOURCES:
        raise DnnprobeError(f"model.source: unknown source {name!r}; known: {', '.join(SOURCES)}")
    try:
        # __import__ rather than importlib.import_module: the same import, but through the interpreter's
        # own import statement path, which `python -X importtime` reports (tests/pipeline check a stage's
        # declared code against that report).
        __import__(SOURCES[name])
        return sys.modules[SOURCES[name]]
    except ImportError as exc:
        raise DnnprobeError(
            f"model.source={name}: its library is not installed ({exc}); run `make venv` "
            "(requirements.txt pins it)") from None


@contextlib.contextmanager
def seeded(seed: int):
    """Draw a network's initialisation from `seed` without touching the caller's random state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def blocks_as_friendly(prefix: str, paths: list[str]) -> dict[str, str]:
    """``block1``.. ``blockN`` (or another `prefix`) for a list of module paths, numbered from 1."""
    return {f"{prefix}{i}": path for i, path in enumerate(paths, start=1)}
