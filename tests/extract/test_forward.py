"""Extraction: DNNBrain layout, pre-ReLU conv values, one forward pass, streaming and atomic writes."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from helpers import can_mount_tmpfs, one_line_error, tiny_params
from dnnprobe.extract.actfile import ActivationFile
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.extract.forward import LayerRecorder, extract_activations, layer_unit_shapes
from dnnprobe.network.layers import resolve_layers
from dnnprobe.network.build import load_network
from dnnprobe.network.sources.torchvision import TUTORIAL_LAYERS, random_network
from dnnprobe.network.preprocess import DNNBRAIN, IMAGENET_MEAN, IMAGENET_STD
from dnnprobe.stimuli.images import load_rgb
from dnnprobe.stimuli.table import StimulusTable

PRE_ACTIVATION = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2")
SHAPES = {
    "conv1": (64, 55, 55), "conv2": (192, 27, 27), "conv3": (384, 13, 13), "conv4": (256, 13, 13),
    "conv5": (256, 13, 13), "fc1": (4096, 1, 1), "fc2": (4096, 1, 1),
}


@functools.lru_cache(maxsize=1)
def _transform():
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(DNNBRAIN.input_size), transforms.ToTensor(),
                               transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)])


def preprocess(image):
    """DNNBrain's AlexNet test transform as torchvision composes it, a (3, 224, 224) float32 tensor: the
    reference for the extractor's own route (``resized_pixels`` in the decoding workers, then
    ``to_model_input`` per batch), which must give the same values bit for bit."""
    return _transform()(image)


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
    from dnnprobe.network.sources.torchvision import friendly_layer_names

    expected = {
        "conv1": "features.0", "conv1_relu": "features.1", "conv1_maxpool": "features.2",
        "conv2": "features.3", "conv2_relu": "features.4", "conv2_maxpool": "features.5",
        "conv3": "features.6", "conv3_relu": "features.7", "conv4": "features.8", "conv4_relu": "features.9",
        "conv5": "features.10", "conv5_relu": "features.11", "conv5_maxpool": "features.12",
        "fc1": "classifier.1", "fc1_relu": "classifier.2", "fc2": "classifier.4", "fc2_relu": "classifier.5",
        "fc3": "classifier.6",
    }
    assert friendly_layer_names(random_network("alexnet", 0), "alexnet") == expected


def test_same_inputs_give_byte_identical_activation_files(tiny_image_list, tiny_network, tiny_activations, tmp_path):
    from dnnprobe.stages.extract import extract
    from dnnprobe.core.hashing import file_sha256

    again = tmp_path / "again.act.h5"
    extract(tiny_params(), tiny_image_list, tiny_network, again, progress=False)
    assert file_sha256(again) == file_sha256(tiny_activations)


# ---- modules that run more than once per forward pass -------------------------------------------


def record(model, module_paths, images):
    recorder = LayerRecorder(model, module_paths)
    try:
        with torch.inference_mode():
            model(images)
        return recorder.take()
    finally:
        recorder.remove()


def fx_features(model, node_names, images):
    """The same layers from torchvision's FX feature extractor, the reference for the naming."""
    from torchvision.models.feature_extraction import create_feature_extractor

    with torch.inference_mode():
        return create_feature_extractor(model, return_nodes=list(node_names))(images)


RESNET_CALLS = ["layer1.0.relu", "layer1.0.relu_1", "layer2.1.relu", "layer2.1.relu_1", "layer4.1.relu_1"]


def test_each_call_of_a_repeated_module_matches_torchvision_fx_names():
    """BasicBlock applies its relu twice: relu (after bn1) and relu_1 (after the residual add).

    The ReLU outputs are not overwritten later, so the FX extractor is a fair reference here."""
    model = random_network("resnet18", 0).eval()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    recorded = record(model, resolve_layers(model, "resnet18", RESNET_CALLS), images)
    expected = fx_features(model, RESNET_CALLS, images)
    for layer in RESNET_CALLS:
        assert torch.equal(recorded[layer], expected[layer]), layer
    assert recorded["layer1.0.relu"].shape == recorded["layer1.0.relu_1"].shape
    assert not torch.equal(recorded["layer1.0.relu"], recorded["layer1.0.relu_1"])


