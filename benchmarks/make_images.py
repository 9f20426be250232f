"""Write N synthetic JPEGs of a given size (BOLD5000-like: about 375 x 375) and a .stim.csv for them.

The images are the built-in demo scenes (textured shapes in clutter) drawn at `size` and saved as
JPEG, so decoding costs what real photographs of that size cost. Seeded; an existing folder with
the same N and size is reused.

    python benchmarks/make_images.py --n 4916 --size 375
    # -> benchmarks/data/images-n4916-s375/ and benchmarks/data/images-n4916-s375.stim.csv
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
from pathlib import Path

from tqdm import tqdm

from dnnprobe.stimuli.demo import CLASSES, demo_image
from dnnprobe.stimuli.table import StimulusTable, table_from_classes


def _write_one(job: tuple[Path, int, int, int]) -> tuple[str, str]:
    """Draw and save image `index` (class index % 2); returns its stimID and class."""
    folder, index, size, seed = job
    kind = CLASSES[index % 2]
    stim_id = f"{kind}/{index:05d}.jpg"
    demo_image(kind, seed * 1_000_003 + index, size).save(folder / stim_id, format="JPEG", quality=90)
    return stim_id, kind


def write_images(n: int, size: int, root: Path = Path("benchmarks/data"), seed: int = 0,
                 processes: int | None = None) -> Path:
    """Write the images and their table; returns the table's path.

    Drawing a 375 px scene takes 0.15-0.3 s, so the images are drawn in `processes` processes (default:
    one per CPU); each image depends only on its index and `seed`, so the files are the same either way.
    """
    folder = root / f"images-n{n}-s{size}"
    table_path = root / f"images-n{n}-s{size}.stim.csv"
    if table_path.is_file() and len(StimulusTable.read(table_path)) == n:
        return table_path
    for kind in CLASSES:
        (folder / kind).mkdir(parents=True, exist_ok=True)
    jobs = [(folder, index, size, seed) for index in range(n)]
    processes = processes or os.cpu_count() or 1
    if processes > 1 and n > 1:
        with multiprocessing.Pool(processes) as pool:
            written = list(tqdm(pool.imap(_write_one, jobs, chunksize=8), total=n, desc="images", unit="img"))
    else:
        written = [_write_one(job) for job in tqdm(jobs, desc="images", unit="img")]
    stim_ids, conditions = [list(column) for column in zip(*written)]
    table = table_from_classes(stim_ids, conditions, image_folder=folder.name, title=f"{n} synthetic JPEGs, {size} px")
    table.write(table_path)
    return table_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4916)
    parser.add_argument("--size", type=int, default=375)
    parser.add_argument("--root", type=Path, default=Path("benchmarks/data"))
    args = parser.parse_args(argv)
    print(write_images(args.n, args.size, args.root))


if __name__ == "__main__":
    main()
