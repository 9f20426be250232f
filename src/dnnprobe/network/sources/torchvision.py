"""Source ``torchvision`` (the default): torchvision's classification models (alexnet, resnet50, vit_b_16, ...).

- ``model.weights``: ``random`` (torchvision's initialisation from ``model.seed``); ``imagenet`` (the
  arch's ``IMAGENET1K_V1``, as DNNBrain used) or any member of the arch's weights enum
  (``IMAGENET1K_V2``, ``DEFAULT``), from ``$TORCH_HOME/hub/checkpoints`` and checked against the hash
  in the file name; or a weights file in models/external/.
- ``extract.preprocess: model``: the numbers of ``weights.transforms()`` (the arch's DEFAULT weights
  when the weights are random): resize the shorter side, centre crop, mean and std.
- Layers: DNNBrain's names for AlexNet/VGG, ResNet's stem and blocks (:func:`dnnprobe.network.layers.friendly_layer_names`);
  ViTs (``vit_b_16``...): ``patch_embed`` (``conv_proj``), ``block1``..``blockN``
  (``encoder.layers.encoder_layer_N-1``), ``norm`` (``encoder.ln``), ``head`` (``heads``). Token
  layout of a ViT: CLS first, ``seq_length`` tokens.
"""

from __future__ import annotations

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.network.preprocess import Preprocess, shorter_side_then_crop
from dnnprobe.network.sources import blocks_as_friendly
from dnnprobe.network.tokens import TokenLayout


def archs() -> list[str]:
    from dnnprobe.network.build import available_archs

    return available_archs()


def build(arch: str, seed: int):
    from dnnprobe.network.build import random_network

    return random_network(arch, seed).eval()


def pretrained(arch: str, tag: str) -> tuple[dict, dict]:
    from dnnprobe.network.build import imagenet_state_dict

    state, file_name = imagenet_state_dict(arch, "IMAGENET1K_V1" if tag == "imagenet" else tag, label=tag)
    return state, {"file": file_name}


def preprocessing(model, arch: str) -> Preprocess:
    from torchvision import models

    try:
        transform = models.get_model_weights(arch).DEFAULT.transforms()
    except (AttributeError, ValueError, KeyError):
        raise DnnprobeError(f"extract.preprocess=model: torchvision defines no transform for {arch!r}; "
                            "use extract.preprocess=dnnbrain") from None
    return shorter_side_then_crop(transform.resize_size[0], tuple(transform.crop_size * 2)[:2],
                                  transform.interpolation.value, transform.mean, transform.std)


def _is_vit(model) -> bool:
    return hasattr(model, "encoder") and hasattr(model, "conv_proj") and hasattr(model, "class_token")


def friendly_layers(model, arch: str) -> dict[str, str]:
    from dnnprobe.network.layers import friendly_layer_names

    if _is_vit(model):
        names = {"patch_embed": "conv_proj"}
        names.update(blocks_as_friendly("block", [f"encoder.layers.{name}" for name, _ in model.encoder.layers.named_children()]))
        names.update({"norm": "encoder.ln", "head": "heads"})
        return names
    return friendly_layer_names(model, arch)


def default_layers(model, arch: str) -> list[str]:
    from dnnprobe.network.layers import TUTORIAL_LAYERS

    if _is_vit(model):
        return [name for name in friendly_layers(model, arch) if name.startswith("block")]
    names = friendly_layers(model, arch)
    if all(layer in names for layer in TUTORIAL_LAYERS):
        return list(TUTORIAL_LAYERS)
    return list(names)


def token_layout(model, input_size: tuple[int, int]) -> TokenLayout | None:
    if not _is_vit(model):
        return None
    patches = (input_size[0] // model.patch_size) * (input_size[1] // model.patch_size)
    return TokenLayout(n_prefix=1, n_tokens=patches + 1)
