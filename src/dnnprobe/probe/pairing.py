"""Conv/ReLU pairing, for the probe's Conv-vs-ReLU tests and the figure: each layer with its ``_relu``
partner, one depth (tick label ``Conv1`` .. ``FC2``) each."""

from __future__ import annotations

from dataclasses import dataclass


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
