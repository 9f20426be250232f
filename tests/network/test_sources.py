"""Model sources (timm, OpenCLIP, Hugging Face, torchvision ViT): built offline with random weights from
tiny configurations, extracted through the stages, and checked against each library's own forward pass
and own transform."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import REPO, latest_probe_run, tiny_params
from dnnprobe.extract.actfile import ActivationFile
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.extract.forward import resized_pixels, to_model_input
from dnnprobe.stimuli.table import ImageList

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


# Eight demo images (four per class), two folds, two components: the fewest the probe accepts.
SMALL = {"stimuli.demo.n_per_class": 4, "cv": 2, "pca": 2}


@pytest.fixture(scope="module")
def small_stimuli(tmp_path_factory):
    from dnnprobe.stages.check import check
    from dnnprobe.stages.stimuli import make_stimuli

    root = tmp_path_factory.mktemp("small")
    table = root / "data" / "stimuli.stim.csv"
    make_stimuli(tiny_params(**SMALL), table, root / "data" / "images")
    check(tiny_params(**SMALL), table, root / "data" / "images.sha256")
    return table


@pytest.fixture(scope="module")
def small_image_list(small_stimuli):
    return small_stimuli.parent / "images.sha256"


def run_network_and_extract(tmp_path, image_list, network=None, **overrides):
    """The network stage (unless `network` is given) and the extract stage for `overrides` (model.*,
    extract.*); returns (params, model, activation file)."""
    from dnnprobe.network.build import load_network
    from dnnprobe.stages.extract import extract
    from dnnprobe.stages.network import make_network

    params = tiny_params(**SMALL, **overrides)
    if network is None:
        network = tmp_path / "network.pt"
        make_network(params, network)
    out = tmp_path / "activations.act.h5"
    extract(params, image_list, network, out, progress=False)
    model, _ = load_network(network, params.model.arch, params.model.source)
    return params, model, out


def images_of(image_list) -> list[Image.Image]:
    return [Image.open(path).convert("RGB") for path in ImageList.read(image_list).image_paths()]


def our_input(images, prep) -> torch.Tensor:
    """dnnprobe's route: PIL resize/crop in the workers, then /255 and normalisation per batch."""
    pixels = torch.from_numpy(np.stack([resized_pixels(image, prep) for image in images]))
    return to_model_input(pixels, torch.device("cpu"), prep)


def stored(path, layer) -> np.ndarray:
    with ActivationFile(path) as act:
        data = act.read_layer(layer)
    return data.reshape(data.shape[0], -1)


def reduce(tokens: torch.Tensor, choice: str, prefix: int) -> np.ndarray:
    mean = tokens[:, prefix:].mean(1)
    out = {"all": tokens.flatten(1), "cls": tokens[:, 0], "mean": mean,
           "cls+mean": torch.cat([tokens[:, 0], mean], 1)}[choice]
    return out.numpy()


