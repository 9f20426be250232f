"""Image files: which files of a folder are stimuli, the stimuli stage's cheap check, the check stage's
full check of each image (once per stimulus set, its notes recorded next to the image list), and the
decoding extraction does (8-bit RGB, as DNNBrain's ``.convert('RGB')``). All read an image through PIL
with the same one-line errors (:func:`_pil_errors`), so a file the checks let through fails extraction alike.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image

from dnnprobe.core.atomic import atomic_output
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.hashing import file_sha256

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def is_stimulus_file(name: str) -> bool:
    """Whether a file in a user's image folder is a stimulus: an image, and not hidden.

    Hidden files include the macOS Finder's ``.DS_Store`` and its ``._photo.jpg`` resource forks, which
    carry an image's extension but hold no image; Windows' ``Thumbs.db`` has no image extension.
    """
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS


@contextlib.contextmanager
def _pil_errors(path: Path, failure: str):
    """PIL's errors while opening or decoding `path` as one line: a decompression bomb (PIL's pixel
    limit), or ``<path>: <failure> (<reason>)`` for a file PIL cannot read."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DnnprobeError(f"{path}: image too large to decode safely ({exc})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        size = path.stat().st_size if path.is_file() else 0
        reason = "empty file" if size == 0 else str(exc).strip().splitlines()[0] if str(exc).strip() \
            else exc.__class__.__name__
        raise DnnprobeError(f"{path}: {failure} ({reason})") from None


def check_image(path: Path) -> None:
    """Fail unless `path` is an image PIL can open (format header, size, pixel limit); no full decode.

    A cheap test at the stimuli stage, so that a file that is not an image stops the pipeline before
    the network and extraction run; extraction still decodes every pixel and reports damage there.
    """
    with _pil_errors(path, "not a readable image"), warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            image.verify()  # PNG: checks every chunk's CRC; JPEG and others: the header


def load_rgb(path: Path, expected_sha256: str | None = None, notes: list[str] | None = None) -> Image.Image:
    """Open an image as 8-bit RGB, as DNNBrain does (``.convert('RGB')``), with clear errors, checking all
    that can be checked of the file.

    Pixels of more than 8 bits are scaled to 8 bits first, since PIL's own conversion clips them
    (:func:`eight_bit`). With `expected_sha256`, the bytes must have that hash (the image is the one the
    image list names). With `notes` (a list), one line naming the file is added for each thing that is
    decoded but worth knowing: an animated or multi-page file (its first frame is used), a JPEG whose
    scan data libjpeg reports as corrupt (PIL decodes it without a word), a warning of PIL's own.
    Transparent pixels keep the colour stored under them, as in DNNBrain (``convert('RGB')``). The check
    stage runs this once per image (:func:`check_images`); extraction then decodes each image once
    (:func:`decode_rgb`, the same pixels) and prints the notes the check stage recorded.
    """
    problems: list[str] = []
    try:
        return _load_rgb(path, expected_sha256, problems)
    finally:
        if notes is not None:
            notes.extend(f"{path}: {problem}" for problem in problems)


def _load_rgb(path: Path, expected_sha256: str | None, problems: list[str]) -> Image.Image:
    """:func:`load_rgb`, its notes in `problems` without the file's name."""
    _check_bytes(path, expected_sha256)
    with _pil_errors(path, "cannot read image"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Image.open(path) as image:
                frames = getattr(image, "n_frames", 1)  # before load(): counting frames seeks through the file
                image.seek(0)
                image.load()
                rgb = eight_bit(image, path).convert("RGB")
                if image.format in ("JPEG", "MPO"):
                    problems.extend(f"{problem}; decoded as PIL decodes it" for problem in jpeg_problems(path, image.mode))
        for warning in caught:
            # PIL only warns between its pixel limit and twice that; treat both as an error.
            if issubclass(warning.category, Image.DecompressionBombWarning):
                raise warning.message
            if not issubclass(warning.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning)):
                problems.append(str(warning.message))  # about the file, not about library versions
    if frames > 1:
        problems.append(f"{frames} frames (animated or multi-page); the first is used")
    return rgb


