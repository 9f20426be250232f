"""Write outputs so that a crash, a kill or Ctrl-C never leaves a half-written file behind.

DVC caches whatever sits at an output path when a stage ends, so a stage writes to a temporary
name next to the output and renames it into place only once it is complete (a rename within one
folder is atomic). A temporary left by a SIGKILL has a name DVC never caches; the next run of the
stage removes it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

TEMP_MARK = ".dnnprobe-tmp-"


def _temp_sibling(path: Path) -> Path:
    return path.with_name(f"{TEMP_MARK}{os.getpid()}-{path.name}")


def remove_stale_temporaries(path: Path) -> None:
    """Delete temporaries of `path` left by an earlier run that was killed."""
    for stale in path.parent.glob(f"{TEMP_MARK}*-{path.name}"):
        _remove(stale)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success move it onto `path`, on any failure delete it.

    With ``directory=True`` the temporary is an empty folder. An existing output is replaced.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    temp = _temp_sibling(path)
    _remove(temp)
    if directory:
        temp.mkdir()
    try:
        yield temp
        if directory and path.exists():
            _remove(path)  # os.replace cannot replace a non-empty folder
        os.replace(temp, path)
    except BaseException:
        _remove(temp)
        raise
