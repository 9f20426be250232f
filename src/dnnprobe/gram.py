"""Per-layer Gram matrices K = X X^T, streamed from the activation file.

The probe's PCA only ever needs inner products between stimuli: a training fold's principal
scores are the top eigenvectors of its centred Gram block, and held-out stimuli are projected with
the centred cross-Gram (see :mod:`dnnprobe.probe`). K is n_stim x n_stim whatever the layer's width,
so it is computed once per layer, streaming the layer in column blocks (memory stays bounded for
193,600-unit conv1), and cached as a DVC output: a new ``pca``, ``cv`` or classifier then costs
seconds. Products run in float32 (BLAS syrk) and accumulate in float64 across blocks.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from dnnprobe.actfile import ActivationFile
from dnnprobe.atomic import atomic_output
from dnnprobe.errors import DnnprobeError


def layer_gram(activations: ActivationFile, layer: str, block_bytes: int = 96 << 20) -> np.ndarray:
    """K = X X^T in float64 for one layer, X read as (n_stim, units) column blocks."""
    n = activations.n_stim
    gram = np.zeros((n, n), dtype=np.float64)
    product = np.empty((n, n), dtype=np.float32)  # reused: a fresh array per block costs page faults
    for block in activations.column_blocks(layer, max_bytes=block_bytes, reuse_buffers=True):
        np.matmul(block, block.T, out=product)  # numpy calls BLAS syrk for X @ X.T
        gram += product
    return gram


def write_gram_file(
    activations_path: str | os.PathLike,
    out_path: str | os.PathLike,
    layers: list[str] | None = None,
    progress: bool = True,
) -> list[str]:
    """Write one (n_stim, n_stim) float64 dataset per layer; returns the layers written."""
    with ActivationFile(activations_path) as activations:
        layers = layers or activations.layers
        with atomic_output(out_path) as temp, h5py.File(temp, "w") as out:
            out.attrs["n_stim"] = activations.n_stim
            out.attrs["layer_order"] = list(layers)
            out.attrs["activations"] = Path(activations_path).name
            for key, value in activations.attrs.items():
                if key.startswith("network_") or key.startswith("stimuli_"):
                    out.attrs[key] = value
            for layer in tqdm(layers, desc="gram", unit="layer", disable=not progress):
                dataset = out.create_dataset(layer, data=layer_gram(activations, layer), track_times=False)
                dataset.attrs["n_units"] = activations.n_units(layer)
    return list(layers)


class GramFile:
    """Read the Gram matrices written by :func:`write_gram_file`."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DnnprobeError(f"{self.path}: Gram file not found (run the gram stage: dvc repro gram)")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise DnnprobeError(f"{self.path}: not an HDF5 file ({exc})") from None
        if "n_stim" not in self._file.attrs or "layer_order" not in self._file.attrs:
            self._file.close()
            raise DnnprobeError(f"{self.path}: not a Gram file written by the gram stage (no n_stim/layer_order attributes)")
        self.n_stim = int(self._file.attrs["n_stim"])
        self.layers = [str(layer) for layer in self._file.attrs["layer_order"]]
        self.attrs = dict(self._file.attrs)

    def __enter__(self) -> "GramFile":
        return self

    def __exit__(self, *exc_info) -> None:
        self._file.close()

    def n_units(self, layer: str) -> int:
        return int(self._file[layer].attrs["n_units"])

    def gram(self, layer: str) -> np.ndarray:
        if layer not in self.layers:
            raise DnnprobeError(f"{self.path}: no layer {layer!r} (layers: {', '.join(self.layers)})")
        return self._file[layer][()]
