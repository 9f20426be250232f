"""Source ``hf``: Hugging Face transformers vision models (ViT, DINOv2, CLIP and SigLIP vision towers, ConvNeXt).

- ``model.arch``, one of: a folder holding ``config.json`` (for example one in models/external/); a
  model id in the local Hugging Face cache (``facebook/dinov2-small``); or a ``model_type`` name
  (``dinov2``, ``vit``, ``clip_vision_model``, ``siglip_vision_model``, ``convnext``) for that type's
  default configuration. A CLIP or SigLIP configuration gives its vision tower. A configuration that
  needs ``trust_remote_code`` is refused: no code from the hub runs.
- ``model.weights``: ``random`` (``AutoModel.from_config``, initialised from ``model.seed``); ``pretrained``
  (the cached ``main`` revision) or a revision (a commit hash), from the local cache only
  (``local_files_only``); or a weights file in models/external/.
- ``extract.preprocess: model``: the model's image processor (``preprocessor_config.json`` next to
  its config), read with the PIL backend: resize, centre crop, resample, mean, std.
- Layers: ``embeddings``, ``block1``..``blockN`` (``encoder.layer.N-1``, ``encoder.layers.N-1``, or ViT's ``layers.N-1``;
  ``stage1``.. for ConvNeXt's ``encoder.stages``), ``norm`` (the final layer norm); any module path.
  A block that returns a tuple or a model output records its hidden state (the first element), the
  tensor ``output_hidden_states`` reports. Token layout: CLS (when the model has one) then register
  tokens (DINOv2 with registers) first.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import transformers

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.network.preprocess import Preprocess
from dnnprobe.network.sources.common import blocks_as_friendly, hub_offline, seeded
from dnnprobe.network.tokens import TokenLayout

TOWERS = {"clip": "vision_config", "siglip": "vision_config", "siglip2": "vision_config", "blip": "vision_config"}
RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
# Image processors (PIL backend) whose steps dnnprobe reproduces exactly: RGB, a PIL resize (to height x
# width, or of the shorter side; ConvNeXt's crop_pct rule), an optional centre crop, x 1/255, normalise.
# Each is checked against its own output in tests/network/test_hf_preprocess.py.
MODELLED_PROCESSORS = ("BeitImageProcessorPil", "BitImageProcessorPil", "CLIPImageProcessorPil",
                       "ConvNextImageProcessorPil", "DeiTImageProcessorPil", "PvtImageProcessorPil",
                       "SiglipImageProcessorPil", "ViTImageProcessorPil")
# Vision encoders whose model_type alone gives extract.preprocess: model when no preprocessor_config.json
# is cached: transformers' image processor class for the type, with that class's defaults (docs/models.md).
DEFAULT_TYPES = ("beit", "bit", "clip", "convnext", "convnextv2", "data2vec-vision", "deit", "dinat", "dinov2",
                 "focalnet", "hiera", "ijepa", "pvt", "regnet", "resnet", "siglip", "swin", "swinv2", "vit",
                 "vit_mae", "vit_msn")


def archs() -> list[str]:
    return ["a folder with config.json", "a cached model id", *sorted(transformers.CONFIG_MAPPING.keys())]


def _config(arch: str, revision: str | None = None):
    from transformers import CONFIG_MAPPING, AutoConfig

    if arch in CONFIG_MAPPING and not Path(arch).exists():
        config = CONFIG_MAPPING[arch]()
    else:
        try:
            with hub_offline():
                config = AutoConfig.from_pretrained(arch, revision=revision, local_files_only=True, trust_remote_code=False)
        except ValueError as exc:
            if "trust_remote_code" in str(exc):
                raise DnnprobeError(f"model.arch: {arch} needs trust_remote_code (code from the hub), which dnnprobe "
                                    "never runs; choose a model transformers implements") from None
            raise DnnprobeError(f"model.arch: {arch}: {str(exc).splitlines()[0]}") from None
        except OSError:
            raise DnnprobeError(
                f"model.arch: {arch} is neither a folder with config.json, nor a model id in the local Hugging Face "
                f"cache (HF_HOME), nor a model_type name (dinov2, vit, clip_vision_model, ...). Ways out: "
                f"`hf download {arch}` (huggingface_hub's command) on a machine with internet and copy its HF_HOME "
                "here, or put its config.json in a folder under models/external/") from None
    if getattr(config, "auto_map", None):
        raise DnnprobeError(f"model.arch: {arch} needs trust_remote_code (code from the hub), which dnnprobe never runs")
    if config.model_type in TOWERS:
        config = getattr(config, TOWERS[config.model_type])
    return config


def build(arch: str, seed: int):
    from transformers import AutoModel

    config = _config(arch)
    with seeded(seed):
        try:
            model = AutoModel.from_config(config)
        except ValueError as exc:
            raise DnnprobeError(f"model.arch: {arch}: {str(exc).splitlines()[0]}") from None
    return model.eval()


def pretrained(arch: str, tag: str) -> tuple[dict, dict]:
    """The model's weights at revision `tag` (``pretrained``: main) from the local cache only."""
    from huggingface_hub import try_to_load_from_cache

    revision = None if tag == "pretrained" else tag
    skeleton = build(arch, 0)
    if Path(arch).is_dir():
        found = [str(Path(arch) / name) for name in ("model.safetensors", "pytorch_model.bin") if (Path(arch) / name).is_file()]
    else:
        found = [path for name in ("model.safetensors", "pytorch_model.bin")
                 if isinstance(path := try_to_load_from_cache(arch, name, revision=revision), str)]
    if not found and Path(arch).is_dir():  # a local folder: its weights file belongs beside its config.json
        raise DnnprobeError(
            f"model.weights={tag}: {arch} has no model.safetensors or pytorch_model.bin beside its config.json. Ways out: "
            f"copy the model's weights file (model.safetensors from its hub page, or what save_pretrained wrote) into "
            f"{arch}, set model.weights to a weights file in models/external/, or model.weights=random")
    if not found:
        raise DnnprobeError(
            f"model.weights={tag}: {arch} has no weights in the local Hugging Face cache (HF_HOME) and nothing is "
            f"downloaded. Ways out: `dvc pull models/network.pt` from the team's remote, `hf download {arch}` "
            "(huggingface_hub's command) on a machine with internet and copy its HF_HOME here, a weights file in "
            "models/external/, or model.weights=random")
    try:  # the library's loader maps a whole CLIP checkpoint onto its vision tower
        with hub_offline():
            model = type(skeleton).from_pretrained(arch, revision=revision, local_files_only=True,
                                                   use_safetensors=found[0].endswith(".safetensors"))
    except (OSError, ValueError) as exc:
        raise DnnprobeError(f"model.weights={tag}: {arch}: {str(exc).splitlines()[0]}") from None
    return model.state_dict(), {"hub_id": arch, "revision": tag, "file": os.path.basename(found[0]), "path": found[0]}


