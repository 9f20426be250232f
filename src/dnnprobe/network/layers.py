"""Layer naming, in one place: which module of a network a layer name means, and how layers pair up.

- DNNBrain's names (``conv1``, ``conv1_relu``, ``fc2``...) for AlexNet and VGG, numbered in network
  order; ResNet's stem and blocks; any module path (``layer1.0.relu``) for every network.
- A module that runs several times per forward pass (the ``relu`` of a ResNet block) has one layer
  per call, named as torchvision's FX feature extractor names them: ``layer1.0.relu``,
  ``layer1.0.relu_1``.
- Conv/ReLU pairing for the probe's tests and the figure: each layer with its ``_relu`` partner,
  one depth (``Conv1`` .. ``FC2``) each.
- Names MLflow accepts as part of a metric key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Collection, NamedTuple

from dnnprobe.core.errors import DnnprobeError

if TYPE_CHECKING:
    import torch

# The 14 layers of DNNBrain's tutorial, in network order.
TUTORIAL_LAYERS = (
    "conv1", "conv1_relu", "conv2", "conv2_relu", "conv3", "conv3_relu", "conv4", "conv4_relu",
    "conv5", "conv5_relu", "fc1", "fc1_relu", "fc2", "fc2_relu",
)


def requested_layers(layers: tuple[str, ...]) -> tuple[str, ...]:
    """``extract.layers`` as given, or DNNBrain's 14 tutorial layers when it is empty."""
    return tuple(layers) or TUTORIAL_LAYERS


def friendly_layer_names(model: "torch.nn.Module", arch: str) -> dict[str, str]:
    """DNNBrain-style layer names mapped to module paths, for the families that have them."""
    from torch import nn

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
    elif arch.startswith("resnet") or arch.startswith("wide_resnet") or arch.startswith("resnext"):
        names.update({"conv1": "conv1", "conv1_bn": "bn1", "conv1_relu": "relu", "conv1_maxpool": "maxpool"})
        names.update({f"layer{i}": f"layer{i}" for i in range(1, 5)})
        names.update({"avgpool": "avgpool", "fc": "fc"})
    return names


class LayerCall(NamedTuple):
    """One call of one module in a forward pass: what a layer records.

    Most modules run once per forward pass, and their layer is the module path (``features.0``,
    call 0). A module applied several times (the ``relu`` inside each ResNet block) has one layer per
    call, named as torchvision's FX feature extractor names them (``get_graph_node_names``): the
    module path for the first call, ``<module path>_1``, ``<module path>_2``, ... for the later ones.
    ``str()`` gives that name.
    """

    module: str  # path in model.named_modules()
    call: int = 0  # which call within one forward pass, counted from 0

    def __str__(self) -> str:
        return self.module if self.call == 0 else f"{self.module}_{self.call}"


_LATER_CALL = re.compile(r"(?P<module>.+)_(?P<call>[1-9][0-9]*)")


def parse_layer_call(name: str, module_paths: Collection[str]) -> LayerCall | None:
    """`name` as a module call: a module path (its first call) or ``<module path>_<k>`` (its call k).

    None when it is neither. A real module path wins over the ``_<k>`` reading of the same name.
    """
    if name in module_paths:
        return LayerCall(name)
    match = _LATER_CALL.fullmatch(name)
    if match and match["module"] in module_paths:
        return LayerCall(match["module"], int(match["call"]))
    return None


def default_layers(model: "torch.nn.Module", arch: str, source: str = "torchvision") -> tuple[str, ...]:
    """What an empty ``extract.layers`` records: the source's default list (AlexNet: the 14 tutorial layers)."""
    from dnnprobe.network.sources import get_source

    layers = tuple(get_source(source).default_layers(model, arch))
    if not layers:
        raise DnnprobeError(f"extract.layers: empty, and {source} {arch} has no default layer list; name the layers "
                            "to record (`dnnprobe layers` lists them)")
    return layers


