"""Source ``open_clip``: the image tower of an OpenCLIP model (``ViT-B-32``, ``ViT-B-16``, ``RN50``, ...).

- ``model.arch``: a name in ``open_clip.list_models()``; only ``model.visual`` (the image tower) is
  built, saved and probed.
- ``model.weights``: ``random`` (OpenCLIP's initialisation from ``model.seed``); a ``pretrained`` tag
  (``laion2b_s34b_b79k``, ``openai`` with ``ViT-B-32-quickgelu``: ``open_clip.list_pretrained_tags_by_model(arch)``), read from the
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
from huggingface_hub import constants, try_to_load_from_cache

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
    check_activation(arch, tag, cfg)
    path, model_id, names = _cached_checkpoint(cfg.get("hf_hub") or "")
    if path is None:
        raise DnnprobeError(
            f"model.weights={tag}: OpenCLIP's {arch} weights ({model_id}, file {' or '.join(names)}) are not in the "
            f"local Hugging Face cache ({constants.HF_HUB_CACHE}) and nothing is downloaded. Ways out: `dvc pull "
            f"models/network.pt` from the team's remote, `hf download {model_id} {names[-1]}` on a machine with internet "
            "and copy its HF_HOME here, a weights file in models/external/, or model.weights=random")
    state = adapt_state(load_weights_file(path))
    return state, {"hub": str(cfg.get("hf_hub") or cfg.get("url")), "file": os.path.basename(path), "path": path}


def check_activation(arch: str, tag: str, cfg: dict) -> None:
    """Refuse a tag trained with QuickGELU on an arch built with GELU (or the reverse).

    The weights load either way (same tensors), but every block's activation differs, so the
    activations would be silently wrong. ``open_clip.create_model(arch, pretrained=tag)`` only warns;
    OpenCLIP names the QuickGELU variants ``<arch>-quickgelu`` (CLIP's ``openai`` weights among them).
    """
    tag_quick = bool(cfg.get("quick_gelu", False))
    arch_quick = bool((open_clip.get_model_config(arch) or {}).get("quick_gelu", False))
    if tag_quick and not arch_quick:
        raise DnnprobeError(f"model.weights={tag}: OpenCLIP's {tag} weights for {arch} were trained with QuickGELU, "
                            f"which {arch} does not use (every block's output would be wrong); set "
                            f"model.arch={arch}-quickgelu")
    if arch_quick and not tag_quick:
        base = arch.removesuffix("-quickgelu")
        raise DnnprobeError(f"model.weights={tag}: OpenCLIP's {tag} weights were trained with GELU, but {arch} uses "
                            f"QuickGELU (every block's output would be wrong); set model.arch={base}")


def _cached_checkpoint(hf_hub: str) -> tuple[str | None, str, list[str]]:
    """Where ``open_clip.download_pretrained`` would find the tag's checkpoint in the local Hugging Face
    cache (its safetensors alternative first), looked up without a request: (path or None, hub id, file names).

    OpenCLIP itself asks the hub first (``hf_hub_download``), which makes requests unless
    ``HF_HUB_OFFLINE`` was set before huggingface_hub was imported; every pretrained tag names an
    ``hf_hub`` entry, ``org/model/`` (the default file name) or ``org/model/file``.
    """
    model_id, filename = os.path.split(hf_hub)
    filename = filename or open_clip.constants.HF_WEIGHTS_NAME
    names = [filename]
    if filename == open_clip.constants.HF_WEIGHTS_NAME:
        names.insert(0, open_clip.constants.HF_SAFE_WEIGHTS_NAME)
    elif filename.endswith((".bin", ".pth")):
        names.insert(0, filename[:-4] + ".safetensors")
    for name in names if model_id else []:
        path = try_to_load_from_cache(model_id, name)
        if isinstance(path, str) and os.path.isfile(path):
            return path, model_id, names
    return None, model_id, names


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

