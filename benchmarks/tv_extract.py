"""The peer in bench_extract.py: thingsvision extracting the same layers from the same JPEGs.

Runs in thingsvision's own virtual environment (it pins other versions of numpy, torchvision and
tensorflow than dnnprobe), started by ``bench_extract.py --thingsvision /path/to/venv/bin/python``.
Imports nothing from dnnprobe. It uses thingsvision's own image dataset, batch loader and extractor
(``get_extractor(..., source='torchvision', pretrained=False)``), with the same random AlexNet
weights as dnnprobe (a state_dict file), DNNBrain's preprocessing instead of thingsvision's default
resize-and-crop, and features streamed to .npy files after every batch (``step_size=1``), so that
memory, like dnnprobe's, is bounded by the batch. Prints one JSON line: images/s, seconds and CPU
seconds of the extraction itself (as for dnnprobe, building the network is not timed), and the
process's peak RSS (MB).

    /tmp/tv-venv/bin/python benchmarks/tv_extract.py --root IMAGES --weights w.pt \\
        --modules features.0,features.1 --out /tmp/tv-out

thingsvision reads every image under --root, class folder by class folder (its ``file_names``
option, which would keep the table's order, fails in 2.7.3 for class folders: ``TypeError:
ImageDataset._get_classes() takes 1 positional argument but 2 were given``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from _common import cpu_seconds, peak_rss_mb


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="folder of the images (one subfolder per class)")
    parser.add_argument("--weights", required=True, help="AlexNet state_dict (torch.save) to load")
    parser.add_argument("--modules", required=True, help="comma-separated module paths (features.0, ...)")
    parser.add_argument("--out", required=True, help="folder for thingsvision's feature files")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    import torch
    from torchvision import transforms

    import thingsvision
    from thingsvision import get_extractor
    from thingsvision.utils.data import DataLoader, ImageDataset

    modules = args.modules.split(",")
    extractor = get_extractor(model_name="alexnet", source="torchvision", device=args.device, pretrained=False)
    extractor.model.load_state_dict(torch.load(args.weights, weights_only=True))
    preprocessing = transforms.Compose([  # DNNBrain's: squash to 224 x 224, no crop
        transforms.Resize((224, 224)), transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])
    dataset = ImageDataset(root=args.root, out_path=args.out, backend=extractor.get_backend(),
                           transforms=preprocessing)
    batches = DataLoader(dataset=dataset, batch_size=args.batch_size, backend=extractor.get_backend())
    # Timed from here, as dnnprobe's extraction is (after building the network and listing the images).
    started_cpu = cpu_seconds()
    started = time.perf_counter()
    extractor.extract_features(batches=batches, module_names=modules, flatten_acts=False, output_type="ndarray",
                               output_dir=args.out, step_size=1)
    seconds = time.perf_counter() - started
    result = {
        "images_per_second": len(dataset) / seconds, "seconds": seconds, "cpu_seconds": cpu_seconds() - started_cpu,
        "peak_rss_mb": peak_rss_mb(),
        "thingsvision": thingsvision.__version__, "torch": torch.__version__, "n": len(dataset),
    }
    sys.stdout.flush()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
