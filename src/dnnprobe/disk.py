"""Disk pre-check: an activation file that cannot fit is refused before any work.

A BOLD5000 run of a wide model writes tens of GB (every token of ViT-B/16's 12 blocks in float32 is
about 36 GB); finding out when the disk fills, minutes or hours in, wastes the run and leaves a
full disk. The size is known exactly from the layer shapes of the dry run.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Callable, Mapping

from dnnprobe.core.errors import DnnprobeError

HEADROOM = 256 * 2**20  # left free for everything else writing to the same disk


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def activation_bytes(unit_shapes: Mapping[str, tuple[int, ...]], n_stim: int, dtype: str) -> int:
    """Bytes of the layers' data, uncompressed: n_stim x units x item size, summed over layers."""
    itemsize = 2 if dtype == "float16" else 4
    return sum(n_stim * math.prod(shape) * itemsize for shape in unit_shapes.values())


def check_disk_space(out_path: str | os.PathLike, unit_shapes: Mapping[str, tuple[int, ...]], n_stim: int,
                     dtype: str, compression: str, announce: Callable[[str], None] | None = None) -> int:
    """Refuse (one line) when the disk holding `out_path` has less free space than the file needs.

    The need is the uncompressed size; with compression the file is usually smaller, so the check
    errs on the side of refusing and the message says so. Returns the size; `announce` gets one line.
    """
    needed = activation_bytes(unit_shapes, n_stim, dtype)
    folder = Path(out_path).resolve().parent
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    what = f"{len(unit_shapes)} layers x {n_stim} stimuli in {dtype}"
    if announce:
        announce(f"extract: the activation file will hold {human_bytes(needed)} ({what}"
                 + (f", before {compression} compression" if compression != "none" else "") + f"); {human_bytes(free)} free")
    if needed + HEADROOM > free:
        raise DnnprobeError(
            f"{out_path}: needs {human_bytes(needed)} ({what}"
            + (f", uncompressed; {compression} may shrink it" if compression != "none" else "")
            + f") but {folder} has {human_bytes(free)} free; free space, or record fewer layers or tokens "
            "(extract.layers, extract.tokens: cls or mean), or extract.dtype: float16")
    return needed
