"""One-off check that rsatoolbox reads dnnprobe's rdms.hdf5 and agrees with its own RDMs, and that the CKA
matrix equals a direct computation, for runs whose layers are all wide (n x n Grams in the Gram file),
all narrow (fewer units than stimuli: d x d moments, Grams computed from the activation file) and mixed.

rsatoolbox is not a dnnprobe dependency; install it beside (not into) the environment to run this:
    pip install --target /tmp/rsa rsatoolbox==0.3.2 --no-deps
    PYTHONPATH=src:/tmp/rsa python benchmarks/check_rsatoolbox.py
(rsatoolbox 0.3.2 imports scikit-image for its figures; a stub `skimage.color` with rgb2hsv/hsv2rgb is
enough when scikit-image is absent.) One line per case, ``<case>: rdm_max_abs_diff=<float>
cka_max_abs_diff=<float>``; last line: ``max_abs_diff=<float> measure=<name>`` (the RDMs' worst).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import h5py
import numpy as np
from rsatoolbox.data import Dataset
from rsatoolbox.rdm import calc_rdm, load_rdm

from dnnprobe.gram.writer import write_gram_file
from dnnprobe.stages.similarity import similarity
from dnnprobe.stimuli.table import StimulusTable

N = 12
CASES = {"all-wide": {"a": 40, "b": 70}, "all-narrow": {"a": 5, "b": 9, "c": 3}, "mixed": {"a": 5, "b": 70, "c": 9}}


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. (2019) from the activations: ||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)."""
    x, y = x - x.mean(0), y - y.mean(0)
    return float(np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def check(folder: Path, units: dict[str, int], rng: np.random.Generator) -> tuple[float, float, str]:
    """(worst RDM difference from rsatoolbox, worst CKA difference from :func:`linear_cka`, the RDMs' measure)."""
    activations = {layer: np.maximum(rng.normal(size=(N, d)) + 1.0, 0).astype(np.float32) for layer, d in units.items()}
    with h5py.File(folder / "act.h5", "w") as file:
        for layer, x in activations.items():
            file[layer] = x.reshape(N, -1, 1, 1)
    StimulusTable(header={"type": "image", "path": "images"},
                  columns={"stimID": [f"s{i}" for i in range(N)], "label": [str(i % 2) for i in range(N)]}
                  ).write(folder / "t.stim.csv")
    write_gram_file(folder / "act.h5", folder / "gram.h5", layers=list(units), dtype="float64", progress=False)
    result = similarity(folder / "t.stim.csv", folder / "gram.h5", folder / "out", activations_path=folder / "act.h5")
    rdms = load_rdm(str(folder / "out" / "rdms.hdf5"))
    assert list(rdms.rdm_descriptors["layer"]) == list(units) == result["layers"]
    rdm_diff = cka_diff = 0.0
    for index, layer in enumerate(units):
        reference = calc_rdm(Dataset(activations[layer].astype(np.float64)), method="euclidean")
        rdm_diff = max(rdm_diff, float(np.abs(rdms.dissimilarities[index] - reference.dissimilarities[0]).max()))
        for other, layer_b in enumerate(units):
            direct = linear_cka(activations[layer].astype(np.float64), activations[layer_b].astype(np.float64))
            cka_diff = max(cka_diff, abs(result["cka"][index][other] - direct))
    return rdm_diff, cka_diff, rdms.dissimilarity_measure.replace(" ", "_")


def main() -> None:
    rng = np.random.default_rng(0)
    worst = 0.0
    for case, units in CASES.items():
        folder = Path(tempfile.mkdtemp(prefix=f"rsa-{case}-"))
        rdm_diff, cka_diff, measure = check(folder, units, rng)
        print(f"{case}: rdm_max_abs_diff={rdm_diff:.2e} cka_max_abs_diff={cka_diff:.2e}")
        worst = max(worst, rdm_diff)
    print(f"max_abs_diff={worst:.2e} measure={measure}")


if __name__ == "__main__":
    main()
