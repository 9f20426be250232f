"""The model sources by name (``model.source``), each imported only when chosen.

``SOURCES`` maps each name to its module in :mod:`dnnprobe.network.sources`; its keys are the
``model.source`` choices. :func:`get_source` imports the chosen one, so the default AlexNet run never
imports timm or transformers. Light (no torch at import): the params schema reads ``SOURCES``.
"""

from __future__ import annotations

import sys
from types import ModuleType

from dnnprobe.core.errors import DnnprobeError

SOURCES = {
    "torchvision": "dnnprobe.network.sources.torchvision",
    "timm": "dnnprobe.network.sources.timm",
    "open_clip": "dnnprobe.network.sources.open_clip",
    "hf": "dnnprobe.network.sources.hf",
    "local": "dnnprobe.network.sources.local",  # the researcher's own code, in models/external/
}


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
