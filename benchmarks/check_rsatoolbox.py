"""One-off check that rsatoolbox reads dnnprobe's rdms.hdf5 and agrees with its own RDMs.

rsatoolbox is not a dnnprobe dependency; install it beside (not into) the environment to run this:
    pip install --target /tmp/rsa rsatoolbox==0.3.2 --no-deps
    PYTHONPATH=src:/tmp/rsa python benchmarks/check_rsatoolbox.py
(rsatoolbox 0.3.2 imports scikit-image for its figures; a stub `skimage.color` with rgb2hsv/hsv2rgb is
enough when scikit-image is absent.) Last line: ``max_abs_diff=<float> measure=<name>``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from rsatoolbox.data import Dataset
from rsatoolbox.rdm import calc_rdm, load_rdm

from dnnprobe.gram.similarity import write_rdms


class _Grams:
    """Two layers' Gram matrices of random activations, as a GramFile offers them."""

    def __init__(self, activations: dict[str, np.ndarray]) -> None:
        self.activations = activations
        self.layers = list(activations)
        self.n_stim = len(next(iter(activations.values())))

    def route(self, layer: str) -> str:
        return "gram"

    def gram(self, layer: str) -> np.ndarray:
        x = self.activations[layer]
        return x @ x.T

    def n_units(self, layer: str) -> int:
        return self.activations[layer].shape[1]


def main() -> None:
    rng = np.random.default_rng(0)
    activations = {"a": rng.normal(size=(12, 40)), "b": rng.normal(size=(12, 70))}
    path = Path(tempfile.mkdtemp()) / "rdms.hdf5"
    write_rdms(_Grams(activations), [f"s{i}" for i in range(12)], path)
    rdms = load_rdm(str(path))
    assert list(rdms.rdm_descriptors["layer"]) == ["a", "b"]
    worst = 0.0
    for index, layer in enumerate(activations):
        reference = calc_rdm(Dataset(activations[layer]), method="euclidean")
        worst = max(worst, float(np.abs(rdms.dissimilarities[index] - reference.dissimilarities[0]).max()))
    print(f"max_abs_diff={worst:.2e} measure={rdms.dissimilarity_measure.replace(' ', '_')}")


if __name__ == "__main__":
    main()
