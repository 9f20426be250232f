"""Layer similarity from the Gram matrices: linear CKA between every pair of layers and per-layer RDMs.

Both follow from a layer's centred Gram matrix K = Xc Xc^T (n x n: what the gram stage stores for
layers with at least as many units as stimuli; computed here for the others, below):

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
  difference per unit); written a slab of rows at a time.

Covariance-route layers (fewer units than stimuli: the gram stage keeps the d x d moments X^T X, from
which no n x n Gram follows) get their centred Gram K = Xc Xc^T computed here from the activation file
(:func:`dnnprobe.gram.writer.layer_gram`, the gram stage's own code, one layer at a time, read in column
blocks), kept in a scratch HDF5 file beside the output while the stage runs, and then treated like the
stored ones: every layer of the run is in the CKA matrix and the RDM file, mixed runs included. Its
cost is the gram stage's for a layer as wide as the stimuli are many: n^2 d multiply-adds, 8 n^2 bytes
of memory and of scratch disk per such layer (docs/design.md). A correlation-distance RDM needs each
pattern centred over its units, which the Gram centred over stimuli has lost; only the Euclidean RDM
is exported.

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

import contextlib
import os
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.hashing import file_sha256
from dnnprobe.extract.actfile import ActivationFile
from dnnprobe.gram.writer import layer_gram

SLAB_BYTES = 64 << 20  # rows of every layer's Gram read at a time
RSATOOLBOX_VERSION = "dnnprobe (rsatoolbox RDMs HDF5 layout)"  # rsatoolbox stores its version here; it is not checked on reading


def gram_layers(grams) -> tuple[list[str], list[str]]:
    """(layers with an n x n Gram stored, covariance-route layers) of a :class:`dnnprobe.gram.reader.GramFile`."""
    usable = [layer for layer in grams.layers if grams.route(layer) == "gram"]
    return usable, [layer for layer in grams.layers if layer not in usable]


def check_activations(grams, activations: ActivationFile) -> None:
    """Raise DnnprobeError (one line) unless `activations` is the file the Gram file was computed from: the
    same rows, every layer with the same number of units, the same recorded images and network, and the
    same bytes (the sha256 the gram stage recorded, when it did)."""
    where = f"{activations.path} is not the activation file {grams.path} was computed from"
    activations.check_rows(grams.n_stim, str(grams.path))
    for layer in grams.layers:
        if layer not in activations.layers:
            raise DnnprobeError(f"{where} (it has no layer {layer!r}); rerun the gram stage (dvc repro gram)")
        if activations.n_units(layer) != grams.n_units(layer):
            raise DnnprobeError(f"{where} (layer {layer}: {activations.n_units(layer)} units, the Gram file says "
                                f"{grams.n_units(layer)}); rerun the gram stage (dvc repro gram)")
    for key in ("images_sha256", "network_sha256"):
        mine, theirs = activations.attrs.get(key), grams.attrs.get(key)
        if mine is not None and theirs is not None and str(mine) != str(theirs):
            raise DnnprobeError(f"{where} ({key} differs); rerun the gram stage (dvc repro gram)")
    if grams.activations_sha256 and file_sha256(activations.path) != grams.activations_sha256:
        raise DnnprobeError(f"{where} (its sha256 differs from the one the gram stage recorded); "
                            "rerun the gram stage (dvc repro gram)")


@contextlib.contextmanager
def layer_grams(grams, activations_path: str | os.PathLike | None, scratch: Path) -> Iterator[dict]:
    """Every layer's (n, n) Gram, row-sliceable, by layer in the Gram file's order: the stored one for
    gram-route layers; for covariance-route layers K = Xc Xc^T from the activation file, computed one
    layer at a time into the HDF5 file `scratch` (float64; removed on leaving). Raises DnnprobeError when
    covariance-route layers need an activation file and none is given, or it is not the Gram file's."""
    _, narrow = gram_layers(grams)
    if not narrow:
        yield {layer: grams.gram_rows(layer) for layer in grams.layers}
        return
    if activations_path is None:
        raise DnnprobeError(f"{grams.path}: layers {', '.join(narrow)} have fewer units than stimuli (covariance "
                            "route); their CKA and RDMs need the activation file (--activations)")
    try:
        with ActivationFile(activations_path) as activations, h5py.File(scratch, "w") as file:
            check_activations(grams, activations)
            for layer in narrow:
                file.create_dataset(layer, data=layer_gram(activations, layer), track_times=False)
            yield {layer: file[layer] if layer in narrow else grams.gram_rows(layer) for layer in grams.layers}
    finally:
        scratch.unlink(missing_ok=True)


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


def layer_cka(matrices: dict, n: int) -> tuple[list[str], np.ndarray]:
    """(layers, (m, m) linear CKA between them) from every layer's Gram (:func:`layer_grams`)."""
    layers = list(matrices)
    return layers, cka_from_products(centred_inner_products([matrices[layer] for layer in layers], n))


