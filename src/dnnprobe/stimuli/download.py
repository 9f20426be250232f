"""Download one file over HTTP(S) into a local cache, as public file hosts really serve files.

- Bytes go to ``<name>.part``; the file gets its final name only once its kind (a zip, say), size and
  sha256 check out, so neither an interrupted nor a wrong file is ever taken for a good one.
- A rerun resumes ``<name>.part`` with a Range request. The bytes of a reply are appended only when
  its Content-Range says they start where the part ends, and, through If-Range, only while the file
  on the server is the one the part came from (its ETag or Last-Modified). A server that ignores Range
  (a plain 200) or answers with other bytes restarts the file: a resume never splices two files.
- Redirects, also to another host (OSF sends its downloads to a storage host), are followed.
- 429 Too Many Requests, 502, 503 and 504 are retried after the server's Retry-After (seconds or an
  HTTP date), or after 2, 4, 8, ... s without one, at most RETRIES times and MAX_WAIT_S in all. A
  transfer cut short (the connection closed before Content-Length bytes, a reset, a stalled read) is
  resumed the same way. A server that is not reachable at all fails at once.
- Without Content-Length (chunked or close-delimited replies) the bytes are taken as they come; only
  a pinned size or sha256 can then tell a truncated file. The first download prints both to pin.
- While a process downloads a file it holds its lock (:func:`dnnprobe.core.atomic.claim`): a second run
  sharing the download folder stops in one line instead of writing the same ``.part``.
- A download that is not what was expected (an HTML page instead of a zip), or whose pinned size or
  sha256 differs, is kept as ``<name>.rejected`` for inspection, described in one line (content type,
  size, first bytes), and a rerun stops at it instead of downloading the same thing again.
"""

from __future__ import annotations

import email.utils
import http.client
import re
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable


from dnnprobe.core.atomic import claim, disk_error
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.hashing import file_sha256
from dnnprobe.core.progress import progress_bar

CHUNK = 1 << 20
RETRY_STATUSES = {429, 502, 503, 504}
RETRIES = 5  # further tries after the first, for busy replies and cut transfers alike
MAX_WAIT_S = 300.0  # all waits between tries together
_sleep = time.sleep  # tests replace it


class _TryAgain(Exception):
    """A failure worth another try: a busy server or a cut transfer. `delay`: Retry-After, if given."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.delay = reason, delay


# ---- what a file is -----------------------------------------------------------------------------

_MAGIC = [
    (b"\x1f\x8b", "gzip data (a .tar.gz or .gz)"),
    (b"BZh", "bzip2 data (a .tar.bz2 or .bz2)"),
    (b"\xfd7zXZ\x00", "xz data (a .tar.xz or .xz)"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a damaged or truncated zip (no central directory)"),
]
TRUNCATED_ZIP = _MAGIC[-1][1]


def describe(path: Path) -> str:
    """What a file looks like from its first bytes: 'an HTML page', 'gzip data (...)', 'a zip', ...."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    if not head:
        return "an empty file"
    if zipfile.is_zipfile(path):
        return "a zip"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if len(head) > 262 and head[257:262] == b"ustar":
        return "a tar archive"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text[:200]:
        return "an HTML page"
    if text.startswith((b"{", b"[")):
        return "JSON text"
    if text.startswith(b"<?xml"):
        return "an XML document"
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError as exc:
        return "text" if exc.start >= len(head) - 3 else "binary data of an unknown kind"


def first_bytes(path: Path, count: int = 40) -> str:
    with open(path, "rb") as handle:
        return repr(handle.read(count))


def expect_zip(path: Path) -> str | None:
    """None for a zip; otherwise what the file is instead (for :func:`download`'s `expect`)."""
    return None if zipfile.is_zipfile(path) else describe(path)


def expect_text(path: Path) -> str | None:
    """None for a text file that is not an HTML page; otherwise what the file is instead."""
    kind = describe(path)
    return None if kind == "text" else kind


# ---- the download -------------------------------------------------------------------------------