def close(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# ---- registry -------------------------------------------------------------------------------------


def test_sources_registry_matches_params_and_the_default_imports_no_other_library():
    from dnnprobe.network.params import MODEL_SOURCES
    from dnnprobe.network.registry import SOURCES

    assert tuple(SOURCES) == MODEL_SOURCES
    code = ("import sys; import dnnprobe.stages.network, dnnprobe.stages.extract, dnnprobe.network.layers; "
            "from dnnprobe.network.registry import get_source; get_source('torchvision'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('timm', 'transformers', 'open_clip')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_unknown_source_and_token_choice_are_one_line_errors():
    from dnnprobe.network.registry import get_source
    from dnnprobe.network.tokens import TokenLayout, reducer

    with pytest.raises(DnnprobeError, match="unknown source 'keras'; known: torchvision, timm, open_clip, hf"):
        get_source("keras")
    with pytest.raises(DnnprobeError, match="has no class token"):
        reducer("cls", TokenLayout(n_prefix=0, n_tokens=4, has_cls=False))


# ---- timm --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timm_vit_runs(tmp_path_factory, small_image_list):
    """vit_tiny_patch16_224, model preprocessing, three blocks and the head, tokens all, cls and mean."""
    runs, network = {}, None
    for tokens in ("all", "cls", "mean"):  # cls+mean: the DINOv2 test
        folder = tmp_path_factory.mktemp(f"timm-{tokens}")
        runs[tokens] = run_network_and_extract(
            folder, small_image_list, network, **{"model.source": "timm", "model.arch": "vit_tiny_patch16_224",
                                        "extract.layers": "[block1, block6, block12, head]",
                                        "extract.preprocess": "model", "extract.tokens": tokens})
        network = network or folder / "network.pt"
    return runs


def test_timm_vit_tokens_equal_forward_intermediates(timm_vit_runs, small_image_list):
    import timm

    params, model, _ = timm_vit_runs["all"]
    config = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**config)
    images = images_of(small_image_list)
    reference_input = torch.stack([transform(image) for image in images])
    prep = __import__("dnnprobe.network.sources.timm", fromlist=["x"]).preprocessing(model, params.model.arch)
    assert torch.equal(our_input(images, prep), reference_input)  # timm's own eval transform, bit for bit
    with torch.inference_mode():
        blocks = model.forward_intermediates(reference_input, indices=[0, 5, 11], output_fmt="NLC", norm=False,
                                             return_prefix_tokens=True, intermediates_only=True)
        head = model(reference_input)
    for tokens, (_, _, path) in timm_vit_runs.items():
        for layer, (patches, prefix) in zip(("block1", "block6", "block12"), blocks):
            sequence = torch.cat([prefix, patches], dim=1)
            assert sequence.shape[1] == 197
            close(stored(path, layer), reduce(sequence, tokens, model.num_prefix_tokens))
        close(stored(path, "head"), head.numpy())  # not a token layer: stored whole
        with ActivationFile(path) as act:
            assert act.dataset("block1").attrs["tokens"] == tokens
            # the head has no tokens: a token choice other than all is recorded as not applying to it
            assert act.dataset("head").attrs.get("tokens") == (None if tokens == "all" else "not applicable")
            assert json.loads(act.attrs["preprocessing"])["interpolation"] == "bicubic"
    assert stored(timm_vit_runs["cls"][2], "block1").shape[1] == 192
    assert stored(timm_vit_runs["all"][2], "block1").shape[1] == 197 * 192


def test_timm_vit_probes_and_reports(timm_vit_runs, small_stimuli, tmp_path):
    """The stages after extraction need nothing model-specific: one bar per layer in depth order."""
    from dnnprobe.stages.gram import gram
    from dnnprobe.stages.probe import probe
    from dnnprobe.stages.report import report

    params, _, path = timm_vit_runs["cls"]
    gram(path, tmp_path / "gram.h5", progress=False)
    summary = probe(params, small_stimuli, tmp_path / "gram.h5", path, tmp_path / "probe", tmp_path / "metrics.json",
                    tmp_path / "models", progress=False)
    assert summary["layer_order"] == ["block1", "block6", "block12", "head"]
    logged = latest_probe_run().data.params  # the source, the token choice and the transform reach MLflow
    assert logged["model.source"] == "timm" and logged["network_tokens"] == "cls"
    assert logged["network_preprocess"] == "model" and json.loads(logged["network_transform"])["crop"] == [224, 224]
    report(params, tmp_path / "probe", tmp_path / "figures", tmp_path / "plot.csv")
    rows = (tmp_path / "plot.csv").read_text().splitlines()
    # each depth named with its network, so that dvc plots diff never puts another network's block1 here
    assert [row.split(",")[0] for row in rows[1:]] == [f"{layer} (vit_tiny_patch16_224)"
                                                       for layer in ("block1", "block6", "block12", "head")]


def test_timm_convnext_stages_equal_forward_intermediates(tmp_path, small_image_list):
    _, model, path = run_network_and_extract(
        tmp_path, small_image_list, **{"model.source": "timm", "model.arch": "convnext_atto", "extract.layers": "[]",
                                      "extract.tokens": "cls"})
    from dnnprobe.network.preprocess import DNNBRAIN

    with torch.inference_mode():
        stages = model.forward_intermediates(our_input(images_of(small_image_list), DNNBRAIN), intermediates_only=True)
    with ActivationFile(path) as act:
        assert list(act.layers) == ["stage1", "stage2", "stage3", "stage4"]
    for index, stage in enumerate(stages, start=1):
        close(stored(path, f"stage{index}"), stage.flatten(1).numpy())


# ---- OpenCLIP -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    """A two-layer ViT image tower registered with OpenCLIP under the name tiny-ViT."""
    import open_clip

    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / "tiny-ViT.json").write_text(json.dumps({
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1},
    }))
    open_clip.add_model_config(folder)
    return "tiny-ViT"


