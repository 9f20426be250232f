"""Stage ``gram``: each layer's Gram matrix K = X X^T of the activations (``data/gram.h5``), the
probe's cache: every fold's PCA comes from it. Reads no parameters."""

from __future__ import annotations

import os

import click

from dnnprobe.core.command import stage_command


def gram(activations_path: str | os.PathLike, out_path: str | os.PathLike, progress: bool = True) -> list[str]:
    """Write the Gram file of an activation file; returns its layers. See :mod:`dnnprobe.gram`."""
    from dnnprobe.gram import write_gram_file

    return write_gram_file(activations_path, out_path, progress=progress)


@click.option("--activations", default="data/activations.act.h5", show_default=True, help="Activation file to read.")
@click.option("--out", default="data/gram.h5", show_default=True, help="Gram file to write.")
@stage_command("gram", reads_params=False)
def command(params, progress, activations, out):
    """Per-layer Gram matrices of the activations (the probe's cache)."""
    layers = gram(activations, out, progress=progress)
    click.echo(f"gram: {len(layers)} layers -> {out}")


if __name__ == "__main__":
    command()
