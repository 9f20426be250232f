"""Cost of the permutation test: one layer's probe with and without `probe.permutations`.

Computes the layer's Gram matrix from an .act.h5 (default: BOLD5000-shaped synthetic data, conv5),
then times dnnprobe's cross-validation from it with 0 permutations and with --permutations. Ends
with one line ``extra_seconds=<time added by the permutations> p_value=<the layer's p-value>``.

With --memory: the peak memory of the permutation null alone (binary logistic, every shuffle fitted at
once, on random fold scores of --n stimuli and --pca components) against the probe stage's pre-check
estimate (``permutation_bytes``), in one line ``P=.. n=.. k=..: measured <MiB> MiB, estimate <MiB> MiB``.

    python benchmarks/bench_permutations.py --n 4916 --permutations 1000
    python benchmarks/bench_permutations.py --memory --permutations 20000 --n 40 --pca 20

Measured on the 2-core test VM (no GPU), 2026-12-04, with --memory: P=20000 n=40 k=5: 52 MiB (estimate
56 MiB); P=20000 n=40 k=20: 71 MiB (estimate 74 MiB).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import machine, peak_rss_mb


def null_memory(permutations: int, n: int, pca: int) -> str:
    """The permutation null's peak memory (MiB above what the process held before) and its estimate."""
    import numpy as np

    from dnnprobe.probe.budget import permutation_bytes
    from dnnprobe.probe.permutation import null_distribution
    from dnnprobe.probe.targets import folds
    from dnnprobe.probe.decoders import ProbeSettings

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], n // 2)
    settings = ProbeSettings(n_components=pca, cv=10, permutations=permutations)
    splits = folds(y, settings)
    fold_scores = [(rng.standard_normal((len(train), pca)), rng.standard_normal((len(test), pca)))
                   for train, test in splits]
    before = peak_rss_mb()
    null_distribution(fold_scores, splits, y, settings, [0])
    measured = peak_rss_mb() - before
    return (f"P={permutations} n={n} k={pca}: measured {measured:.0f} MiB, "
            f"estimate {permutation_bytes(permutations, n, pca, True) / 2**20:.0f} MiB")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", default="conv5")
    parser.add_argument("--n", type=int, default=4916)
    parser.add_argument("--pca", type=int, default=100)
    parser.add_argument("--cv", type=int, default=10)
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--data", type=Path, help="existing .act.h5 (with a .stim.csv beside it); default: synthetic")
    parser.add_argument("--memory", action="store_true", help="the permutation null's peak memory instead (see above)")
    args = parser.parse_args(argv)
    if args.memory:
        print(null_memory(args.permutations, args.n, args.pca))
        return

    from dnnprobe.extract.actfile import ActivationFile
    from dnnprobe.probe.decoders import ProbeSettings
    from dnnprobe.gram.reader import GramFile
    from dnnprobe.gram.writer import write_gram_file
    from dnnprobe.probe.crossval import cross_validate_layer
    from dnnprobe.stimuli.table import StimulusTable

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
    print(f"machine: {machine()}; {args.layer}, n={len(y)}, "
          f"pca={args.pca}, cv={args.cv}")
    print(f"probe without permutations {seconds[0]:7.1f} s; with {args.permutations}: "
          f"{seconds[args.permutations]:7.1f} s")
    print(f"extra_seconds={seconds[args.permutations] - seconds[0]:.1f} p_value={result.p_value:.4f}")


if __name__ == "__main__":
    main()