def test_open_clip_tower_blocks_equal_its_resblocks_and_transform(tmp_path, small_image_list, tiny_open_clip):
    params, model, path = run_network_and_extract(
        tmp_path, small_image_list, **{"model.source": "open_clip", "model.arch": tiny_open_clip,
                                      "extract.layers": "[block1, transformer.resblocks.1, norm]",
                                      "extract.preprocess": "model", "extract.tokens": "mean"})
    from open_clip.transform import PreprocessCfg, image_transform_v2

    transform = image_transform_v2(PreprocessCfg(**model.preprocess_cfg), is_train=False)
    images = images_of(small_image_list)
    reference_input = torch.stack([transform(image) for image in images])
    from dnnprobe.network.sources import open_clip as source

    assert torch.equal(our_input(images, source.preprocessing(model, params.model.arch)), reference_input)
    # A plain pass: the tower's own steps up to each block.
    with torch.inference_mode():
        x = model.conv1(reference_input).flatten(2).transpose(1, 2)
        x = torch.cat([model.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + model.positional_embedding
        x = model.ln_pre(model.patch_dropout(x))
        first = model.transformer.resblocks[0](x)
        second = model.transformer.resblocks[1](first)
        normed = model.ln_post(second)
    close(stored(path, "block1"), reduce(first, "mean", 1))
    close(stored(path, "transformer.resblocks.1"), reduce(second, "mean", 1))
    close(stored(path, "norm"), reduce(normed, "mean", 1))


@pytest.mark.parametrize("arch, tag, ending", [
    ("ViT-B-32", "openai", "QuickGELU, which ViT-B-32 does not use (every block's output would be wrong); "
                           "set model.arch=ViT-B-32-quickgelu"),
    ("RN50", "openai", "set model.arch=RN50-quickgelu"),
    ("ViT-B-32-quickgelu", "laion2b_s34b_b79k", "metaclip_400m, metaclip_fullcc)"),  # a GELU tag: not one of its tags
])
def test_open_clip_tag_trained_with_another_activation_is_refused_before_any_load(arch, tag, ending):
    """CLIP's openai weights load into a GELU ViT-B-32 without complaint, but every block's output differs."""
    from dnnprobe.network.sources import open_clip as source

    with pytest.raises(DnnprobeError) as caught:
        source.pretrained(arch, tag)
    message = str(caught.value)
    assert message.startswith("model.weights") and tag in message and "\n" not in message, message
    assert message.endswith(ending), message


def test_open_clip_quickgelu_arch_is_what_its_tags_were_trained_with():
    import open_clip

    from dnnprobe.network.sources import open_clip as source

    for arch in ("ViT-B-32-quickgelu", "ViT-B-16-quickgelu", "RN50-quickgelu"):
        for tag in open_clip.list_pretrained_tags_by_model(arch):
            source.check_activation(arch, tag, open_clip.get_pretrained_cfg(arch, tag))  # accepted: no error
    model = source.build("ViT-B-32-quickgelu", 0)
    assert isinstance(model.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)


# ---- Hugging Face ----------------------------------------------------------------------------------


def hf_folder(root, model_type: str):
    """models/external/<type>: a tiny config.json and preprocessor_config.json, as save_pretrained writes them."""
    from transformers import BitImageProcessor, CLIPImageProcessor, CLIPVisionConfig, Dinov2Config

    folder = root / "models" / "external" / model_type
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)
    if model_type == "dinov2":
        Dinov2Config(**small).save_pretrained(folder)
        BitImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    else:
        CLIPVisionConfig(**small).save_pretrained(folder)
        CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("model_type, tokens", [("dinov2", "cls+mean"), ("clip_vision_model", "cls")])
def test_hf_blocks_equal_output_hidden_states_and_processor(tmp_path, small_image_list, model_type, tokens):
    from transformers import AutoImageProcessor

    folder = hf_folder(tmp_path, model_type)
    params, model, path = run_network_and_extract(
        tmp_path, small_image_list, **{"model.source": "hf", "model.arch": str(folder), "extract.layers": "[]",
                                      "extract.preprocess": "model", "extract.tokens": tokens})
    images = images_of(small_image_list)
    processor = AutoImageProcessor.from_pretrained(folder, backend="pil")
    reference_input = processor(images=images, return_tensors="pt").pixel_values
    from dnnprobe.network.sources import hf as source

    # The processor rescales by multiplying with 1/255 in float32, we divide by 255: last-bit differences.
    torch.testing.assert_close(our_input(images, source.preprocessing(model, params.model.arch)), reference_input,
                               rtol=0, atol=1e-5)
    with torch.inference_mode():
        hidden = model(reference_input, output_hidden_states=True).hidden_states
    with ActivationFile(path) as act:
        assert list(act.layers) == ["block1", "block2"]
    for index in (1, 2):
        close(stored(path, f"block{index}"), reduce(hidden[index], tokens, 1))


def test_hf_remote_code_and_missing_models_are_refused_in_one_line(tmp_path):
    from dnnprobe.network.sources import hf

    folder = tmp_path / "remote"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "dinov2", "auto_map": {"AutoModel": "x.Model"}}))
    with pytest.raises(DnnprobeError, match="trust_remote_code") as error:
        hf.build(str(folder), 0)
    assert "\n" not in str(error.value)
    with pytest.raises(DnnprobeError, match="neither a folder with config.json") as error:
        hf.build("someone/not-cached-model", 0)
    assert "\n" not in str(error.value)


