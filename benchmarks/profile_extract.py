"""Where extraction's time goes: each step of dnnprobe's extraction, run alone, on the same JPEGs.

The extractor overlaps these steps (decoding in a worker process, writing in a thread); here they
run one after the other in one process, so each one's cost is its own:

- decode: open and decode the JPEG to RGB once (``decode_rgb``: the check stage has checked the file),
  one thread, as in a decoding worker;
- resize: squash to 224 x 224 (PIL, one thread), as in a decoding worker;
- to input: uint8 batch -> normalised float32 (``to_model_input``), torch's threads;
- forward: the network alone (the benchmark's ceiling), torch's threads;
- hook copies: forward with the hooks copying all 14 layers into chunk-layout buffers, minus forward;
- write: the writer storing those buffers in an .act.h5 (chunk by chunk, page cache), one thread.

Wall-clock milliseconds per image and each step's share of their sum; CPU ms per image beside
them (for the threaded steps CPU time exceeds wall time). A shared machine makes single runs noisy.

    PYTHONPATH=src python benchmarks/profile_extract.py --n 512 --size 375
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import HERE


class Clock:
    """Accumulates wall and CPU (process) seconds of one step."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> "Clock":
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall += time.perf_counter() - self._wall
        self.cpu += time.process_time() - self._cpu


def profile(table_path: Path, batch_size: int) -> dict[str, Clock]:
    import numpy as np
    import torch

    from dnnprobe.extract.buffers import BatchBuffers
    from dnnprobe.extract.forward import LayerRecorder, layer_unit_shapes, resized_pixels, to_model_input
    from dnnprobe.extract.writer import ActivationWriter
    from dnnprobe.stimuli.images import decode_rgb
    from dnnprobe.network.layers import resolve_layers
    from dnnprobe.network.sources.torchvision import TUTORIAL_LAYERS, random_network
    from dnnprobe.stimuli.table import StimulusTable

    paths = StimulusTable.read(table_path).image_paths()
    cpu = torch.device("cpu")
    model = random_network("alexnet", 0).eval()
    module_paths = resolve_layers(model, "alexnet", TUTORIAL_LAYERS)
    shapes = layer_unit_shapes(model, module_paths, cpu)
    clocks = {step: Clock() for step in ("decode", "resize", "to input", "forward", "hook copies", "write")}
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(dir=table_path.parent) as folder, torch.inference_mode(), \
            ActivationWriter(Path(folder) / "p.act.h5", len(paths), shapes, rows_per_chunk=batch_size) as writer:
        buffers = BatchBuffers({layer: writer.block_shape(layer) for layer in shapes}, torch.float32, cpu)
        model(torch.zeros(2, 3, 224, 224))  # warm-up
        for start in range(0, len(paths), batch_size):
            torch.set_num_threads(1)  # a decoding worker runs one thread
            images = []
            for path in paths[start:start + batch_size]:
                with clocks["decode"]:
                    image = decode_rgb(path)
                with clocks["resize"]:
                    images.append(resized_pixels(image))
            torch.set_num_threads(threads)
            pixels = torch.from_numpy(np.stack(images))
            with clocks["to input"]:
                batch = to_model_input(pixels, cpu)
            with clocks["forward"]:
                model(batch)
            recorder = LayerRecorder(model, module_paths, store=buffers.store)
            with clocks["hook copies"]:
                model(batch)
            recorder.remove()
            ready = buffers.finish(len(batch))
            with clocks["write"]:  # synchronously: wait for the writer thread to release the buffers
                done = []
                writer.write_blocks(buffers.arrays, len(batch), ready=ready, release=lambda: done.append(1))
                while not done:
                    time.sleep(0.0005)
    for attribute in ("wall", "cpu"):  # the hooks' cost is what they add to a forward pass
        setattr(clocks["hook copies"], attribute,
                getattr(clocks["hook copies"], attribute) - getattr(clocks["forward"], attribute))
    return clocks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--size", type=int, default=375)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data-dir", type=Path, default=HERE / "data")
    args = parser.parse_args(argv)
    from make_images import write_images

    args.data_dir.mkdir(parents=True, exist_ok=True)
    clocks = profile(write_images(args.n, args.size, args.data_dir), args.batch_size)
    total = sum(clock.wall for clock in clocks.values())
    print(f"{args.n} JPEGs of {args.size} px, batch {args.batch_size}, all 14 AlexNet layers, float32")
    print(f"{'step':<12} {'wall ms/image':>13} {'share':>6} {'CPU ms/image':>13}")
    for step, clock in clocks.items():
        print(f"{step:<12} {1000 * clock.wall / args.n:13.2f} {clock.wall / total:6.1%} {1000 * clock.cpu / args.n:13.2f}")
    print(f"{'sum':<12} {1000 * total / args.n:13.2f} {1:6.1%} {1000 * sum(c.cpu for c in clocks.values()) / args.n:13.2f}")


if __name__ == "__main__":
    main()
