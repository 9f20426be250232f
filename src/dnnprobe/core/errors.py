"""The one exception type that the command line reports as a single line, without a traceback."""

from __future__ import annotations

from pathlib import Path

from dnnprobe.core.paths import dvc_root


class DnnprobeError(Exception):
    """Bad input or environment: the message names the file, row, key or value at fault."""


def in_temporary_experiment() -> bool:
    """True inside `dvc exp run --temp` or a queued experiment: DVC runs those in a temporary copy of the
    repository (under .dvc/tmp/exps) and sets $DVC_ROOT to the real one."""
    root = dvc_root()
    return root is not None and Path.cwd().resolve().is_relative_to(root.resolve() / ".dvc" / "tmp" / "exps")


def missing_file_hint() -> str:
    """What to add to a "not found" message when the cause may be a temporary experiment's copy."""
    if not in_temporary_experiment():
        return ""
    return ("; this runs in a temporary copy of the repository, which holds only the files git tracks: "
            "`git add` the file, or `dvc add` it and commit its .dvc file")