def test_call_counting_restarts_with_every_forward_pass():
    model = random_network("resnet18", 0).eval()
    layers = ["layer1.0.relu", "layer1.0.relu_1"]
    recorder = LayerRecorder(model, resolve_layers(model, "resnet18", layers))
    generator = torch.Generator().manual_seed(2)
    try:
        for _ in range(2):  # two batches, without take() in between for the first
            images = torch.randn(1, 3, 64, 64, generator=generator)
            with torch.inference_mode():
                model(images)
            assert recorder.calls["layer1.0.relu"] == 2
        recorded = recorder.take()
    finally:
        recorder.remove()
    expected = fx_features(model, layers, images)
    assert all(torch.equal(recorded[layer], expected[layer]) for layer in layers)


def test_bottleneck_relu_runs_three_times_and_the_dry_run_says_so():
    model = random_network("resnet50", 0).eval()
    shapes = layer_unit_shapes(model, resolve_layers(model, "resnet50", ["layer1.0.relu", "layer1.0.relu_2"]), torch.device("cpu"))
    assert shapes == {"layer1.0.relu": (64, 56, 56), "layer1.0.relu_2": (256, 56, 56)}
    assert shapes.repeated == {"layer1.0.relu": ["layer1.0.relu", "layer1.0.relu_1", "layer1.0.relu_2"]}
    assert shapes.notes == [
        "extract: layer1.0.relu runs 3 times per forward pass; layer1.0.relu records its first call, "
        "layer1.0.relu_1, layer1.0.relu_2 the next ones (torchvision FX names)"
    ]


def test_dry_run_notes_a_bare_name_of_a_repeated_module():
    model = random_network("resnet18", 0).eval()
    shapes = layer_unit_shapes(model, resolve_layers(model, "resnet18", ["conv1_relu", "layer1.0.relu", "layer3"]), torch.device("cpu"))
    assert shapes == {"conv1_relu": (64, 112, 112), "layer1.0.relu": (64, 56, 56), "layer3": (256, 14, 14)}
    assert shapes.notes == [
        "extract: layer1.0.relu runs 2 times per forward pass; layer1.0.relu records its first call, "
        "layer1.0.relu_1 the next (torchvision FX names)"
    ]


@pytest.mark.parametrize(
    "layer, message",
    [
        ("layer1.0.relu_5", "extract.layers: layer1.0.relu_5: module layer1.0.relu runs 2 times per forward pass "
                            "(layer1.0.relu, layer1.0.relu_1)"),
        ("layer3_1", "extract.layers: layer3_1: module layer3 runs 1 time per forward pass (layer3)"),
    ],
)
def test_a_call_that_never_happens_fails_in_the_dry_run_in_one_line(layer, message):
    model = random_network("resnet18", 0).eval()
    module_paths = resolve_layers(model, "resnet18", ["conv1", layer])
    with pytest.raises(DnnprobeError) as caught:
        layer_unit_shapes(model, module_paths, torch.device("cpu"))
    assert str(caught.value) == message


def test_alexnet_layers_keep_their_shapes_and_need_no_note():
    model = random_network("alexnet", 0).eval()
    shapes = layer_unit_shapes(model, resolve_layers(model, "alexnet", TUTORIAL_LAYERS), torch.device("cpu"))
    assert list(shapes) == list(TUTORIAL_LAYERS)
    assert all(shapes[layer] == SHAPES[layer.replace("_relu", "")] for layer in TUTORIAL_LAYERS)
    assert shapes.repeated == {} and shapes.notes == []


def test_recorder_accepts_plain_module_paths_as_before():
    model = random_network("alexnet", 0).eval()
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    recorded = record(model, {"conv1": "features.0", "conv1_relu": "features.1"}, images)
    with torch.inference_mode():
        conv1 = model.features[0](images)
    assert torch.equal(recorded["conv1"], conv1)  # pre-ReLU values, negatives included
    assert torch.equal(recorded["conv1_relu"], torch.relu(conv1))
    with pytest.raises(DnnprobeError, match=r"^extract.layers: x: features.99 is not a module of the network$"):
        LayerRecorder(model, {"x": "features.99"})


