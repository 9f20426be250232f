"""End to end at BOLD5000 scale: extract all 14 AlexNet layers (or ViT-B/16's 12 blocks), their Gram
matrices, the probe.

1. images: N synthetic JPEGs of SIZE px (``make_images.py``; reused when already there; not timed);
2. extract: random-weight AlexNet, DNNBrain's 14 tutorial layers, one .act.h5
   (``dnnprobe.extract.forward.extract_activations``, on ``--device``); with ``--network vit_b_16``,
   torchvision's ViT-B/16 (random weights), ``block1``..``block12``, DNNBrain preprocessing (224 px),
   storing what ``--tokens`` picks (``extract.tokens``: ``cls`` or ``mean``, 768 units per block; ``all``,
   197 x 768 per block);
3. gram: each layer's n x n Gram matrix (``dnnprobe.gram.writer.write_gram_file``);
4. probe: PCA(100) + logistic regression, 10-fold stratified cross-validation, every layer
   (``dnnprobe.probe.crossval.cross_validate_gram``), decoding the images' class (curvy or boxy: a binary
   label, image i has class i % 2).

Prints the seconds of each stage and ends with ``n=<N> size=<SIZE> total_s=<extract + gram + probe>``
(for a ViT: ``n=<N> size=<SIZE> network=vit_b_16 tokens=<TOKENS> total_s=<...>``). Needs only torch,
torchvision, h5py, numpy, scipy, scikit-learn, Pillow and tqdm (no dvc, mlflow, click or PyYAML: it
checks that none was imported). At N = 4,916 AlexNet's activation file takes 19.6 GB and its Gram file
2.7 GB on the disk of ``--data-dir``; ViT-B/16's take 0.18 GB and 0.03 GB with tokens cls or mean, and
36.0 GB and 1.2 GB with tokens all (18.2 GB of activations with ``--dtype float16``). For a ViT, both
sizes are estimated before any work (the extract stage's dry run, the writers' size formulas) and the
run is refused, in one line naming the bytes needed and free, when the disk of ``--data-dir`` cannot
hold them; the sizes measured are printed after the gram stage.

    PYTHONPATH=src python benchmarks/bench_pipeline.py --n 4916 --size 375 --device auto
    PYTHONPATH=src python benchmarks/bench_pipeline.py --network vit_b_16 --tokens cls --device cuda
"""

from __future__ import annotations

import argparse
import os
import shutil
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


NETWORKS = ("alexnet", "vit_b_16")
TOKENS = ("cls", "mean", "all")  # extract.tokens for a ViT (cls+mean: the stages have it, this benchmark not)


def vit_blocks(model) -> list[str]:
    """A torchvision ViT's encoder blocks, ``block1``..``blockN`` (the source's default layers)."""
    from dnnprobe.network.sources.torchvision import default_layers

    return default_layers(model, "vit_b_16")


def disk_estimate(model, module_paths, n: int, batch_size: int, tokens: str, layout, dtype: str) -> tuple[int, int]:
    """Bytes of the activation file and of the Gram file, from the extract stage's dry run (one blank image
    on the CPU) and the writers' own size formulas."""
    import math

    import torch

    from dnnprobe.extract.forward import layer_unit_shapes
    from dnnprobe.extract.writer import stored_bytes
    from dnnprobe.gram.writer import gram_bytes
    from dnnprobe.network.preprocess import DNNBRAIN

    shapes = layer_unit_shapes(model, module_paths, torch.device("cpu"), DNNBRAIN.input_size, tokens, layout)
    units = [math.prod(shape) for shape in shapes.values()]
    return stored_bytes(n, shapes, dtype, batch_size), gram_bytes(n, units)


def refuse_without_room(data_dir: Path, act_bytes: int, gram_bytes: int) -> None:
    """Exit (one line: the bytes needed and free) when the disk of `data_dir` cannot hold both files; the
    stages' own check (:func:`dnnprobe.compute.disk.check_free_space`), before any image is written."""
    from dnnprobe.compute.disk import check_free_space, human_bytes
    from dnnprobe.core.errors import DnnprobeError

    try:
        check_free_space(data_dir / "bench.act.h5", act_bytes + gram_bytes,
                         f"activation file {human_bytes(act_bytes)} + Gram file {human_bytes(gram_bytes)}; "
                         "--dtype float16 halves the activation file, or use fewer --n or another --data-dir")
    except DnnprobeError as error:
        sys.exit(f"bench_pipeline: refused: {error}")


