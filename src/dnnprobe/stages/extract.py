"""Stage ``extract``: one forward pass over the listed images; every layer in ``extract.layers`` to one
DNNBrain activation file (``data/activations.act.h5``)."""

from __future__ import annotations

import os

import click

from dnnprobe.core.command import stage_command
from dnnprobe.core.params import Params
from dnnprobe.stimuli import ImageList


def extract(
    params: Params, image_list_path: str | os.PathLike, network_path: str | os.PathLike, out_path: str | os.PathLike,
    progress: bool = True,
):
    """One forward pass over the listed images; every layer in extract.layers to one .act.h5.

    The file records which images (``images_sha256``, the list's sha256) and which weights
    (``network_sha256``) it was computed from; each image's bytes are checked against the list.
    """
    from dnnprobe.extraction import extract_activations
    from dnnprobe.layers import requested_layers, resolve_layers
    from dnnprobe.network import load_network

    images = ImageList.read(image_list_path)
    model, info = load_network(network_path, params.model.arch)
    module_paths = resolve_layers(model, params.model.arch, requested_layers(params.extract.layers))
    settings = params.extract
    attrs = {**info.as_attrs(), "images_sha256": images.sha256, "stimuli_rows": len(images)}
    return extract_activations(
        images, model, module_paths, out_path,
        batch_size=settings.batch_size, device=settings.device, dtype=settings.dtype,
        compression=settings.compression, num_workers=settings.num_workers, file_attrs=attrs, progress=progress,
    )


@click.option("--images", "image_list", default="data/images.sha256", show_default=True,
              help="Image list from the check stage (its images are in the folder of the same name).")
@click.option("--network", "network_path", default="models/network.pt", show_default=True,
              help="Weights from the network stage.")
@click.option("--out", default="data/activations.act.h5", show_default=True, help="Activation file to write.")
@stage_command("extract")
def command(params, progress, image_list, network_path, out):
    """One forward pass; every layer in extract.layers to one DNNBrain .act.h5."""
    summary = extract(params, image_list, network_path, out, progress=progress)
    for note in summary.notes:
        click.echo(note, err=True)
    click.echo(f"extract: {summary.n_stimuli} stimuli on {summary.device}, "
               f"{summary.images_per_second:.1f} images/s -> {out}")


if __name__ == "__main__":
    command()
