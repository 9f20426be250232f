"""Effect of `extract.dtype: float16` on fold accuracy: the same network and stimuli, stored both ways.

Extracts every layer twice (float32 and float16 .act.h5) with one network over one stimulus set,
probes both with dnnprobe's probe (PCA then logistic regression under StratifiedKFold), and prints
per layer the mean accuracy of each and the largest per-fold difference in test samples. Default
stimuli: the built-in demo set (real images through a real network; random weights unless
--weights is given). Ends with one line
``max_fold_diff_samples=<largest difference> mean_abs_diff=<mean |accuracy difference|> size_ratio=<float16 / float32 bytes>``.

    python benchmarks/bench_dtype.py                       # demo set, 400 images, random AlexNet
    python benchmarks/bench_dtype.py --table my.stim.csv --weights imagenet
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from _common import REPO, machine


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", help="a .stim.csv (default: generate the demo set)")
    parser.add_argument("--weights", default="random", help="random | imagenet | a state_dict path")
    parser.add_argument("--pca", type=int, default=100)
    parser.add_argument("--cv", type=int, default=10)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="params.yaml override, e.g. stimuli.demo.n_per_class=50 (repeatable)")
    args = parser.parse_args(argv)

    from dnnprobe.stages.params import load_params
    from dnnprobe.probe.decoders import ProbeSettings
    from dnnprobe.extract.forward import extract_activations
    from dnnprobe.gram.reader import GramFile
    from dnnprobe.network.layers import resolve_layers
    from dnnprobe.network.build import load_network
    from dnnprobe.extract.actfile import ActivationFile
    from dnnprobe.probe.crossval import cross_validate_layer
    from dnnprobe.probe.targets import folds
    from dnnprobe.stages.gram import gram
    from dnnprobe.stages.network import make_network
    from dnnprobe.stages.stimuli import make_stimuli
    from dnnprobe.stimuli.table import StimulusTable

    overrides = (f"model.weights={args.weights}", *args.set)
    params = load_params(REPO / "params.yaml", overrides)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        table_path = Path(args.table) if args.table else folder / "stimuli.stim.csv"
        if not args.table:
            make_stimuli(params, table_path, folder / "images")
        make_network(params, folder / "network.pt")
        table = StimulusTable.read(table_path)
        y = table.integer_labels()
        model, _ = load_network(folder / "network.pt", params.model.arch)
        layers = resolve_layers(model, params.model.arch, params.extract.layers)
        settings = ProbeSettings(n_components=args.pca, cv=args.cv)
        sizes = np.array([len(test) for _, test in folds(y, settings)])

        scores, nbytes = {}, {}
        for dtype in ("float32", "float16"):
            act = folder / f"{dtype}.act.h5"
            # The table's images as they are (a user's table is only read: no image list is written beside it).
            extract_activations(table, model, layers, act, batch_size=params.extract.batch_size, dtype=dtype,
                                num_workers=params.extract.num_workers, progress=False)
            nbytes[dtype] = act.stat().st_size
            gram(act, folder / f"{dtype}.gram.h5", progress=False)
            with GramFile(folder / f"{dtype}.gram.h5") as grams, ActivationFile(act) as activations:
                scores[dtype] = {layer: cross_validate_layer(grams, layer, y, settings, activations).score
                                 for layer in grams.layers}

    print(f"machine: {machine()}; "
          f"{len(y)} stimuli, {params.model.arch} ({args.weights}), pca={args.pca}, cv={args.cv}")
    print(f"{'layer':12s} {'float32':>8s} {'float16':>8s} {'max fold diff (samples)':>24s}")
    worst, differences = 0.0, []
    for layer, full in scores["float32"].items():
        half = scores["float16"][layer]
        diff = float(np.max(np.abs(full - half) * sizes))
        worst = max(worst, diff)
        differences.append(abs(full.mean() - half.mean()))
        print(f"{layer:12s} {full.mean():8.3f} {half.mean():8.3f} {diff:24.0f}")
    print(f"max_fold_diff_samples={worst:.0f} mean_abs_diff={np.mean(differences):.4f} "
          f"size_ratio={nbytes['float16'] / nbytes['float32']:.2f}")


if __name__ == "__main__":
    main()
