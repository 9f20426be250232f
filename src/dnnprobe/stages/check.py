"""Stage ``check``: everything the stimulus table and params.yaml reveal, checked in seconds before the
expensive stages; writes the image list extraction reads (``data/images.sha256``) and each image's notes
(``data/images.notes.json``)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from dnnprobe.core.atomic import atomic_output
from dnnprobe.core.command import stage_command
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.hashing import text_sha256
from dnnprobe.core.params import schema
from dnnprobe.extract.params import ExtractParams
from dnnprobe.probe.params import FoldParams, ProbeParams
from dnnprobe.stimuli.images import check_images, read_image_notes, write_image_notes
from dnnprobe.stimuli.table import ImageList, StimulusTable

Params = schema(FoldParams, ExtractParams, ProbeParams)  # the sections of params.yaml this stage reads


def check(params: Params, table_path: str | os.PathLike, image_list_path: str | os.PathLike) -> ImageList:
    """Check that the probe can run on this table with these settings and its images; write the image list.

    Everything the table and params.yaml reveal is checked here, before extraction and the Gram
    matrices (minutes to hours): the label columns, their classes against ``cv``, ``pca`` against the
    smallest training fold, the groups against the folds (``probe.groups``), the layer names MLflow must
    accept; and every image, as extraction would decode it (:func:`dnnprobe.stimuli.images.check_images`:
    bit depth, pixel format, a JPEG's whole scan, frames), once per stimulus set instead of at every
    extraction. The image list written (``data/images.sha256``: each image's sha256 in table order) is
    what extraction reads: it depends on the images and their order, not on the labels, so editing
    labels never reruns extraction. Beside it, ``data/images.notes.json`` records what is decoded but
    worth knowing of each image (a corrupt JPEG scan, an animated file, PIL's warnings), which
    extraction prints as its own (:func:`dnnprobe.stimuli.images.read_image_notes`).
    """
    from dataclasses import replace

    from dnnprobe.probe.targets import check_targets, class_names, decoded_targets, group_column
    from dnnprobe.track.keys import check_layer_names

    table = StimulusTable.read(table_path)
    check_layer_names(params.extract.layers, "params.yaml: extract.layers")  # empty: the probe checks the defaults
    groups = group_column(params, table)
    for target in decoded_targets(params, table):
        # Only what the checks use (dvc.yaml lists exactly these params for this stage).
        settings = replace(target.settings, permutations=0, standardize=False)
        check_targets(target.y, settings, label=target.name, table=str(table_path), groups=groups,
                      groups_name=params.probe.groups, names=class_names(table, target.name))
    checksums = table.image_checksums()
    recorded = table.header.get("images_sha256")
    if recorded and recorded != text_sha256(checksums):
        raise DnnprobeError(
            f"{table_path}: the images in {table.image_folder} are not the ones this table was written with "
            "(images_sha256 differs); rerun the stimuli stage")
    image_list_path = Path(image_list_path)
    if os.path.realpath(image_list_path.with_suffix("")) != os.path.realpath(table.image_folder):
        raise DnnprobeError(f"{image_list_path}: an image list must sit next to the folder it lists: "
                            f"{os.path.normpath(table.image_folder)}.sha256 for {table_path}")
    problems = check_images(table.image_paths(), str(table_path))
    with atomic_output(image_list_path) as temp:
        temp.write_text(checksums, encoding="utf-8")
    images = ImageList.read(image_list_path)
    write_image_notes(image_list_path, images.stim_ids, problems)
    return images


@click.option("--table", default="data/stimuli.stim.csv", show_default=True, help="Stimulus table to check.")
@click.option("--out", default="data/images.sha256", show_default=True,
              help="Image list to write (sha256 of each image, in table order), next to the image folder.")
@stage_command("check", Params)
def command(params, progress, table, out):
    """Check the table against the probe's settings before any expensive stage; write the image list."""
    images = check(params, table, out)
    for note in read_image_notes(images.path, images.sha256, images.stim_ids) or []:
        click.echo(note, err=True)  # what is decoded but worth knowing, as extraction prints it too
    label = params.probe.label if isinstance(params.probe.label, str) else ", ".join(params.probe.label)
    click.echo(f"check: {len(images)} stimuli; pca, cv and {label!r} fit -> {out}")


if __name__ == "__main__":
    command()
