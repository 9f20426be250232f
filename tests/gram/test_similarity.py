"""Layer similarity from the Gram file equals a direct computation from the activations."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from scipy.spatial.distance import pdist

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.gram.reader import GramFile
from dnnprobe.gram.writer import write_gram_file
from dnnprobe.gram.similarity import cross_cka, layer_cka, read_rdms


def direct_linear_cka(X, Y):
    """Kornblith et al. (2019), eq. 4 with explicit centring matrices, from the raw activations:
    HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), HSIC(K, L) = tr(K H L H), K = X X^T."""
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    H = np.eye(len(X)) - 1.0 / len(X)
    K, L = X @ X.T, Y @ Y.T

    def hsic(a, b):
        return np.trace(a @ H @ b @ H)

    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


@pytest.fixture(scope="module")
def grams(tmp_path_factory, tiny_activations):
    path = tmp_path_factory.mktemp("similarity") / "gram.h5"
    write_gram_file(tiny_activations, path, layers=["conv2", "conv5_relu", "fc1", "fc2_relu"], dtype="float64",
                    progress=False)
    return path


def activations_of(path, layer):
    from dnnprobe.extract.actfile import ActivationFile

    with ActivationFile(path) as acts:
        return acts.read_rows(layer, np.arange(acts.n_stim))


def test_cka_and_rdms_from_the_gram_file_equal_a_direct_computation(grams, tiny_activations, tiny_stimuli, tmp_path):
    from dnnprobe.stages.similarity import similarity

    result = similarity(tiny_stimuli, grams, tmp_path / "similarity")
    layers = result["layers"]
    assert layers == ["conv2", "conv5_relu", "fc1", "fc2_relu"] and result["left_out"] == []
    X = {layer: activations_of(tiny_activations, layer) for layer in layers}
    for i, a in enumerate(layers):
        for j, b in enumerate(layers):
            assert result["cka"][i][j] == pytest.approx(direct_linear_cka(X[a], X[b]), abs=2e-6)
    assert result["cka"][0][0] == 1.0 and result["cka"][0][3] < 0.999  # not all ones: the check means something
    names, dissimilarities = read_rdms(tmp_path / "similarity" / "rdms.hdf5")
    assert names == layers
    for index, layer in enumerate(layers):
        direct = pdist(X[layer].astype(np.float64), "sqeuclidean") / X[layer].shape[1]
        np.testing.assert_allclose(dissimilarities[index], direct, rtol=1e-5, atol=1e-6 * direct.max())
    with h5py.File(tmp_path / "similarity" / "rdms.hdf5") as file:  # rsatoolbox's RDMs layout
        assert file.attrs["dissimilarity_measure"] == "squared euclidean"
        assert [s.decode() for s in file["pattern_descriptors"]["stimID"][:2]] == ["boxy/00000.png", "curvy/00001.png"]
    assert {p.name for p in (tmp_path / "similarity").iterdir()} == {"cka.json", "cka.png", "cka.svg", "rdms.hdf5"}
    assert json.loads((tmp_path / "similarity" / "cka.json").read_text())["layers"] == layers


def test_cka_json_figure_and_rdm_file_name_the_network_and_stimulus_set(grams, tiny_stimuli, tmp_path):
    """Two networks' CKA files and figures can be told apart (issue 27): each names what ran."""
    from dnnprobe.stages.similarity import similarity

    other = tmp_path / "other.h5"
    with h5py.File(grams) as file:
        attrs = dict(file.attrs)
    with h5py.File(other, "w") as file:  # as another network's Gram file records itself
        file.attrs.update({**attrs, "network_arch": "vit_small_patch16_224", "network_source": "timm",
                           "network_preprocess": "model", "network_tokens": "cls"})
    result = similarity(tiny_stimuli, grams, tmp_path / "similarity")
    written = json.loads((tmp_path / "similarity" / "cka.json").read_text())
    assert written["network"] == result["network"]
    assert {key: written["network"][key] for key in ("source", "arch", "weights", "preprocess", "tokens")} == {
        "source": "torchvision", "arch": "alexnet", "weights": "random", "preprocess": "dnnbrain", "tokens": "n/a"}
    assert written["stimulus_set"] and written["n_stimuli"] == 24
    svg = (tmp_path / "similarity" / "cka.svg").read_text()
    assert "torchvision alexnet (random weights), dnnbrain preprocessing" in svg
    with h5py.File(tmp_path / "similarity" / "rdms.hdf5") as file:
        descriptors = dict(file["descriptors"].attrs)
    assert descriptors["network_arch"] == "alexnet" and descriptors["network_preprocess"] == "dnnbrain"
    assert descriptors["stimulus_set"] == written["stimulus_set"]

    from dnnprobe.network.provenance import network_record, network_words

    with h5py.File(other) as file:
        record = network_record(file.attrs)
    assert network_words(record) == "timm vit_small_patch16_224 (random weights), model preprocessing, cls tokens"
    # an activation file from another tool records nothing: unknown, never a guessed default
    assert network_record({})["preprocess"] == "unknown" and network_record({}, arch="resnet18")["arch"] == "resnet18"


def test_cka_between_two_gram_files_of_the_same_stimuli(grams, tiny_activations, tmp_path):
    other = tmp_path / "other.h5"
    write_gram_file(tiny_activations, other, layers=["conv1", "fc2"], progress=False)
    with GramFile(grams) as a, GramFile(other) as b:
        rows, cols, cka = cross_cka(a, b)
    assert rows == ["conv2", "conv5_relu", "fc1", "fc2_relu"] and cols == ["conv1", "fc2"]
    expected = direct_linear_cka(activations_of(tiny_activations, "fc1"), activations_of(tiny_activations, "fc2"))
    assert cka[2, 1] == pytest.approx(expected, abs=2e-6)


def test_covariance_route_layers_are_left_out_and_named(tmp_path):
    """A layer with fewer units than stimuli holds X^T X, from which no n x n Gram follows."""
    from dnnprobe.gram.moments import LayerMoments  # noqa: F401 - the route's stored form

    rng = np.random.default_rng(0)
    path = tmp_path / "g.h5"
    with h5py.File(path, "w") as file:
        file.attrs.update({"gram_format": 2, "n_stim": 6, "layers": ["wide", "narrow"], "dtype": "float64"})
        wide = rng.normal(size=(6, 9))
        group = file.create_group("wide")
        group.attrs.update({"route": "gram", "n_units": 9})
        group["matrix"] = wide @ wide.T
        group = file.create_group("narrow")
        group.attrs.update({"route": "covariance", "n_units": 3})
        group["matrix"], group["column_sums"], group["shift"] = np.eye(3), np.zeros(3), np.zeros(3, np.float32)
    with GramFile(path) as grams:
        layers, cka, left_out = layer_cka(grams)
    assert layers == ["wide"] and left_out == ["narrow"] and cka.shape == (1, 1)


def test_other_stimuli_are_refused(grams, tmp_path):
    path = tmp_path / "g.h5"
    with h5py.File(path, "w") as file:
        file.attrs.update({"gram_format": 2, "n_stim": 5, "layers": [], "dtype": "float64"})
    with GramFile(grams) as a, GramFile(path) as b, pytest.raises(DnnprobeError, match="CKA compares the same stimuli"):
        cross_cka(a, b)