def preprocessing(model, arch: str) -> Preprocess:
    """``extract.preprocess: model``: the model's image processor (``preprocessor_config.json`` beside its
    config or in the cache), else transformers' image processor for its ``model_type`` with that class's
    defaults (:data:`DEFAULT_TYPES`); either way one of :data:`MODELLED_PROCESSORS`, and ``origin`` says which.

    Raises DnnprobeError (one line, naming ``extract.preprocess: dnnbrain`` as the way out) for a processor
    dnnprobe does not reproduce, or a type without a cached processor and without modelled defaults."""
    from transformers import AutoImageProcessor

    processor = None
    if not (arch in transformers.CONFIG_MAPPING and not Path(arch).exists()):  # a folder or a cached model id
        try:
            with hub_offline():
                processor = AutoImageProcessor.from_pretrained(arch, local_files_only=True, backend="pil")
            origin = f"preprocessor_config.json of {arch} ({type(processor).__name__})"
        except (OSError, ValueError):
            processor = None
    if processor is None:
        processor, origin = default_processor(model.config.model_type)
    return as_preprocess(processor, arch, origin)


def default_types() -> dict[str, str]:
    """model_type -> the image processor class (PIL backend) transformers uses for it, for the types whose
    defaults dnnprobe reproduces (:data:`DEFAULT_TYPES`)."""
    from transformers.models.auto.image_processing_auto import (
        IMAGE_PROCESSOR_MAPPING_NAMES,
    )

    found = {t: (IMAGE_PROCESSOR_MAPPING_NAMES.get(t) or {}) for t in DEFAULT_TYPES}
    return {t: names.get("pil") for t, names in found.items() if names.get("pil") in MODELLED_PROCESSORS}


def default_processor(model_type: str):
    """(transformers' image processor for `model_type` with its defaults, where that came from); a vision
    tower's type (``clip_vision_model``) counts as its model's (``clip``). No file is read, nothing downloaded."""
    from transformers.models.auto.image_processing_auto import (
        get_image_processor_class_from_name,
    )

    known = default_types()
    name = known.get(model_type.removesuffix("_vision_model"))
    if name is None:
        raise DnnprobeError(
            f"extract.preprocess=model: hf model_type {model_type} has no preprocessor_config.json here and no default "
            f"image processor dnnprobe reproduces; use extract.preprocess=dnnbrain, or a model_type with defaults: "
            f"{', '.join(known)}")
    processor = get_image_processor_class_from_name(name)()
    return processor, f"transformers {transformers.__version__} defaults for model_type {model_type} ({name})"


