"""``extract.preprocess: model`` for Hugging Face models without a cached ``preprocessor_config.json``:
transformers' image processor for the ``model_type`` with its defaults, checked against that processor's
own output, recorded where it came from, and refused in one line for a processor dnnprobe does not
reproduce."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import REPO, tiny_params
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.extract.actfile import ActivationFile
from dnnprobe.extract.forward import resized_pixels, to_model_input
from dnnprobe.network.provenance import network_record
from dnnprobe.stimuli.table import ImageList

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
hf = pytest.importorskip("dnnprobe.network.sources.hf")


def random_images(seed: int = 0) -> list[Image.Image]:
    """Three noise images of different shapes (landscape, portrait, square): every resize and crop shows."""
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((150, 230), (260, 170), (90, 90))]


def our_input(images, prep) -> torch.Tensor:
    """dnnprobe's route: PIL resize/crop in the workers, then /255 and normalisation per batch."""
    pixels = torch.from_numpy(np.stack([resized_pixels(image.convert("RGB"), prep) for image in images]))
    return to_model_input(pixels, torch.device("cpu"), prep)


def assert_same_input(ours: torch.Tensor, processor, images) -> torch.Tensor:
    """Our input equals the processor's pixel_values (it multiplies by 1/255 in float32, we divide by 255:
    last-bit differences); returns the processor's."""
    reference = processor(images=images, return_tensors="pt").pixel_values
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    return reference


@pytest.mark.parametrize("model_type", sorted(hf.default_types()))
def test_each_types_defaults_give_the_processors_own_pixels(model_type):
    processor, origin = hf.default_processor(model_type)
    prep = hf.as_preprocess(processor, model_type, origin)
    assert origin == f"transformers {hf.transformers.__version__} defaults for model_type {model_type} ({type(processor).__name__})"
    assert (prep.mean, prep.std) == (tuple(processor.image_mean), tuple(processor.image_std))
    assert assert_same_input(our_input(random_images(), prep), processor, random_images()).shape[2:] == prep.input_size


def test_convnext_crop_pct_below_384_resizes_then_crops_as_its_processor_does():
    from transformers import ConvNextImageProcessorPil

    processor = ConvNextImageProcessorPil(size={"shortest_edge": 224}, crop_pct=0.875)
    prep = hf.as_preprocess(processor, "convnext", "test")
    assert (prep.resize, prep.crop) == ((256,), (224, 224))
    assert_same_input(our_input(random_images(1), prep), processor, random_images(1))


def tiny_folder(root, model_type: str):
    """A folder with a tiny config.json and no preprocessor_config.json (as a hub id whose processor file
    was never fetched): input 224 px, the types' default processors' size."""
    from transformers import Dinov2Config, ViTConfig

    config = {"dinov2": Dinov2Config, "vit": ViTConfig}[model_type](
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=224, patch_size=32)
    folder = root / "models" / "external" / model_type
    config.save_pretrained(folder)
    assert not (folder / "preprocessor_config.json").exists()
    return folder


@pytest.mark.parametrize("model_type", ["dinov2", "vit"])
def test_a_model_without_a_processor_file_gets_its_types_defaults_recorded(tmp_path, tiny_image_list, model_type):
    from transformers.models.auto.image_processing_auto import get_image_processor_class_from_name

    from dnnprobe.network.build import load_network
    from dnnprobe.stages.extract import extract
    from dnnprobe.stages.network import make_network

    folder = tiny_folder(tmp_path, model_type)
    params = tiny_params(**{"model.source": "hf", "model.arch": str(folder), "extract.layers": "[block1,block2]",
                            "extract.preprocess": "model", "extract.tokens": "cls"})
    make_network(params, tmp_path / "network.pt")
    extract(params, tiny_image_list, tmp_path / "network.pt", tmp_path / "act.h5", progress=False)
    model, _ = load_network(tmp_path / "network.pt", params.model.arch, "hf")

    defaults = get_image_processor_class_from_name(hf.default_types()[model_type])()
    images = [Image.open(p).convert("RGB") for p in ImageList.read(tiny_image_list).image_paths()][:4]
    prep = hf.preprocessing(model, str(folder))
    reference = assert_same_input(our_input(images, prep), defaults, images)
    with torch.inference_mode():
        hidden = model(reference, output_hidden_states=True).hidden_states
    with ActivationFile(tmp_path / "act.h5") as act:
        record = network_record(act.attrs)
        stored = act.read_layer("block2")[:4].reshape(4, -1)
    np.testing.assert_allclose(stored, hidden[2][:, 0].numpy(), rtol=1e-4, atol=1e-5)  # the CLS token of block 2
    assert record["preprocess"] == "model"
    assert record["preprocess_from"] == (f"transformers {hf.transformers.__version__} defaults for model_type "
                                         f"{model_type} ({hf.default_types()[model_type]})")


def test_types_and_processors_dnnprobe_does_not_reproduce_are_refused_in_one_line(tmp_path):
    from transformers import LevitConfig, LevitImageProcessorPil

    with pytest.raises(DnnprobeError, match=r"model_type levit has no preprocessor_config.json .* use "
                                            r"extract.preprocess=dnnbrain, or a model_type with defaults: beit, .*dinov2") as error:
        hf.preprocessing(SimpleNamespace(config=LevitConfig()), "levit")
    assert "\n" not in str(error.value)
    folder = tmp_path / "levit"  # a cached processor of a class we do not model (LeViT resizes by 256/224)
    LevitConfig().save_pretrained(folder)
    LevitImageProcessorPil().save_pretrained(folder)
    with pytest.raises(DnnprobeError, match=r"LevitImageProcessorPil is not one dnnprobe reproduces .*; use "
                                            r"extract.preprocess=dnnbrain$"):
        hf.preprocessing(SimpleNamespace(config=LevitConfig()), str(folder))


def test_docs_table_lists_each_type_with_its_defaults():
    """docs/models.md's table of types with defaults is the code's: each row's processor and numbers."""
    text = (REPO / "docs" / "models.md").read_text()
    section = text.split("### Types with default preprocessing", 1)[1].split("\n#", 1)[0]
    rows = {re.match(r"\| `([^`]+)`", line).group(1): line for line in section.splitlines() if line.startswith("| `")}
    assert sorted(rows) == sorted(hf.default_types())
    for model_type, line in rows.items():
        processor, origin = hf.default_processor(model_type)
        assert line == docs_row(model_type, hf.as_preprocess(processor, model_type, origin), type(processor).__name__)


NORMALISATIONS = {  # mean / std as docs/models.md names them
    ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)): "ImageNet",
    ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)): "OpenAI CLIP",
    ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)): "0.5 / 0.5 (to [-1, 1])",
}


def docs_row(model_type: str, prep, processor: str) -> str:
    """One row of docs/models.md's table: type, processor, resize, crop, interpolation, mean / std."""
    resize = f"shorter side {prep.resize[0]}" if len(prep.resize) == 1 else f"{prep.resize[0]} x {prep.resize[1]}"
    crop = f"{prep.crop[0]} x {prep.crop[1]}" if prep.crop else "none"
    normalisation = NORMALISATIONS.get((prep.mean, prep.std), f"{prep.mean} / {prep.std}")
    return f"| `{model_type}` | {processor} | {resize} | {crop} | {prep.interpolation} | {normalisation} |"
