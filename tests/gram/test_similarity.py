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
from dnnprobe.gram.similarity import cross_cka, read_rdms
from helpers import direct_linear_cka


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


def narrow_and_wide(folder, n, units, seed=0):
    """An activation file of made-up layers (their units by name; offset and rectified like ReLU layers,
    so centring matters), its stimulus table and its Gram file from the gram stage's own writer: layers
    with fewer units than `n` are stored as d x d moments (covariance route)."""
    from dnnprobe.stimuli.table import StimulusTable

    rng = np.random.default_rng(seed)
    shared = rng.normal(size=(n, 4))
    X = {layer: np.maximum(shared @ rng.normal(size=(4, d)) + rng.normal(size=(n, d)) + 2.0, 0).astype(np.float32)
         for layer, d in units.items()}
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / "act.h5", "w") as file:
        for layer, x in X.items():
            file[layer] = x.reshape(n, -1, 1, 1)
    StimulusTable(header={"type": "image", "path": "images"},
                  columns={"stimID": [f"s{i:03d}.png" for i in range(n)], "label": [str(i % 2) for i in range(n)]}
                  ).write(folder / "t.stim.csv")
    write_gram_file(folder / "act.h5", folder / "gram.h5", layers=list(units), dtype="float64", progress=False)
    return X


@pytest.mark.parametrize("units", [{"fc_a": 5, "fc_b": 9, "fc_c": 3},  # all narrow: crashed the stage
                                   {"fc_a": 5, "conv": 30, "fc_c": 8, "conv_b": 14}],  # mixed: narrow ones were left out
                         ids=["all-narrow", "mixed"])
def test_every_layer_is_in_the_cka_matrix_and_the_rdm_file(tmp_path, units):
    from dnnprobe.stages.similarity import similarity

    n = 14
    X = narrow_and_wide(tmp_path, n, units)
    with GramFile(tmp_path / "gram.h5") as grams:
        narrow = [layer for layer in grams.layers if grams.route(layer) == "covariance"]
    assert narrow == [layer for layer, d in units.items() if d < n]
    result = similarity(tmp_path / "t.stim.csv", tmp_path / "gram.h5", tmp_path / "out", activations_path=tmp_path / "act.h5")
    layers = list(units)
    assert result["layers"] == layers and result["left_out"] == [] and result["from_activations"] == narrow
    for i, a in enumerate(layers):
        for j, b in enumerate(layers):
            assert result["cka"][i][j] == pytest.approx(direct_linear_cka(X[a], X[b]), abs=2e-6)
    assert min(min(row) for row in result["cka"]) < 0.99  # not all ones: the check means something
    names, dissimilarities = read_rdms(tmp_path / "out" / "rdms.hdf5")
    assert names == layers
    for index, layer in enumerate(layers):
        direct = pdist(X[layer].astype(np.float64), "sqeuclidean") / X[layer].shape[1]
        np.testing.assert_allclose(dissimilarities[index], direct, rtol=1e-5, atol=1e-6 * direct.max())
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"cka.json", "cka.png", "cka.svg", "rdms.hdf5"}


def test_rdms_are_written_a_slab_of_rows_at_a_time(tmp_path, monkeypatch):
    """write_rdms never reads a whole n x n Gram (memory stays a slab at any n) and the slabs give the
    same triangle, in rsatoolbox's order, as a direct computation."""
    from dnnprobe.gram import similarity as sim

    x = np.random.default_rng(1).normal(size=(11, 4))
    largest = []

    class Rows:  # a stored Gram read by row slices, recording how many rows each read takes
        shape = (11, 11)

        def __getitem__(self, index):
            block = (x @ x.T)[index]
            largest.append(len(np.atleast_2d(block)))
            return block

    class Grams:
        n_stim, layers = 11, ["layer"]

        def route(self, layer):
            return "gram"

        def n_units(self, layer):
            return 4

        gram_rows = gram = lambda self, layer: Rows()

    monkeypatch.setattr(sim, "SLAB_BYTES", 8 * 11 * 3)  # three rows per slab
    sim.write_rdms(Grams(), [f"s{i}" for i in range(11)], tmp_path / "rdms.hdf5", dtype="float64")
    assert max(largest) == 3
    np.testing.assert_allclose(read_rdms(tmp_path / "rdms.hdf5")[1][0], pdist(x, "sqeuclidean") / 4, rtol=1e-12)


