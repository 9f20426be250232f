"""Stage ``stimuli``: write the stimulus table (``data/stimuli.stim.csv``) and its images (``data/images/``).

Sources (``stimuli.source``): the built-in ``demo``, a user's ``stimcsv`` table or ``folder`` of class
subfolders (read only from ``stimuli.folder``, which dvc.yaml watches), or ``bold5000`` (downloaded).
The user's files are only read: images are copied, never linked.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from dnnprobe.core.atomic import atomic_output, claim, disk_error
from dnnprobe.core.command import stage_command
from dnnprobe.core.errors import DnnprobeError, missing_file_hint
from dnnprobe.core.hashing import text_sha256
from dnnprobe.core.params import schema
from dnnprobe.stimuli.images import IMAGE_EXTENSIONS, check_image, is_stimulus_file
from dnnprobe.stimuli.params import StimuliParams
from dnnprobe.stimuli.table import StimulusTable, image_checksums, table_from_classes

Params = schema(StimuliParams)  # the sections of params.yaml this stage reads


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path`, with every symbolic link resolved, lies inside `folder` (also resolved)."""
    return _resolved(path).is_relative_to(_resolved(folder))


def _copy_image(source: Path, target: Path) -> None:
    """Copy an image's bytes into the stage's output; never link the user's file.

    With DVC's hardlink cache (.dvc/config) an output file becomes a read-only object of DVC's cache:
    a hard link to the user's original would make the original that object.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    except OSError as exc:
        if disk_error(target, exc):  # full disk, quota: atomic_output says so in one line
            raise
        raise DnnprobeError(f"{source}: cannot copy it into {target.parent} ({exc.strerror or exc})") from None


def user_folder(params: Params) -> Path:
    """stimuli.folder: the only place the stimcsv and folder sources read from (DVC watches it)."""
    folder = Path(params.stimuli.folder)
    if not folder.is_dir():
        what = "not a folder" if folder.exists() else "not found"
        raise DnnprobeError(f"params.yaml: stimuli.folder {folder} is {what}{missing_file_hint()}")
    return folder


def _import_table(params: Params, images: Path) -> StimulusTable:
    """stimuli.source=stimcsv: a user's .stim.csv inside stimuli.folder; its images are copied.

    Every image must resolve, links included, inside the table's path= folder, and that folder inside
    stimuli.folder: what is read is exactly what DVC watches, and a link cannot pull in a file from
    elsewhere (a key, say) that DVC would then cache and push.
    """
    folder = user_folder(params)
    if not params.stimuli.table:
        raise DnnprobeError("params.yaml: stimuli.table must name a .stim.csv in stimuli.folder when stimuli.source is stimcsv")
    table_path = folder / params.stimuli.table
    if not _inside(table_path, folder):
        raise DnnprobeError(
            f"params.yaml: stimuli.table {table_path} is outside stimuli.folder {folder}, the folder DVC watches; "
            "move the table into it, or set stimuli.folder to a folder that holds the table and its images")
    table = StimulusTable.read(table_path)
    if "label" in table.columns:  # DNNBrain's reserved class column: say now, not after extraction
        table.integer_labels("label")
    image_root = table.image_folder
    if not image_root.is_dir():  # often a DNNBrain table made on another machine (path=/nfs/...)
        raise DnnprobeError(
            f"{table_path}: path={table.header['path']} is not a folder; set path= to the folder of its images, "
            "inside stimuli.folder (a relative path= is read from the table's folder)")
    if not _inside(image_root, folder):
        raise DnnprobeError(
            f"{table_path}: path={table.header['path']} ({_resolved(image_root)}) is outside stimuli.folder {folder}, "
            "the folder DVC watches; put the images inside it and make path= point there")
    table.check_images_exist()
    for row, (stim_id, source) in enumerate(zip(table.stim_ids, table.image_paths()), start=1):
        if not _inside(source, image_root):
            raise DnnprobeError(
                f"{table_path}, stimulus row {row}: {stim_id} is a link to {_resolved(source)}, outside the "
                f"path= folder {image_root}; links out of the stimulus folder are not followed")
        try:
            check_image(source)
        except DnnprobeError as exc:
            raise DnnprobeError(f"{table_path}, stimulus row {row}: {exc}") from None
        _copy_image(source, images / stim_id)
    if not table.header.get("title"):  # name the set after the user's table, not the pipeline's copy of it
        table.header["title"] = f"table '{Path(params.stimuli.table).name}'"
    return table


def _import_folder(params: Params, images: Path) -> StimulusTable:
    """stimuli.source=folder: one subfolder per class; label = index of the sorted class names.

    Hidden files (``.DS_Store``, macOS ``._*`` files) and files that are not images are skipped, and
    counted; links to folders, and links to files outside stimuli.folder, are refused.
    """
    root = user_folder(params)
    found: list[tuple[Path, str]] = []  # (image, class name)
    skipped: list[str] = []
    for class_dir in sorted(root.iterdir()):
        if class_dir.is_symlink() and class_dir.is_dir():
            raise DnnprobeError(f"{class_dir}: is a link to a folder; links are not followed "
                                "(put the images themselves under stimuli.folder)")
        if class_dir.name.startswith(".") or not class_dir.is_dir():
            skipped.append(class_dir.name)
            continue
        if "," in class_dir.name:
            raise DnnprobeError(f"{class_dir}: class folder names may not contain commas (the .stim.csv is comma-separated)")
        for folder, subfolders, files in os.walk(class_dir):
            for name in subfolders:
                if (Path(folder) / name).is_symlink():
                    raise DnnprobeError(f"{Path(folder) / name}: is a link to a folder; links are not followed "
                                        "(put the images themselves under stimuli.folder)")
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
            for name in files:
                path = Path(folder) / name
                if not is_stimulus_file(name) or not path.is_file():  # FIFOs, sockets, dangling links too
                    skipped.append(path.relative_to(root).as_posix())
                elif not _inside(path, root):
                    raise DnnprobeError(f"{path}: is a link to {_resolved(path)}, outside stimuli.folder {root}; "
                                        "links out of the stimulus folder are not followed")
                else:
                    found.append((path, class_dir.name))
    if not found:
        loose = sum(1 for name in skipped if "/" not in name and is_stimulus_file(name))
        found_here = f"; {loose} images lie directly in it" if loose else ""
        raise DnnprobeError(
            f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) in class subfolders{found_here}. stimuli.source=folder "
            f"needs one subfolder per class, named after it: {root}/cat/001.jpg, {root}/dog/001.jpg, ... "
            "(or a .stim.csv with stimuli.source=stimcsv)")
    if skipped:
        shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        print(f"stimuli: skipped {len(skipped)} entries of {root} that are hidden or not images: {shown}",
              file=sys.stderr)
    stim_ids, conditions = [], []
    for path, condition in sorted(found):
        stim_id = path.relative_to(root).as_posix()
        try:
            stim_id.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8 in a file or folder name
            raise DnnprobeError(f"{os.fsencode(path)!r}: the name is not valid UTF-8; rename it") from None
        check_image(path)
        _copy_image(path, images / stim_id)
        stim_ids.append(stim_id)
        conditions.append(condition)
    return table_from_classes(stim_ids, conditions, image_folder="", title=f"image folder '{root.name}'")


def make_stimuli(params: Params, table_path: str | os.PathLike, image_folder: str | os.PathLike,
                 progress: bool = True) -> StimulusTable:
    """Write the stimulus table and its image folder (the contract every later stage reads).

    The table records ``images_sha256=``, the identity of its images (:func:`image_checksums`), so that
    later stages can tell whether files were made from these stimuli. The user's files are only read.
    """
    from dnnprobe.stimuli.demo import write_demo_set

    table_path, image_folder = Path(table_path), Path(image_folder)
    source = params.stimuli.source
    if source in ("stimcsv", "folder"):
        folder = user_folder(params)
        for output in (table_path, image_folder):
            if _inside(output, folder) or _inside(folder, output):
                raise DnnprobeError(f"{output}: an output of the stimuli stage cannot overlap stimuli.folder {folder}, "
                                    "whose files are only read; write the outputs elsewhere (data/)")
    with claim(table_path, image_folder), atomic_output(image_folder, directory=True) as images:
        if source == "demo":
            demo = params.stimuli.demo
            table = write_demo_set(images, demo.n_per_class, demo.image_size, demo.seed)
        elif source == "stimcsv":
            table = _import_table(params, images)
        elif source == "folder":
            table = _import_folder(params, images)
        else:
            from dnnprobe.stimuli.bold5000 import fetch_bold5000

            table = fetch_bold5000(params.stimuli.bold5000, images, progress)
        # path= is relative to the table's folder, so the pair can be shared (see stimuli.py).
        table.header = {
            "type": "image",
            "path": os.path.relpath(image_folder.resolve(), table_path.parent.resolve()),
            **{k: v for k, v in table.header.items() if k not in ("type", "path", "images_sha256")},
            "source": source,
            "images_sha256": text_sha256(image_checksums(images, table.stim_ids)),
        }
        table.location = table_path
        table.write(table_path)
    return table


@click.option("--table", default="data/stimuli.stim.csv", show_default=True, help="Stimulus table to write.")
@click.option("--images", default="data/images", show_default=True, help="Image folder to write.")
@stage_command("stimuli", Params)
def command(params, progress, table, images):
    """Write the stimulus table (.stim.csv) and its images, from stimuli.source."""
    written = make_stimuli(params, table, images, progress)
    click.echo(f"stimuli: {len(written)} stimuli from source {params.stimuli.source} -> {table}, {images}/")


if __name__ == "__main__":
    command()
