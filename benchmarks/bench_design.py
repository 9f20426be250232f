"""The cost of the probe designs of issue 21 at BOLD5000 shape: several attributes per run, and C chosen
inside the folds (``probe.C: auto``), against DNNBrain's design (one label, C = 1).

Per layer, from one Gram file (the gram stage runs once, untimed here: the designs change only the
probe stage), the probe's cross-validation of:

- ``1 label``: the table's class label, C = 1 (the tutorial);
- ``5 labels``: that label, two more binary class labels (seeded, balanced) and two continuous columns
  (ridge regression, r2), in one run: class labels are stratified each on its own classes, so they get
  their own folds (and fold PCAs); the continuous ones share one set of folds;
- ``C auto``: the label with C chosen per training fold among 7 candidates by a 5-fold inner CV with
  the PCA refit in every inner fold.

Ends with one line ``labels5_ratio=<5 labels time / 1 label time> c_auto_ratio=<C auto / 1 label>``.

    python benchmarks/bench_design.py --n 4916 --layers conv5,fc1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from _common import machine


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", default="conv5,fc1", help="comma-separated layers (default: conv5,fc1)")
    parser.add_argument("--n", type=int, default=4916, help="number of stimuli")
    parser.add_argument("--pca", type=int, default=100)
    parser.add_argument("--cv", type=int, default=10)
    parser.add_argument("--data", type=Path, help="existing .act.h5 (with a .stim.csv beside it); default: synthetic")
    args = parser.parse_args(argv)

    from dnnprobe.extract.actfile import ActivationFile
    from dnnprobe.probe.decoders import AUTO_C, ProbeSettings
    from dnnprobe.probe.targets import Target
    from dnnprobe.gram.reader import GramFile
    from dnnprobe.gram.writer import write_gram_file
    from dnnprobe.probe.crossval import cross_validate_targets, layer_fold_pcas
    from dnnprobe.stimuli.table import StimulusTable

    from make_synthetic import benchmark_data

    layers = args.layers.split(",")
    act, table = benchmark_data(args.n, layers, args.data)
    y = StimulusTable.read(table).integer_labels()
    rng = np.random.default_rng(0)
    base = ProbeSettings(n_components=args.pca, cv=args.cv)
    regression = replace(base, classifier="ridge_regression", scoring="r2")
    one = [Target("label", y, base)]
    five = one + [Target(f"class{i}", rng.permutation(np.arange(len(y)) % 2), base) for i in (1, 2)] + \
        [Target(f"value{i}", rng.normal(size=len(y)), regression) for i in (1, 2)]
    auto = [Target("label", y, replace(base, C_grid=AUTO_C))]
    print(f"machine: {machine()}; {act.name}, n={len(y)}, "
          f"pca={args.pca}, cv={args.cv}; C auto: {len(AUTO_C)} candidates, 5 inner folds")
    print(f"{'layer':12s} {'route':>10s} {'1 label s':>10s} {'5 labels s':>11s} {'C auto s':>9s}")
    totals = {"one": 0.0, "five": 0.0, "auto": 0.0}
    with tempfile.TemporaryDirectory(dir=act.parent) as folder:
        gram_path = Path(folder) / "gram.h5"
        write_gram_file(act, gram_path, layers=layers, progress=False)
        with GramFile(gram_path) as grams, ActivationFile(act) as activations:
            for layer in layers:
                seconds = {}
                for name, targets in (("one", one), ("five", five), ("auto", auto)):
                    started = time.perf_counter()
                    cross_validate_targets(layer_fold_pcas(grams, layer, args.pca, activations), targets)
                    seconds[name] = time.perf_counter() - started
                    totals[name] += seconds[name]
                print(f"{layer:12s} {grams.route(layer):>10s} {seconds['one']:10.1f} {seconds['five']:11.1f} "
                      f"{seconds['auto']:9.1f}", flush=True)
    print(f"{'total':12s} {'':>10s} {totals['one']:10.1f} {totals['five']:11.1f} {totals['auto']:9.1f}")
    print(f"labels5_ratio={totals['five'] / totals['one']:.2f} c_auto_ratio={totals['auto'] / totals['one']:.2f}")


if __name__ == "__main__":
    main()
