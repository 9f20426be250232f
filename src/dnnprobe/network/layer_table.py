"""``dnnprobe layers``: every layer a configured network can record, from a one-image dry run.

For ``model.source`` / ``model.arch`` (random weights: shapes do not depend on them) and
``extract.preprocess`` / ``extract.tokens``, one blank image goes through the network with a hook on
every module. Each call of each module that returns a tensor (or a tuple / model output holding
one: its hidden state) is a recordable layer, listed in the order it runs, with:

- its name for ``extract.layers``: the friendly name where the source has one (``conv1_relu``,
  ``block3``), else the module path, or torchvision's FX name for a module's later calls
  (``layer1.0.relu_1``);
- the shape stored per stimulus (DNNBrain's (n_chn, n_row, n_col), after the token choice for
  transformer layers) and its unit count;
- ``*`` for the layers an empty ``extract.layers`` records, and the figure's pairing (which bar of
  which depth; layers without a ``_relu`` partner get one bar each).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import click
import torch

from dnnprobe.core.command import stage_command
from dnnprobe.core.params import schema
from dnnprobe.extract.actfile import dnnbrain_shape
from dnnprobe.extract.params import ExtractParams
from dnnprobe.network.layers import LayerCall, default_layers
from dnnprobe.network.params import ModelParams
from dnnprobe.network.preprocess import DNNBRAIN
from dnnprobe.network.registry import get_source
from dnnprobe.network.tokens import hidden_state, reducer, token_layers
from dnnprobe.probe.pairing import depth_groups

Params = schema(ModelParams, ExtractParams)  # the sections of params.yaml this command reads


@dataclass(frozen=True)
class LayerRow:
    name: str  # what extract.layers accepts
    module: str  # module path (and call, FX style)
    shape: tuple[int, int, int]  # stored per stimulus, DNNBrain layout
    tokens: str  # the token choice applied, or "" for a layer that is not a token layer
    default: bool  # recorded when extract.layers is empty
    figure: str  # e.g. "Conv1 (Conv bar)"; "" when not a friendly layer
    friendly: bool  # a friendly name of the source (conv1_relu, block3), not only a module path

    @property
    def units(self) -> int:
        return math.prod(self.shape)


def list_layers(params: Params) -> tuple[str, list[LayerRow]]:
    """A header line and one row per recordable layer, in the order the network runs them."""
    source = get_source(params.model.source)
    arch = params.model.arch
    model = source.build(arch, params.model.seed).eval()
    prep = DNNBRAIN if params.extract.preprocess == "dnnbrain" else source.preprocessing(model, arch)
    layout = source.token_layout(model, prep.input_size)
    calls: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}  # FX-style name -> raw per-stimulus shape, in running order
    outputs: dict[str, torch.Tensor] = {}

    def hook_for(path):
        def hook(module, inputs, output):
            call = calls.get(path, 0)
            calls[path] = call + 1
            state = hidden_state(output)
            if state is not None and state.dim() >= 2:
                name = str(LayerCall(path, call))
                shapes[name], outputs[name] = tuple(state.shape[1:]), state
        return hook

    handles = [module.register_forward_hook(hook_for(path)) for path, module in model.named_modules() if path]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, *prep.input_size))
    finally:
        for handle in handles:
            handle.remove()
    tokenised = set(token_layers(shapes, layout))
    reduce = reducer(params.extract.tokens, layout, f"{params.model.source} {arch}") if layout is not None and tokenised else None
    friendly = source.friendly_layers(model, arch)
    by_module = {}
    for name, path in friendly.items():
        by_module.setdefault(path, []).append(name)
    defaults = set(default_layers(model, arch, params.model.source)) if friendly else set()
    figure = {}
    for group in depth_groups(list(friendly)):
        if group.conv and group.relu:
            figure[group.conv], figure[group.relu] = f"{group.label} (Conv bar)", f"{group.label} (ReLU bar)"
        for layer in (group.conv, group.relu):
            if layer and layer not in figure:
                figure[layer] = f"{group.label} (one bar)"
    rows = []
    with torch.inference_mode():
        for name, shape in shapes.items():
            if name in tokenised and reduce is not None:
                shape = tuple(reduce(outputs[name]).shape[1:])
            try:
                stored = dnnbrain_shape(shape)
            except Exception:  # noqa: BLE001 - a 4-D or 5-D output has no DNNBrain layout: not recordable
                continue
            for label in by_module.get(name, [name]):
                rows.append(LayerRow(label, name, stored, params.extract.tokens if name in tokenised else "",
                                     label in defaults, figure.get(label, ""), label in friendly))
    header = (f"{arch} ({params.model.source}), input 3x{prep.input_size[0]}x{prep.input_size[1]} "
              f"(extract.preprocess: {params.extract.preprocess}), extract.tokens: {params.extract.tokens}; "
              f"{len(rows)} recordable layers, * = recorded when extract.layers is empty")
    return header, rows


def format_rows(header: str, rows: list[LayerRow], friendly_only: bool = False) -> str:
    shown = [row for row in rows if not friendly_only or row.friendly]
    name_width = max([len(r.name) + 2 for r in shown] + [6])
    module_width = max([len(r.module) for r in shown] + [6])
    lines = [header, f"{'layer':<{name_width}} {'module':<{module_width}} {'shape per stimulus':<20} {'units':>10}  figure"]
    for row in shown:
        mark = "* " if row.default else "  "
        shape = "x".join(str(n) for n in row.shape) + (f" ({row.tokens})" if row.tokens else "")
        lines.append(f"{mark}{row.name:<{name_width - 2}} {row.module:<{module_width}} {shape:<20} {row.units:>10,}  {row.figure}")
    return "\n".join(lines)


@click.option("--named", is_flag=True, show_default="off: every recordable layer",
              help="Only the layers with a friendly name (conv1, block3, ...).")
@stage_command("layers", Params)
def command(params, progress, named):
    """List the layers model.source/model.arch can record: shape per stimulus, units, figure pairing."""
    header, rows = list_layers(params)
    click.echo(format_rows(header, rows, friendly_only=named))


if __name__ == "__main__":
    command()
