"""Peak memory of a layer's permutation null (binary logistic, fitted for all shuffles at once) against
dnnprobe.compute.memory.permutation_bytes, the probe stage's pre-check estimate.

    PYTHONPATH=src python benchmarks/bench_permutation_memory.py 20000 40 20   # permutations, n, pca

Measured on the 2-core test VM (no GPU), 2026-12-04: P=20000 n=40 k=5: 52 MiB (estimate 56 MiB);
P=20000 n=40 k=20: 71 MiB (estimate 74 MiB).
"""
import resource
import sys

import numpy as np

from dnnprobe.probe.decoders import ProbeSettings
from dnnprobe.compute.memory import permutation_bytes
from dnnprobe.probe.permutation import null_distribution
from dnnprobe.probe.targets import folds

P, n, k = (int(arg) for arg in sys.argv[1:4])
rng = np.random.default_rng(0)
y = np.repeat([0, 1], n // 2)
settings = ProbeSettings(n_components=k, cv=10, permutations=P)
splits = folds(y, settings)
fold_scores = [(rng.standard_normal((len(train), k)), rng.standard_normal((len(test), k))) for train, test in splits]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
null_distribution(fold_scores, splits, y, settings, [0])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(f"P={P} n={n} k={k}: measured {(after - before) / 2**20:.0f} MiB, "
      f"estimate {permutation_bytes(P, n, k, True) / 2**20:.0f} MiB")