def test_extraction_writes_each_call_of_a_repeated_module_to_its_own_dataset(tiny_stimuli, tmp_path):
    table = StimulusTable.read(tiny_stimuli)
    model = random_network("resnet18", 0).eval()
    layers = ["layer1.0.relu", "layer1.0.relu_1"]
    out = tmp_path / "resnet.act.h5"
    extract_activations(table, model, resolve_layers(model, "resnet18", layers), out, batch_size=8,
                        num_workers=0, progress=False)
    first_batch = torch.stack([preprocess(load_rgb(path)) for path in table.image_paths()[:8]])
    expected = fx_features(model, layers, first_batch)
    with h5py.File(out, "r") as f:
        for layer in layers:
            np.testing.assert_array_equal(f[layer][:8], expected[layer].numpy())
        assert f["layer1.0.relu_1"].attrs["module"] == "layer1.0.relu_1"  # the call's FX name


# ---- the pipelined extractor gives exactly the values of a plain forward pass --------------------


def plain_forward_pass(model, module_paths, paths, batch_size):
    """The reference: torchvision's transform per image, the same batches, hooks that copy, no pipeline."""
    recorded = {layer: [] for layer in module_paths}
    for start in range(0, len(paths), batch_size):
        batch = torch.stack([preprocess(load_rgb(path)) for path in paths[start:start + batch_size]])
        outputs = record(model, module_paths, batch)
        for layer in module_paths:
            recorded[layer].append(outputs[layer].numpy())
    return {layer: np.concatenate(blocks) for layer, blocks in recorded.items()}