def decode_rgb(path: Path, expected_sha256: str | None = None) -> Image.Image:
    """The pixels of :func:`load_rgb`, decoded once, for an image :func:`check_images` has already checked.

    What depends only on the file (the corrupt-scan check, which decodes a JPEG a second time; the frame
    count, which seeks through the file; PIL's warnings) was recorded by the check stage; what remains is
    the decode and the conversion to 8-bit RGB (:func:`eight_bit`), with the same one-line errors. With
    `expected_sha256` the bytes must still have that hash: the record is of exactly those bytes.
    """
    _check_bytes(path, expected_sha256)
    with _pil_errors(path, "cannot read image"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # recorded by the check stage; a worker would print them under no name
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            image.load()
            return eight_bit(image, path).convert("RGB")


def _check_bytes(path: Path, expected_sha256: str | None) -> None:
    """Refuse a missing file, and with `expected_sha256` a file whose bytes do not have that hash."""
    if not path.is_file():
        raise DnnprobeError(f"{path}: image not found")
    if expected_sha256 is not None and file_sha256(path) != expected_sha256:
        raise DnnprobeError(
            f"{path}: its bytes differ from those the image list recorded; rerun the stimuli and check stages")


def eight_bit(image: Image.Image, path: Path) -> Image.Image:
    """`image` with 8 bits per channel; modes that already have them are returned as they are.

    16-bit modes (``I;16`` and its byte orders) are scaled by 255 / 65535; 32-bit integers (``I``) the
    same when a value exceeds 255 (else they are 8-bit values); floats (``F``) by 255 when every value
    lies in 0..1 (the float convention), else taken as 0..255. Values outside 0..65535 (``I``) or
    0..255 (``F``), and NaN or infinity, are refused: no scale would be more than a guess.
    """
    if not (image.mode.startswith("I;16") or image.mode in ("I", "F")):
        return image
    array = np.asarray(image, dtype=np.float64)
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if image.mode == "F":
        if not np.isfinite(array).all() or low < 0 or high > 255:
            shown = "NaN or infinite values" if not np.isfinite(array).all() else f"values from {low:g} to {high:g}"
            raise DnnprobeError(f"{path}: float pixels ({shown}); only 0..1 or 0..255 can be read as an image: "
                                "save it with 8 or 16 bits per channel")
        if high > 1:
            return image  # 0..255 already: PIL's conversion rounds it as before
        peak = 1.0
    elif image.mode == "I" and (low < 0 or high > 65535):
        raise DnnprobeError(f"{path}: 32-bit integer pixels from {low:g} to {high:g}; only 0..65535 can be read "
                            "as an image: save it with 8 or 16 bits per channel")
    else:
        peak = 65535.0 if image.mode.startswith("I;16") or high > 255 else 255.0
    return Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))


def jpeg_problems(path: Path, mode: str) -> list[str]:
    """What libjpeg warns of while decoding the JPEG at `path` (``Corrupt JPEG data: ...``): PIL silences
    its warnings and decodes such a file into pixels that can be far off. Checked with simplejpeg's strict
    mode at an eighth of the size (the whole scan is still read)."""
    data = path.read_bytes()
    colorspace = {"CMYK": "CMYK", "L": "GRAY"}.get(mode, "RGB")
    options = dict(colorspace=colorspace, fastdct=True, fastupsample=True, min_factor=8)
    try:
        simplejpeg.decode_jpeg(data, strict=True, **options)
    except ValueError as warning:
        try:
            simplejpeg.decode_jpeg(data, strict=False, **options)
        except ValueError:
            return []  # a JPEG variant libjpeg-turbo cannot decode, but PIL could: nothing to report
        return [str(warning).strip().rstrip(".")]
    return []


# ---- the check stage's full check of every image, and its record ----------------------------------

# Below this many images the check runs in one process (starting workers would cost more).
PARALLEL_FROM = 64


def _image_problems(path: Path) -> tuple[list[str], str | None]:
    """One image's notes (without its name), or the one-line error that refuses it."""
    problems: list[str] = []
    try:
        _load_rgb(path, None, problems)
    except DnnprobeError as exc:
        return problems, str(exc)
    return problems, None


def check_images(paths: list[Path], where: str, processes: int | None = None) -> list[list[str]]:
    """Check every image as decoding it for extraction would (:func:`load_rgb`): each image's notes
    (what is decoded but worth knowing, without the file's name), in order.

    This is the per-image work that depends only on the file (a second, strict decode of each JPEG's
    scan, the frame count, bit depth and pixel format, PIL's warnings), done once per stimulus set by the
    check stage instead of at every extraction. The first image that cannot be read raises
    DnnprobeError, one line: ``<where>, stimulus row <i>: <path>: <reason>``; so does a worker process
    that dies. Runs in `processes` processes (default: one per CPU) for :data:`PARALLEL_FROM` images or more.
    """
    processes = processes or os.cpu_count() or 1
    if processes > 1 and len(paths) >= PARALLEL_FROM:
        return _check_in_workers(paths, where, processes)
    return _problems_or_error(map(_image_problems, paths), where)


