"""Relative depth of the layers an experiment probed: each one's position in its network's layer order.

0 is the input side and 1 the last (deepest) layer probed: a layer's 1-based position in the source's
friendly layer order (``friendly_layers``: what ``dnnprobe layers`` names; AlexNet's ``conv1``,
``conv1_relu``, ``conv1_maxpool``, ``conv2``, ...; a timm ViT's ``patch_embed``, ``block1`` ..
``block12``, ``norm``, ``head``), divided by the position of the deepest layer probed. A module path in
``extract.layers`` (``blocks.5``) counts as the friendly layer it is (``block6``:
:func:`dnnprobe.network.layers.resolve_layers`). The network is built from ``model.source`` and
``model.arch`` alone, as the check stage does (:func:`dnnprobe.stages.check.check_layers_exist`): on
PyTorch's meta device (no weights read, no memory), else on the CPU with random weights and then moved
to the meta device; once per (source, arch) in a process.

Where the order cannot be known here (the library or a ``local`` file or ``hf`` folder is missing, the
library fails, a layer is no friendly layer: a later call ``layer1.0.relu_1`` or a module inside a
block), the experiment's layers are spread evenly from 0 to 1 in the order probed, and :class:`Depths`
says so (``depth_from``, ``reason``): the sweep names it in the legend, the CSV and one stderr line.
A single layer probed is at 1 whichever layer it is (its position over its own): ``depth_from`` is
:data:`SINGLE_LAYER`, which the sweep's legend entry and CSV say.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from dnnprobe.core.errors import DnnprobeError

NETWORK_ORDER, EVENLY_SPACED = "network order", "evenly spaced"  # the CSV's depth_from values
NOT_BUILT = "network not built here"
SINGLE_LAYER = "1 layer: depth not comparable"  # depth_from of a single layer probed: drawn at 1, its position unknown

_networks: dict[tuple[str, str], object] = {}  # (source, arch) -> the network on the meta device, or why not


@dataclass(frozen=True)
class Depths:
    values: tuple[float, ...]  # one per layer, in the order probed
    depth_from: str  # NETWORK_ORDER or EVENLY_SPACED
    reason: str = ""  # why evenly spaced, in a few words ("network not built here")


def even_depths(n: int) -> np.ndarray:
    """Positions of `n` layers probed, input side first: 0 .. 1 evenly (a single layer: 1, the last probed)."""
    return np.linspace(0.0, 1.0, n) if n > 1 else np.ones(n)


def _build(source_name: str, arch: str):
    """The network on the meta device, or a DnnprobeError (one line) saying why it cannot be built here."""
    import torch

    from dnnprobe.network.registry import get_source

    source = get_source(source_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a library's warnings about a network that never runs here
        try:
            with torch.device("meta"):
                return source.build(arch, 0)
        except DnnprobeError:
            raise
        except Exception:  # noqa: BLE001 - a library whose initialisation reads values (.item()) on the meta device
            pass
        try:
            return source.build(arch, 0).to("meta")  # the weights freed: only the order is kept
        except DnnprobeError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the library raises, as a reason
            raise DnnprobeError(f"{type(exc).__name__}: {exc}".splitlines()[0]) from None


def network(source: str, arch: str):
    """The network of `source` and `arch` on the meta device (cached); DnnprobeError when it cannot be built here."""
    key = (source, arch)
    if key not in _networks:
        try:
            _networks[key] = _build(source, arch)
        except DnnprobeError as exc:
            _networks[key] = exc
    found = _networks[key]
    if isinstance(found, DnnprobeError):
        raise found
    return found


def network_positions(source: str, arch: str, layers: list[str]) -> list[int]:
    """Each layer's 1-based position in the network's friendly layer order; DnnprobeError (one line) when the
    network cannot be built here or a layer is not in that order."""
    from dnnprobe.network.layers import resolve_layers
    from dnnprobe.network.registry import get_source

    model = network(source, arch)
    friendly = get_source(source).friendly_layers(model, arch)
    order = {name: position for position, name in enumerate(friendly, start=1)}
    by_module = {path: name for name, path in friendly.items()}
    positions = []
    for layer in layers:
        try:
            call = resolve_layers(model, arch, [layer], source)[layer]
        except DnnprobeError:
            call = None
        name = layer if layer in order else by_module.get(call.module) if call and call.call == 0 else None
        if name is None:
            raise DnnprobeError(f"{layer} is not in the network's layer order")
        positions.append(order[name])
    return positions


def relative_depths(source: str | None, arch: str | None, layers: list[str]) -> Depths:
    """The relative depth of each of `layers` (names as probed, without an attribute prefix) in the network
    `source` / `arch`: position in the network's layer order over the deepest probed layer's position; where
    that order is not known here, evenly spaced in the order probed, with the reason."""
    evenly = tuple(float(x) for x in even_depths(len(layers)))
    if len(layers) == 1:  # its position over the deepest probed is 1 whatever layer it is: nothing to compare
        return Depths(evenly, SINGLE_LAYER, SINGLE_LAYER)
    if not arch:
        return Depths(evenly, EVENLY_SPACED, "model.arch not recorded")
    try:
        network(source or "torchvision", arch)
    except DnnprobeError:
        return Depths(evenly, EVENLY_SPACED, NOT_BUILT)
    try:
        positions = network_positions(source or "torchvision", arch, layers)
    except DnnprobeError as exc:  # a layer that is no friendly layer (a later call, a module inside a block)
        return Depths(evenly, EVENLY_SPACED, str(exc))
    deepest = max(positions, default=1)
    return Depths(tuple(position / deepest for position in positions), NETWORK_ORDER)


def why_not_built(source: str | None, arch: str | None) -> str:
    """The one line the network's build failed with, for the command's stderr; empty when it was built."""
    found = _networks.get((source or "torchvision", arch or ""))
    return str(found) if isinstance(found, DnnprobeError) else ""
