"""ViT-B/16 extraction throughput with tokens ``cls`` and ``all``, against the bare forward pass.

torchvision's ``vit_b_16`` with random weights (it runs wherever torch and torchvision do: no timm
needed), its 12 encoder blocks (``block1``..``block12``), DNNBrain preprocessing, on synthetic JPEGs
of BOLD5000's shape (375 x 375):

1. forward only: the network on ready-made input tensors, batch by batch, no hooks, no decoding, no
   writing (the ceiling);
2. dnnprobe extract, ``extract.tokens: cls``: 12 x 768 units per image;
3. dnnprobe extract, ``extract.tokens: all``: 12 x 197 x 768 units per image (about 36 GB at BOLD5000
   scale in float32; the file of this run is n / 4916 of that).

Each extract line gives images/s, its ratio to the forward pass, and the file's size; the last line
is ``ratio_cls=<...> ratio_all=<...>``. Needs torch, torchvision, h5py, numpy (and dnnprobe's src/).

    PYTHONPATH=src python3 benchmarks/bench_vit_tokens.py --n 64
    PYTHONPATH=src python3 benchmarks/bench_vit_tokens.py --n 1024 --device cuda --workers 8
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from _common import HERE, machine

BOLD5000_IMAGES = 4916


def forward_only(model, n: int, batch_size: int, target) -> float:
    """images/s of the bare forward pass (after one warm-up batch)."""
    from bench_extract import time_forward

    return n / time_forward(model, n, batch_size, target)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=64, help="number of images")
    parser.add_argument("--size", type=int, default=375, help="JPEG side in pixels (BOLD5000: 375)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda | cuda:N")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader decoding processes")
    parser.add_argument("--data-dir", type=Path, default=HERE / "data", help="where images and the output go")
    args = parser.parse_args(argv)

    import torch

    from make_images import write_images

    from dnnprobe.compute.device import pick_device
    from dnnprobe.extract.forward import extract_activations
    from dnnprobe.network.layers import resolve_layers
    from dnnprobe.network.sources import torchvision as source
    from dnnprobe.network.sources.torchvision import random_network
    from dnnprobe.stimuli.table import StimulusTable

    args.data_dir.mkdir(parents=True, exist_ok=True)
    table = StimulusTable.read(write_images(args.n, args.size, args.data_dir))
    target = pick_device(args.device)
    model = random_network("vit_b_16", 0).eval()
    layers = [f"block{i}" for i in range(1, 13)]
    paths = resolve_layers(model, "vit_b_16", layers)
    layout = source.token_layout(model, (224, 224))
    forward = forward_only(model.to(target), args.n, args.batch_size, target)
    print(f"machine: {machine()}, device {target}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, torch threads {torch.get_num_threads()}")
    print(f"vit_b_16 (random weights), 12 blocks, {args.n} JPEGs of {args.size} px, batch {args.batch_size}, "
          f"float32, {args.workers} decoding worker(s)")
    print(f"{'forward only':<24}{forward:8.1f} images/s")
    ratios = {}
    for tokens in ("cls", "all"):
        with tempfile.TemporaryDirectory(dir=args.data_dir) as folder:
            out = Path(folder) / "bench.act.h5"
            summary = extract_activations(table, model, paths, out, batch_size=args.batch_size, device=str(target),
                                          num_workers=args.workers, progress=False, tokens=tokens, token_layout=layout)
            size = out.stat().st_size
        ratios[tokens] = summary.images_per_second / forward
        at_scale = size / args.n * BOLD5000_IMAGES
        print(f"{'extract, tokens ' + tokens:<24}{summary.images_per_second:8.1f} images/s  "
              f"ratio {ratios[tokens]:.3f}  file {size / 1e6:,.1f} MB ({at_scale / 1e9:,.2f} GB at {BOLD5000_IMAGES} images)")
    print(f"ratio_cls={ratios['cls']:.3f} ratio_all={ratios['all']:.3f}")


if __name__ == "__main__":
    main()
