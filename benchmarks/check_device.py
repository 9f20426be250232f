"""On a GPU: are the pipelined CUDA extraction's activations right? (No GPU: nothing to check.)

Extracts all 14 AlexNet layers of N synthetic JPEGs three ways, with the same random weights:

1. dnnprobe on CUDA (decoding workers, pinned buffers, copies on a second CUDA stream, writer thread);
2. a plain forward pass on CUDA: torchvision's transform per image, the same batches, hooks that
   copy each output to the CPU synchronously, no pipeline;
3. dnnprobe on the CPU.

(1) must equal (2) bit for bit (the pipeline changes no value; a race between the copies and the
writer would show here), and (1) must be within float32 rounding of (3) (convolutions run in full
float32 on the GPU, not TF32). cuDNN runs in its deterministic mode for the whole check, so (1) and
(2) use the same algorithms. Before that, the network's input for every pixel value 0..255 is
computed on the GPU and on the CPU: the two must be identical (``inputs_identical``). Ends with
``inputs_identical=<True|False> pipeline_identical=<True|False> max_rel_diff_cpu=<x>`` (the largest
|GPU - CPU| of a layer over that layer's largest |CPU| value).

    PYTHONPATH=src python benchmarks/check_device.py --n 256
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import HERE


def plain_forward_pass(model, module_paths, paths, batch_size, device):
    import numpy as np
    import torch

    from torchvision import transforms

    from dnnprobe.extract.forward import LayerRecorder
    from dnnprobe.compute.device import full_float32
    from dnnprobe.network.preprocess import DNNBRAIN, IMAGENET_MEAN, IMAGENET_STD
    from dnnprobe.stimuli.images import load_rgb

    # torchvision's own transform per image, the reference (not dnnprobe's batched route being checked)
    preprocess = transforms.Compose([transforms.Resize(DNNBRAIN.input_size), transforms.ToTensor(),
                                     transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)])
    recorded = {layer: [] for layer in module_paths}
    recorder = LayerRecorder(model, module_paths)
    try:
        with torch.inference_mode(), full_float32():
            for start in range(0, len(paths), batch_size):
                batch = torch.stack([preprocess(load_rgb(path)) for path in paths[start:start + batch_size]])
                model(batch.to(device))
                outputs = recorder.take()
                for layer in module_paths:
                    recorded[layer].append(outputs[layer].numpy())
    finally:
        recorder.remove()
    return {layer: np.concatenate(blocks) for layer, blocks in recorded.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--size", type=int, default=375)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=HERE / "data")
    args = parser.parse_args(argv)

    import h5py
    import numpy as np
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return
    from make_images import write_images

    from dnnprobe.extract.forward import extract_activations
    from dnnprobe.network.layers import resolve_layers
    from dnnprobe.network.sources.torchvision import TUTORIAL_LAYERS, random_network
    from dnnprobe.stimuli.table import StimulusTable

    from dnnprobe.extract.forward import to_model_input

    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    pixels = torch.arange(256, dtype=torch.uint8).repeat(3 * 224 * 224 // 256 + 1)[:3 * 224 * 224]
    pixels = pixels.view(1, 224, 224, 3)
    on_gpu = to_model_input(pixels, torch.device("cuda")).cpu()
    inputs_identical = torch.equal(on_gpu, to_model_input(pixels, torch.device("cpu")))
    print(f"network input, all 256 pixel values: GPU == CPU: {inputs_identical}", flush=True)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    table = StimulusTable.read(write_images(args.n, args.size, args.data_dir))
    model = random_network("alexnet", 0).eval()
    module_paths = resolve_layers(model, "alexnet", TUTORIAL_LAYERS)
    with tempfile.TemporaryDirectory(dir=args.data_dir) as folder:
        files = {}
        for device in ("cuda", "cpu"):
            files[device] = Path(folder) / f"{device}.act.h5"
            summary = extract_activations(table, model, module_paths, files[device], batch_size=args.batch_size,
                                          device=device, num_workers=args.workers, progress=False)
            print(f"dnnprobe on {summary.device}: {summary.images_per_second:.1f} images/s")
        plain = plain_forward_pass(model.to("cuda"), module_paths, table.image_paths(), args.batch_size, "cuda")
        identical, worst = True, 0.0
        with h5py.File(files["cuda"], "r") as gpu, h5py.File(files["cpu"], "r") as cpu:
            for layer in TUTORIAL_LAYERS:
                ours, reference = gpu[layer][:], cpu[layer][:]
                same = np.array_equal(ours, plain[layer].reshape(ours.shape))
                rel = float(np.abs(ours - reference).max() / max(np.abs(reference).max(), 1e-30))
                identical, worst = identical and same, max(worst, rel)
                print(f"{layer:<11} pipeline == plain CUDA pass: {same}   max |GPU - CPU| / max |CPU|: {rel:.2e}")
    print(f"inputs_identical={inputs_identical} pipeline_identical={identical} max_rel_diff_cpu={worst:.2e}")


if __name__ == "__main__":
    main()
