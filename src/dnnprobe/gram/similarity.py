"""Layer similarity from the cached Gram matrices: linear CKA between layers and per-layer RDMs.

Both follow from a layer's centred Gram matrix K = Xc Xc^T (n x n, what the gram stage stores for
layers with at least as many units as stimuli), without reading the activations again:

- **linear CKA** (Kornblith et al. 2019, "Similarity of neural network representations revisited",
  ICML, eq. 4) between layers with Grams K and L::

      CKA = <HKH, HLH>_F / (||HKH||_F ||HLH||_F),   H = I - 11^T / n

  ``<HKH, HLH>_F = sum(K * L) - 2 (K1).(L1) / n + (1^T K 1)(1^T L 1) / n^2``, so one pass over the rows
  of all layers at once gives every pair (memory: one slab of rows per layer). It is 1 for layers that
  differ by a rotation and an isotropic scale, and does not change when units are added that are a
  linear mix of others: the standard answer to "do these two layers represent the stimuli alike?".
- **RDMs**: the squared Euclidean distance between two stimuli's activation patterns is
  ``K_ii + K_jj - 2 K_ij`` (centring does not change it), divided here by the layer's number of units,
  which is rsatoolbox's ``calc_rdm(..., method='euclidean')`` ("squared euclidean", the mean squared
  difference per unit).

What the stored matrices cannot give: for covariance-route layers (fewer units than stimuli: the gram
stage keeps the d x d moments X^T X instead) the n x n Gram is not recoverable, and CKA against any
other layer needs the cross-product ``X_i^T X_j`` (or X itself), which no stored matrix holds; such
layers are listed as left out, never estimated. A correlation-distance RDM needs each pattern centred
over its units, which the Gram centred over stimuli has lost; only the Euclidean RDM is exported.

RDM file (``rdms.hdf5``) is rsatoolbox's own HDF5 layout of an ``RDMs`` object, read back by
``rsatoolbox.rdm.load_rdm(path)``: root attributes ``rsatoolbox_version`` and ``dissimilarity_measure``
("squared euclidean"); dataset ``dissimilarities`` (n_layers, n (n - 1) / 2), each row the upper triangle
of one layer's RDM in row-major order (scipy's ``squareform``); groups ``descriptors`` (what ran, as
string attributes, rsatoolbox's form of an RDMs object's general descriptors: ``network_source``,
``network_arch``, ``network_weights``, ``network_preprocess``, ``network_tokens``, ``stimulus_set``),
``rdm_descriptors`` (``layer``: the layer names, ``index``) and ``pattern_descriptors`` (``stimID``,
``index``).
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from dnnprobe.core.errors import DnnprobeError

SLAB_BYTES = 64 << 20  # rows of every layer's Gram read at a time
RSATOOLBOX_VERSION = "dnnprobe (rsatoolbox RDMs HDF5 layout)"  # rsatoolbox stores its version here; it is not checked on reading


def gram_layers(grams) -> tuple[list[str], list[str]]:
    """(layers with an n x n Gram, covariance-route layers: not derivable) of a :class:`dnnprobe.gram.reader.GramFile`."""
    usable = [layer for layer in grams.layers if grams.route(layer) == "gram"]
    return usable, [layer for layer in grams.layers if layer not in usable]


def centred_inner_products(matrices: list, n: int) -> np.ndarray:
    """(m, m) ``<H K_a H, H K_b H>_F`` for every pair of the m (n, n) symmetric Grams in `matrices` (arrays or
    row-sliceable like h5py datasets), in float64, reading each in row slabs once."""
    m = len(matrices)
    products = np.zeros((m, m))
    row_sums = np.zeros((m, n))
    step = max(1, SLAB_BYTES // max(1, 8 * n * max(m, 1)))
    for lo in range(0, n, step):
        slabs = np.stack([np.asarray(matrix[lo:lo + step], dtype=np.float64) for matrix in matrices])  # (m, rows, n)
        flat = slabs.reshape(m, -1)
        products += flat @ flat.T
        row_sums[:, lo:lo + step] = slabs.sum(axis=2)
    totals = row_sums.sum(axis=1)
    return products - 2.0 * (row_sums @ row_sums.T) / n + np.outer(totals, totals) / n ** 2


def cka_from_products(products: np.ndarray) -> np.ndarray:
    """Linear CKA from centred inner products (:func:`centred_inner_products`): the cosine of the Grams."""
    norms = np.sqrt(np.clip(np.diag(products), 0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        cka = products / np.outer(norms, norms)
    return np.clip(cka, -1.0, 1.0)


def layer_cka(grams) -> tuple[list[str], np.ndarray, list[str]]:
    """(layers, (m, m) linear CKA between them, covariance-route layers left out) of one Gram file."""
    layers, left_out = gram_layers(grams)
    matrices = [grams.gram_rows(layer) for layer in layers]
    return layers, cka_from_products(centred_inner_products(matrices, grams.n_stim)), left_out


def cross_cka(grams_a, grams_b) -> tuple[list[str], list[str], np.ndarray]:
    """Linear CKA between every Gram-route layer of one file (rows) and of another (columns): two networks,
    or two weights, on the same stimuli in the same order. Raises DnnprobeError when the files do not
    record the same images (``images_sha256``) or the same number of stimuli."""
    if grams_a.n_stim != grams_b.n_stim:
        raise DnnprobeError(f"{grams_a.path} has {grams_a.n_stim} stimuli, {grams_b.path} {grams_b.n_stim}: "
                            "CKA compares the same stimuli")
    images = (grams_a.attrs.get("images_sha256"), grams_b.attrs.get("images_sha256"))
    if None not in images and str(images[0]) != str(images[1]):
        raise DnnprobeError(f"{grams_a.path} and {grams_b.path} were computed from other images, or the same "
                            "images in another order (images_sha256 differs)")
    rows, _ = gram_layers(grams_a)
    cols, _ = gram_layers(grams_b)
    matrices = [grams_a.gram_rows(layer) for layer in rows] + [grams_b.gram_rows(layer) for layer in cols]
    cka = cka_from_products(centred_inner_products(matrices, grams_a.n_stim))
    return rows, cols, cka[:len(rows), len(rows):]


def euclidean_rdm(gram: np.ndarray, n_units: int) -> np.ndarray:
    """(n (n - 1) / 2,) squared Euclidean distances per unit between stimuli, upper triangle row-major,
    from an (n, n) Gram (centred or not): rsatoolbox's ``calc_rdm(method='euclidean')`` of the activations."""
    gram = np.asarray(gram, dtype=np.float64)
    diagonal = np.diag(gram)
    rows, cols = np.triu_indices(len(gram), k=1)
    return (diagonal[rows] + diagonal[cols] - 2.0 * gram[rows, cols]) / n_units


