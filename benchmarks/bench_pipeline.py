"""End to end at BOLD5000 scale: extract all 14 AlexNet layers, their Gram matrices, the probe.

1. images: N synthetic JPEGs of SIZE px (``make_images.py``; reused when already there; not timed);
2. extract: random-weight AlexNet, DNNBrain's 14 tutorial layers, one .act.h5
   (``dnnprobe.extract.forward.extract_activations``, on ``--device``);
3. gram: each layer's n x n Gram matrix (``dnnprobe.gram.writer.write_gram_file``);
4. probe: PCA(100) + logistic regression, 10-fold stratified cross-validation, every layer
   (``dnnprobe.probe.crossval.cross_validate_gram``), decoding the images' class (curvy or boxy: a binary
   label, image i has class i % 2).

Prints the seconds of each stage and ends with ``total_s=<extract + gram + probe>``. Needs only
torch, torchvision, h5py, numpy, scipy, scikit-learn, Pillow and tqdm (no dvc, mlflow, click or
PyYAML: it checks that none was imported). At N = 4,916 the activation file takes 19.6 GB and the
Gram file 2.7 GB on the disk of ``--data-dir``.

    PYTHONPATH=src python benchmarks/bench_pipeline.py --n 4916 --size 375 --device auto
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import HERE

# What the pipeline's stage commands need but this benchmark must not: the GPU machines lack them.
NOT_NEEDED = ("click", "mlflow", "dvc", "yaml")


def default_workers() -> int:
    """Decoding processes: all CPUs but two (the main process, the writer thread), at least one."""
    return max(1, (os.cpu_count() or 1) - 2)


def run(n: int, size: int, device: str, workers: int, batch_size: int, data_dir: Path, pca: int = 100,
        cv: int = 10) -> dict[str, float]:
    import numpy as np

    from make_images import write_images

    from dnnprobe.probe.decoders import ProbeSettings
    from dnnprobe.extract.forward import extract_activations
    from dnnprobe.gram.reader import GramFile
    from dnnprobe.gram.writer import write_gram_file
    from dnnprobe.network.layers import resolve_layers
    from dnnprobe.network.sources.torchvision import TUTORIAL_LAYERS, random_network
    from dnnprobe.extract.actfile import ActivationFile
    from dnnprobe.compute.arrays import resolve_device
    from dnnprobe.probe.crossval import cross_validate_layer
    from dnnprobe.stimuli.table import StimulusTable

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    table_path = write_images(n, size, data_dir)
    seconds["images (not in total)"] = time.perf_counter() - started
    table = StimulusTable.read(table_path)
    model = random_network("alexnet", 0).eval()
    module_paths = resolve_layers(model, "alexnet", TUTORIAL_LAYERS)
    y = np.arange(n) % 2  # make_images draws image i from class i % 2
    settings = ProbeSettings(n_components=pca, cv=cv)
    with tempfile.TemporaryDirectory(dir=data_dir) as folder:
        act_path, gram_path = Path(folder) / "bench.act.h5", Path(folder) / "bench.gram.h5"

        started = time.perf_counter()
        summary = extract_activations(table, model, module_paths, act_path, batch_size=batch_size, device=device,
                                      num_workers=workers, progress=False)
        seconds["extract"] = time.perf_counter() - started
        print(f"extract: {summary.images_per_second:.1f} images/s on {summary.device}, {workers} decoding worker(s), "
              f"{act_path.stat().st_size / 1e9:.1f} GB", flush=True)

        started = time.perf_counter()
        # the products and fold eigensolves where the probe stage puts them (probe.device), decoders on the CPU
        ops = resolve_device(device)
        write_gram_file(act_path, gram_path, progress=False, device=device)
        seconds["gram"] = time.perf_counter() - started

        started = time.perf_counter()
        with GramFile(gram_path) as grams, ActivationFile(act_path) as activations, ops.precision():
            for layer in TUTORIAL_LAYERS:
                result = cross_validate_layer(grams, layer, y, settings, activations, ops)
                print(f"  {layer:<11} {grams.route(layer):<10} mean fold accuracy {result.mean:.3f}", flush=True)
        seconds["probe"] = time.perf_counter() - started
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4916, help="number of images")
    parser.add_argument("--size", type=int, default=375, help="JPEG side in pixels")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="extraction device (auto: CUDA when present, else CPU)")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="decoding processes (default: CPUs - 2, at least 1)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data-dir", type=Path, default=HERE / "data", help="images and (temporary) outputs")
    parser.add_argument("--pca", type=int, default=100, help="principal components (DNNBrain: 100)")
    parser.add_argument("--cv", type=int, default=10, help="cross-validation folds (DNNBrain: 10)")
    args = parser.parse_args(argv)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    seconds = run(args.n, args.size, args.device, args.workers, args.batch_size, args.data_dir, args.pca, args.cv)
    for stage, value in seconds.items():
        print(f"{stage:<22}{value:8.1f} s")
    total = seconds["extract"] + seconds["gram"] + seconds["probe"]
    print(f"n={args.n} size={args.size} total_s={total:.1f}", flush=True)
    imported = sorted(name for name in NOT_NEEDED if name in sys.modules)
    if imported:  # after total_s: the measurement stands, the exit code says what went wrong
        sys.exit(f"bench_pipeline imported {', '.join(imported)}, which GPU machines do not have")


if __name__ == "__main__":
    main()
