"""Extraction throughput: dnnprobe's extract versus the network's bare forward pass, same CPU/GPU.

1. forward only: random-weight AlexNet on ready-made input tensors, batch by batch, no hooks,
   no decoding, no writing (the ceiling);
2. dnnprobe extract: the real extraction as the pipeline runs it, from the check stage's image list and
   image notes (each image's bytes checked against its sha256 and decoded once, in DataLoader workers;
   DNNBrain preprocessing; hooks copying all 14 tutorial layers; streaming to an .act.h5). The check
   stage's work (each image hashed and checked, once per stimulus set) is done before and not counted;
   its time is printed on a line of its own;
3. with ``--thingsvision PYTHON`` (the python of a virtual environment where thingsvision is
   installed): thingsvision extracting the same 14 modules of the same random AlexNet from the same
   JPEGs (``tv_extract.py``);
in fresh processes, so each peak RSS is its own. Each line also gives the CPU seconds per image
(the process and its decoding workers): on a machine that other jobs share, the ratio of CPU costs
is steadier than the ratio of speeds. Ends with one line
``ratio=<extract images/s / forward images/s> peak_rss_mb=<extract peak RSS>``.

    PYTHONPATH=src python benchmarks/bench_extract.py --n 512 --size 375
    PYTHONPATH=src python benchmarks/bench_extract.py --n 4916 --size 375 --device cuda --workers 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from _common import HERE, cpu_seconds, machine, peak_rss_mb, run_worker


def time_forward(model, n: int, batch_size: int, target) -> float:
    """Seconds of the bare forward pass over n images (ready-made input tensors, no hooks, after a warm-up
    batch), in full float32 as extraction runs (no TF32 on a GPU)."""
    import torch

    from dnnprobe.compute.device import full_float32

    batch = torch.randn(batch_size, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(target)
    with torch.inference_mode(), full_float32():
        model(batch[:2])  # warm-up
        if target.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        done = 0
        while done < n:
            count = min(batch_size, n - done)
            model(batch[:count])
            done += count
        if target.type == "cuda":
            torch.cuda.synchronize()
    return time.perf_counter() - started


def forward_only(n: int, batch_size: int, device: str) -> dict:
    from dnnprobe.compute.device import pick_device
    from dnnprobe.network.sources.torchvision import random_network

    target = pick_device(device)
    model = random_network("alexnet", 0).eval().to(target)
    started_cpu = cpu_seconds()
    seconds = time_forward(model, n, batch_size, target)
    return {"images_per_second": n / seconds, "seconds": seconds, "cpu_seconds": cpu_seconds() - started_cpu,
            "peak_rss_mb": peak_rss_mb(), "device": str(target)}


def image_list(table_path: str) -> tuple[Path, float]:
    """The check stage's image list and image notes for the table's images (``<image folder>.sha256`` and
    ``.notes.json`` beside the folder), as the extract stage reads them; and the seconds that took."""
    from dnnprobe.stimuli.images import check_images, write_image_notes
    from dnnprobe.stimuli.table import StimulusTable

    started = time.perf_counter()
    table = StimulusTable.read(table_path)
    path = table.image_folder.with_suffix(".sha256")
    path.write_text(table.image_checksums(), encoding="utf-8")
    write_image_notes(path, table.stim_ids, check_images(table.image_paths(), str(table_path)))
    return path, time.perf_counter() - started


def extract(list_path: str, batch_size: int, device: str, dtype: str, compression: str, workers: int) -> dict:
    """The real extraction of all 14 tutorial layers into a temporary .act.h5 beside the images."""
    from dnnprobe.extract.forward import extract_activations
    from dnnprobe.network.layers import resolve_layers
    from dnnprobe.network.sources.torchvision import TUTORIAL_LAYERS, random_network
    from dnnprobe.stimuli.table import ImageList

    images = ImageList.read(list_path)
    model = random_network("alexnet", 0).eval()
    paths = resolve_layers(model, "alexnet", TUTORIAL_LAYERS)
    with tempfile.TemporaryDirectory(dir=Path(list_path).parent) as folder:
        out = Path(folder) / "bench.act.h5"
        started_cpu = cpu_seconds()
        summary = extract_activations(images, model, paths, out, batch_size=batch_size, device=device, dtype=dtype,
                                      compression=compression, num_workers=workers, progress=False)
        used_cpu = cpu_seconds() - started_cpu  # includes the one-image dry run (a fraction of a second)
        size = out.stat().st_size
    return {"images_per_second": summary.images_per_second, "seconds": summary.seconds, "cpu_seconds": used_cpu,
            "peak_rss_mb": peak_rss_mb(), "file_gb": size / 1e9, "device": summary.device}


def thingsvision(python: str, table_path: str, batch_size: int, device: str) -> dict:
    """thingsvision (in its own virtual environment) on the same JPEGs, modules and random weights."""
    import torch

    from dnnprobe.compute.device import pick_device
    from dnnprobe.network.layers import resolve_layers
    from dnnprobe.network.sources.torchvision import TUTORIAL_LAYERS, random_network
    from dnnprobe.stimuli.table import StimulusTable

    table = StimulusTable.read(table_path)
    model = random_network("alexnet", 0)
    modules = [str(call) for call in resolve_layers(model, "alexnet", TUTORIAL_LAYERS).values()]
    paths = table.image_paths()
    root = paths[0].parent.parent  # the images folder: one subfolder per class
    with tempfile.TemporaryDirectory(dir=Path(table_path).parent) as folder:
        weights = Path(folder) / "alexnet.pt"
        torch.save(model.state_dict(), weights)
        command = [python, str(HERE / "tv_extract.py"), "--root", str(root),
                   "--weights", str(weights), "--modules", ",".join(modules), "--out", str(Path(folder) / "out"),
                   "--batch-size", str(batch_size), "--device", str(pick_device(device))]
        result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["no message"])[-1]}
    out = json.loads(result.stdout.strip().splitlines()[-1])
    if out["n"] != len(paths):
        return {"error": f"thingsvision read {out['n']} images under {root}, the table lists {len(paths)}"}
    return out


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=512, help="number of images")
    parser.add_argument("--size", type=int, default=375, help="JPEG side in pixels")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: CUDA when present, else CPU")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--compression", default="none", choices=["none", "gzip", "lzf"])
    parser.add_argument("--workers", type=int, default=1, help="DataLoader decoding processes")
    parser.add_argument("--data-dir", type=Path, default=HERE / "data", help="where images and the output go")
    parser.add_argument("--thingsvision", metavar="PYTHON",
                        help="python of a virtual environment with thingsvision installed: run it side by side")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, *rest = args.worker
        if kind == "forward":
            out = forward_only(int(rest[0]), int(rest[1]), rest[2])
        elif kind == "thingsvision":
            out = thingsvision(rest[0], rest[1], int(rest[2]), rest[3])
        else:
            out = extract(rest[0], int(rest[1]), rest[2], rest[3], rest[4], int(rest[5]))
        print(json.dumps(out))
        return

    from make_images import write_images

    args.data_dir.mkdir(parents=True, exist_ok=True)
    table = write_images(args.n, args.size, args.data_dir)
    images, check_seconds = image_list(str(table))
    forward = run_worker(__file__, "forward", str(args.n), str(args.batch_size), args.device)
    ours = run_worker(__file__, "extract", str(images), str(args.batch_size), args.device, args.dtype, args.compression,
                      str(args.workers))
    peer = None
    if args.thingsvision:
        peer = run_worker(__file__, "thingsvision", args.thingsvision, str(table), str(args.batch_size), args.device)
    ratio = ours["images_per_second"] / forward["images_per_second"]
    print(f"machine: {machine()}, device {ours['device']}, "
          f"{os.cpu_count()} CPUs, torch threads {torch_threads()}")
    print(f"{args.n} JPEGs of {args.size} px, batch {args.batch_size}, {args.dtype}, compression {args.compression}, "
          f"{args.workers} decoding worker(s)")

    def line(name: str, result: dict, extra: str = "") -> None:
        cpu_ms = 1000 * result["cpu_seconds"] / args.n
        print(f"{name:<21}{result['images_per_second']:7.1f} images/s  {cpu_ms:6.1f} CPU ms/image  "
              f"peak RSS {result['peak_rss_mb']:7.0f} MB{extra}")

    print(f"check stage's image checks (once per stimulus set, not counted below): {check_seconds:.1f} s, "
          f"{1000 * check_seconds / args.n:.2f} ms/image")
    line("forward only", forward)
    line("dnnprobe extract", ours, f"  file {ours['file_gb']:.2f} GB")
    if peer is not None:
        if "error" in peer:
            print(f"thingsvision         failed: {peer['error']}")
        else:
            line(f"thingsvision {peer['thingsvision']}", peer)
            print(f"dnnprobe/thingsvision: {ours['images_per_second'] / peer['images_per_second']:.2f}x images/s, "
                  f"{ours['peak_rss_mb'] / peer['peak_rss_mb']:.2f}x peak RSS")
    print(f"besides the forward pass: {1000 * (ours['cpu_seconds'] - forward['cpu_seconds']) / args.n:.1f} CPU ms/image")
    print(f"cpu_ratio={forward['cpu_seconds'] / ours['cpu_seconds']:.3f} (forward CPU time / extract CPU time)")
    print(f"ratio={ratio:.3f} peak_rss_mb={ours['peak_rss_mb']:.0f}")


if __name__ == "__main__":
    main()
