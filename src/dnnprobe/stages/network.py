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

EXTERNAL = Path("models/external")  # the researcher's files go here; model.file (what DVC watches) is inside it


def _inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """`path` lies in (or is) `folder`, links resolved."""
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))


def _link(path: str | os.PathLike) -> str:
    return f" (a link to {os.path.realpath(path)})" if os.path.islink(path) else ""


def check_watched(params: Params) -> None:
    """Every file the network stage reads from the repository lies inside ``model.file``, the path dvc.yaml's
    network stage lists (``${model.file}``), so that DVC reruns the stage when one changes; ``model.file`` lies
    inside models/external/. One line, before any work, naming the file."""
    from dnnprobe.network.build import is_weights_path

    model = params.model
    watched = model.file
    reads_files = model.source == "local" or is_weights_path(model.weights)
    if not _inside(watched, EXTERNAL) or (reads_files and not os.path.exists(watched)):
        problem = "does not exist" if _inside(watched, EXTERNAL) else f"is outside {EXTERNAL}/"
        raise DnnprobeError(f"params.yaml: model.file {watched}{_link(watched)} {problem}; it names what the network "
                            f"stage watches: {EXTERNAL} (the default), or your network's file or folder inside it")
    if is_weights_path(model.weights) and not _inside(model.weights, watched):
        weights = f"params.yaml: model.weights {model.weights}{_link(model.weights)}"
        if os.path.isfile(watched):
            raise DnnprobeError(f"{weights} is outside model.file {watched}, the one file DVC watches; put the code and "
                                "the weights in one folder inside models/external/ and set model.file to that folder")
        where = f"{EXTERNAL}/, the folder DVC watches for weights files" if _inside(EXTERNAL, watched) else \
            f"model.file {watched}, the folder DVC watches"
        raise DnnprobeError(f"{weights} is outside {where}; copy it there (and `dvc add` it to share it) and set "
                            "model.weights to the copy")
    if model.source == "local":
        from dnnprobe.network.registry import get_source

        code, _ = get_source("local").split_arch(model.arch)
        if not _inside(code, watched):
            raise DnnprobeError(f"params.yaml: model.arch's file {code} is outside model.file {watched}, the path DVC "
                                f"watches; set model.file: {code}")


def make_network(params: Params, out_path: str | os.PathLike):
    """Build the network with the requested weights and save them under models/.

    A weights file (``model.weights: <path>``), and the network's own code (source local), must lie inside
    ``model.file`` (default: models/external/), which the network stage lists as a dependency, so that DVC
    reruns it when the file changes.
    """
    from dnnprobe.network.build import build_from_source, save_network

    check_watched(params)
    weights = params.model.weights
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
