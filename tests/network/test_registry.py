"""The model-source registry: every source module registered, and the registry light (no torch at import)."""

from __future__ import annotations

import subprocess
import sys

from helpers import REPO
from dnnprobe.network.registry import SOURCES


def test_the_registry_imports_without_torch():
    code = ("import sys; from dnnprobe.network import registry; print(tuple(registry.SOURCES), "
            "sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False,
                            env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "('torchvision', 'timm', 'open_clip', 'hf', 'local') []"


def test_every_source_module_is_registered():
    modules = {path.stem for path in (REPO / "src" / "dnnprobe" / "network" / "sources").glob("*.py")}
    assert {name.rsplit(".", 1)[1] for name in SOURCES.values()} == modules - {"__init__", "common"}
