"""Probe speed and memory: the tutorial's pipeline versus dnnprobe's, on the same activation file.

Reference (DNNBrain's tutorial): load the layer into memory, cross-validate
``make_pipeline(PCA(pca), LogisticRegression())`` over ``StratifiedKFold(cv)``.
dnnprobe: the gram stage (stream the layer into its smaller matrix: K = X X^T, or the d x d moments
for layers with fewer units than stimuli) plus the probe stage's cross-validation.
Each method runs per layer in a fresh process (so peak RSS is per layer and per method). Fold
accuracies of both are compared with the exact reference, ``PCA(svd_solver='full')``, also run per
layer (skip it with ``--no-full-check``: it is slow on wide layers). Ends with one line
``ratio=<reference time / dnnprobe time> peak_rss_mb=<dnnprobe's largest> max_fold_diff_samples=<z>``.

    python benchmarks/bench_probe.py --layers conv3,conv3_relu,fc1 --n 4916
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import machine, peak_rss_mb, run_worker

ALL_LAYERS = ("conv1,conv1_relu,conv2,conv2_relu,conv3,conv3_relu,conv4,conv4_relu,"
              "conv5,conv5_relu,fc1,fc1_relu,fc2,fc2_relu")


def labels(table: str) -> np.ndarray:
    from dnnprobe.stimuli.table import StimulusTable

    return StimulusTable.read(table).integer_labels()


def reference(act: str, table: str, layer: str, pca: int, cv: int, solver: str) -> dict:
    """The tutorial's probe: the whole layer in memory, sklearn's PCA then LogisticRegression."""
    import h5py
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline

    y = labels(table)
    started = time.perf_counter()
    with h5py.File(act, "r") as f:
        X = f[layer][()].reshape(len(y), -1).astype(np.float32, copy=False)
    pipe = make_pipeline(PCA(pca, svd_solver=solver), LogisticRegression())
    scores = cross_val_score(pipe, X, y, cv=StratifiedKFold(cv))
    return {"seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb(), "scores": scores.tolist()}


def dnnprobe_probe(act: str, table: str, layer: str, pca: int, cv: int) -> dict:
    """dnnprobe's gram stage (streamed) and probe stage for one layer."""
    from dnnprobe.extract.actfile import ActivationFile
    from dnnprobe.probe.decoders import ProbeSettings
    from dnnprobe.gram.reader import GramFile
    from dnnprobe.gram.writer import write_gram_file
    from dnnprobe.probe.crossval import cross_validate_layer

    y = labels(table)
    with tempfile.TemporaryDirectory(dir=Path(act).parent) as folder:
        started = time.perf_counter()
        write_gram_file(act, Path(folder) / "gram.h5", layers=[layer], progress=False)
        gram_seconds = time.perf_counter() - started
        with GramFile(Path(folder) / "gram.h5") as grams, ActivationFile(act) as activations:
            result = cross_validate_layer(grams, layer, y, ProbeSettings(n_components=pca, cv=cv), activations)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "gram_seconds": gram_seconds, "peak_rss_mb": peak_rss_mb(),
            "scores": result.score.tolist()}


def fold_sizes(table: str, cv: int) -> np.ndarray:
    from sklearn.model_selection import StratifiedKFold

    y = labels(table)
    return np.array([len(test) for _, test in StratifiedKFold(cv).split(np.zeros((len(y), 1)), y)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", default=ALL_LAYERS, help="comma-separated layers (default: all 14)")
    parser.add_argument("--n", type=int, default=4916, help="number of stimuli")
    parser.add_argument("--pca", type=int, default=100)
    parser.add_argument("--cv", type=int, default=10)
    parser.add_argument("--data", type=Path, help="existing .act.h5 (with a .stim.csv beside it); default: synthetic")
    parser.add_argument("--no-full-check", action="store_true", help="skip the exact svd_solver='full' reference")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, act, table, layer, pca, cv, *rest = args.worker
        if kind == "reference":
            out = reference(act, table, layer, int(pca), int(cv), rest[0])
        else:
            out = dnnprobe_probe(act, table, layer, int(pca), int(cv))
        print(json.dumps(out))
        return

    layers = args.layers.split(",")
    from make_synthetic import benchmark_data

    act, table = benchmark_data(args.n, layers, args.data)
    sizes = fold_sizes(str(table), args.cv)
    print(f"machine: {machine()}; {act.name}, "
          f"n={args.n}, pca={args.pca}, cv={args.cv}")
    header = f"{'layer':12s} {'ref s':>8s} {'ref MB':>8s} {'ours s':>8s} {'(gram s)':>9s} {'ours MB':>8s} {'ratio':>6s} {'diff vs full':>12s} {'diff vs ref':>11s}"
    print(header)
    totals = {"ref": 0.0, "ours": 0.0}
    peak, worst = 0.0, 0.0
    for layer in layers:
        common = (str(act), str(table), layer, str(args.pca), str(args.cv))
        ref = run_worker(__file__, "reference", *common, "auto")
        ours = run_worker(__file__, "dnnprobe", *common)
        ours_scores = np.array(ours["scores"])
        vs_ref = float(np.max(np.abs(ours_scores - np.array(ref["scores"])) * sizes))
        vs_full = "-"
        if not args.no_full_check:
            full = run_worker(__file__, "reference", *common, "full")
            diff = float(np.max(np.abs(ours_scores - np.array(full["scores"])) * sizes))
            worst = max(worst, diff)
            vs_full = f"{diff:.0f}"
        totals["ref"] += ref["seconds"]
        totals["ours"] += ours["seconds"]
        peak = max(peak, ours["peak_rss_mb"])
        print(f"{layer:12s} {ref['seconds']:8.1f} {ref['peak_rss_mb']:8.0f} {ours['seconds']:8.1f} "
              f"{ours['gram_seconds']:9.1f} {ours['peak_rss_mb']:8.0f} {ref['seconds'] / ours['seconds']:6.1f} "
              f"{vs_full:>12s} {vs_ref:11.0f}", flush=True)
    print(f"{'total':12s} {totals['ref']:8.1f} {'':8s} {totals['ours']:8.1f}")
    diff_text = f"{worst:.0f}" if not args.no_full_check else "unchecked"
    print(f"ratio={totals['ref'] / totals['ours']:.2f} peak_rss_mb={peak:.0f} max_fold_diff_samples={diff_text}")


if __name__ == "__main__":
    main()