@pytest.mark.parametrize("dtype, workers", [("float32", 1), ("float16", 0)])
def test_activations_equal_a_plain_forward_pass_bit_for_bit(tiny_stimuli, tmp_path, monkeypatch, dtype, workers):
    """Decoding workers, uint8 batches, chunk-layout buffers and direct chunk writes change no bit.

    Small chunks (3 float32 or 6 float16 channels of conv1 per chunk: 64 is a multiple of neither)
    make the last chunk of several layers hold padding channels, and batches of 10 for 24 images make
    the last batch short."""
    monkeypatch.setattr("dnnprobe.extract.writer.CHUNK_BYTES", 3 * 10 * 55 * 55 * 4)
    table = StimulusTable.read(tiny_stimuli)
    model = random_network("alexnet", 0).eval()
    module_paths = resolve_layers(model, "alexnet", TUTORIAL_LAYERS)
    out = tmp_path / "a.act.h5"
    extract_activations(table, model, module_paths, out, batch_size=10, dtype=dtype, num_workers=workers,
                        progress=False)
    expected = plain_forward_pass(model, module_paths, table.image_paths(), batch_size=10)
    with h5py.File(out, "r") as f:
        assert f["conv1"].chunks == (10, 12 // np.dtype(dtype).itemsize, 55, 55)
        for layer in TUTORIAL_LAYERS:
            np.testing.assert_array_equal(f[layer][:], expected[layer].astype(dtype).reshape(f[layer].shape), layer)


def test_batch_preprocessing_equals_torchvision_transform_bit_for_bit(tiny_stimuli):
    from dnnprobe.extract.forward import resized_pixels, to_model_input

    images = [load_rgb(path) for path in StimulusTable.read(tiny_stimuli).image_paths()[:5]]
    pixels = torch.from_numpy(np.stack([resized_pixels(image) for image in images]))
    assert pixels.dtype == torch.uint8 and pixels.shape == (5, 224, 224, 3)
    batch = to_model_input(pixels, torch.device("cpu"))
    assert batch.is_contiguous()  # (N, C, H, W) order: channels-last input would change the kernels
    assert torch.equal(batch, torch.stack([preprocess(image) for image in images]))


def test_a_gzip_file_holds_the_same_values(tiny_stimuli, tmp_path):
    table = StimulusTable.read(tiny_stimuli)
    model = random_network("alexnet", 0).eval()
    paths = resolve_layers(model, "alexnet", ["conv2", "fc1_relu"])
    for compression in ("none", "gzip"):
        extract_activations(table, model, paths, tmp_path / f"{compression}.act.h5", batch_size=10,
                            compression=compression, num_workers=0, progress=False)
    with h5py.File(tmp_path / "none.act.h5", "r") as plain, h5py.File(tmp_path / "gzip.act.h5", "r") as packed:
        for layer in paths:
            np.testing.assert_array_equal(plain[layer][:], packed[layer][:])


# ---- decoding workers that die, hang or have no room; float16 overflow -----------------------------


def _alexnet_fc2():
    model = random_network("alexnet", 0).eval()
    return model, resolve_layers(model, "alexnet", ["fc2"])


def test_a_worker_that_dies_fails_the_stage_quickly_in_one_line(tiny_stimuli, tmp_path, monkeypatch):
    import os
    import time

    import dnnprobe.extract.forward as extraction

    def die(self, index):
        os._exit(1)  # as a worker killed by the kernel (out of memory, bus error on a full /dev/shm)

    monkeypatch.setattr(extraction.StimulusImages, "__getitem__", die)
    model, paths = _alexnet_fc2()
    started = time.monotonic()
    one_line_error(lambda: extract_activations(StimulusTable.read(tiny_stimuli), model, paths, tmp_path / "a.act.h5",
                                               batch_size=8, num_workers=1, progress=False),
                   r"^an image-decoding worker failed \(DataLoader worker \(pid\(s\) \d+\) exited "
                   r"unexpectedly\); .* set extract\.num_workers: 0")
    assert time.monotonic() - started < 60
    assert list(tmp_path.iterdir()) == []


def test_a_batch_a_worker_cannot_hand_over_times_out_in_one_line(tiny_stimuli, tmp_path, monkeypatch):
    """A worker that cannot put its batch into /dev/shm stays alive: PyTorch's queue prints the error
    and drops the batch. An item that cannot be pickled is dropped the same way."""
    import dnnprobe.extract.forward as extraction

    original = extraction.StimulusImages.__getitem__
    monkeypatch.setattr(extraction.StimulusImages, "__getitem__",
                        lambda self, index: (*original(self, index)[:2], [lambda: "cannot be pickled"]))
    monkeypatch.setattr(extraction, "WORKER_TIMEOUT_S", 3)
    model, paths = _alexnet_fc2()
    one_line_error(lambda: extract_activations(StimulusTable.read(tiny_stimuli), model, paths, tmp_path / "a.act.h5",
                                               batch_size=8, num_workers=1, progress=False),
                   r"^no batch from the image-decoding workers in 3 s; [\d,]+ MB free in /dev/shm: "
                   r"set extract\.num_workers: 0")
    assert list(tmp_path.iterdir()) == []


SMALL_SHM_SCRIPT = """
import sys
import dnnprobe.extract.forward as extraction
from dnnprobe.extract import budget
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.network.layers import resolve_layers
from dnnprobe.network.sources.torchvision import random_network
from dnnprobe.stimuli.table import StimulusTable

model = random_network("alexnet", 0).eval()
paths = resolve_layers(model, "alexnet", ["fc2"])
if sys.argv[2] == "unchecked":  # as before the pre-check: the timeout must still end the wait
    budget.check_shared_memory = lambda *args: None
    extraction.WORKER_TIMEOUT_S = 10
try:
    extraction.extract_activations(StimulusTable.read(sys.argv[1]), model, paths, sys.argv[3], batch_size=24,
                                   num_workers=1, progress=False)
except DnnprobeError as exc:
    print(exc)
"""


@pytest.mark.skipif(not can_mount_tmpfs(), reason="cannot mount a small tmpfs here")
@pytest.mark.parametrize("check", ["checked", "unchecked"])
def test_a_small_dev_shm_never_hangs_extraction(tiny_stimuli, tmp_path, check):
    """A real 2 MB /dev/shm (a tmpfs in a private mount namespace), where one worker's batches do not fit:
    refused before the workers start; and without that check, the worker's dropped batch times out."""
    import subprocess
    import sys

    script = tmp_path / "extract.py"
    script.write_text(SMALL_SHM_SCRIPT)
    command = (f"mount -t tmpfs -o size=2m tmpfs /dev/shm && "
               f"{sys.executable} {script} {tiny_stimuli} {check} {tmp_path / 'a.act.h5'}")
    result = subprocess.run(["unshare", "-r", "-m", "sh", "-c", command], capture_output=True, text=True, timeout=240,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")})
    message = result.stdout.strip()
    if check == "checked":
        assert re.fullmatch(r"1 image-decoding worker needs 17 MB of shared memory in /dev/shm, 2 MB free; "
                            r"set extract\.num_workers: 0 \(decode in the main process\), .*", message), message
    else:
        assert re.fullmatch(r"(no batch from the image-decoding workers in 10 s|an image-decoding worker "
                            r"failed .*); \d+ MB free in /dev/shm: set extract\.num_workers: 0 .*", message), \
            message + result.stderr[-2000:]
    assert not (tmp_path / "a.act.h5").exists()


def test_float16_overflow_is_refused_naming_the_layer_and_no_file_is_written(tiny_stimuli, tmp_path):
    model = random_network("alexnet", 0).eval()
    with torch.no_grad():
        model.features[0].weight.mul_(1e6)  # conv1 outputs beyond 65,504
    paths = resolve_layers(model, "alexnet", ["conv1", "fc2"])
    out = tmp_path / "half.act.h5"
    one_line_error(lambda: extract_activations(StimulusTable.read(tiny_stimuli), model, paths, out, batch_size=8,
                                               dtype="float16", num_workers=0, progress=False),
                   r"^layer conv1: activations reach [\d,]+, beyond float16's largest value \(65,504\), and would be "
                   r"stored as inf; use extract\.dtype: float32$")
    assert list(tmp_path.iterdir()) == []


def test_image_notes_from_the_workers_reach_the_stage(tiny_stimuli, tmp_path):
    """Decoding workers cannot print under a file's name: their notes travel with the batch."""
    import shutil

    from helpers import corrupt_jpeg

    folder = tmp_path / "copy"
    shutil.copytree(tiny_stimuli.parent, folder)
    table = StimulusTable.read(folder / tiny_stimuli.name)
    bad = corrupt_jpeg(table.image_paths()[5])
    model, paths = _alexnet_fc2()
    summary = extract_activations(table, model, paths, tmp_path / "a.act.h5", batch_size=8, num_workers=1,
                                  progress=False)
    assert summary.notes == [f"{bad}: Corrupt JPEG data: 2507 extraneous bytes before marker 0xd9; "
                             "decoded as PIL decodes it"]


def test_from_the_check_stages_record_each_image_is_decoded_once_with_the_same_notes_and_values(
        tiny_stimuli, tmp_path, monkeypatch):
    """The corrupt-scan check, the frame count and PIL's warnings run once, in the check stage; extraction
    decodes each image once and prints the recorded notes, as when it checked each image itself."""
    import shutil

    from PIL import Image

    from helpers import corrupt_jpeg
    from dnnprobe.stages.check import check
    from dnnprobe.stimuli import images as image_module
    from dnnprobe.stimuli.table import ImageList

    folder = tmp_path / "data"
    shutil.copytree(tiny_stimuli.parent / "images", folder / "images")
    table = StimulusTable.read(tiny_stimuli)
    del table.header["images_sha256"]
    table.write(folder / "stimuli.stim.csv")
    table = StimulusTable.read(folder / "stimuli.stim.csv")
    bad = corrupt_jpeg(table.image_paths()[5])
    moving = table.image_paths()[9]
    frames = [Image.new("RGB", (16, 16), (value, value, value)) for value in (10, 200, 90)]
    frames[0].save(moving, format="GIF", save_all=True, append_images=frames[1:])
    expected = [f"{bad}: Corrupt JPEG data: 2507 extraneous bytes before marker 0xd9; decoded as PIL decodes it",
                f"{moving}: 3 frames (animated or multi-page); the first is used"]
    model, paths = _alexnet_fc2()
    checked = check(tiny_params(), folder / "stimuli.stim.csv", folder / "images.sha256")
    assert isinstance(checked, ImageList)
    listed = ImageList.read(folder / "images.sha256")
    expected = [note.replace(str(table.image_folder), str(listed.folder)) for note in expected]

    def second_decode(*args):
        raise AssertionError("extraction decoded a JPEG a second time")

    with monkeypatch.context() as patch:
        patch.setattr(image_module, "jpeg_problems", second_decode)
        summary = extract_activations(listed, model, paths, tmp_path / "once.act.h5", batch_size=8, num_workers=0,
                                      progress=False)
    assert summary.notes == expected
    # Without the record (an older image list), each image is checked as it is decoded: the same notes, values.
    image_module.image_notes_path(listed.path).unlink()
    summary = extract_activations(listed, model, paths, tmp_path / "checked.act.h5", batch_size=8, num_workers=0,
                                  progress=False)
    assert summary.notes == expected
    with h5py.File(tmp_path / "once.act.h5", "r") as once, h5py.File(tmp_path / "checked.act.h5", "r") as checked:
        assert once["fc2"][:].tobytes() == checked["fc2"][:].tobytes()
