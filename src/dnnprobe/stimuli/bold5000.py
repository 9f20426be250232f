"""stimuli.source=bold5000: download the BOLD5000 images and DNNBrain's animate/inanimate labels.

The downloads (:mod:`dnnprobe.stimuli.download`: resumable, retried, verified) go to a local cache outside DVC
(``stimuli.bold5000.download_dir``); what DVC versions and shares is the stage's output: the unpacked
images and the table.

BOLD5000's zip holds the images twice under the same names: ``Scene_Stimuli/Presented_Stimuli/`` (as
shown in the scanner, the ones DNNBrain's tutorial uses) and ``Scene_Stimuli/Original_Images/`` (at
their source sizes), plus macOS ``__MACOSX/._*`` twins. The images are taken from the folder named
``Presented_Stimuli`` (which must then hold every image of the table), or else from the one folder that
holds every image; any other ambiguity is refused, never resolved by the order of the zip's entries.
"""

from __future__ import annotations

import shutil
import sys
import zipfile
from collections import Counter
from pathlib import Path, PurePosixPath

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.paths import dvc_root
from dnnprobe.stimuli.download import download, expect_text, expect_zip
from dnnprobe.stimuli.images import check_image
from dnnprobe.stimuli.params import Bold5000Params
from dnnprobe.stimuli.table import StimulusTable

CHUNK = 1 << 20
TUTORIAL_CLASS_NAMES = {2547: "animate", 2369: "inanimate"}  # class sizes given in DNNBrain's tutorial
PRESENTED = "Presented_Stimuli"  # the folder DNNBrain's tutorial names ("path_to_presented_stimuli")


def _is_macos_metadata(name: str) -> bool:
    """``__MACOSX/...`` and ``._<name>`` entries: resource forks a Mac adds to zips, not images."""
    parts = name.split("/")
    return parts[0] == "__MACOSX" or parts[-1].startswith("._")


def _shown(folders: list[str]) -> str:
    return ", ".join(f"{folder or '(top level)'}" for folder in folders)


def _member_prefix(names: list[str], stim_ids: list[str], archive: Path) -> str:
    """The folder inside the zip under which the table's images are taken (zips wrap files in folders).

    Every folder holding any of the table's images is a candidate. The one candidate, or among several
    the one named Presented_Stimuli, must hold every image; several complete copies with no single
    Presented_Stimuli among them are refused, naming them.
    """
    wanted = set(stim_ids)
    pairs = set()  # (folder, stimID) for each of the table's images a folder holds (a zip may repeat a name)
    for name in names:
        if _is_macos_metadata(name):
            continue
        parts = name.split("/")
        for cut in range(len(parts)):
            if (stim_id := "/".join(parts[cut:])) in wanted:
                pairs.add(("".join(part + "/" for part in parts[:cut]), stim_id))
    found = Counter(folder for folder, _ in pairs)  # folder -> how many of the table's images it holds
    if not found:
        raise DnnprobeError(f"{archive}: holds none of the table's {len(wanted)} images (the first is {stim_ids[0]})")
    complete = sorted(folder for folder, count in found.items() if count == len(wanted))
    presented = sorted(folder for folder in found if PRESENTED in folder.split("/"))
    if len(presented) == 1:
        chosen = presented[0]
    elif len(presented) > 1 or len(complete) > 1:
        several = presented if len(presented) > 1 else complete
        raise DnnprobeError(
            f"{archive}: {len(several)} folders hold the table's images ({_shown(several)}) and "
            f"not exactly one is named {PRESENTED}; unpack the right one and use stimuli.source=stimcsv")
    else:
        chosen = complete[0] if complete else max(found, key=lambda folder: (found[folder], folder))
    if found[chosen] < len(wanted):
        members = set(names)
        missing = [s for s in stim_ids if chosen + s not in members]
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        others = [folder for folder in complete if folder != chosen]
        also = (f"; {_shown(others)} holds them all, but the tutorial's images are those in {PRESENTED}"
                if others else "")
        raise DnnprobeError(f"{archive}: {chosen or '(top level)'} lacks {len(missing)} of the table's "
                            f"{len(wanted)} images: {shown}{also}")
    if len(found) > 1:
        others = sorted(folder for folder in found if folder != chosen)
        print(f"bold5000: images from {chosen}; not from {_shown(others)}", file=sys.stderr)
    return chosen


def unpack_images(archive: Path, table: StimulusTable, images: Path) -> None:
    """Extract exactly the table's images to ``images/<stimID>`` (nothing outside that folder).

    The caller writes `images` as a temporary folder (atomic_output): on any error nothing is left.
    The archive is only read, never deleted: a damaged one stays for the user to inspect.
    """
    member = ""
    try:
        with zipfile.ZipFile(archive) as bundle:
            names = [info.filename for info in bundle.infolist() if not info.is_dir()]
            prefix = _member_prefix(names, table.stim_ids, archive)
            for stim_id in table.stim_ids:
                member = prefix + stim_id
                target = images.joinpath(*PurePosixPath(stim_id).parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(member) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out, CHUNK)
                try:
                    check_image(target)
                except DnnprobeError as exc:
                    raise DnnprobeError(f"{archive}: {member}: {str(exc).split(': ', 1)[-1]}") from None
    except (zipfile.BadZipFile, NotImplementedError, EOFError) as exc:  # bad CRC, unsupported compression, cut
        where = f" at {member}" if member else ""
        raise DnnprobeError(f"{archive}: a damaged zip{where} ({exc}); delete it to download it again") from None


def download_folder(setting: str) -> Path:
    """``stimuli.bold5000.download_dir`` as a path. A relative one is in the real repository
    (``$DVC_ROOT`` when DVC sets it): `dvc exp run --temp` and queued experiments run in a temporary copy,
    and would otherwise each download the 4 GB zip again into a folder deleted afterwards."""
    folder = Path(setting)
    root = dvc_root()  # not repo_root(): outside DVC a relative folder stays in the user's working folder
    return folder if folder.is_absolute() or root is None else root / folder


def fetch_bold5000(params: Bold5000Params, images: Path, progress: bool = True) -> StimulusTable:
    """Download, verify and unpack BOLD5000; return DNNBrain's table for the unpacked images."""
    folder = download_folder(params.download_dir)
    table_file = download(params.table_url, folder / "all_5000scenes.stim.csv", params.table_sha256, params.table_size,
                          expect=expect_text, wanted="a .stim.csv table (text)", pin_as="stimuli.bold5000.table",
                          progress=progress)
    archive = download(params.images_url, folder / "BOLD5000_Stimuli.zip", params.images_sha256, params.images_size,
                       expect=expect_zip, wanted="a zip", pin_as="stimuli.bold5000.images",
                       progress=progress)
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
