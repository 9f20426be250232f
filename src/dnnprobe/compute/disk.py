"""Disk space: the activation file's size, stated before any work, and the one refusal of an output
its disk cannot hold (:func:`check_free_space`: the activation writer's, before the first batch, and
the gram stage's, before any work).

A BOLD5000 run of a wide model writes tens of GB (every token of ViT-B/16's 12 blocks in float32 is
about 36 GB); the size is known from the layer shapes of the dry run and the file's chunks.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dnnprobe.core.errors import DnnprobeError


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _existing_folder(path: str | os.PathLike) -> Path:
    """The nearest existing folder above `path` (where it will be written: its disk)."""
    folder = Path(path).absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_free_space(path: str | os.PathLike, needed: int, advice: str) -> None:
    """Refuse, before any work, an output whose disk has less than `needed` bytes free: DnnprobeError
    (one line) naming `path`, both sizes and `advice`. Looks at the nearest existing folder above it,
    so that a refusal creates nothing."""
    free = shutil.disk_usage(_existing_folder(path)).free
    if needed > free:
        raise DnnprobeError(f"{path}: needs {needed / 1e6:,.0f} MB but its disk has {free / 1e6:,.0f} MB free ({advice})")


def size_line(out_path: str | os.PathLike, needed: int, n_layers: int, n_stim: int, dtype: str, compression: str) -> str:
    """``extract: the activation file will hold 1.2 GB (14 layers x 4916 stimuli in float32); 40.1 GB free``:
    `needed` is the file's size as HDF5 writes it (:func:`dnnprobe.extract.writer.stored_bytes`)."""
    free = shutil.disk_usage(_existing_folder(out_path)).free
    before = f", before {compression} compression" if compression != "none" else ""
    return (f"extract: the activation file will hold {human_bytes(needed)} ({n_layers} layers x {n_stim} "
            f"stimuli in {dtype}{before}); {human_bytes(free)} free on its disk")