def write_rdms(grams, stim_ids: list[str], path: str | os.PathLike, dtype: str = "float32",
               descriptors: dict[str, str] | None = None) -> list[str]:
    """Every Gram-route layer's Euclidean RDM in rsatoolbox's HDF5 layout (module docstring); returns the
    layers written. `stim_ids` name the stimuli (pattern descriptor ``stimID``), in the Gram file's order;
    `descriptors` (what ran) become the ``descriptors`` group's attributes."""
    layers, _ = gram_layers(grams)
    n = grams.n_stim
    with h5py.File(path, "w") as file:
        file.attrs["rsatoolbox_version"] = RSATOOLBOX_VERSION
        file.attrs["dissimilarity_measure"] = "squared euclidean"
        dissimilarities = file.create_dataset("dissimilarities", shape=(len(layers), n * (n - 1) // 2), dtype=dtype,
                                              track_times=False)
        for index, layer in enumerate(layers):
            dissimilarities[index] = euclidean_rdm(grams.gram(layer), grams.n_units(layer)).astype(dtype)
        file.create_group("descriptors").attrs.update({key: str(value) for key, value in (descriptors or {}).items()})
        rdm_descriptors = file.create_group("rdm_descriptors")
        rdm_descriptors["layer"] = np.array(layers, dtype="S")
        rdm_descriptors["index"] = np.arange(len(layers))
        patterns = file.create_group("pattern_descriptors")
        patterns["stimID"] = np.array(stim_ids, dtype="S")
        patterns["index"] = np.arange(n)
    return layers


def read_rdms(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """(layers, (n_layers, n_pairs) dissimilarities) of an RDM file written by :func:`write_rdms`."""
    with h5py.File(Path(path), "r") as file:
        layers = [name.decode() for name in file["rdm_descriptors"]["layer"][()]]
        return layers, file["dissimilarities"][()]