def download(url: str, target: Path, sha256: str = "", size: int = 0, *, expect: Callable[[Path], str | None] | None = None,
             wanted: str = "the expected file", pin_as: str = "", timeout: float = 60.0, progress: bool = True) -> Path:
    """Fetch `url` to `target` unless a verified copy is there; resume a partial download.

    `expect(path)` returns None for a file of the right kind, else what it is instead ('an HTML page');
    `wanted` names the right kind in messages ('a zip'). `pin_as` is the params.yaml prefix the size
    and sha256 are printed under when `sha256` is not pinned (``stimuli.bold5000.images``). `progress`:
    a progress bar on stderr.

    The download folder is a cache outside DVC's view, so a cached copy is used only while its bytes
    are those first downloaded: their sha256 is kept beside it (``<name>.sha256``), and a copy that no
    longer matches it (or the pinned sha256, when set) is fetched again.

    Raises DnnprobeError in one line: the server's error, a refused or rejected download (kept as
    ``<name>.rejected``), or a cached file of the wrong kind (left as it is).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with claim(target):  # two runs sharing a download folder must not write one .part together
        return _download(url, target, sha256, size, expect, wanted, pin_as, timeout, progress)


def _download(url: str, target: Path, sha256: str, size: int, expect: Callable[[Path], str | None] | None,
              wanted: str, pin_as: str, timeout: float, progress: bool) -> Path:
    record = target.with_name(target.name + ".sha256")
    rejected = target.with_name(target.name + ".rejected")
    if target.is_file():
        first = record.read_text().split()[0] if record.is_file() and record.read_text().split() else ""
        if _problem(target, sha256 or first, size) is None:
            if expect and (kind := expect(target)):  # often a file put there by hand: say so, change nothing
                raise DnnprobeError(
                    f"{target}: is {kind}, not {wanted} ({target.stat().st_size} bytes, begins {first_bytes(target)}); "
                    f"replace it with the file from {url}, or delete it to download that again")
            if not first:
                record.write_text(f"{file_sha256(target)}  {target.name}\n")
            _print_pin(target, url, sha256, pin_as)
            return target
        target.unlink()  # a changed or damaged copy: fetch it again
    if rejected.is_file():
        raise DnnprobeError(
            f"{rejected}: an earlier download from {url} was rejected ({describe(rejected)}, "
            f"{rejected.stat().st_size} bytes); read it, then delete it to download again, or put {wanted} at {target}")
    partial = target.with_name(target.name + ".part")
    content_type = _download_with_retries(url, partial, target, timeout, progress)
    kind = expect(partial) if expect else None
    problem = f"it is {kind}, not {wanted}" if kind else _problem(partial, sha256, size)
    if problem:
        partial.replace(rejected)
        _validator_file(partial).unlink(missing_ok=True)
        if kind == TRUNCATED_ZIP:
            advice = (f"the download was cut short (a zip without its end); delete {rejected} and rerun to download "
                      f"it again; if it stops short again, the file on the server is damaged: download it by hand and "
                      f"put it at {target}")
        elif kind:
            advice = (f"read it: a link that needs a browser (a login, a confirmation) or has moved serves a page "
                      f"instead; download it by hand from a browser and put it at {target}, or delete {rejected} to "
                      "download again")
        else:
            advice = (f"if the file on the server has changed, check it and pin its new size and sha256; "
                      f"delete {rejected} to download again")
        begins = f", begins {first_bytes(rejected)}" if kind else ""
        raise DnnprobeError(
            f"{url}: download rejected: {problem} (Content-Type {content_type or 'not given'}, "
            f"{rejected.stat().st_size} bytes{begins}); kept as {rejected}; {advice}")
    record.write_text(f"{file_sha256(partial)}  {target.name}\n")
    partial.replace(target)
    _validator_file(partial).unlink(missing_ok=True)
    _print_pin(target, url, sha256, pin_as)
    return target


def _problem(path: Path, sha256: str, size: int) -> str | None:
    """Why `path` is not the expected file (size, then sha256), or None."""
    actual_size = path.stat().st_size
    if size and actual_size != size:
        return f"{actual_size} bytes, expected {size}"
    if sha256 and (digest := file_sha256(path)) != sha256.lower():
        return f"sha256 {digest}, expected {sha256}"
    return None


def _print_pin(path: Path, url: str, sha256: str, pin_as: str) -> None:
    """Until a sha256 is pinned, say what to pin: each download's size and sha256."""
    if sha256:
        return
    size, digest = path.stat().st_size, file_sha256(path)
    where = (f"pin them in params.yaml: {pin_as}_size: {size}, {pin_as}_sha256: {digest}" if pin_as
             else "pin them in params.yaml")
    print(f"download: {path.name} from {url}: {size} bytes, sha256 {digest}; {where}", file=sys.stderr)