def test_cka_against_another_run_has_this_runs_narrow_layers_as_rows(tmp_path):
    from dnnprobe.stages.similarity import similarity

    X = narrow_and_wide(tmp_path / "a", 12, {"fc": 4, "conv": 20})
    Y = narrow_and_wide(tmp_path / "b", 12, {"fc": 6, "conv": 25}, seed=1)
    result = similarity(tmp_path / "a" / "t.stim.csv", tmp_path / "a" / "gram.h5", tmp_path / "out",
                        other_path=tmp_path / "b" / "gram.h5", activations_path=tmp_path / "a" / "act.h5")
    other = result["other"]
    assert other["rows"] == ["fc", "conv"] and other["columns"] == ["conv"] and other["left_out"] == ["fc"]
    assert other["cka"][0][0] == pytest.approx(direct_linear_cka(X["fc"], Y["conv"]), abs=2e-6)
    assert other["cka"][1][0] == pytest.approx(direct_linear_cka(X["conv"], Y["conv"]), abs=2e-6)
    # with the other run's activation file, its narrow layers are compared too
    result = similarity(tmp_path / "a" / "t.stim.csv", tmp_path / "a" / "gram.h5", tmp_path / "out",
                        other_path=tmp_path / "b" / "gram.h5", activations_path=tmp_path / "a" / "act.h5",
                        other_activations_path=tmp_path / "b" / "act.h5")
    other = result["other"]
    assert other["rows"] == other["columns"] == ["fc", "conv"] and other["left_out"] == []
    for i, a in enumerate(["fc", "conv"]):
        for j, b in enumerate(["fc", "conv"]):
            assert other["cka"][i][j] == pytest.approx(direct_linear_cka(X[a], Y[b]), abs=2e-6)
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"cka.json", "cka.png", "cka.svg", "rdms.hdf5",
                                                              "cka_other.png", "cka_other.svg"}


def test_cka_against_another_network_is_drawn_named_by_both_networks(tmp_path):
    """Issue 27: the --other result as a figure, rows this run's layers, columns the other's, each axis
    named by its network (two networks that differ only in their tokens included)."""
    import warnings

    import matplotlib.pyplot as plt

    from dnnprobe.report.cka import cross_cka_figure
    from dnnprobe.stages.similarity import similarity

    narrow_and_wide(tmp_path / "a", 12, {"fc": 4, "conv": 20, "conv_b": 16})
    narrow_and_wide(tmp_path / "b", 12, {"head": 6, "block1": 25, "block2": 14}, seed=1)
    for run, attrs in (("a", {"network_arch": "resnet18", "network_weights": "random"}),
                       ("b", {"network_arch": "vit_small_patch16_224", "network_source": "timm",
                              "network_weights": "random", "network_preprocess": "model", "network_tokens": "cls"})):
        with h5py.File(tmp_path / run / "gram.h5", "a") as file:  # as each network's Gram file records itself
            file.attrs.update(attrs)
    result = similarity(tmp_path / "a" / "t.stim.csv", tmp_path / "a" / "gram.h5", tmp_path / "out",
                        other_path=tmp_path / "b" / "gram.h5", activations_path=tmp_path / "a" / "act.h5")
    other = result["other"]
    assert other["rows"] == ["fc", "conv", "conv_b"] and other["columns"] == ["block1", "block2"]
    svg = (tmp_path / "out" / "cka_other.svg").read_text()
    this, theirs = ("torchvision resnet18 (random weights), dnnbrain preprocessing",
                    "timm vit_small_patch16_224 (random weights), model preprocessing, cls tokens")
    assert (tmp_path / "out" / "cka_other.png").read_bytes()[:4] == b"\x89PNG"
    for words in ("torchvision resnet18", "timm vit_small_patch16_224", "left out", "head"):  # "head": d x d moments
        assert words in svg, words
    # the figure as drawn: its rows and columns, the networks on their axes, every text inside the figure
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure = cross_cka_figure(other["rows"], other["columns"], np.array(other["cka"]), this, theirs,
                                  "stimuli (n=12)", other["left_out"])
        figure.canvas.draw()
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.get_yticklabels()] == other["rows"]
    assert [t.get_text() for t in axes.get_xticklabels()] == other["columns"]
    assert axes.get_images()[0].get_array().shape == (3, 2)
    assert "resnet18" in axes.get_ylabel() and "vit_small_patch16_224" in axes.get_xlabel()
    assert "cls tokens" in " ".join(axes.get_xlabel().split())
    box = figure.bbox
    renderer = figure.canvas.get_renderer()
    texts = [axes.title, axes.xaxis.label, axes.yaxis.label, *axes.get_xticklabels(), *axes.get_yticklabels()]
    for text in texts:
        extent = text.get_window_extent(renderer)
        assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1 and box.y0 - 1 <= extent.y0 and extent.y1 <= box.y1 + 1, \
            f"{text.get_text()!r} is cut"
    plt.close(figure)


