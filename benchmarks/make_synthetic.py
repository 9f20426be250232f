"""Write BOLD5000-shaped synthetic activations (.act.h5) and a matching .stim.csv.

The 14 layers of DNNBrain's AlexNet tutorial at their real widths (conv1 64x55x55 ... fc2 4096),
n stimuli in two balanced classes. Each conv/fc layer is a low-rank signal (shared latent factors
with a power-law spectrum, mapped through a random per-layer matrix) plus isotropic noise, with a
weak label effect along a few factors that grows with depth; each ``*_relu`` layer is max(layer, 0),
as in a real network. Rows are written batch by batch, so memory stays small at any n. Seeded.

    python benchmarks/make_synthetic.py --n 4916 --out benchmarks/data/synthetic
    # -> benchmarks/data/synthetic.act.h5, benchmarks/data/synthetic.stim.csv
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dnnprobe.extract.writer import ActivationWriter
from dnnprobe.stimuli.table import StimulusTable

LAYER_SHAPES = {
    "conv1": (64, 55, 55), "conv2": (192, 27, 27), "conv3": (384, 13, 13), "conv4": (256, 13, 13),
    "conv5": (256, 13, 13), "fc1": (4096, 1, 1), "fc2": (4096, 1, 1),
}
LATENT = 200  # latent factors shared by all layers
BATCH = 64


def layer_names(selected: list[str] | None = None) -> list[str]:
    names = [name for base in LAYER_SHAPES for name in (base, f"{base}_relu")]
    return [name for name in names if selected is None or name in selected]


def write_synthetic(stem: Path, n: int, seed: int = 0, layers: list[str] | None = None,
                    dtype: str = "float32", compression: str = "none") -> tuple[Path, Path]:
    """Write ``<stem>.act.h5`` and ``<stem>.stim.csv``; returns their paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    rng.shuffle(labels)
    factors = rng.standard_normal((n, LATENT)).astype(np.float32) / np.sqrt(np.arange(1, LATENT + 1, dtype=np.float32))
    names = layer_names(layers)
    bases = list(dict.fromkeys(name.replace("_relu", "") for name in names))
    mixing, effects = {}, {}
    for depth, base in enumerate(LAYER_SHAPES):
        layer_rng = np.random.default_rng([seed, depth])
        units = int(np.prod(LAYER_SHAPES[base]))
        if base in bases:
            mixing[base] = (layer_rng.standard_normal((LATENT, units)) / np.sqrt(LATENT)).astype(np.float32)
        # the label shifts a few mid-spectrum factors, more strongly in deeper layers
        effects[base] = 0.06 * (1 + depth)
    table = StimulusTable(
        header={"type": "image", "path": "images", "title": f"synthetic BOLD5000-shaped activations, seed {seed}"},
        columns={"stimID": [f"synthetic/{i:05d}.jpg" for i in range(n)], "label": [str(v) for v in labels],
                 "condition": ["animate" if v else "inanimate" for v in labels]},
    )
    table_path = stem.with_suffix(".stim.csv")
    table.write(table_path)
    act_path = stem.with_suffix(".act.h5")
    shapes = {name: LAYER_SHAPES[name.replace("_relu", "")] for name in names}
    noise_rng = np.random.default_rng([seed, 99])
    with ActivationWriter(act_path, n, shapes, dtype=dtype, compression=compression, rows_per_chunk=BATCH,
                          file_attrs={"synthetic_seed": seed}) as writer:
        for start in tqdm(range(0, n, BATCH), desc="synthetic", unit="batch"):
            rows = slice(start, min(start + BATCH, n))
            block = {}
            for base in bases:
                latent = factors[rows].copy()
                latent[:, 5:10] += effects[base] * (labels[rows, None] - 0.5)
                values = latent @ mixing[base]
                values += noise_rng.standard_normal(values.shape, dtype=np.float32) * 0.08
                if base in names:
                    block[base] = values
                if f"{base}_relu" in names:
                    block[f"{base}_relu"] = np.maximum(values, 0)
            writer.write(block)
    return act_path, table_path



def benchmark_data(n: int, layers: list[str] | None = None, data: Path | None = None) -> tuple[Path, Path]:
    """The benchmarks' input: `data` (an .act.h5 with its .stim.csv beside it) when given, else
    ``benchmarks/data/synthetic-n<n>-<layers>`` written on first use and reused after."""
    if data is not None:
        return data, data.with_name(data.name.replace(".act.h5", ".stim.csv"))
    all_layers = layers is None or list(layers) == layer_names()
    stem = Path(__file__).resolve().parent / "data" / f"synthetic-n{n}-{'all' if all_layers else '-'.join(layers)}"
    act, table = stem.with_suffix(".act.h5"), stem.with_suffix(".stim.csv")
    if not act.is_file():
        write_synthetic(stem, n, layers=layers)
    return act, table

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4916, help="number of stimuli")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/data/synthetic"), help="output stem")
    parser.add_argument("--layers", default="", help="comma-separated subset of the 14 layers (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    args = parser.parse_args(argv)
    started = time.perf_counter()
    act, table = write_synthetic(args.out, args.n, args.seed, args.layers.split(",") if args.layers else None, args.dtype)
    print(f"wrote {act} ({act.stat().st_size / 2**30:.2f} GiB) and {table} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