def _download_with_retries(url: str, partial: Path, target: Path, timeout: float, progress: bool) -> str:
    """Fetch into `partial` (resuming it), retrying busy replies and cut transfers; the Content-Type."""
    tries, waited = 0, 0.0
    while True:
        try:
            return _fetch(url, partial, target, timeout, progress)
        except _TryAgain as failure:
            tries += 1
            delay = failure.delay if failure.delay is not None else float(2 ** tries)
            if failure.delay is not None and failure.delay > MAX_WAIT_S:
                raise DnnprobeError(
                    f"{url}: {failure.reason}; the server asks to wait {failure.delay:.0f} s (Retry-After), more "
                    f"than the {MAX_WAIT_S:.0f} s a download waits; rerun later to resume") from None
            if tries > RETRIES or waited + delay > MAX_WAIT_S:
                raise DnnprobeError(
                    f"{url}: {failure.reason}; gave up after {tries} tries and {waited:.0f} s of waiting; "
                    f"rerun later to resume, or put the file at {target}") from None
            print(f"download: {url}: {failure.reason}; try {tries + 1} of {RETRIES + 1} in {delay:.0f} s",
                  file=sys.stderr)
            _sleep(delay)
            waited += delay


def _validator_file(partial: Path) -> Path:
    """Where the ETag or Last-Modified of the reply a part file came from is kept (for If-Range)."""
    return partial.with_name(partial.name + ".if-range")


def _fetch(url: str, partial: Path, target: Path, timeout: float, progress: bool) -> str:
    """One request: resume or restart `partial`; returns the reply's Content-Type. Raises _TryAgain."""
    have = partial.stat().st_size if partial.is_file() else 0
    validator = _validator_file(partial)
    headers = {}
    if have:
        headers["Range"] = f"bytes={have}-"
        if validator.is_file() and validator.read_text().strip():
            headers["If-Range"] = validator.read_text().strip()
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing after the part's end: complete only if the sizes agree
            if _range_total(exc.headers.get("Content-Range")) == have:
                return ""  # (the 416 reply says nothing of the file itself)
            partial.unlink()  # not the server's file as it is now: start over
            return _fetch(url, partial, target, timeout, progress)
        if exc.code in RETRY_STATUSES:
            raise _TryAgain(f"HTTP {exc.code} {exc.reason}", _retry_after(exc.headers.get("Retry-After"))) from None
        raise DnnprobeError(f"{url}: download failed (HTTP {exc.code} {exc.reason})") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise DnnprobeError(
            f"{url}: download failed ({getattr(exc, 'reason', None) or exc}); rerun to resume, or put the file at {target}"
        ) from None
    with response:
        start, end = 0, None
        length = response.headers.get("Content-Length")
        if length and length.isdigit():
            end = int(length)
        if response.status == 206:
            content_range = response.headers.get("Content-Range")
            start, end = _range_start(content_range), _range_total(content_range)
            if start != have and start != 0:  # bytes that do not continue the part: start over
                if not have:
                    raise DnnprobeError(f"{url}: asked for the whole file, the server sent a part ({content_range})")
                response.close()
                partial.unlink(missing_ok=True)
                return _fetch(url, partial, target, timeout, progress)
        if start == 0:  # a new file (the server ignored Range, or the file changed): remember which
            tag = response.headers.get("ETag", "")
            tag = tag if tag and not tag.startswith("W/") else response.headers.get("Last-Modified", "")
            validator.write_text(tag + "\n")
        written = start
        try:
            with open(partial, "r+b" if start else "wb") as out, progress_bar(
                total=end, initial=start, unit="B", unit_scale=True, desc=target.name, enabled=progress,
            ) as bar:
                out.seek(start)
                out.truncate()
                while block := response.read(CHUNK):
                    out.write(block)
                    written += len(block)
                    bar.update(len(block))
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, OSError) and (refused := disk_error(partial, exc)):
                raise refused from None
            raise _TryAgain(f"the transfer broke off after {written} bytes ({exc or exc.__class__.__name__})") from None
        if end is not None and written < end:  # http.client returns b"" when the server closes early
            raise _TryAgain(f"the connection closed after {written} of {end} bytes")
        return response.headers.get("Content-Type", "")


def _range_start(header: str | None) -> int:
    found = re.match(r"\s*bytes\s+(\d+)-", header or "")
    return int(found[1]) if found else -1


def _range_total(header: str | None) -> int | None:
    found = re.match(r"\s*bytes\s+[\d*-]+/(\d+)", header or "")
    return int(found[1]) if found else None


def _retry_after(header: str | None) -> float | None:
    """Retry-After in seconds: a number of seconds, or an HTTP date; None when absent or unreadable."""
    if not header:
        return None
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
