"""dnnprobe: which layer of a deep network explicitly encodes a stimulus attribute?

docs/development.md, "Where things are", maps the package: ``dnnprobe.core`` (what every stage runs),
``dnnprobe.stages`` (one module per DVC stage) and one module per concept.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dnnprobe")  # from pyproject.toml, so a version bump touches no source file
except PackageNotFoundError:  # run from a source tree (PYTHONPATH=src) without installing
    __version__ = "unknown"
