"""stimuli.source=bold5000: download the BOLD5000 images and DNNBrain's animate/inanimate labels.

Downloads are restartable: bytes go to ``<name>.part`` and a rerun resumes it with an HTTP Range
request (or starts over when the server ignores Range). A download is renamed to its final name
only after its size and sha256 check out, so neither an interrupted nor a corrupted file is ever
taken for a good one. The downloads folder (``stimuli.bold5000.download_dir``) is a local cache
outside DVC; what DVC versions and shares is the stage's output: the unpacked images and the table.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath


from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.progress import progress_bar
from dnnprobe.core.params import Bold5000Params
from dnnprobe.core.hashing import file_sha256
from dnnprobe.stimuli import StimulusTable, check_image

CHUNK = 1 << 20
TUTORIAL_CLASS_NAMES = {2547: "animate", 2369: "inanimate"}  # class sizes given in DNNBrain's tutorial


def download(url: str, target: Path, sha256: str = "", size: int = 0, timeout: float = 60.0) -> Path:
    """Fetch `url` to `target` unless a verified copy is there; resume a partial download.

    The download folder is a cache outside DVC's view, so a cached copy is used only while its bytes
    are those first downloaded: their sha256 is kept beside it (``<name>.sha256``), and a copy that no
    longer matches (or the pinned sha256, when set) is fetched again.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    record = target.with_name(target.name + ".sha256")
    if target.is_file():
        first = record.read_text().split()[0] if record.is_file() and record.read_text().split() else ""
        if _problem(target, sha256 or first, size, url) is None:
            if not first:
                record.write_text(f"{file_sha256(target)}  {target.name}\n")
            return target
        target.unlink()  # a changed or damaged copy: fetch it again
    partial = target.with_name(target.name + ".part")
    have = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = have and response.status == 206
            if not resumed:
                have = 0
            total = response.headers.get("Content-Length")
            total = int(total) + have if total is not None else None
            with open(partial, "ab" if resumed else "wb") as out, progress_bar(
                total=total, initial=have, unit="B", unit_scale=True, desc=target.name
            ) as bar:
                while block := response.read(CHUNK):
                    out.write(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the part file is already complete
            pass
        else:
            raise DnnprobeError(f"{url}: download failed (HTTP {exc.code} {exc.reason})") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DnnprobeError(
            f"{url}: download failed ({getattr(exc, 'reason', exc)}); rerun to resume, "
            f"or put the file at {target}"
        ) from None
    problem = _problem(partial, sha256, size, url)
    if problem:
        partial.unlink()
        raise DnnprobeError(f"{url}: downloaded file is corrupt or truncated ({problem}); deleted, rerun to retry")
    record.write_text(f"{file_sha256(partial)}  {target.name}\n")
    partial.rename(target)
    return target


def _problem(path: Path, sha256: str, size: int, url: str) -> str | None:
    """Why `path` is not the expected file, or None; prints the hash to pin when none is set."""
    actual_size = path.stat().st_size
    if size and actual_size != size:
        return f"{actual_size} bytes, expected {size}"
    digest = file_sha256(path)
    if sha256 and digest != sha256.lower():
        return f"sha256 {digest}, expected {sha256}"
    if not sha256:
        print(f"bold5000: {path.name} from {url}: {actual_size} bytes, sha256 {digest} "
              "(pin both in params.yaml under stimuli.bold5000)")
    return None


def _member_prefix(names: list[str], stim_ids: list[str]) -> str:
    """The folder inside the zip under which every stimID resolves (zips wrap files in folders)."""
    probe = stim_ids[0]
    candidates = [name[: -len(probe)] for name in names if name.endswith(probe)]
    for prefix in candidates:
        if all(prefix + stim_id in names for stim_id in stim_ids):
            return prefix
    found = set(names)
    missing = [s for s in stim_ids if not any(c + s in found for c in candidates)] if candidates else stim_ids
    shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
    raise DnnprobeError(f"the BOLD5000 zip lacks {len(missing)} of the table's {len(stim_ids)} images: {shown}")


def unpack_images(archive: Path, table: StimulusTable, images: Path) -> None:
    """Extract exactly the table's images to ``images/<stimID>`` (nothing outside that folder)."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            names = [info.filename for info in bundle.infolist() if not info.is_dir()]
            prefix = _member_prefix(names, table.stim_ids)
            for stim_id in table.stim_ids:
                relative = PurePosixPath(stim_id)
                target = images.joinpath(*relative.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(prefix + stim_id) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out, CHUNK)
                try:
                    check_image(target)
                except DnnprobeError as exc:
                    raise DnnprobeError(f"{archive}: {prefix + stim_id}: {str(exc).split(': ', 1)[-1]}") from None
    except zipfile.BadZipFile as exc:
        archive.unlink(missing_ok=True)
        raise DnnprobeError(f"{archive}: not a valid zip ({exc}); deleted, rerun to download again") from None


def fetch_bold5000(params: Bold5000Params, images: Path) -> StimulusTable:
    """Download, verify and unpack BOLD5000; return DNNBrain's table for the unpacked images."""
    folder = Path(params.download_dir)
    table_file = download(params.table_url, folder / "all_5000scenes.stim.csv", params.table_sha256, params.table_size)
    archive = download(params.images_url, folder / "BOLD5000_Stimuli.zip", params.images_sha256, params.images_size)
    table = StimulusTable.read(table_file)
    labels = table.integer_labels("label")
    if params.expected_stimuli and len(table) != params.expected_stimuli:
        raise DnnprobeError(f"{table_file}: {len(table)} stimuli, expected {params.expected_stimuli}")
    sizes = sorted(int((labels == value).sum()) for value in set(labels.tolist()))
    if params.expected_class_sizes and sizes != sorted(params.expected_class_sizes):
        raise DnnprobeError(
            f"{table_file}: class sizes {sizes}, expected {sorted(params.expected_class_sizes)}"
        )
    unpack_images(archive, table, images)
    if "condition" not in table.columns:
        # DNNBrain's table has labels only; the tutorial's class sizes say which one is animate.
        counts = {value: int((labels == value).sum()) for value in set(labels.tolist())}
        names = {value: TUTORIAL_CLASS_NAMES.get(count, f"label {value}") for value, count in counts.items()}
        table.columns["condition"] = [names[value] for value in labels.tolist()]
    table.header["title"] = "BOLD5000 (DNNBrain animate-inanimate labels)"
    return table
