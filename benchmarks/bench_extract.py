"""Extraction throughput: dnnprobe's extract versus the network's bare forward pass, same CPU/GPU.

1. forward only: random-weight AlexNet on ready-made input tensors, batch by batch, no hooks,
   no decoding, no writing (the ceiling);
2. dnnprobe extract: the real extraction (JPEG decoding in DataLoader workers, DNNBrain
   preprocessing, hooks copying all 14 tutorial layers, streaming to an .act.h5);
in fresh processes, so each peak RSS is its own. Ends with one line
``ratio=<extract images/s / forward images/s> peak_rss_mb=<extract peak RSS>``.

    python benchmarks/bench_extract.py --n 512 --size 375
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def forward_only(n: int, batch_size: int, device: str) -> dict:
    import torch

    from dnnprobe.extraction import pick_device
    from dnnprobe.network import random_network

    target = pick_device(device)
    model = random_network("alexnet", 0).eval().to(target)
    batch = torch.randn(batch_size, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(target)
    with torch.inference_mode():
        model(batch[:2])  # warm-up
        started = time.perf_counter()
        done = 0
        while done < n:
            count = min(batch_size, n - done)
            model(batch[:count])
            done += count
        if target.type == "cuda":
            torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"images_per_second": n / seconds, "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "device": str(target)}


def extract(table_path: str, batch_size: int, device: str, dtype: str, compression: str, workers: int) -> dict:
    """The real extraction of all 14 tutorial layers into a temporary .act.h5 beside the images."""
    from dnnprobe.extraction import extract_activations
    from dnnprobe.layers import TUTORIAL_LAYERS, resolve_layers
    from dnnprobe.network import random_network
    from dnnprobe.stimuli import StimulusTable

    table = StimulusTable.read(table_path)
    model = random_network("alexnet", 0).eval()
    paths = resolve_layers(model, "alexnet", TUTORIAL_LAYERS)
    with tempfile.TemporaryDirectory(dir=Path(table_path).parent) as folder:
        out = Path(folder) / "bench.act.h5"
        summary = extract_activations(table, model, paths, out, batch_size=batch_size, device=device, dtype=dtype,
                                      compression=compression, num_workers=workers, progress=False)
        size = out.stat().st_size
    return {"images_per_second": summary.images_per_second, "seconds": summary.seconds,
            "peak_rss_mb": peak_rss_mb(), "file_gb": size / 1e9, "device": summary.device}


def run_worker(*args: str) -> dict:
    result = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"benchmark worker failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=512, help="number of images")
    parser.add_argument("--size", type=int, default=375, help="JPEG side in pixels")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--compression", default="none", choices=["none", "gzip", "lzf"])
    parser.add_argument("--workers", type=int, default=1, help="DataLoader decoding processes")
    parser.add_argument("--data-dir", type=Path, default=HERE / "data", help="where images and the output go")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, *rest = args.worker
        if kind == "forward":
            out = forward_only(int(rest[0]), int(rest[1]), rest[2])
        else:
            out = extract(rest[0], int(rest[1]), rest[2], rest[3], rest[4], int(rest[5]))
        print(json.dumps(out))
        return

    sys.path.insert(0, str(HERE))
    from make_images import write_images

    args.data_dir.mkdir(parents=True, exist_ok=True)
    table = write_images(args.n, args.size, args.data_dir)
    forward = run_worker("forward", str(args.n), str(args.batch_size), args.device)
    ours = run_worker("extract", str(table), str(args.batch_size), args.device, args.dtype, args.compression,
                      str(args.workers))
    ratio = ours["images_per_second"] / forward["images_per_second"]
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, device {ours['device']}")
    print(f"{args.n} JPEGs of {args.size} px, batch {args.batch_size}, {args.dtype}, compression {args.compression}")
    print(f"forward only     {forward['images_per_second']:7.1f} images/s  peak RSS {forward['peak_rss_mb']:7.0f} MB")
    print(f"dnnprobe extract {ours['images_per_second']:7.1f} images/s  peak RSS {ours['peak_rss_mb']:7.0f} MB"
          f"  file {ours['file_gb']:.2f} GB")
    print(f"ratio={ratio:.3f} peak_rss_mb={ours['peak_rss_mb']:.0f}")


if __name__ == "__main__":
    main()
