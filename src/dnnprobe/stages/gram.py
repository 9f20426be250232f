"""Stage ``gram``: each layer's smaller second-moment matrix (the n x n Gram K = X X^T, or the d x d
moments for layers with fewer units than stimuli) in ``data/gram.h5``, the probe's cache: every fold's
PCA comes from it. Reads ``gram.dtype`` (storage type) and ``probe.device`` (where products run)."""

from __future__ import annotations

import os

import click

from dnnprobe.core.command import stage_command
from dnnprobe.gram.reader import GramFile
from dnnprobe.gram.writer import write_gram_file
from dnnprobe.core.params import schema
from dnnprobe.gram.params import GramParams
from dnnprobe.probe.params import ProbeParams

Params = schema(GramParams, ProbeParams)  # the sections of params.yaml this stage reads


def gram(activations_path: str | os.PathLike, out_path: str | os.PathLike, progress: bool = True,
         dtype: str = "float32", device: str = "cpu") -> list[str]:
    """Write the Gram file of an activation file; returns its layers. See :mod:`dnnprobe.gram.writer`."""
    return write_gram_file(activations_path, out_path, progress=progress, dtype=dtype, device=device)


@click.option("--activations", default="data/activations.act.h5", show_default=True, help="Activation file to read.")
@click.option("--out", default="data/gram.h5", show_default=True, help="Gram file to write.")
@stage_command("gram", Params)
def command(params, progress, activations, out):
    """Per-layer Gram or covariance matrices of the activations (the probe's cache)."""
    layers = gram(activations, out, progress=progress, dtype=params.gram.dtype, device=params.probe.device)
    with GramFile(out) as grams:  # which matrix each layer got: the smaller one
        routes = {route: [layer for layer in layers if grams.route(layer) == route] for route in ("gram", "covariance")}
    chosen = "; ".join(f"{route} route ({'n x n' if route == 'gram' else 'd x d'}): {', '.join(names)}"
                       for route, names in routes.items() if names)
    click.echo(f"gram: {len(layers)} layers -> {out}; {chosen}")


if __name__ == "__main__":
    command()
