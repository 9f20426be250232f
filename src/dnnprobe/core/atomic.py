"""Write outputs so that a crash, a kill or Ctrl-C never leaves a half-written file behind, and so that
two processes never write the same output at once.

- An output is written under a temporary name next to it, ``.dnnprobe-tmp-<pid>-<name>``, and renamed
  into place once complete (a rename within one folder is atomic). DVC caches whatever sits at an
  output path when a stage ends, and never a temporary.
- While a process writes an output it holds an exclusive lock on it: ``flock`` on
  ``.dnnprobe-lock-<name>`` next to it. The kernel drops the lock when the process ends, however it
  ends (SIGKILL, out of memory), so a lock is never stale. A second writer of the same output stops
  at once with one line naming the holder.
- A temporary whose output nobody holds the lock of was left by a process that is gone. Every stage
  removes such temporaries from the pipeline's output folders when it starts
  (:func:`remove_orphaned_temporaries`): after a SIGKILL, DVC may restore the killed stage from its
  run cache instead of running it again, so "the next run of that stage" may never come. Temporaries
  of live processes (a concurrent run) are left alone.
- A full disk, a quota or a read-only file system while writing ends in one line naming the output.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from pathlib import Path
from typing import Iterable, Iterator

from dnnprobe.core.errors import DnnprobeError

try:
    import fcntl
except ImportError:  # Windows: no flock; outputs are still written atomically, just not locked
    fcntl = None

TEMP_MARK = ".dnnprobe-tmp-"
LOCK_MARK = ".dnnprobe-lock-"
_TEMP_NAME = re.compile(rf"^{re.escape(TEMP_MARK)}\d+-(?P<output>.+)$")
# Errors that mean "this disk cannot take the output", whatever the code was writing at the time.
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}

_held: dict[Path, "_OutputLock"] = {}  # outputs this process holds, with how many claims are open


class _OutputLock:
    """An exclusive, non-blocking flock on ``.dnnprobe-lock-<name>``; the file is removed on release."""

    def __init__(self, output: Path) -> None:
        self.path = output.with_name(LOCK_MARK + output.name)
        self.claims = 0
        self._fd: int | None = None

    def acquire(self) -> bool:
        if fcntl is None:
            return True
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            # The previous holder removes the file when it releases: if that happened after we opened
            # it, we hold a lock on a file nobody else will open. Lock the file that is there now.
            try:
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return True
            os.close(fd)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still holding it: see acquire
        os.close(self._fd)
        self._fd = None

    def holder(self) -> str:
        with contextlib.suppress(OSError, ValueError):
            return f"pid {int(self.path.read_text().split()[0])}"
        return "another process"


def _key(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(path))


@contextlib.contextmanager
def claim(*paths: str | os.PathLike) -> Iterator[None]:
    """Hold the write lock of each output for the block; a stage claims all of its outputs before its
    work. Claims nest within one process. Raises DnnprobeError naming the output another process holds."""
    taken: list[Path] = []
    try:
        for path in map(_key, paths):
            lock = _held.get(path)
            if lock is None:
                lock = _OutputLock(path)
                path.parent.mkdir(parents=True, exist_ok=True)
                if not lock.acquire():
                    raise DnnprobeError(
                        f"{path}: {lock.holder()} is writing it right now (two runs writing the same outputs); "
                        "wait for it to finish, or stop it"
                    )
                _held[path] = lock
            lock.claims += 1
            taken.append(path)
        yield
    finally:
        for path in reversed(taken):
            lock = _held[path]
            lock.claims -= 1
            if lock.claims == 0:
                lock.release()
                del _held[path]


def _temporaries(path: Path) -> list[Path]:
    return [p for p in path.parent.glob(f"{TEMP_MARK}*-{path.name}")
            if (found := _TEMP_NAME.match(p.name)) and found["output"] == path.name]


def remove_orphaned_temporaries(folders: Iterable[str | os.PathLike]) -> list[Path]:
    """Delete temporaries in `folders` whose writer is gone (nobody holds their output's lock).

    Returns what was removed. A temporary of a live writer, this process included, is kept.
    """
    removed = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith(LOCK_MARK):  # a lock file a killed writer left: taking it removes it
                output = _key(folder / entry.name[len(LOCK_MARK):])
                if output not in _held and (lock := _OutputLock(output)).acquire():
                    lock.release()
                continue
            found = _TEMP_NAME.match(entry.name)
            if not found or not (entry.exists() or entry.is_symlink()):
                continue
            output = _key(folder / found["output"])
            if output in _held:
                continue
            lock = _OutputLock(output)
            if lock.acquire():
                try:
                    for stale in _temporaries(output):
                        _remove(stale)
                        removed.append(stale)
                finally:
                    lock.release()
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def disk_error(path: str | os.PathLike, exc: OSError) -> DnnprobeError | None:
    """The one-line error for a write that the disk refused (full, quota, read-only), else None."""
    if exc.errno in _DISK_ERRORS:
        return DnnprobeError(f"{path}: writing failed ({os.strerror(exc.errno)})")
    return None


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success move it onto `path`, on any failure delete it.

    With ``directory=True`` the temporary is an empty folder. An existing output is replaced. The
    output is locked for the block (see :func:`claim`); a disk that refuses the bytes (full, quota,
    read-only) ends in one line naming `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with claim(path):
        for stale in _temporaries(path):  # we hold the lock: whoever wrote these is gone
            _remove(stale)
        temp = path.with_name(f"{TEMP_MARK}{os.getpid()}-{path.name}")
        try:
            if directory:
                temp.mkdir()
            yield temp
            if directory and path.is_dir() and not path.is_symlink():
                _remove(path)  # os.replace cannot replace a non-empty folder
            os.replace(temp, path)
        except BaseException as failure:
            _remove(temp)
            if isinstance(failure, OSError) and disk_error(path, failure):
                raise disk_error(path, failure) from failure
            raise