def _check_in_workers(paths: list[Path], where: str, processes: int) -> list[list[str]]:
    """:func:`check_images` in `processes` worker processes, in order; the workers end with the call.

    concurrent.futures, not multiprocessing.Pool: a Pool waits forever for the images of a worker that died
    (killed, out of memory, a crashing decoder), and can deadlock stopping early when a worker died holding
    its task queue's lock (SIGTERM to the whole process group, as `timeout` sends); the executor reports a
    dead worker (BrokenProcessPool) and stops the others.
    """
    posix = os.name == "posix"
    executor = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork" if posix else "spawn"),
                                   initializer=_worker_signals if posix else None)
    try:
        with _stage_signals_blocked():  # forked workers start at the first submit, inside map
            results = executor.map(_image_problems, paths, chunksize=16)
        return _problems_or_error(results, where)
    except BrokenProcessPool:
        raise DnnprobeError(f"{where}: a process checking the images ended before it finished (killed, out of "
                            "memory, or a decoder crashed); run the check stage again") from None
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


# Signals the workers leave to the stage: Ctrl-C reaches every process of the terminal's group, and SIGTERM
# (the stage's own, or a group's: `timeout`, SLURM) ends a worker by its default action.
_STAGE_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _worker_signals() -> None:
    """Worker initializer: SIGTERM ends the worker (the default action), Ctrl-C is the stage's to handle.

    A forked worker inherits the stage's Python SIGTERM handler (it raises SystemExit), and Python drops an
    exception raised while the child is still starting (in an at-fork hook): such a worker outlived its
    pool's end and the stage hung. The workers start with these signals blocked
    (:func:`_stage_signals_blocked`), so one sent early waits for this default.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STAGE_SIGNALS)


@contextlib.contextmanager
def _stage_signals_blocked():
    """Block SIGINT and SIGTERM in this thread meanwhile (POSIX): processes forked and threads started inside
    inherit the mask. A signal sent meanwhile is delivered when it ends."""
    if os.name != "posix":
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STAGE_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _problems_or_error(results, where: str) -> list[list[str]]:
    problems = []
    for row, (notes, error) in enumerate(results, start=1):
        if error is not None:
            raise DnnprobeError(f"{where}, stimulus row {row}: {error}")
        problems.append(notes)
    return problems


def image_notes_path(image_list: Path) -> Path:
    """Where the check stage records its image notes: next to the image list (``data/images.notes.json``
    beside ``data/images.sha256``)."""
    return Path(image_list).with_suffix(".notes.json")


def write_image_notes(image_list: Path, stim_ids: list[str], problems: list[list[str]]) -> Path:
    """Record each image's notes (:func:`check_images`) for the image list `image_list`, atomically.

    The record names the list's sha256: it is read only for exactly those images (:func:`read_image_notes`).
    """
    record = {
        "image_list": Path(image_list).name,
        "image_list_sha256": file_sha256(image_list),
        "images": len(stim_ids),
        "notes": [{"row": row, "stimID": stim_id, "note": note}
                  for row, (stim_id, notes) in enumerate(zip(stim_ids, problems), start=1) for note in notes],
    }
    path = image_notes_path(image_list)
    with atomic_output(path) as temp:
        temp.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_image_notes(image_list: Path, list_sha256: str, stim_ids: list[str]) -> list[str] | None:
    """The notes the check stage recorded for this image list, one line each naming the image (as
    :func:`load_rgb` writes them, in image order), or None when there is no record of exactly these
    images (no file, another list's, unreadable): then extraction checks each image itself."""
    folder = Path(image_list).with_suffix("")  # the folder the list names (ImageList.folder)
    try:
        record = json.loads(image_notes_path(image_list).read_text(encoding="utf-8"))
        if record["image_list_sha256"] != list_sha256 or record["images"] != len(stim_ids):
            return None
        problems: list[list[str]] = [[] for _ in stim_ids]
        for entry in record["notes"]:
            if not 1 <= entry["row"] <= len(stim_ids) or stim_ids[entry["row"] - 1] != entry["stimID"]:
                return None
            problems[entry["row"] - 1].append(str(entry["note"]))
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    return [f"{folder / stim_id}: {note}" for stim_id, notes in zip(stim_ids, problems) for note in notes]
