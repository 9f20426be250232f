"""Stage ``network``: save the network's weights (``model.source``, ``model.arch``, ``model.weights``, ``model.seed``) to
``models/network.pt``, with a JSON sidecar saying what they are."""

from __future__ import annotations

import os
from pathlib import Path

import click

from dnnprobe.core.atomic import claim
from dnnprobe.core.command import stage_command
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.params import schema
from dnnprobe.network.params import ModelParams

Params = schema(ModelParams)  # the sections of params.yaml this stage reads

EXTERNAL_WEIGHTS = Path("models/external")  # a weights file must be here: dvc.yaml's network stage watches it


def make_network(params: Params, out_path: str | os.PathLike):
    """Build the network with the requested weights and save them under models/.

    A weights file (``model.weights: <path>``) must lie inside models/external/, which the network
    stage lists as a dependency, so that DVC reruns it when the file changes.
    """
    from dnnprobe.network.build import build_from_source, is_weights_path, save_network

    weights = params.model.weights
    if is_weights_path(weights) and not Path(os.path.realpath(weights)).is_relative_to(os.path.realpath(EXTERNAL_WEIGHTS)):
        link = f" (a link to {os.path.realpath(weights)})" if os.path.islink(weights) else ""
        raise DnnprobeError(
            f"params.yaml: model.weights {weights}{link} is outside {EXTERNAL_WEIGHTS}/, the folder DVC watches for "
            f"weights files; copy it there (and `dvc add` it to share it) and set model.weights to the copy")
    with claim(out_path, f"{out_path}.json"):
        model, name, provenance = build_from_source(params.model.source, params.model.arch, weights, params.model.seed)
        return save_network(model, out_path, params.model.arch, weights, params.model.seed, name, provenance)


@click.option("--out", default="models/network.pt", show_default=True, help="state_dict to write (+ .json sidecar).")
@stage_command("network", Params)
def command(params, progress, out):
    """Save the network's weights (model.arch, model.weights, model.seed) under models/."""
    info = make_network(params, out)
    click.echo(f"network: {info.arch} weights {info.source_name} sha256 {info.sha256[:12]} -> {out}")


if __name__ == "__main__":
    command()