# ---- torchvision ViT, weights files ---------------------------------------------------------------


def test_torchvision_vit_blocks_equal_its_encoder_layers(tmp_path, small_image_list):
    from torchvision import models

    params, model, path = run_network_and_extract(
        tmp_path, small_image_list, **{"model.arch": "vit_b_16", "extract.layers": "[block1, patch_embed]",
                                      "extract.preprocess": "model", "extract.tokens": "cls"})
    transform = models.ViT_B_16_Weights.DEFAULT.transforms()
    images = images_of(small_image_list)
    reference_input = torch.stack([transform(image) for image in images])
    from dnnprobe.network.sources import torchvision as source

    torch.testing.assert_close(our_input(images, source.preprocessing(model, "vit_b_16")), reference_input, rtol=0, atol=1e-6)
    with torch.inference_mode():
        x = model._process_input(reference_input)
        x = torch.cat([model.class_token.expand(x.shape[0], -1, -1), x], dim=1) + model.encoder.pos_embedding
        first = model.encoder.layers[0](model.encoder.dropout(x))
        conv = model.conv_proj(reference_input)
    close(stored(path, "block1"), first[:, 0].numpy())
    close(stored(path, "patch_embed"), conv.flatten(1).numpy())


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_timm_weights_files_load_and_are_recorded(tmp_path, suffix, monkeypatch):
    from safetensors.torch import save_file

    from dnnprobe.network.build import build_from_source
    from dnnprobe.network.registry import get_source

    monkeypatch.chdir(tmp_path)
    trained = get_source("timm").build("convnext_atto", 7)
    path = tmp_path / "models" / "external" / f"mine{suffix}"
    path.parent.mkdir(parents=True)
    state = {k: v.contiguous() for k, v in trained.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    model, name, provenance = build_from_source("timm", "convnext_atto", str(path), 0)
    assert name == f"mine{suffix}" and provenance["source"] == "timm"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained.state_dict().values()))
    if suffix == ".safetensors":
        assert len(provenance["file_sha256"]) == 64


def test_pretrained_tags_offline_with_nothing_cached_name_the_ways_out(tmp_path, monkeypatch):
    from dnnprobe.network.build import build_from_source

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for source, arch, tag in (("timm", "vit_tiny_patch16_224", "default"), ("hf", "facebook/dinov2-small", "pretrained"),
                              ("open_clip", "ViT-B-32", "laion2b_s34b_b79k")):
        with pytest.raises(DnnprobeError, match="Ways out") as error:
            build_from_source(source, arch, tag, 0)
        assert "\n" not in str(error.value)
        for command in re.findall(r"`(\S+) download ", str(error.value)):  # a command huggingface_hub installed
            assert (Path(sys.executable).parent / command).is_file(), (command, str(error.value))


