"""extract.tokens where it cannot apply (issue 26, item 2): refused on a network without a class token
(OpenCLIP's SigLIP towers), stated once and recorded for layers without tokens (AlexNet, a ConvNeXt);
and SigLIP-style towers get friendly layer names and a default layer list as other ViTs do."""

from __future__ import annotations

import json
import re

import h5py
import pytest

from helpers import one_line_error, tiny_params
from dnnprobe.extract.actfile import ActivationFile

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

SMALL = {"stimuli.demo.n_per_class": 4, "cv": 2, "pca": 2}


@pytest.fixture(scope="module")
def small_image_list(tmp_path_factory):
    from dnnprobe.stages.check import check
    from dnnprobe.stages.stimuli import make_stimuli

    root = tmp_path_factory.mktemp("small")
    table = root / "data" / "stimuli.stim.csv"
    make_stimuli(tiny_params(**SMALL), table, root / "data" / "images")
    check(tiny_params(**SMALL), table, root / "data" / "images.sha256")
    return root / "data" / "images.sha256"


@pytest.fixture(scope="module")
def tiny_siglip(tmp_path_factory):
    """An OpenCLIP model named tiny-SigLIP whose image tower is a two-block timm ViT without a class token
    and with attention pooling, as ViT-B-16-SigLIP's (vit_base_patch16_siglip_224) at a tiny size."""
    import open_clip
    from timm.models import register_model
    from timm.models.vision_transformer import _create_vision_transformer

    @register_model
    def vit_tiny_siglip_dnnprobe_test(pretrained=False, **kwargs):
        args = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, class_token=False,
                    global_pool="map")
        return _create_vision_transformer("vit_base_patch16_siglip_224", pretrained=False, **{**args, **kwargs})

    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / "tiny-SigLIP.json").write_text(json.dumps({
        "embed_dim": 32, "init_logit_bias": -10, "custom_text": True,
        "vision_cfg": {"image_size": 32, "timm_model_name": "vit_tiny_siglip_dnnprobe_test",
                       "timm_model_pretrained": False, "timm_pool": "map", "timm_proj": "none"},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1,
                     "no_causal_mask": True, "pool_type": "last"},
    }))
    open_clip.add_model_config(folder)
    return "tiny-SigLIP"


def extract_for(tmp_path, image_list, **overrides):
    """The network and extract stages; (params, activation file, extraction summary)."""
    from dnnprobe.stages.extract import extract
    from dnnprobe.stages.network import make_network

    params = tiny_params(**SMALL, **overrides)
    network = tmp_path / "network.pt"
    make_network(params, network)
    out = tmp_path / "activations.act.h5"
    return params, network, out, (lambda: extract(params, image_list, network, out, progress=False))


def test_siglip_tower_has_block_names_and_default_layers_and_refuses_cls(tmp_path, small_image_list, tiny_siglip):
    from dnnprobe.network.layer_table import list_layers

    siglip = {"model.source": "open_clip", "model.arch": tiny_siglip, "extract.preprocess": "model"}
    # extract.layers: [] records its blocks, by friendly name; tokens mean over its 16 patch tokens
    _, _, out, run = extract_for(tmp_path / "mean", small_image_list, **siglip, **{"extract.layers": "[]",
                                                                                  "extract.tokens": "mean"})
    run()
    with ActivationFile(out) as act:
        assert act.layers == ["block1", "block2"]
        assert act.read_layer("block1").shape == (8, 32)  # the mean of 16 patch tokens of 32 features
    with h5py.File(out) as f:
        assert f["block1"].attrs["tokens"] == "mean" and f["block1"].attrs["module"] == "trunk.blocks.0"
    _, rows = list_layers(tiny_params(**siglip))
    assert [row.name for row in rows if row.default] == ["block1", "block2"]
    # cls and cls+mean cannot apply: one line before any work, nothing written
    for tokens in ("cls", "cls+mean"):
        _, _, out, run = extract_for(tmp_path / tokens.replace("+", "_"), small_image_list, **siglip,
                                     **{"extract.layers": "[block1]", "extract.tokens": tokens})
        one_line_error(run, re.escape(f"extract.tokens={tokens}: open_clip {tiny_siglip} has no class token (its 16 "
                                       "tokens are all patches); use extract.tokens=mean or all"))
        assert not out.exists()
        with pytest.raises(Exception, match="has no class token"):
            list_layers(tiny_params(**siglip, **{"extract.tokens": tokens}))


@pytest.mark.parametrize("model", [
    {"model.arch": "alexnet", "extract.layers": "[conv1, fc1]"},
    {"model.source": "timm", "model.arch": "convnext_atto", "extract.layers": "[stem, stage1]"},
], ids=["alexnet", "convnext"])
def test_tokens_on_layers_without_tokens_is_said_once_and_recorded(tmp_path, small_image_list, model):
    _, _, out, run = extract_for(tmp_path, small_image_list, **model, **{"extract.tokens": "cls"})
    summary = run()
    layers = model["extract.layers"].strip("[]").split(", ")
    said = [note for note in summary.notes if "extract.tokens=cls does not apply" in note]
    assert len(said) == 1 and all(layer in said[0] for layer in layers)

    with h5py.File(out) as f:
        assert f.attrs["tokens_not_applied"] == ",".join(layers)
        assert all(f[layer].attrs["tokens"] == "not applicable" for layer in layers)
    # the default (all) says nothing and records nothing: the file of today
    _, _, default_out, run = extract_for(tmp_path / "default", small_image_list, **model)
    assert not [note for note in run().notes if "extract.tokens" in note]
    with h5py.File(default_out) as f:
        assert "tokens_not_applied" not in f.attrs and "tokens" not in f[layers[0]].attrs