def check_same_stimuli(grams_a, grams_b) -> None:
    """Raise DnnprobeError unless two Gram files record the same number of stimuli and the same images in
    the same order (``images_sha256``, when both record it)."""
    if grams_a.n_stim != grams_b.n_stim:
        raise DnnprobeError(f"{grams_a.path} has {grams_a.n_stim} stimuli, {grams_b.path} {grams_b.n_stim}: "
                            "CKA compares the same stimuli")
    images = (grams_a.attrs.get("images_sha256"), grams_b.attrs.get("images_sha256"))
    if None not in images and str(images[0]) != str(images[1]):
        raise DnnprobeError(f"{grams_a.path} and {grams_b.path} were computed from other images, or the same "
                            "images in another order (images_sha256 differs)")


def cross_cka(grams_a, grams_b, matrices_a: dict | None = None,
              matrices_b: dict | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """Linear CKA between every layer of one file (rows) and of another (columns): two networks, or two
    weights, on the same stimuli in the same order. A file's layers are those of its `matrices_*`
    (:func:`layer_grams`: every layer), else its gram-route layers. Raises DnnprobeError as
    :func:`check_same_stimuli`."""
    check_same_stimuli(grams_a, grams_b)
    if matrices_a is None:
        matrices_a = {layer: grams_a.gram_rows(layer) for layer in gram_layers(grams_a)[0]}
    if matrices_b is None:
        matrices_b = {layer: grams_b.gram_rows(layer) for layer in gram_layers(grams_b)[0]}
    rows, cols = list(matrices_a), list(matrices_b)
    matrices = [matrices_a[layer] for layer in rows] + [matrices_b[layer] for layer in cols]
    cka = cka_from_products(centred_inner_products(matrices, grams_a.n_stim))
    return rows, cols, cka[:len(rows), len(rows):]


def rdm_slabs(matrix, n_units: int, n: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(offset, values)``: the squared Euclidean distances per unit between stimuli, upper
    triangle in row-major order, from an (n, n) row-sliceable Gram (centred or not), a slab of rows
    at a time (two passes: the diagonal first), so memory stays a slab; `offset` is the first value's
    position in the whole triangle (rsatoolbox's ``calc_rdm(method='euclidean')`` of the activations)."""
    step = max(1, SLAB_BYTES // max(1, 8 * n))
    diagonal = np.empty(n)
    for lo in range(0, n, step):
        slab = np.asarray(matrix[lo:lo + step], dtype=np.float64)
        diagonal[lo:lo + len(slab)] = slab[np.arange(len(slab)), np.arange(lo, lo + len(slab))]
    for lo in range(0, n, step):
        slab = np.asarray(matrix[lo:lo + step], dtype=np.float64)
        rows = np.arange(lo, lo + len(slab))
        upper = np.arange(n)[None, :] > rows[:, None]
        values = (diagonal[rows, None] + diagonal[None, :] - 2.0 * slab)[upper] / n_units
        yield lo * n - lo * (lo + 1) // 2, values


def euclidean_rdm(gram: np.ndarray, n_units: int) -> np.ndarray:
    """(n (n - 1) / 2,) squared Euclidean distances per unit between stimuli, upper triangle row-major,
    from an (n, n) Gram (centred or not): rsatoolbox's ``calc_rdm(method='euclidean')`` of the activations."""
    return np.concatenate([values for _, values in rdm_slabs(gram, n_units, len(gram))] or [np.empty(0)])


def write_rdms(grams, stim_ids: list[str], path: str | os.PathLike, dtype: str = "float32",
               matrices: dict | None = None, descriptors: dict[str, str] | None = None) -> list[str]:
    """Every layer's Euclidean RDM in rsatoolbox's HDF5 layout (module docstring), from `matrices`
    (:func:`layer_grams`; default: the gram-route layers' stored Grams), a slab of rows at a time;
    returns the layers written. `stim_ids` name the stimuli (pattern descriptor ``stimID``), in the Gram
    file's order; `descriptors` (what ran) become the ``descriptors`` group's attributes."""
    if matrices is None:
        matrices = {layer: grams.gram(layer) for layer in gram_layers(grams)[0]}
    layers = list(matrices)
    n = grams.n_stim
    with h5py.File(path, "w") as file:
        file.attrs["rsatoolbox_version"] = RSATOOLBOX_VERSION
        file.attrs["dissimilarity_measure"] = "squared euclidean"
        dissimilarities = file.create_dataset("dissimilarities", shape=(len(layers), n * (n - 1) // 2), dtype=dtype,
                                              track_times=False)
        for index, layer in enumerate(layers):
            for offset, values in rdm_slabs(matrices[layer], grams.n_units(layer), n):
                dissimilarities[index, offset:offset + len(values)] = values.astype(dtype)
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
