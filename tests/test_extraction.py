"""Extraction: DNNBrain layout, pre-ReLU conv values, one forward pass, streaming and atomic writes."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from conftest import tiny_params
from dnnprobe.actfile import ActivationFile
from dnnprobe.errors import DnnprobeError
from dnnprobe.extraction import LayerRecorder, extract_activations
from dnnprobe.network import load_network, random_network, resolve_layers
from dnnprobe.params import TUTORIAL_LAYERS
from dnnprobe.stimuli import StimulusTable, load_rgb, preprocess

PRE_ACTIVATION = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2")
SHAPES = {
    "conv1": (64, 55, 55), "conv2": (192, 27, 27), "conv3": (384, 13, 13), "conv4": (256, 13, 13),
    "conv5": (256, 13, 13), "fc1": (4096, 1, 1), "fc2": (4096, 1, 1),
}


def test_layout_is_dnnbrain(tiny_activations, tiny_stimuli):
    table = StimulusTable.read(tiny_stimuli)
    with h5py.File(tiny_activations, "r") as f:
        assert sorted(f.keys()) == sorted(TUTORIAL_LAYERS)
        for layer in TUTORIAL_LAYERS:
            dataset = f[layer]
            assert dataset.dtype == np.float32
            assert dataset.shape == (len(table), *SHAPES[layer.replace("_relu", "")])
        assert f.attrs["network_arch"] == "alexnet"
        assert f.attrs["stimuli_rows"] == len(table)


def test_conv_layers_are_recorded_before_the_inplace_relu(tiny_activations):
    with ActivationFile(tiny_activations) as acts:
        for layer in PRE_ACTIVATION:
            conv = acts.read_layer(layer)
            relu = acts.read_layer(f"{layer}_relu")
            assert (conv < 0).any(), f"{layer} has no negative values: post-ReLU values were recorded"
            np.testing.assert_array_equal(relu, np.maximum(conv, 0))


def test_rows_follow_the_table_order(tiny_activations, tiny_stimuli, tiny_network):
    """Row i is stimulus i: recompute two rows directly, without DataLoader or writer."""
    table = StimulusTable.read(tiny_stimuli)
    model, _ = load_network(tiny_network, "alexnet")
    recorder = LayerRecorder(model, {"fc2": "classifier.4"})
    with torch.inference_mode():
        for row in (0, len(table) - 1):
            model(preprocess(load_rgb(table.image_paths()[row]))[None])
            expected = recorder.take()["fc2"].numpy().ravel()
            with ActivationFile(tiny_activations) as acts:
                got = acts.dataset("fc2")[row].ravel()
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    recorder.remove()


def test_all_layers_come_from_one_forward_pass(tiny_stimuli, tmp_path):
    table = StimulusTable.read(tiny_stimuli)
    model = random_network("alexnet", 0).eval()
    calls = []
    model.register_forward_pre_hook(lambda module, inputs: calls.append(len(inputs[0])))
    paths = resolve_layers(model, "alexnet", TUTORIAL_LAYERS)
    extract_activations(table, model, paths, tmp_path / "a.act.h5", batch_size=8, num_workers=0, progress=False)
    assert sum(calls) == len(table) + 1  # every image once, plus one blank image to learn the shapes


def test_float16_and_compression_options(tiny_stimuli, tmp_path):
    table = StimulusTable.read(tiny_stimuli)
    model = random_network("alexnet", 0).eval()
    paths = resolve_layers(model, "alexnet", ["conv5", "fc1"])
    out = tmp_path / "half.act.h5"
    extract_activations(table, model, paths, out, batch_size=8, dtype="float16", compression="gzip",
                        num_workers=0, progress=False)
    with h5py.File(out, "r") as f:
        assert f["conv5"].dtype == np.float16
        assert f["conv5"].compression == "gzip"


def test_unreadable_image_names_the_row_and_leaves_no_file(tiny_stimuli, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(tiny_stimuli.parent, folder)
    table = StimulusTable.read(folder / tiny_stimuli.name)
    bad = table.image_paths()[10]
    bad.write_bytes(bad.read_bytes()[:200])  # truncated PNG
    model = random_network("alexnet", 0).eval()
    out = tmp_path / "a.act.h5"
    with pytest.raises(DnnprobeError, match=r"stimulus row 11: .*cannot read image"):
        extract_activations(table, model, resolve_layers(model, "alexnet", ["fc2"]), out,
                            batch_size=4, num_workers=0, progress=False)
    assert not out.exists()
    assert list(tmp_path.glob("*.act.h5*")) == []


def test_workers_report_bad_images_in_one_line(tiny_stimuli, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(tiny_stimuli.parent, folder)
    table = StimulusTable.read(folder / tiny_stimuli.name)
    table.image_paths()[3].write_bytes(b"")
    model = random_network("alexnet", 0).eval()
    with pytest.raises(DnnprobeError) as caught:
        extract_activations(table, model, resolve_layers(model, "alexnet", ["fc2"]), tmp_path / "a.act.h5",
                            batch_size=4, num_workers=1, progress=False)
    assert "\n" not in str(caught.value) and "empty file" in str(caught.value)


def test_unknown_layer_fails_before_work_listing_valid_names():
    model = random_network("alexnet", 0)
    with pytest.raises(DnnprobeError, match="unknown layer 'conv9'.*conv1, conv1_relu"):
        resolve_layers(model, "alexnet", ["conv1", "conv9"])


def test_dnnbrain_alexnet_layer_names():
    from dnnprobe.network import friendly_layer_names

    expected = {
        "conv1": "features.0", "conv1_relu": "features.1", "conv1_maxpool": "features.2",
        "conv2": "features.3", "conv2_relu": "features.4", "conv2_maxpool": "features.5",
        "conv3": "features.6", "conv3_relu": "features.7", "conv4": "features.8", "conv4_relu": "features.9",
        "conv5": "features.10", "conv5_relu": "features.11", "conv5_maxpool": "features.12",
        "fc1": "classifier.1", "fc1_relu": "classifier.2", "fc2": "classifier.4", "fc2_relu": "classifier.5",
        "fc3": "classifier.6",
    }
    assert friendly_layer_names(random_network("alexnet", 0), "alexnet") == expected


def test_same_inputs_give_byte_identical_activation_files(tiny_stimuli, tiny_network, tiny_activations, tmp_path):
    from dnnprobe.stages import extract
    from dnnprobe.stimuli import file_sha256

    again = tmp_path / "again.act.h5"
    extract(tiny_params(), tiny_stimuli, tiny_network, again, progress=False)
    assert file_sha256(again) == file_sha256(tiny_activations)