def run(n: int, size: int, device: str, workers: int, batch_size: int, data_dir: Path, pca: int = 100,
        cv: int = 10, network: str = "alexnet", tokens: str = "cls", dtype: str = "float32",
        direct_io: bool | None = None) -> dict[str, float]:
    import numpy as np

    from make_images import write_images

    from dnnprobe.probe.decoders import ProbeSettings
    from dnnprobe.extract.forward import extract_activations
    from dnnprobe.gram.reader import GramFile
    from dnnprobe.gram.writer import write_gram_file
    from dnnprobe.network.layers import resolve_layers
    from dnnprobe.network.preprocess import DNNBRAIN
    from dnnprobe.network.sources import torchvision as source
    from dnnprobe.network.sources.torchvision import TUTORIAL_LAYERS, random_network
    from dnnprobe.network.tokens import check_tokens
    from dnnprobe.extract.actfile import ActivationFile
    from dnnprobe.compute.arrays import resolve_device
    from dnnprobe.compute.disk import human_bytes
    from dnnprobe.probe.crossval import cross_validate_layer
    from dnnprobe.stimuli.table import StimulusTable

    vit = network != "alexnet"
    model = random_network(network, 0).eval()
    layers = vit_blocks(model) if vit else list(TUTORIAL_LAYERS)
    module_paths = resolve_layers(model, network, layers)
    token_options = {}
    estimate = None
    if vit:  # as the extract stage sets it up (dnnprobe.stages.extract.extraction_setup), DNNBrain preprocessing
        layout = source.token_layout(model, DNNBRAIN.input_size)
        check_tokens(tokens, layout, f"torchvision {network}")
        token_options = {"tokens": tokens, "token_layout": layout}
        estimate = disk_estimate(model, module_paths, n, batch_size, tokens, layout, dtype)
        print(f"{network} (random weights), {len(layers)} blocks, tokens {tokens}, {dtype}: activation file "
              f"{estimate[0]:,} B ({human_bytes(estimate[0])}), Gram file {estimate[1]:,} B "
              f"({human_bytes(estimate[1])}) estimated", flush=True)
        refuse_without_room(data_dir, *estimate)

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    table_path = write_images(n, size, data_dir)
    seconds["images (not in total)"] = time.perf_counter() - started
    table = StimulusTable.read(table_path)
    y = np.arange(n) % 2  # make_images draws image i from class i % 2
    settings = ProbeSettings(n_components=pca, cv=cv)
    with tempfile.TemporaryDirectory(dir=data_dir) as folder:
        act_path, gram_path = Path(folder) / "bench.act.h5", Path(folder) / "bench.gram.h5"

        started = time.perf_counter()
        summary = extract_activations(table, model, module_paths, act_path, batch_size=batch_size, device=device,
                                      dtype=dtype, num_workers=workers, progress=False, direct_io=direct_io,
                                      **token_options)
        seconds["extract"] = time.perf_counter() - started
        route = ("O_DIRECT" if summary.direct_io else "the page cache") + \
            (" (the stage's choice on this device)" if direct_io is None else "")
        print(f"extract: {summary.images_per_second:.1f} images/s on {summary.device}, {workers} decoding worker(s), "
              f"{act_path.stat().st_size / 1e9:.1f} GB written by {route}", flush=True)

        started = time.perf_counter()
        # the products and fold eigensolves where the probe stage puts them (probe.device), decoders on the CPU
        ops = resolve_device(device)
        write_gram_file(act_path, gram_path, progress=False, device=device)
        seconds["gram"] = time.perf_counter() - started
        if vit:
            act_size, gram_size = act_path.stat().st_size, gram_path.stat().st_size
            print(f"files measured: activation file {act_size:,} B ({human_bytes(act_size)}), Gram file "
                  f"{gram_size:,} B ({human_bytes(gram_size)}); "
                  f"{shutil.disk_usage(folder).free:,} B free on the disk of --data-dir", flush=True)

        started = time.perf_counter()
        with GramFile(gram_path) as grams, ActivationFile(act_path) as activations, ops.precision():
            for layer in layers:
                result = cross_validate_layer(grams, layer, y, settings, activations, ops)
                print(f"  {layer:<11} {grams.route(layer):<10} mean fold accuracy {result.mean:.3f}", flush=True)
        seconds["probe"] = time.perf_counter() - started
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4916, help="number of images")
    parser.add_argument("--size", type=int, default=375, help="JPEG side in pixels")
    parser.add_argument("--network", default="alexnet", choices=NETWORKS,
                        help="alexnet (14 tutorial layers) or vit_b_16 (torchvision, random weights, 12 blocks)")
    parser.add_argument("--tokens", choices=TOKENS,
                        help="vit_b_16 only: extract.tokens (default cls); all stores 197 tokens per block")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"],
                        help="extract.dtype of the activation file")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="extraction device (auto: CUDA when present, else CPU)")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="decoding processes (default: CPUs - 2, at least 1)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--direct-io", choices=["auto", "on", "off"], default="auto",
                        help="write the activation file with O_DIRECT (on), through the page cache (off), or as the "
                             "extract stage does (auto: O_DIRECT on the CPU only); the file's bytes are the same")
    parser.add_argument("--data-dir", type=Path, default=HERE / "data", help="images and (temporary) outputs")
    parser.add_argument("--pca", type=int, default=100, help="principal components (DNNBrain: 100)")
    parser.add_argument("--cv", type=int, default=10, help="cross-validation folds (DNNBrain: 10)")
    args = parser.parse_args(argv)
    if args.tokens and args.network == "alexnet":
        parser.error("--tokens applies to --network vit_b_16 only (AlexNet has no tokens)")
    tokens = args.tokens or "cls"
    args.data_dir.mkdir(parents=True, exist_ok=True)
    seconds = run(args.n, args.size, args.device, args.workers, args.batch_size, args.data_dir, args.pca, args.cv,
                  args.network, tokens, args.dtype, {"auto": None, "on": True, "off": False}[args.direct_io])
    for stage, value in seconds.items():
        print(f"{stage:<22}{value:8.1f} s")
    total = seconds["extract"] + seconds["gram"] + seconds["probe"]
    named = f" network={args.network} tokens={tokens}" if args.network != "alexnet" else ""
    named += f" direct_io={args.direct_io}" if args.direct_io != "auto" else ""
    print(f"n={args.n} size={args.size}{named} total_s={total:.1f}", flush=True)
    imported = sorted(name for name in NOT_NEEDED if name in sys.modules)
    if imported:  # after total_s: the measurement stands, the exit code says what went wrong
        sys.exit(f"bench_pipeline imported {', '.join(imported)}, which GPU machines do not have")


if __name__ == "__main__":
    main()
