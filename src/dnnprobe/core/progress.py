"""Progress bars that stay readable in a log: tqdm's bar on a terminal, plain lines when stderr is not one.

Captured (`dvc repro > log`, a SLURM job's output, CI), tqdm's redraws (a carriage return, then the bar)
pile up into one line per stage that holds every redraw. There each redraw becomes a line of its own,
one for about every tenth of the work (every 30 s when the total is unknown), and the last.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable

from tqdm import tqdm


class _Lines:
    """A stream for tqdm that writes each redraw of the bar as a line of its own (a redraw at the same
    count, as tqdm's last one when it closes, is left out)."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._last = ""

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        count = text.split("[")[0]  # "extract:  43%|####2     | 3/7 ": the time and rate follow
        if text and count != self._last:
            self._last = count
            self._stream.write(text + "\n")

    def flush(self) -> None:
        self._stream.flush()


def progress_bar(iterable: Iterable | None = None, *, desc: str, unit: str, total: float | None = None,
             enabled: bool = True, **options: Any) -> tqdm:
    """``tqdm(iterable, desc=desc, unit=unit, ...)`` on stderr: a bar on a terminal, else lines (see above)."""
    stream = sys.stderr
    if not enabled or stream.isatty():
        return tqdm(iterable, desc=desc, unit=unit, total=total, file=stream, disable=not enabled, **options)
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    step = {"miniters": max(1, int(total // 10)), "mininterval": 0} if total else {"mininterval": 30}
    return tqdm(iterable, desc=desc, unit=unit, total=total, file=_Lines(stream), ascii=True, **step, **options)
