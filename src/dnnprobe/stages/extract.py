"""Stage ``extract``: one forward pass over the listed images; every layer in ``extract.layers`` to one
DNNBrain activation file (``data/activations.act.h5``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import click

from dnnprobe.core.command import stage_command
from dnnprobe.core.params import schema
from dnnprobe.extract.params import ExtractParams
from dnnprobe.network.params import ModelParams
from dnnprobe.network.preprocess import DNNBRAIN, Preprocess
from dnnprobe.stimuli.table import ImageList

Params = schema(ModelParams, ExtractParams)  # the sections of params.yaml this stage reads


def extract(
    params: Params, image_list_path: str | os.PathLike, network_path: str | os.PathLike, out_path: str | os.PathLike,
    progress: bool = True,
):
    """One forward pass over the listed images; every layer in extract.layers to one .act.h5.

    The file records which images (``images_sha256``, the list's sha256) and which weights
    (``network_sha256``) it was computed from; each image's bytes are checked against the list.
    """
    from dnnprobe.extract.forward import extract_activations
    from dnnprobe.network.build import load_network

    images = ImageList.read(image_list_path)
    model, info = load_network(network_path, params.model.arch, params.model.source)
    setup = extraction_setup(params, model)
    settings = params.extract
    attrs = {**info.as_attrs(), "images_sha256": images.sha256, "stimuli_rows": len(images), **setup.attrs}
    return extract_activations(
        images, model, setup.module_paths, out_path,
        batch_size=settings.batch_size, device=settings.device, dtype=settings.dtype,
        compression=settings.compression, num_workers=settings.num_workers, file_attrs=attrs, progress=progress,
        prep=setup.prep, tokens=settings.tokens, token_layout=setup.token_layout,
        announce=click.echo if progress else None,  # the file's size, on stdout (stderr: only what went wrong)
    )


@dataclass
class ExtractionSetup:
    """What params.yaml asks of a network: its layers, its input transform, its token layout."""

    module_paths: dict
    prep: Preprocess
    token_layout: object
    attrs: dict  # recorded in the activation file (absent for the DNNBrain default, whose bytes stay)


def extraction_setup(params: Params, model) -> ExtractionSetup:
    """Resolve ``extract.layers`` (empty: the source's defaults), ``extract.preprocess`` and the token layout."""
    from dnnprobe.network.layers import default_layers, resolve_layers
    from dnnprobe.network.registry import get_source
    from dnnprobe.network.tokens import check_tokens

    source, arch = params.model.source, params.model.arch
    layers = params.extract.layers or default_layers(model, arch, source)
    module_paths = resolve_layers(model, arch, layers, source)
    prep = DNNBRAIN if params.extract.preprocess == "dnnbrain" else get_source(source).preprocessing(model, arch)
    layout = get_source(source).token_layout(model, prep.input_size)
    check_tokens(params.extract.tokens, layout, f"{source} {arch}")  # cls on a network without a class token
    # Beyond the DNNBrain default (whose file keeps its bytes), what shaped the inputs and the token
    # layers; named network_* so that the gram stage carries them on and the probe logs them to MLflow.
    attrs = {}
    if params.extract.preprocess != "dnnbrain":
        attrs.update({"network_preprocess": params.extract.preprocess, "network_transform": prep.describe()})
        if prep.origin:  # where the numbers came from (a model's processor file, or its library's defaults)
            attrs["network_preprocess_from"] = prep.origin
    if layout is not None:
        attrs["network_tokens"] = params.extract.tokens
    return ExtractionSetup(module_paths, prep, layout, attrs)


@click.option("--images", "image_list", default="data/images.sha256", show_default=True,
              help="Image list from the check stage (its images are in the folder of the same name).")
@click.option("--network", "network_path", default="models/network.pt", show_default=True,
              help="Weights from the network stage.")
@click.option("--out", default="data/activations.act.h5", show_default=True, help="Activation file to write.")
@stage_command("extract", Params)
def command(params, progress, image_list, network_path, out):
    """One forward pass; every layer in extract.layers to one DNNBrain .act.h5."""
    summary = extract(params, image_list, network_path, out, progress=progress)
    for note in summary.notes:
        click.echo(note, err=True)
    click.echo(f"extract: {summary.n_stimuli} stimuli on {summary.device}, "
               f"{summary.images_per_second:.1f} images/s -> {out}")


if __name__ == "__main__":
    command()