def as_preprocess(processor, arch: str, origin: str) -> Preprocess:
    """`processor`'s steps as numbers: resize (a height x width, or the shorter side; ConvNeXt's ``crop_pct``
    rule), centre crop, resample, mean, std. A processor outside :data:`MODELLED_PROCESSORS`, a rescale other
    than 1/255, or a resize without a crop to a fixed size is refused (DnnprobeError, one line)."""
    name = type(processor).__name__
    way_out = "use extract.preprocess=dnnbrain"
    if name not in MODELLED_PROCESSORS:
        raise DnnprobeError(f"extract.preprocess=model: {arch}'s image processor {name} is not one dnnprobe reproduces "
                            f"({', '.join(MODELLED_PROCESSORS)}); {way_out}")
    if not getattr(processor, "do_resize", True):
        raise DnnprobeError(f"extract.preprocess=model: {arch}'s image processor does not resize (no fixed input size); {way_out}")
    if getattr(processor, "do_rescale", True) and abs(processor.rescale_factor - 1 / 255) > 1e-12:
        raise DnnprobeError(f"extract.preprocess=model: {arch} rescales pixels by {processor.rescale_factor}, not 1/255; {way_out}")
    size, crop = processor.size, getattr(processor, "crop_size", None)
    crop = (int(crop.height), int(crop.width)) if getattr(processor, "do_center_crop", False) and crop else None
    if name.startswith("ConvNext") and size.shortest_edge:
        # ConvNeXt: below 384 px the shorter side goes to size / crop_pct, then a square crop of size;
        # from 384 px on, a squash to size x size without a crop
        edge = int(size.shortest_edge)
        resize, crop = ((int(edge / processor.crop_pct),), (edge, edge)) if edge < 384 else ((edge, edge), None)
    elif getattr(size, "shortest_edge", None):
        resize = (int(size.shortest_edge),)
    elif getattr(size, "height", None):
        resize = (int(size.height), int(size.width))
    else:
        raise DnnprobeError(f"extract.preprocess=model: {arch}'s image processor size {size} is not supported; {way_out}")
    if len(resize) == 1 and crop is None:
        raise DnnprobeError(f"extract.preprocess=model: {arch} resizes without a crop (no fixed input size); {way_out}")
    mean = processor.image_mean if processor.do_normalize else (0.0, 0.0, 0.0)
    std = processor.image_std if processor.do_normalize else (1.0, 1.0, 1.0)
    return Preprocess(resize=resize, crop=crop, interpolation=RESAMPLE[int(processor.resample)],
                      mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std), crop_offset="floor",
                      origin=origin)


def _blocks(model) -> tuple[str, str] | None:
    """(module path, friendly prefix) of the encoder's block list."""
    for path, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList):
            # encoder.layer(s) in DINOv2 and CLIP; ViT in transformers 5 keeps its blocks at the top (``layers``)
            if path.endswith(("encoder.layer", "encoder.layers")) or path in ("layer", "layers"):
                return path, "block"
            if path.endswith("encoder.stages"):
                return path, "stage"
    return None


def friendly_layers(model, arch: str) -> dict[str, str]:
    modules = dict(model.named_modules())
    names = {"embeddings": "embeddings"} if "embeddings" in modules else {}
    found = _blocks(model)
    if found:
        path, prefix = found
        names.update(blocks_as_friendly(prefix, [f"{path}.{n}" for n, _ in modules[path].named_children()]))
    for norm in ("layernorm", "post_layernorm"):
        if norm in modules:
            names["norm"] = norm
            break
    return names


def default_layers(model, arch: str) -> list[str]:
    names = friendly_layers(model, arch)
    return [n for n in names if n.startswith(("block", "stage"))] or list(names)


def token_layout(model, input_size: tuple[int, int]) -> TokenLayout | None:
    config = model.config
    patch = getattr(config, "patch_size", None)
    if _blocks(model) is None or _blocks(model)[1] != "block" or not isinstance(patch, int):
        return None
    embeddings = getattr(model, "embeddings", None)
    has_cls = any(hasattr(embeddings, name) for name in ("cls_token", "class_embedding"))
    prefix = int(has_cls) + int(getattr(config, "num_register_tokens", 0) or 0)
    patches = (input_size[0] // patch) * (input_size[1] // patch)
    return TokenLayout(n_prefix=prefix, n_tokens=prefix + patches, has_cls=has_cls)
