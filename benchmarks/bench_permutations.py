"""Cost of the permutation test: one layer's probe with and without `probe.permutations`.

Computes the layer's Gram matrix from an .act.h5 (default: BOLD5000-shaped synthetic data, conv5),
then times dnnprobe's cross-validation from it with 0 permutations and with --permutations. Ends
with one line ``extra_seconds=<time added by the permutations> p_value=<the layer's p-value>``.

    python benchmarks/bench_permutations.py --n 4916 --permutations 1000
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", default="conv5")
    parser.add_argument("--n", type=int, default=4916)
    parser.add_argument("--pca", type=int, default=100)
    parser.add_argument("--cv", type=int, default=10)
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--data", type=Path, help="existing .act.h5 (with a .stim.csv beside it); default: synthetic")
    args = parser.parse_args(argv)

    from dnnprobe.extract.actfile import ActivationFile
    from dnnprobe.probe.decoders import ProbeSettings
    from dnnprobe.gram.reader import GramFile
    from dnnprobe.gram.writer import write_gram_file
    from dnnprobe.probe.crossval import cross_validate_layer
    from dnnprobe.stimuli.table import StimulusTable

    sys.path.insert(0, str(HERE))
    from make_synthetic import benchmark_data

    act, table = benchmark_data(args.n, [args.layer], args.data)
    y = StimulusTable.read(table).integer_labels()

    seconds = {}
    with tempfile.TemporaryDirectory(dir=act.parent) as folder:
        write_gram_file(act, Path(folder) / "gram.h5", layers=[args.layer], progress=False)
        with GramFile(Path(folder) / "gram.h5") as grams, ActivationFile(act) as activations:
            for permutations in (0, args.permutations):
                settings = ProbeSettings(n_components=args.pca, cv=args.cv, permutations=permutations)
                started = time.perf_counter()
                result = cross_validate_layer(grams, args.layer, y, settings, activations)
                seconds[permutations] = time.perf_counter() - started
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}; {args.layer}, n={len(y)}, "
          f"pca={args.pca}, cv={args.cv}")
    print(f"probe without permutations {seconds[0]:7.1f} s; with {args.permutations}: "
          f"{seconds[args.permutations]:7.1f} s")
    print(f"extra_seconds={seconds[args.permutations] - seconds[0]:.1f} p_value={result.p_value:.4f}")


if __name__ == "__main__":
    main()