def test_another_run_with_only_narrow_layers_needs_its_activation_file(tmp_path):
    """Otherwise no layer of it could be compared: one line before any work, not an empty figure."""
    from dnnprobe.stages.similarity import similarity

    narrow_and_wide(tmp_path / "a", 12, {"conv": 20})
    narrow_and_wide(tmp_path / "b", 12, {"fc1": 4, "fc2": 6}, seed=1)
    with pytest.raises(DnnprobeError, match=r"b/gram.h5: every layer has fewer units than stimuli .* give --other-activations$"):
        similarity(tmp_path / "a" / "t.stim.csv", tmp_path / "a" / "gram.h5", tmp_path / "out",
                   other_path=tmp_path / "b" / "gram.h5")
    assert not (tmp_path / "out").exists()
    result = similarity(tmp_path / "a" / "t.stim.csv", tmp_path / "a" / "gram.h5", tmp_path / "out",
                        other_path=tmp_path / "b" / "gram.h5", other_activations_path=tmp_path / "b" / "act.h5")
    assert result["other"]["columns"] == ["fc1", "fc2"] and (tmp_path / "out" / "cka_other.png").is_file()


def test_narrow_layers_need_the_activation_file_the_grams_came_from(tmp_path):
    from dnnprobe.stages.similarity import similarity

    narrow_and_wide(tmp_path / "a", 12, {"fc": 4, "conv": 20})
    narrow_and_wide(tmp_path / "b", 12, {"fc": 4, "conv": 20}, seed=1)  # same layers, other values
    args = (tmp_path / "a" / "t.stim.csv", tmp_path / "a" / "gram.h5", tmp_path / "out")
    with pytest.raises(DnnprobeError, match=r"layers fc have fewer units than stimuli .*\(--activations\)$"):
        similarity(*args)
    with pytest.raises(DnnprobeError, match=r"b/act.h5 is not the activation file .*a/gram.h5 was computed from "
                                            r"\(its sha256 differs"):
        similarity(*args, activations_path=tmp_path / "b" / "act.h5")
    assert not (tmp_path / "out").exists() and list(tmp_path.glob("*dnnprobe*")) == []  # nothing half-written


def test_the_stage_command_gives_cka_of_narrow_layers(tmp_path):
    from click.testing import CliRunner

    from dnnprobe.cli import main

    narrow_and_wide(tmp_path, 10, {"fc1": 6, "fc2": 7})
    result = CliRunner().invoke(main, ["similarity", "--quiet", *map(str, [
        "--table", tmp_path / "t.stim.csv", "--gram", tmp_path / "gram.h5", "--activations", tmp_path / "act.h5",
        "--out", tmp_path / "out"])])
    assert result.exit_code == 0, result.output
    assert "similarity: CKA of 2 layers" in result.output and "fc1, fc2" in result.output
    assert json.loads((tmp_path / "out" / "cka.json").read_text())["layers"] == ["fc1", "fc2"]


def test_other_stimuli_are_refused(grams, tmp_path):
    path = tmp_path / "g.h5"
    with h5py.File(path, "w") as file:
        file.attrs.update({"gram_format": 2, "n_stim": 5, "layers": [], "dtype": "float64"})
    with GramFile(grams) as a, GramFile(path) as b, pytest.raises(DnnprobeError, match="CKA compares the same stimuli"):
        cross_cka(a, b)