def test_hf_pretrained_on_a_folder_without_weights_says_where_they_go(tmp_path):
    """A local model folder is not in the cache: no hub download is suggested, the folder is named."""
    from dnnprobe.network.build import build_from_source

    folder = hf_folder(tmp_path, "dinov2")
    with pytest.raises(DnnprobeError) as error:
        build_from_source("hf", str(folder), "pretrained", 0)
    message = str(error.value)
    assert message == (
        f"model.weights=pretrained: {folder} has no model.safetensors or pytorch_model.bin beside its config.json. Ways "
        f"out: copy the model's weights file (model.safetensors from its hub page, or what save_pretrained wrote) into "
        f"{folder}, set model.weights to a weights file in models/external/, or model.weights=random")


# ---- dnnprobe layers ------------------------------------------------------------------------------


def test_layers_command_lists_shapes_units_defaults_and_pairing():
    from dnnprobe.network.layer_table import format_rows, list_layers

    header, rows = list_layers(tiny_params())
    by_name = {row.name: row for row in rows}
    assert by_name["conv1"].units == 193_600 and by_name["conv1"].figure == "Conv1 (Conv bar)"
    assert by_name["fc2_relu"].shape == (4096, 1, 1) and by_name["fc2_relu"].default
    assert [row.name for row in rows if row.default] == list(tiny_params().extract.layers)
    assert not by_name["conv1_maxpool"].default and by_name["classifier.0"].units == 9216  # every module, in order
    assert "23 recordable layers" in header
    text = format_rows(header, rows, friendly_only=True)
    assert "classifier.0" not in text and "* conv1 " in text


def test_layers_command_applies_the_token_choice(tmp_path):
    from dnnprobe.network.layer_table import list_layers

    folder = hf_folder(tmp_path, "dinov2")
    _, rows = list_layers(tiny_params(**{"model.source": "hf", "model.arch": str(folder), "extract.preprocess": "model",
                                         "extract.tokens": "cls+mean"}))
    block = {row.name: row for row in rows}["block2"]
    assert block.shape == (64, 1, 1) and block.tokens == "cls+mean" and block.module == "encoder.layer.1"
    assert block.default and block.figure == "block2 (one bar)"


def test_dvc_reruns_network_and_extract_for_a_new_source_or_arch_and_only_the_chosen_source_module():
    """`dvc exp run -S model.arch=...` / `-S model.source=...`: the network and extract stages list those
    keys, and depend on the chosen source's module only (interpolated), not on every source's."""
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name in ("network", "extract"):
        deps = stages[name]["deps"]
        assert "src/dnnprobe/network/sources/${model.source}.py" in deps
        # Beside the chosen source: only the package's docstring and what every source shares.
        assert {dep for dep in deps if dep.startswith("src/dnnprobe/network/sources/") and "$" not in dep} == {
            "src/dnnprobe/network/sources/__init__.py", "src/dnnprobe/network/sources/common.py"}
    assert "model" in stages["network"]["params"]
    assert {"model.source", "model.arch", "extract"} <= set(stages["extract"]["params"])
    # check builds the architecture (no weights) to check layer names: weights and seed never rerun it
    assert {str(p) for p in stages["check"]["params"] if str(p).startswith("model")} <= {"model.source", "model.arch"}


def test_hf_pretrained_weights_come_from_the_model_folder_with_their_sha256(tmp_path):
    from dnnprobe.core.hashing import file_sha256
    from dnnprobe.network.build import build_from_source
    from dnnprobe.network.sources import hf

    folder = hf_folder(tmp_path, "dinov2")
    trained = hf.build(str(folder), 5)
    trained.save_pretrained(folder)  # model.safetensors beside config.json, as the hub serves it
    model, name, provenance = build_from_source("hf", str(folder), "pretrained", 0)
    assert name == "model.safetensors" and provenance["file_sha256"] == file_sha256(folder / "model.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained.state_dict().values()))
