"""Where the real repository is: the one ``$DVC_ROOT`` reader.

``dvc exp run --temp`` and queued experiments run in a temporary copy of the repository (under
.dvc/tmp/exps) and set ``$DVC_ROOT`` to the real one: whatever must outlive the run (the MLflow
store, a 4 GB download) goes there, not into the copy DVC deletes.
"""

from __future__ import annotations

import os
from pathlib import Path


def dvc_root() -> Path | None:
    """``$DVC_ROOT`` as DVC set it (not resolved), or None when DVC is not running this process."""
    root = os.environ.get("DVC_ROOT")
    return Path(root) if root else None


def repo_root() -> Path:
    """The real repository root: $DVC_ROOT, else the nearest folder above with dvc.yaml or .git."""
    root = dvc_root()
    if root is not None:
        return root.resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file() or (folder / ".dvc").is_dir() or (folder / ".git").exists():
            return folder
    return here
