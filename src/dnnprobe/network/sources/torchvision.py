"""Source ``torchvision`` (the default): torchvision's classification models (alexnet, resnet50, vit_b_16, ...).

- ``model.weights``: ``random`` (torchvision's initialisation from ``model.seed``, reproducible bit
  for bit on a CPU); ``imagenet`` (the arch's ``IMAGENET1K_V1``, as DNNBrain used) or any member of
  the arch's weights enum (``IMAGENET1K_V2``, ``DEFAULT``), through torchvision's weights API and
  cache (``$TORCH_HOME/hub/checkpoints``), checked against the hash in the file name; or a weights
  file in models/external/.
- ``extract.preprocess: model``: the numbers of ``weights.transforms()`` (the arch's DEFAULT weights
  when the weights are random): resize the shorter side, centre crop, mean and std.
- Layers: DNNBrain's names for AlexNet and VGG (``conv1``, ``conv1_relu``, ``conv1_maxpool``, ...,
  ``fc1``, ``fc1_relu``, ...), ResNet's ``conv1``, ``conv1_relu``, ``conv1_maxpool``, ``layer1``..
  ``layer4``, ``avgpool`` and ``fc`` (:func:`friendly_layer_names`); ViTs (``vit_b_16``...):
  ``patch_embed`` (``conv_proj``), ``block1``..``blockN`` (``encoder.layers.encoder_layer_N-1``),
  ``norm`` (``encoder.ln``), ``head`` (``heads``). An empty ``extract.layers`` records DNNBrain's 14
  tutorial layers (:data:`TUTORIAL_LAYERS`) where the network has them. Token layout of a ViT: CLS
  first, ``seq_length`` tokens.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.hashing import file_sha256
from dnnprobe.network.preprocess import Preprocess, shorter_side_then_crop
from dnnprobe.network.sources.common import blocks_as_friendly, seeded
from dnnprobe.network.tokens import TokenLayout

# The 14 layers of DNNBrain's tutorial, in network order.
TUTORIAL_LAYERS = (
    "conv1", "conv1_relu", "conv2", "conv2_relu", "conv3", "conv3_relu", "conv4", "conv4_relu",
    "conv5", "conv5_relu", "fc1", "fc1_relu", "fc2", "fc2_relu",
)


def archs() -> list[str]:
    return sorted(models.list_models(module=models))


def _skeleton_check(arch: str) -> None:
    if arch not in archs():
        raise DnnprobeError(
            f"model.arch: unknown network {arch!r}; torchvision classification models are: "
            + ", ".join(archs())
        )


def random_network(arch: str, seed: int) -> nn.Module:
    """torchvision's default initialisation, drawn from `seed` (same bits on any CPU)."""
    with seeded(seed):
        _skeleton_check(arch)
        return models.get_model(arch, weights=None)


def build(arch: str, seed: int) -> nn.Module:
    return random_network(arch, seed).eval()


def _hash_prefix(file_name: str) -> str:
    """torchvision's convention: <name>-<first hex digits of sha256>.pth."""
    stem = file_name.rsplit(".", 1)[0]
    return stem.rsplit("-", 1)[-1] if "-" in stem else ""


def imagenet_weights_url(arch: str, name: str = "IMAGENET1K_V1") -> str:
    """Where torchvision publishes the arch's weights `name` (an enum member: IMAGENET1K_V2, DEFAULT, ...)."""
    _skeleton_check(arch)
    try:
        enum = models.get_model_weights(arch)
    except (AttributeError, ValueError):
        raise DnnprobeError(f"model.weights: torchvision has no {name} weights for {arch!r}") from None
    try:
        return enum[name].url if name != "DEFAULT" else enum.DEFAULT.url
    except KeyError:
        raise DnnprobeError(
            f"model.weights: torchvision has no {name} weights for {arch!r}; it has: "
            + ", ".join(["DEFAULT", *enum.__members__])) from None


