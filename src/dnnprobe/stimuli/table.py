"""The stimulus table: DNNBrain's ``.stim.csv`` format, and the image list extraction reads.

A ``.stim.csv`` is a few ``key=value`` header lines, then a ``data=`` line naming the columns, then
one comma-separated row per stimulus::

    type=image
    path=images
    title=dnnprobe demo stimuli
    data=stimID,label,condition
    boxy/0000.png,0,boxy

``path=`` is the folder that holds the images; ``stimID`` is each image's path inside it. A relative
``path=`` is resolved against the folder that holds the ``.stim.csv`` itself, so a table and its
images can be moved, versioned and shared together (an absolute ``path=`` is used as it is). DNNBrain
resolves a relative ``path=`` against its working directory instead, so run DNNBrain from the table's
folder. Columns other than ``stimID``, ``condition`` and ``label`` are read as numbers by DNNBrain.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable

import numpy as np

from dnnprobe.core.atomic import atomic_output
from dnnprobe.core.errors import DnnprobeError, missing_file_hint
from dnnprobe.core.hashing import file_sha256

MAX_TITLE_LENGTH = 500  # the probe logs title= as its MLflow run's dataset name, which MLflow limits to 500


def class_label(text: str) -> int:
    """A class label as DNNBrain reads one: a number that is whole (``1``, ``1.0``, ``1e0`` are class 1).

    DNNBrain reads label columns as floats and casts them to int, so tables written by numpy or pandas
    (``0.0``, ``1.0``) are valid. Raises ValueError for text that is not a number, and NotWholeNumber
    (a ValueError) for a number that is not whole (``0.5``, ``nan``): casting it would change the class.
    """
    try:
        return int(text)
    except ValueError:
        value = float(text)  # ValueError: not a number at all
    if not value.is_integer():
        raise NotWholeNumber(text)
    return int(value)


class NotWholeNumber(ValueError):
    """A number that is not whole (0.5, nan, inf) where a class label must be."""


@dataclass
class StimulusTable:
    """One row per stimulus, in the order every later file (activations, scores) follows."""

    header: dict[str, str]
    columns: dict[str, list[str]]
    location: Path | None = field(default=None)  # the .stim.csv this was read from, if any

    def __post_init__(self) -> None:
        lengths = {len(v) for v in self.columns.values()}
        if len(lengths) > 1:
            raise DnnprobeError(f"{self._name}: columns have different lengths {sorted(lengths)}")

    @property
    def _name(self) -> str:
        return str(self.location) if self.location else "stimulus table"

    def __len__(self) -> int:
        return len(self.columns["stimID"])

    @property
    def stim_ids(self) -> list[str]:
        return self.columns["stimID"]

    @property
    def image_folder(self) -> Path:
        """The folder named by ``path=``, relative to the table's own folder unless absolute."""
        folder = Path(self.header["path"])
        if not folder.is_absolute() and self.location is not None:
            folder = self.location.parent / folder
        return folder

    def image_paths(self) -> list[Path]:
        folder = self.image_folder
        return [folder / stim_id for stim_id in self.stim_ids]

    def column(self, name: str) -> list[str]:
        if name not in self.columns:
            raise DnnprobeError(
                f"{self._name}: no column {name!r} (columns: {', '.join(self.columns)})"
            )
        return self.columns[name]

    def integer_labels(self, name: str = "label") -> np.ndarray:
        """A class-label column as integers (:func:`class_label`: ``1`` and ``1.0`` are both class 1).

        Raises DnnprobeError naming the table, the first row that is not a whole number, and its value.
        """
        values = self.column(name)
        labels = np.empty(len(values), dtype=np.int64)
        for row, text in enumerate(values):
            try:
                labels[row] = class_label(text)
            except (ValueError, OverflowError) as exc:
                problem = "is too large for a class label (64-bit integers)" if isinstance(exc, OverflowError) \
                    else "is not an integer (a class label is a whole number; 1.0 is read as 1)" \
                    if isinstance(exc, NotWholeNumber) else "is not an integer"
                raise DnnprobeError(
                    f"{self._name}: column {name!r}, stimulus row {row + 1} ({self.stim_ids[row]}): {text!r} {problem}"
                ) from None
        return labels

    def numeric_column(self, name: str) -> np.ndarray:
        """A column as floats (DNNBrain reads every non-text column this way)."""
        values = self.column(name)
        out = np.empty(len(values), dtype=np.float64)
        for row, text in enumerate(values):
            try:
                out[row] = float(text)
            except ValueError:
                raise DnnprobeError(
                    f"{self._name}: column {name!r}, stimulus row {row + 1} ({self.stim_ids[row]}): "
                    f"{text!r} is not a number"
                ) from None
        if not np.all(np.isfinite(out)):
            row = int(np.flatnonzero(~np.isfinite(out))[0])
            raise DnnprobeError(f"{self._name}: column {name!r}, stimulus row {row + 1}: {values[row]!r} is not finite")
        return out

    # ---- reading and writing -------------------------------------------------------------

    @classmethod
    def read(cls, path: str | os.PathLike) -> "StimulusTable":
        path = Path(path)
        if path.is_dir():
            raise DnnprobeError(f"{path}: is a folder, not a stimulus table (.stim.csv)")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise DnnprobeError(f"{path}: stimulus table not found{missing_file_hint()}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DnnprobeError(f"{path}: cannot read stimulus table ({exc})") from None
        return cls.parse(text, path)

    @classmethod
    def parse(cls, text: str, path: Path) -> "StimulusTable":
        # Keep line numbers of the file for messages; DNNBrain ignores empty lines.
        lines = [(no, line.rstrip("\r")) for no, line in enumerate(text.split("\n"), start=1)]
        lines = [(no, line) for no, line in lines if line.strip() != ""]
        data_at = next((i for i, (_, line) in enumerate(lines) if line.startswith("data=")), None)
        if data_at is None:
            raise DnnprobeError(f"{path}: no 'data=' line naming the columns (see DNNBrain's .stim.csv format)")
        header: dict[str, str] = {}
        for no, line in lines[:data_at]:
            key, sep, value = line.partition("=")
            if not sep:
                raise DnnprobeError(f"{path}, line {no}: header line {line!r} is not key=value")
            header[key.strip()] = value.strip()
            if key.strip() == "title" and len(value.strip()) > MAX_TITLE_LENGTH:
                raise DnnprobeError(f"{path}, line {no}: title= has {len(value.strip())} characters, more than the "
                                    f"{MAX_TITLE_LENGTH} MLflow allows for the dataset name the probe logs it as; shorten it")
        for required in ("type", "path"):
            if required not in header:
                raise DnnprobeError(f"{path}: header has no '{required}=' line")
        if header["type"] != "image":
            raise DnnprobeError(f"{path}: type={header['type']} is not supported (only type=image)")
        names = [name.strip() for name in lines[data_at][1][len("data="):].split(",")]
        if "stimID" not in names:
            raise DnnprobeError(f"{path}, line {lines[data_at][0]}: the data= line has no 'stimID' column")
        if len(set(names)) != len(names) or "" in names:
            raise DnnprobeError(f"{path}, line {lines[data_at][0]}: empty or repeated column names in {names}")
        rows = lines[data_at + 1:]
        if not rows:
            raise DnnprobeError(f"{path}: the data section is empty (no stimuli)")
        columns: dict[str, list[str]] = {name: [] for name in names}
        for no, line in rows:
            fields = [value.strip() for value in line.split(",")]
            if len(fields) != len(names):
                raise DnnprobeError(
                    f"{path}, line {no}: {len(fields)} fields, expected {len(names)} ({','.join(names)})"
                )
            for name, value in zip(names, fields):
                columns[name].append(value)
        table = cls(header=header, columns=columns, location=path)
        table.validate_ids()
        return table

    def validate_ids(self) -> None:
        """stimIDs must be unique relative paths that stay inside the ``path=`` folder."""
        seen: dict[str, int] = {}
        for row, stim_id in enumerate(self.stim_ids, start=1):
            if stim_id == "":
                raise DnnprobeError(f"{self._name}: stimulus row {row} has an empty stimID")
            image = os.path.normpath(stim_id.replace("\\", "/"))  # ./a.png and a.png are one image
            if image in seen:
                raise DnnprobeError(
                    f"{self._name}: stimID {stim_id!r} appears twice (stimulus rows {seen[image]} and {row})"
                )
            seen[image] = row
            parts = PurePosixPath(stim_id.replace("\\", "/"))
            if parts.is_absolute() or ".." in parts.parts or Path(stim_id).is_absolute():
                raise DnnprobeError(
                    f"{self._name}: stimulus row {row}: stimID {stim_id!r} points outside the path= folder"
                )
            if any(len(part.encode("utf-8", "surrogateescape")) > 255 for part in parts.parts):
                shown = stim_id if len(stim_id) <= 60 else stim_id[:57] + "..."
                raise DnnprobeError(f"{self._name}: stimulus row {row}: stimID {shown!r} has a name longer than "
                                    "255 bytes, more than file systems allow")

    def to_text(self) -> str:
        for name, values in self.columns.items():
            for row, value in enumerate(values, start=1):
                if any(bad in value for bad in (",", "\n", "\r")):
                    raise DnnprobeError(
                        f"stimulus table column {name!r}, row {row}: {value!r} contains a comma or line break"
                    )
                if value != value.strip():  # a .stim.csv reader strips them: the value would change
                    raise DnnprobeError(
                        f"stimulus table column {name!r}, row {row}: {value!r} starts or ends with a space; rename it")
        for key, value in self.header.items():
            if "=" in key or "\n" in value or "=" in value:
                raise DnnprobeError(f"stimulus table header {key}={value!r}: '=' and line breaks are not allowed")
        lines = [f"{key}={value}" for key, value in self.header.items()]
        lines.append("data=" + ",".join(self.columns))
        lines.extend(",".join(row) for row in zip(*self.columns.values()))
        return "\n".join(lines) + "\n"

    def write(self, path: str | os.PathLike) -> None:
        text = self.to_text()
        with atomic_output(path) as temp:
            temp.write_text(text, encoding="utf-8")

    def check_images_exist(self) -> None:
        """Fail before any work if images are missing, naming how many and the first few."""
        folder = self.image_folder
        if not folder.is_dir():
            raise DnnprobeError(f"{self._name}: path={self.header['path']} is not a folder ({folder})")
        refuse_missing_images(self._name, self.stim_ids, self.image_paths(), folder)

    def image_checksums(self) -> str:
        """Its images' ``sha256sum`` lines in table order (:func:`image_checksums`), read from the files
        now; fails first, naming them, if any is missing."""
        self.check_images_exist()
        return image_checksums(self.image_folder, self.stim_ids)


def refuse_missing_images(where, stim_ids: list[str], paths: list[Path], folder: Path) -> None:
    """Fail before any work if images are missing, naming how many and the first few."""
    missing = [stim_id for stim_id, path in zip(stim_ids, paths) if not path.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise DnnprobeError(f"{where}: {len(missing)} of {len(stim_ids)} images missing under {folder}: {shown}")


# ---- the images a table lists, with their sha256 -----------------------------------------


def image_checksums(folder: Path, stim_ids: Iterable[str]) -> str:
    """``sha256sum`` lines for the images, in table order: ``<sha256>  <stimID>``.

    The text identifies a stimulus set (which images, which bytes, in which order). Its own sha256 is
    what the stimulus table records as ``images_sha256=`` and what every later file records, so that
    files made from different stimuli are recognised as such. ``cd data/images && sha256sum -c
    ../images.sha256`` checks it with coreutils.
    """
    return "".join(f"{file_sha256(folder / stim_id)}  {stim_id}\n" for stim_id in stim_ids)


@dataclass(frozen=True)
class ImageList:
    """The images extraction reads, in stimulus order, each with the sha256 its bytes must have.

    Stored as ``<folder>.sha256`` next to the image folder it lists (``data/images.sha256`` lists
    ``data/images/``), in ``sha256sum`` format. Row i of every activation file is image i of this list.
    """

    path: Path
    stim_ids: list[str]
    checksums: list[str]

    @property
    def folder(self) -> Path:
        return self.path.with_suffix("")

    @property
    def sha256(self) -> str:
        """The stimulus set's identity: the sha256 of the list itself."""
        return file_sha256(self.path)

    def image_paths(self) -> list[Path]:
        return [self.folder / stim_id for stim_id in self.stim_ids]

    def __len__(self) -> int:
        return len(self.stim_ids)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "ImageList":
        path = Path(path)
        if path.suffix != ".sha256":
            raise DnnprobeError(f"{path}: an image list is named <image folder>.sha256 (e.g. data/images.sha256)")
        if path.is_dir():
            raise DnnprobeError(f"{path}: is a folder, not an image list")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise DnnprobeError(f"{path}: image list not found (the check stage writes it: dvc repro check)") from None
        stim_ids, checksums = [], []
        for number, line in enumerate(lines, start=1):
            checksum, sep, stim_id = line.partition("  ")
            if not sep or len(checksum) != 64 or not stim_id:
                raise DnnprobeError(f"{path}, line {number}: not a sha256sum line ('<sha256>  <image>')")
            stim_ids.append(stim_id)
            checksums.append(checksum)
        if not stim_ids:
            raise DnnprobeError(f"{path}: lists no images")
        return cls(path, stim_ids, checksums)

    def check_images_exist(self) -> None:
        refuse_missing_images(self.path, self.stim_ids, self.image_paths(), self.folder)


def table_from_classes(
    stim_ids: Iterable[str], conditions: Iterable[str], image_folder: str, title: str
) -> StimulusTable:
    """A table whose ``label`` is each condition's index among the sorted condition names."""
    stim_ids = list(stim_ids)
    conditions = list(conditions)
    names = sorted(set(conditions))
    labels = [str(names.index(c)) for c in conditions]
    return StimulusTable(
        header={"type": "image", "path": image_folder, "title": title},
        columns={"stimID": stim_ids, "label": labels, "condition": conditions},
    )
