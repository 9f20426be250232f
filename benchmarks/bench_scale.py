"""Scale curve: time and peak memory of the gram and probe stages as the stimulus set grows.

For each n (stimuli) and each layer width (units), writes synthetic activations of one layer into
an HDF5 activation file in a temporary folder (row block by row block: memory stays small), then runs
the gram stage and the probe (PCA ``--pca``, ``--cv`` folds, logistic regression) on it, each in a
fresh process, and prints one line per (n, layer)::

    n=26000 layer=conv units=43264 route=gram gram_s=... gram_peak_gib=... probe_s=... probe_peak_gib=... accuracy=...

route is the matrix the gram stage chose (``gram``: n x n; ``covariance``: units x units); a
``*_peak_gib`` is the stage process's peak resident memory (``gpu_gib``: its peak CUDA allocation,
with ``--device cuda``). Widths of 43,264 units (conv4/conv5) are stored as (256, 13, 13), others as
(units, 1, 1). The files are deleted after each point (a 26,000 x 43,264 float32 layer is 4.5 GB:
check the temporary folder's free space; ``--workdir`` moves it).

Needs only numpy, scipy, scikit-learn, h5py, tqdm and (for ``--device cuda`` or ``torch-cpu``)
torch; run from the repository root with ``PYTHONPATH=src``::

    PYTHONPATH=src python benchmarks/bench_scale.py --n 2500,5000,10000,26000 --units 4096,43264 --plot scale.png
    PYTHONPATH=src python benchmarks/bench_scale.py --n 73000 --units 4096,43264 --device cuda   # NSD
    PYTHONPATH=src python benchmarks/bench_scale.py --n 5000 --units 4096,43264 --device cuda --compare-device cpu
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import gpu_peak_gib, peak_rss_gib, run_worker

LATENT = 200  # latent factors behind the synthetic activations (a power-law spectrum)
WRITE_ROWS = 512  # rows generated and written at a time


def layer_shape(units: int) -> tuple[str, tuple[int, int, int]]:
    """A name and DNNBrain (n_chn, n_row, n_col) shape for a layer of `units` units."""
    if units % 169 == 0 and units > 8192:
        return "conv", (units // 169, 13, 13)
    return "fc", (units, 1, 1)


def write_activations(path: Path, n: int, units: int, seed: int = 0) -> np.ndarray:
    """One layer of synthetic activations (low-rank signal + noise, a weak label effect, ReLU'd);
    returns the labels (balanced, shuffled)."""
    from dnnprobe.extract.writer import ActivationWriter

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    rng.shuffle(labels)
    name, shape = layer_shape(units)
    mixing = (rng.standard_normal((LATENT, units)) / np.sqrt(LATENT)).astype(np.float32)
    spectrum = 1.0 / np.sqrt(np.arange(1, LATENT + 1, dtype=np.float32))
    with ActivationWriter(path, n, {name: shape}, rows_per_chunk=64) as writer:
        for start in range(0, n, WRITE_ROWS):
            rows = min(WRITE_ROWS, n - start)
            latent = rng.standard_normal((rows, LATENT), dtype=np.float32) * spectrum
            latent[:, 5:10] += 0.3 * (labels[start:start + rows, None] - 0.5)
            values = latent @ mixing
            values += rng.standard_normal(values.shape, dtype=np.float32) * 0.3
            np.maximum(values, 0.0, out=values)  # a ReLU layer: a large common mean, as in real networks
            writer.write({name: values})
    return labels


def worker_gram(act: str, out: str, dtype: str, device: str) -> dict:
    from dnnprobe.gram.reader import GramFile
    from dnnprobe.gram.writer import write_gram_file

    started = time.perf_counter()
    layers = write_gram_file(act, out, progress=False, dtype=dtype, device=device)
    seconds = time.perf_counter() - started
    with GramFile(out) as grams:
        route = grams.route(layers[0])
    return {"seconds": seconds, "route": route, "peak_gib": peak_rss_gib(), "gpu_gib": gpu_peak_gib(device)}


def worker_probe(act: str, gram: str, labels: str, pca: int, cv: int, device: str) -> dict:
    from dnnprobe.probe import budget
    from dnnprobe.extract.actfile import ActivationFile
    from dnnprobe.probe.decoders import ProbeSettings
    from dnnprobe.gram.reader import GramFile
    from dnnprobe.compute.arrays import resolve_device
    from dnnprobe.probe.crossval import cross_validate_layer

    y = np.load(labels)
    started = time.perf_counter()
    ops = resolve_device(device)
    with GramFile(gram) as grams, ActivationFile(act) as activations, ops.precision():
        layer = grams.layers[0]
        budget.check_probe_stage(grams.n_stim, grams.n_units(layer), pca, cv, layer, ops)
        result = cross_validate_layer(grams, layer, y, ProbeSettings(n_components=pca, cv=cv), activations, ops)
    return {"seconds": time.perf_counter() - started, "peak_gib": peak_rss_gib(), "gpu_gib": gpu_peak_gib(device),
            "scores": result.score.tolist(), "mean": result.mean}


def point(n: int, units: int, args) -> dict:
    """Generate, gram, probe one (n, units) point in a temporary folder; returns its measurements."""
    folder = Path(tempfile.mkdtemp(prefix=f"bench-scale-n{n}-u{units}-", dir=args.workdir))
    try:
        need = n * units * 4 + min(n, units) ** 2 * np.dtype(args.dtype).itemsize
        free = shutil.disk_usage(folder).free
        if need > free:
            sys.exit(f"bench_scale: n={n} units={units} needs {need / 1e9:.1f} GB in {folder.parent}, "
                     f"{free / 1e9:.1f} GB free (use --workdir)")
        act, gram, labels = folder / "a.act.h5", folder / "g.h5", folder / "labels.npy"
        started = time.perf_counter()
        np.save(labels, write_activations(act, n, units, args.seed))
        generate_s = time.perf_counter() - started
        gram_out = run_worker(__file__, "gram", str(act), str(gram), args.dtype, args.device)
        probe_out = run_worker(__file__, "probe", str(act), str(gram), str(labels), str(args.pca), str(args.cv),
                               args.device)
        if args.compare_device:  # gram and probe again on the other device, from the same activations
            other_gram = folder / "g_other.h5"
            run_worker(__file__, "gram", str(act), str(other_gram), args.dtype, args.compare_device)
            probe_out["products_rel_diff"] = matrix_rel_diff(gram, other_gram)
            other = run_worker(__file__, "probe", str(act), str(other_gram), str(labels), str(args.pca),
                               str(args.cv), args.compare_device)
            probe_out["device_diff"] = fold_diff_samples(np.load(labels), args.cv, probe_out["scores"], other["scores"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"n": n, "units": units, "layer": layer_shape(units)[0], "route": gram_out["route"],
            "generate_s": generate_s, "gram_s": gram_out["seconds"], "gram_peak_gib": gram_out["peak_gib"],
            "gram_gpu_gib": gram_out["gpu_gib"], "probe_s": probe_out["seconds"],
            "probe_peak_gib": probe_out["peak_gib"], "probe_gpu_gib": probe_out["gpu_gib"],
            "accuracy": probe_out["mean"], "scores": probe_out["scores"], "device_diff": probe_out.get("device_diff"),
            "products_rel_diff": probe_out.get("products_rel_diff")}


def matrix_rel_diff(path: Path, other: Path) -> float:
    """The largest |A - B| / max |B| over the stored matrices (and column sums) of two Gram files."""
    import h5py

    worst = 0.0
    with h5py.File(path, "r") as a, h5py.File(other, "r") as b:
        def visit(name, item):
            nonlocal worst
            if isinstance(item, h5py.Dataset) and item.dtype.kind == "f" and item.ndim >= 1:
                mine, theirs = item[()], b[name][()]
                scale = max(float(np.abs(theirs).max()), 1e-30)
                worst = max(worst, float(np.abs(mine.astype(np.float64) - theirs).max()) / scale)
        a.visititems(visit)
    return worst


def fold_diff_samples(y: np.ndarray, cv: int, scores: list[float], other: list[float]) -> int:
    """The largest difference between two runs' fold accuracies, in test samples."""
    from sklearn.model_selection import StratifiedKFold

    sizes = np.array([len(test) for _, test in StratifiedKFold(cv).split(np.zeros((len(y), 1)), y)])
    return int(round(float(np.max(np.abs(np.array(scores) - np.array(other)) * sizes))))


def line(result: dict) -> str:
    text = (f"n={result['n']} layer={result['layer']} units={result['units']} route={result['route']} "
            f"gram_s={result['gram_s']:.1f} gram_peak_gib={result['gram_peak_gib']:.2f} "
            f"probe_s={result['probe_s']:.1f} probe_peak_gib={result['probe_peak_gib']:.2f}")
    if result["gram_gpu_gib"] is not None:
        text += f" gram_gpu_gib={result['gram_gpu_gib']:.2f} probe_gpu_gib={result['probe_gpu_gib']:.2f}"
    text += f" accuracy={result['accuracy']:.3f} generate_s={result['generate_s']:.1f}"
    if result.get("device_diff") is not None:
        text += (f" max_fold_diff_samples_vs_other_device={result['device_diff']}"
                 f" products_rel_diff_vs_other_device={result['products_rel_diff']:.1e}")
    return text


def plot(results: list[dict], path: Path) -> None:
    """Time against n, log-log: one line per (layer width, stage)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for units in sorted({r["units"] for r in results}):
        points = sorted((r for r in results if r["units"] == units), key=lambda r: r["n"])
        ns = [r["n"] for r in points]
        for stage, style in (("gram", "-o"), ("probe", "--s")):
            ax.plot(ns, [r[f"{stage}_s"] for r in points], style, label=f"{stage}, {units:,} units")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ns = sorted({r["n"] for r in results})
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ns))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FixedFormatter([f"{n:,}" for n in ns]))
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("stimuli (n)")
    ax.set_ylabel("seconds")
    ax.set_title("dnnprobe gram and probe stages (pca 100, 10 folds)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", default="2500,5000,10000,26000", help="comma-separated stimulus counts")
    parser.add_argument("--units", default="4096,43264", help="comma-separated layer widths")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto | torch-cpu (probe.device)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="gram.dtype")
    parser.add_argument("--pca", type=int, default=100)
    parser.add_argument("--cv", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare-device", default=None,
                        help="also run gram and probe on this device (e.g. cpu): report the largest relative difference "
                             "of the stored products and of the fold accuracies (in test samples)")
    parser.add_argument("--workdir", default=None, help="folder for the temporary files (default: the system's)")
    parser.add_argument("--plot", type=Path, help="write the log-log plot of time against n here (needs matplotlib)")
    parser.add_argument("--json", type=Path, help="append each point's measurements here, one JSON object a line")
    parser.add_argument("--replot", type=Path, help="only draw --plot from a --json file (the last line per point)")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.replot:
        points = {}
        for text in args.replot.read_text().splitlines():
            result = json.loads(text)
            points[(result["n"], result["units"])] = result
        for result in sorted(points.values(), key=lambda r: (r["units"], r["n"])):
            print(line(result))
        plot(list(points.values()), args.plot or args.replot.with_suffix(".png"))
        return
    if args.worker:
        kind, *rest = args.worker
        if kind == "gram":
            out = worker_gram(*rest)
        else:
            act, gram, labels, pca, cv, device = rest
            out = worker_probe(act, gram, labels, int(pca), int(cv), device)
        print(json.dumps(out))
        return
    results = []
    for n in (int(v) for v in args.n.split(",")):
        for units in (int(v) for v in args.units.split(",")):
            result = point(n, units, args)
            results.append(result)
            print(line(result), flush=True)
            if args.json:
                with args.json.open("a") as f:
                    f.write(json.dumps(result) + "\n")
    if args.plot:
        plot(results, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
