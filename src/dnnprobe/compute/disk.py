"""The activation file's size, stated before any work (the refusal when the disk cannot hold it is the
writer's: :meth:`dnnprobe.extract.actfile.ActivationWriter._check_free_space`, before the first batch).

A BOLD5000 run of a wide model writes tens of GB (every token of ViT-B/16's 12 blocks in float32 is
about 36 GB); the size is known exactly from the layer shapes of the dry run.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Mapping


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def activation_bytes(unit_shapes: Mapping[str, tuple[int, ...]], n_stim: int, dtype: str) -> int:
    """Bytes of the layers' data, uncompressed: n_stim x units x item size, summed over layers."""
    itemsize = 2 if dtype == "float16" else 4
    return sum(n_stim * math.prod(shape) * itemsize for shape in unit_shapes.values())


def size_line(out_path: str | os.PathLike, unit_shapes: Mapping[str, tuple[int, ...]], n_stim: int, dtype: str,
              compression: str) -> str:
    """``extract: the activation file will hold 1.2 GB (14 layers x 4916 stimuli in float32); 40.1 GB free``."""
    folder = Path(out_path).resolve().parent
    while not folder.exists():
        folder = folder.parent
    needed, free = activation_bytes(unit_shapes, n_stim, dtype), shutil.disk_usage(folder).free
    before = f", before {compression} compression" if compression != "none" else ""
    return (f"extract: the activation file will hold {human_bytes(needed)} ({len(unit_shapes)} layers x {n_stim} "
            f"stimuli in {dtype}{before}); {human_bytes(free)} free on its disk")
