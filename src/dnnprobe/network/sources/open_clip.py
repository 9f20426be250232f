"""Source ``open_clip``: the image tower of an OpenCLIP model (``ViT-B-32``, ``ViT-B-16``, ``RN50``, ...).

- ``model.arch``: a name in ``open_clip.list_models()``; only ``model.visual`` (the image tower) is
  built, saved and probed.
- ``model.weights``: ``random`` (OpenCLIP's initialisation from ``model.seed``); a ``pretrained`` tag
  (``laion2b_s34b_b79k``, ``openai``: ``open_clip.list_pretrained_tags_by_model(arch)``), read from the
  local Hugging Face cache (``HF_HOME``) only, its ``visual.*`` weights kept; or a weights file in
  models/external/ holding the image tower's (or the whole model's) state_dict.
- ``extract.preprocess: model``: the tower's ``preprocess_cfg`` (size, ``shortest`` resize then centre
  crop, interpolation, mean, std), as ``open_clip.image_transform_v2`` uses it.
- Layers of a ViT tower: ``patch_embed`` (``conv1``), ``block1``..``blockN``
  (``transformer.resblocks.N-1``: the module paths CLIP users know work too), ``norm`` (``ln_post``,
  the CLS token after the last layer norm). Token layout: CLS first (OpenCLIP's resblocks are batch-first).
- Layers of a timm tower (``model.trunk``: SigLIP's ``ViT-B-16-SigLIP`` and the other ``timm_model_name``
  configs): ``patch_embed``, ``block1``..``blockN`` (``trunk.blocks.N-1``), ``norm`` (``trunk.norm``), as
  the timm source names them. Token layout: the trunk's ``num_prefix_tokens`` first; SigLIP's ViTs have
  no class token (their tokens are all patches), so ``extract.tokens: cls`` is refused there.
"""

from __future__ import annotations

import logging
import os

import open_clip
import torch

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.network.preprocess import Preprocess, shorter_side_then_crop
from dnnprobe.network.sources.common import blocks_as_friendly, seeded
from dnnprobe.network.tokens import TokenLayout
from dnnprobe.network.weights import load_weights_file


def archs() -> list[str]:
    return open_clip.list_models()


def build(arch: str, seed: int):
    if arch not in open_clip.list_models():
        raise DnnprobeError(f"model.arch: OpenCLIP has no model {arch!r}; it has: {', '.join(archs())}")
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # "no pretrained weights loaded"
    with seeded(seed):
        model = open_clip.create_model(arch, pretrained=None)
    visual = model.visual.eval()
    visual.preprocess_cfg = dict(getattr(visual, "preprocess_cfg", None) or open_clip.get_model_preprocess_cfg(model))
    return visual


def pretrained(arch: str, tag: str) -> tuple[dict, dict]:
    """The tag's checkpoint from the local cache; its image-tower weights (``visual.*``)."""
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        raise DnnprobeError(f"model.weights: OpenCLIP has no pretrained tag {tag!r} for {arch} "
                            f"(its tags: {', '.join(open_clip.list_pretrained_tags_by_model(arch)) or 'none'})")
    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # the cache only: nothing is downloaded
    try:
        path = open_clip.download_pretrained(cfg)
    except Exception:  # noqa: BLE001 - hub and urllib errors of several kinds all mean "not cached"
        path = ""
    finally:
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved
    if not path or not os.path.isfile(path):
        where = cfg.get("hf_hub") or cfg.get("url")
        raise DnnprobeError(
            f"model.weights={tag}: OpenCLIP's {arch} weights ({where}) are not in the local cache and nothing is "
            "downloaded. Ways out: `dvc pull models/network.pt` from the team's remote, download them on a machine "
            "with internet and copy its HF_HOME here, a weights file in models/external/, or model.weights=random")
    state = adapt_state(load_weights_file(path))
    return state, {"hub": str(cfg.get("hf_hub") or cfg.get("url")), "file": os.path.basename(path), "path": path}


def adapt_state(state: dict) -> dict:
    """The image tower's part of a whole CLIP state_dict (``visual.*``), or `state` when it is the tower's."""
    if any(key.startswith("visual.") for key in state):
        return {key[len("visual."):]: value for key, value in state.items() if key.startswith("visual.")}
    return state


def preprocessing(model, arch: str) -> Preprocess:
    cfg = model.preprocess_cfg
    size = cfg["size"]
    size = (size, size) if isinstance(size, int) else tuple(size)
    if cfg.get("resize_mode", "shortest") != "shortest" or size[0] != size[1]:
        raise DnnprobeError(f"extract.preprocess=model: OpenCLIP's resize_mode {cfg.get('resize_mode')!r} for {arch} "
                            "is not supported; use extract.preprocess=dnnbrain")
    return shorter_side_then_crop(size[0], size, cfg["interpolation"], cfg["mean"], cfg["std"])


def _resblocks(model):
    transformer = getattr(model, "transformer", None)
    return getattr(transformer, "resblocks", None)


def _timm_trunk(model):
    """The timm ViT inside a timm tower (``model.trunk``, its ``blocks`` a sequence), or None."""
    trunk = getattr(model, "trunk", None)
    blocks = getattr(trunk, "blocks", None)
    return trunk if isinstance(blocks, (torch.nn.Sequential, torch.nn.ModuleList)) else None


def friendly_layers(model, arch: str) -> dict[str, str]:
    trunk = _timm_trunk(model)
    if trunk is not None:  # a timm tower (SigLIP): timm's names, under trunk.
        names = {"patch_embed": "trunk.patch_embed"} if hasattr(trunk, "patch_embed") else {}
        names.update(blocks_as_friendly("block", [f"trunk.blocks.{n}" for n, _ in trunk.blocks.named_children()]))
        if not isinstance(getattr(trunk, "norm", None), (torch.nn.Identity, type(None))):
            names["norm"] = "trunk.norm"
        return names
    blocks = _resblocks(model)
    if blocks is None:  # a ResNet tower (RN50...): its stages
        return {f"layer{i}": f"layer{i}" for i in range(1, 5) if hasattr(model, f"layer{i}")}
    names = {"patch_embed": "conv1"}
    names.update(blocks_as_friendly("block", [f"transformer.resblocks.{n}" for n, _ in blocks.named_children()]))
    names["norm"] = "ln_post"
    return names


def default_layers(model, arch: str) -> list[str]:
    names = friendly_layers(model, arch)
    return [n for n in names if n.startswith(("block", "layer"))]


def token_layout(model, input_size: tuple[int, int]) -> TokenLayout | None:
    trunk = _timm_trunk(model)
    if trunk is not None:
        patch_size = getattr(getattr(trunk, "patch_embed", None), "patch_size", None)
        if patch_size is None or getattr(trunk, "num_prefix_tokens", None) is None:
            return None
        ph, pw = patch_size
        prefix = int(trunk.num_prefix_tokens)
        return TokenLayout(n_prefix=prefix, n_tokens=prefix + (input_size[0] // ph) * (input_size[1] // pw),
                           has_cls=getattr(trunk, "cls_token", None) is not None)
    if _resblocks(model) is None or not getattr(model.transformer, "batch_first", True):
        return None
    ph, pw = model.patch_size if isinstance(model.patch_size, tuple) else (model.patch_size,) * 2
    patches = (input_size[0] // ph) * (input_size[1] // pw)
    prefix = 1 + int(getattr(model, "num_registers", 0) or 0)
    return TokenLayout(n_prefix=prefix, n_tokens=prefix + patches)

