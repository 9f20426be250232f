"""Image files: which files of a folder are stimuli, the stimuli stage's cheap check, and the decoding
extraction does (8-bit RGB, as DNNBrain's ``.convert('RGB')``). Both read an image through PIL with the
same one-line errors (:func:`_pil_errors`), so a file the check lets through fails extraction alike.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image

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
    """Open an image as 8-bit RGB, as DNNBrain does (``.convert('RGB')``), with clear errors.

    Pixels of more than 8 bits are scaled to 8 bits first, since PIL's own conversion clips them
    (:func:`eight_bit`). With `expected_sha256`, the bytes must have that hash (the image is the one the
    image list names). With `notes` (a list), one line naming the file is added for each thing that is
    decoded but worth knowing: an animated or multi-page file (its first frame is used), a JPEG whose
    scan data libjpeg reports as corrupt (PIL decodes it without a word), a warning of PIL's own.
    Transparent pixels keep the colour stored under them, as in DNNBrain (``convert('RGB')``).
    """
    if not path.is_file():
        raise DnnprobeError(f"{path}: image not found")
    if expected_sha256 is not None and file_sha256(path) != expected_sha256:
        raise DnnprobeError(
            f"{path}: its bytes differ from those the image list recorded; rerun the stimuli and check stages")
    notes = [] if notes is None else notes
    with _pil_errors(path, "cannot read image"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Image.open(path) as image:
                frames = getattr(image, "n_frames", 1)  # before load(): counting frames seeks through the file
                image.seek(0)
                image.load()
                rgb = eight_bit(image, path).convert("RGB")
                if image.format in ("JPEG", "MPO"):
                    notes.extend(f"{path}: {problem}; decoded as PIL decodes it" for problem in jpeg_problems(path, image.mode))
        for warning in caught:
            # PIL only warns between its pixel limit and twice that; treat both as an error.
            if issubclass(warning.category, Image.DecompressionBombWarning):
                raise warning.message
            if not issubclass(warning.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning)):
                notes.append(f"{path}: {warning.message}")  # about the file, not about library versions
    if frames > 1:
        notes.append(f"{path}: {frames} frames (animated or multi-page); the first is used")
    return rgb
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