def imagenet_state_dict(arch: str, name: str = "IMAGENET1K_V1", label: str = "imagenet") -> tuple[dict, str]:
    """Download (or find in the torch cache) the arch's weights `name`; hash-checked."""
    url = imagenet_weights_url(arch, name)
    file_name = os.path.basename(url)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    try:
        # check_hash: torchvision names each file with the start of its sha256 (alexnet-owt-7be5be79.pth);
        # torch.hub checks it after a download. A file already in the cache is checked here.
        if cached.is_file() and not file_sha256(cached).startswith(_hash_prefix(file_name)):
            raise RuntimeError("invalid hash value")
        state = torch.hub.load_state_dict_from_url(url, progress=True, check_hash=True, weights_only=True)
    except RuntimeError as exc:
        if "invalid hash" in str(exc):
            raise DnnprobeError(f"{cached}: sha256 does not match the hash in its name; delete it and retry") from None
        raise
    except OSError as exc:  # URLError is an OSError: offline, DNS failure, refused
        raise DnnprobeError(
            f"model.weights={label}: {file_name} is not in the torch cache ({cached.parent}) and cannot be "
            f"downloaded ({getattr(exc, 'reason', exc)}). Ways out: `dvc pull models/network.pt` from the "
            f"team's remote, copy {file_name} into {cached.parent}, or use model.weights=random"
        ) from None
    return state, file_name


def pretrained(arch: str, tag: str) -> tuple[dict, dict]:
    state, file_name = imagenet_state_dict(arch, "IMAGENET1K_V1" if tag == "imagenet" else tag, label=tag)
    return state, {"file": file_name}


def preprocessing(model, arch: str) -> Preprocess:
    try:
        transform = models.get_model_weights(arch).DEFAULT.transforms()
    except (AttributeError, ValueError, KeyError):
        raise DnnprobeError(f"extract.preprocess=model: torchvision defines no transform for {arch!r}; "
                            "use extract.preprocess=dnnbrain") from None
    return shorter_side_then_crop(transform.resize_size[0], tuple(transform.crop_size * 2)[:2],
                                  transform.interpolation.value, transform.mean, transform.std)


def _is_vit(model) -> bool:
    return hasattr(model, "encoder") and hasattr(model, "conv_proj") and hasattr(model, "class_token")


def friendly_layer_names(model: nn.Module, arch: str) -> dict[str, str]:
    """DNNBrain-style layer names mapped to module paths, for the families that have them."""
    names: dict[str, str] = {}
    if hasattr(model, "features") and hasattr(model, "classifier") and isinstance(model.features, nn.Sequential):
        # AlexNet and VGG: DNNBrain numbers convolutions and fully connected layers in order, and
        # names what follows each after it (conv1_relu, conv1_maxpool, conv1_bn, fc1_relu).
        for prefix, sequence, kind in (("features", model.features, nn.Conv2d), ("classifier", model.classifier, nn.Linear)):
            stem, count, current = ("conv" if kind is nn.Conv2d else "fc"), 0, None
            for index, module in enumerate(sequence):
                path = f"{prefix}.{index}"
                if isinstance(module, kind):
                    count += 1
                    current = f"{stem}{count}"
                    names[current] = path
                elif current is not None:
                    suffix = {nn.ReLU: "relu", nn.MaxPool2d: "maxpool", nn.BatchNorm2d: "bn"}.get(type(module))
                    if suffix:
                        names[f"{current}_{suffix}"] = path
    elif arch.startswith(("resnet", "wide_resnet", "resnext")):
        names.update({"conv1": "conv1", "conv1_bn": "bn1", "conv1_relu": "relu", "conv1_maxpool": "maxpool"})
        names.update({f"layer{i}": f"layer{i}" for i in range(1, 5)})
        names.update({"avgpool": "avgpool", "fc": "fc"})
    return names


def friendly_layers(model, arch: str) -> dict[str, str]:
    if _is_vit(model):
        names = {"patch_embed": "conv_proj"}
        names.update(blocks_as_friendly("block", [f"encoder.layers.{name}" for name, _ in model.encoder.layers.named_children()]))
        names.update({"norm": "encoder.ln", "head": "heads"})
        return names
    return friendly_layer_names(model, arch)


def default_layers(model, arch: str) -> list[str]:
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
