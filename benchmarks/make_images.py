"""Write N synthetic JPEGs of a given size (BOLD5000-like: about 375 x 375) and a .stim.csv for them.

The images are the built-in demo scenes (textured shapes in clutter) drawn at `size` and saved as
JPEG, so decoding costs what real photographs of that size cost. Seeded; an existing folder with
the same N and size is reused.

    python benchmarks/make_images.py --n 4916 --size 375
    # -> benchmarks/data/images-n4916-s375/ and benchmarks/data/images-n4916-s375.stim.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from dnnprobe.demo import CLASSES, demo_image
from dnnprobe.stimuli import StimulusTable, table_from_classes


def write_images(n: int, size: int, root: Path = Path("benchmarks/data"), seed: int = 0) -> Path:
    """Write the images and their table; returns the table's path."""
    folder = root / f"images-n{n}-s{size}"
    table_path = root / f"images-n{n}-s{size}.stim.csv"
    if table_path.is_file() and len(StimulusTable.read(table_path)) == n:
        return table_path
    stim_ids, conditions = [], []
    for index in tqdm(range(n), desc="images", unit="img"):
        kind = CLASSES[index % 2]
        stim_id = f"{kind}/{index:05d}.jpg"
        (folder / kind).mkdir(parents=True, exist_ok=True)
        demo_image(kind, seed * 1_000_003 + index, size).save(folder / stim_id, format="JPEG", quality=90)
        stim_ids.append(stim_id)
        conditions.append(kind)
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
