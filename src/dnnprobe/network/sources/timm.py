"""Source ``timm``: PyTorch Image Models (``vit_base_patch16_224``, ``convnext_tiny``, ``deit_small_patch16_224``, ...).

- ``model.arch``: a name in ``timm.list_models()``.
- ``model.weights``: ``random`` (``timm.create_model(arch, pretrained=False)`` from ``model.seed``); a
  pretrained tag (``default`` for the arch's default weights, or e.g. ``augreg2_in21k_ft_in1k``), read
  from the local Hugging Face cache (``HF_HOME``) only; or a weights file in models/external/.
- ``extract.preprocess: model``: timm's ``resolve_data_config`` (input size, crop_pct, interpolation,
  mean, std), the numbers ``create_transform`` builds its eval transform from.
- Layers: ``patch_embed``, ``block1``..``blockN`` (``blocks.N-1``), ``norm``, ``head`` for ViTs;
  ``stem``, ``stage1``..``stage4`` (``stages.N-1``), ``head`` for ConvNeXt and other staged networks;
  any module path. Token layout: ``num_prefix_tokens`` (CLS plus register tokens) first.
"""

from __future__ import annotations

import timm
import torch
from huggingface_hub import try_to_load_from_cache

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.network.preprocess import Preprocess, shorter_side_then_crop
from dnnprobe.network.sources.common import blocks_as_friendly, seeded
from dnnprobe.network.tokens import TokenLayout
from dnnprobe.network.weights import load_weights_file


def archs() -> list[str]:
    return timm.list_models()


def _create(arch: str, **kwargs):
    if arch not in timm.list_models():
        raise DnnprobeError(f"model.arch: timm has no model {arch!r} (timm.list_models() lists {len(archs())}; "
                            "e.g. vit_base_patch16_224, convnext_tiny)")
    return timm.create_model(arch, pretrained=False, **kwargs)


def build(arch: str, seed: int):
    with seeded(seed):
        return _create(arch).eval()


def pretrained(arch: str, tag: str) -> tuple[dict, dict]:
    """The tag's weights file from the local Hugging Face cache (timm publishes on the hub)."""
    name = arch if tag == "default" else f"{arch}.{tag}"
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - timm raises several kinds for an unknown tag
        cfg = None
    if cfg is None or not cfg.hf_hub_id:
        raise DnnprobeError(f"model.weights: timm has no pretrained tag {tag!r} for {arch} "
                            f"(its tags: {', '.join(timm.list_pretrained(arch + '*')) or 'none'})")
    for file_name in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(cfg.hf_hub_id, file_name)
        if isinstance(path, str):
            state = load_weights_file(path)
            return state, {"hub_id": cfg.hf_hub_id, "file": file_name, "path": path}
    raise DnnprobeError(
        f"model.weights={tag}: {cfg.hf_hub_id} is not in the local Hugging Face cache and nothing is downloaded. "
        f"Ways out: `dvc pull models/network.pt` from the team's remote, `hf download {cfg.hf_hub_id}` "
        "(huggingface_hub's command) on a machine with internet and copy its HF_HOME here, a weights file in "
        "models/external/, or model.weights=random")


def preprocessing(model, arch: str) -> Preprocess:
    config = timm.data.resolve_data_config({}, model=model)
    height, width = config["input_size"][1:]
    if config.get("crop_mode", "center") != "center":
        raise DnnprobeError(f"extract.preprocess=model: timm's crop_mode {config['crop_mode']!r} for {arch} is not "
                            "supported; use extract.preprocess=dnnbrain")
    # timm's transforms_factory: the shorter side becomes floor(size / crop_pct), then a centre crop.
    scale = int(height / config["crop_pct"]) if height == width else None
    if scale is None:
        raise DnnprobeError(f"extract.preprocess=model: {arch} has a non-square input; use extract.preprocess=dnnbrain")
    return shorter_side_then_crop(scale, (height, width), config["interpolation"], config["mean"], config["std"])


def friendly_layers(model, arch: str) -> dict[str, str]:
    children = dict(model.named_children())
    names: dict[str, str] = {}
    for name in ("patch_embed", "stem"):
        if name in children:
            names[name] = name
    if isinstance(children.get("blocks"), torch.nn.Sequential | torch.nn.ModuleList):
        names.update(blocks_as_friendly("block", [f"blocks.{n}" for n, _ in model.blocks.named_children()]))
    if isinstance(children.get("stages"), torch.nn.Sequential | torch.nn.ModuleList):
        names.update(blocks_as_friendly("stage", [f"stages.{n}" for n, _ in model.stages.named_children()]))
    for name in ("norm", "fc_norm", "head"):
        if name in children and not isinstance(children[name], torch.nn.Identity):
            names[name] = name
    return names


def default_layers(model, arch: str) -> list[str]:
    names = friendly_layers(model, arch)
    return [n for n in names if n.startswith(("block", "stage"))] or list(names)


def token_layout(model, input_size: tuple[int, int]) -> TokenLayout | None:
    prefix = getattr(model, "num_prefix_tokens", None)
    patch_embed = getattr(model, "patch_embed", None)
    if prefix is None or patch_embed is None or not hasattr(patch_embed, "patch_size"):
        return None
    ph, pw = patch_embed.patch_size
    patches = (input_size[0] // ph) * (input_size[1] // pw)
    return TokenLayout(n_prefix=prefix, n_tokens=prefix + patches, has_cls=getattr(model, "cls_token", None) is not None)