def resolve_layers(model: "torch.nn.Module", arch: str, layers: tuple[str, ...] | list[str],
                   source: str = "torchvision") -> dict[str, LayerCall]:
    """Map each requested layer to the module call it records, in order.

    A layer is a friendly name (``conv1_relu``), a module path (``layer1.0.relu``, its first call) or a
    later call of a module, torchvision FX style (``layer1.0.relu_1``). Whether that call happens is
    only known from a forward pass: :func:`dnnprobe.extract.forward.layer_unit_shapes` checks it.
    Fails before any work on the first unknown name, listing the valid ones.
    """
    from dnnprobe.network.sources import get_source

    friendly = get_source(source).friendly_layers(model, arch)
    modules = [name for name, _ in model.named_modules() if name]
    leaves = [name for name, module in model.named_modules() if name and not any(module.children())]
    known = set(modules)
    resolved = {}
    for layer in layers:
        target = LayerCall(friendly[layer]) if layer in friendly else parse_layer_call(layer, known)
        if target is None:
            choices = list(friendly) or sorted(modules)[:40]
            raise DnnprobeError(
                f"extract.layers: unknown layer {layer!r} for {arch}; valid names: {', '.join(choices)}"
                + (f" (or any module path, e.g. {leaves[0]})" if friendly else "")
                + (f"; extract.layers: [] records {source}'s default layers" if source != "torchvision" else "")
            )
        resolved[layer] = target
    return resolved


def fx_call_names(module: str, n_calls: int) -> list[str]:
    """torchvision FX names of a module's calls: layer1.0.relu, layer1.0.relu_1, ..."""
    return [str(LayerCall(module, call)) for call in range(n_calls)]


@dataclass(frozen=True)
class DepthGroup:
    """A depth of the network: a layer and its ``_relu`` partner (either may be missing)."""

    label: str  # tick label: Conv1 .. FC2
    conv: str | None  # layer name of the pre-activation bar
    relu: str | None  # layer name of the ReLU bar


def tick_label(layer: str) -> str:
    for stem, pretty in (("conv", "Conv"), ("fc", "FC")):
        if layer.startswith(stem) and layer[len(stem):].isdigit():
            return pretty + layer[len(stem):]
    return layer


def depth_groups(layers: list[str]) -> list[DepthGroup]:
    """Pair each layer with its ``_relu`` partner, in the order the layers were extracted."""
    groups, placed = [], set()
    for layer in layers:
        if layer in placed:
            continue
        if layer.endswith("_relu") and layer[: -len("_relu")] in layers:
            continue  # placed with its partner
        partner = f"{layer}_relu"
        if partner in layers:
            groups.append(DepthGroup(tick_label(layer), layer, partner))
            placed.update({layer, partner})
        elif layer.endswith("_relu"):
            groups.append(DepthGroup(tick_label(layer), None, layer))
            placed.add(layer)
        else:
            groups.append(DepthGroup(tick_label(layer), layer, None))
            placed.add(layer)
    return groups


# MLflow accepts metric and param keys of letters, digits, '_', '-', '.', '/' and spaces, at most 250
# characters. A layer name becomes part of keys such as "balanced_accuracy_mean/<layer>".
_MLFLOW_KEY = re.compile(r"[\w\-. /]+", re.ASCII)
MAX_LAYER_NAME = 200  # leaves room for the longest prefix we put before it


def check_layer_names(layers, where: str) -> None:
    """Refuse, before any work, a layer name that MLflow would reject as part of a metric key."""
    for layer in layers:
        if not _MLFLOW_KEY.fullmatch(layer) or len(layer) > MAX_LAYER_NAME:
            shown = layer if len(layer) <= 60 else layer[:57] + "..."
            raise DnnprobeError(
                f"{where}: layer name {shown!r} cannot be logged to MLflow (allowed: letters, digits, "
                f"_ - . / and spaces, at most {MAX_LAYER_NAME} characters); rename the layer")
