"""Layer naming, in one place: which module call of a network a layer name means.

- A source's friendly names (DNNBrain's ``conv1``, ``conv1_relu``, ``fc2``... for AlexNet and VGG,
  numbered in network order; ResNet's stem and blocks; ``block1``.. for transformers: each source's
  ``friendly_layers``, :mod:`dnnprobe.network.sources`); any module path (``layer1.0.relu``) for
  every network.
- A module that runs several times per forward pass (ResNet's ``layer1.0.relu`` runs twice in a
  BasicBlock, three times in a Bottleneck) has one layer per call, named as torchvision's FX feature
  extractor names them: ``layer1.0.relu`` (first call), ``layer1.0.relu_1``, ``layer1.0.relu_2``.

The Conv/ReLU pairing of the figure is :mod:`dnnprobe.probe.pairing`; the names MLflow accepts are
:mod:`dnnprobe.track.keys`.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import TYPE_CHECKING, NamedTuple

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.network.registry import get_source

if TYPE_CHECKING:
    import torch


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


def default_layers(model: torch.nn.Module, arch: str, source: str = "torchvision") -> tuple[str, ...]:
    """What an empty ``extract.layers`` records: the source's default list (AlexNet: the 14 tutorial layers)."""
    layers = tuple(get_source(source).default_layers(model, arch))
    if not layers:
        raise DnnprobeError(f"extract.layers: empty, and {source} {arch} has no default layer list; name the layers "
                            "to record (`dnnprobe layers` lists them)")
    return layers


def resolve_layers(model: torch.nn.Module, arch: str, layers: tuple[str, ...] | list[str],
                   source: str = "torchvision") -> dict[str, LayerCall]:
    """Map each requested layer to the module call it records, in order.

    A layer is a friendly name (``conv1_relu``), a module path (``layer1.0.relu``, its first call) or a
    later call of a module, torchvision FX style (``layer1.0.relu_1``). Whether that call happens is
    only known from a forward pass: :func:`dnnprobe.extract.forward.layer_unit_shapes` checks it.
    Fails before any work on the first unknown name, listing the valid ones, and on two names for the
    same module call (``[block1, blocks.0]``), naming both.
    """
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
        same = next((other for other, call in resolved.items() if call == target), None)
        if same is not None:  # a friendly name and its module path: one module call recorded twice
            raise DnnprobeError(f"extract.layers: {same!r} and {layer!r} are the same layer (module {target}); "
                                "list it once")
        resolved[layer] = target
    return resolved


def fx_call_names(module: str, n_calls: int) -> list[str]:
    """torchvision FX names of a module's calls: layer1.0.relu, layer1.0.relu_1, ..."""
    return [str(LayerCall(module, call)) for call in range(n_calls)]
