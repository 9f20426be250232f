"""Stage ``similarity``: linear CKA between every pair of layers and each layer's RDM
(:mod:`dnnprobe.gram.similarity`): ``reports/similarity/cka.json``, ``cka.png``/``.svg`` and ``rdms.hdf5``
(rsatoolbox's layout), from the Gram file, and from the activation file for the layers the gram stage
stored as d x d moments (fewer units than stimuli). With ``--other`` another run's Gram file of the
same stimuli (say another network's) is compared layer by layer too: ``cka.json``'s ``other`` and the
figure ``cka_other.png``/``.svg`` (rows: this run's layers, columns: the other's, each axis named by
its network)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import click

from dnnprobe.core.atomic import atomic_output, claim
from dnnprobe.core.command import stage_command
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.compute.arrays import NUMPY
from dnnprobe.compute.disk import check_free_space
from dnnprobe.gram import similarity as sim
from dnnprobe.gram.budget import check_gram_stage
from dnnprobe.gram.reader import GramFile
from dnnprobe.network.provenance import network_record, network_words
from dnnprobe.report.cka import cka_figure, cross_cka_figure
from dnnprobe.report.save import save_figure
from dnnprobe.stimuli.table import StimulusTable


def similarity(table_path: str | os.PathLike, gram_path: str | os.PathLike, out_dir: str | os.PathLike,
               other_path: str | os.PathLike | None = None,
               activations_path: str | os.PathLike | None = None,
               other_activations_path: str | os.PathLike | None = None) -> dict:
    """Write cka.json (what ran: the network and stimulus set the Gram file records; layers, the CKA
    matrix), the CKA figure (titled by the same) and rdms.hdf5 in `out_dir`; returns cka.json's content. Every layer of the Gram file is in both; covariance-route layers are computed
    from `activations_path` (and the other file's from `other_activations_path`; without it they are
    listed as left out of the comparison). Raises DnnprobeError (before any work) when the table's
    stimuli are not the Gram file's, the disk or memory cannot hold the computed Grams, or (with
    `other_path`) the two Gram files are not of the same stimuli; and when an activation file is
    missing or not its Gram file's."""
    table = StimulusTable.read(table_path)
    with claim(out_dir), contextlib.ExitStack() as stack:
        grams = stack.enter_context(GramFile(gram_path))
        if grams.n_stim != len(table):
            raise DnnprobeError(f"{gram_path}: {grams.n_stim} stimuli, but {table_path} lists {len(table)}")
        other = stack.enter_context(GramFile(other_path)) if other_path else None
        if other is not None:
            sim.check_same_stimuli(grams, other)
        narrow = sim.gram_layers(grams)[1]
        other_narrow = sim.gram_layers(other)[1] if other is not None else []
        if other is not None and not sim.gram_layers(other)[0] and not other_activations_path:  # nothing to compare
            raise DnnprobeError(f"{other_path}: every layer has fewer units than stimuli (d x d moments), so none can "
                                f"be compared without its activation file: give --other-activations")
        computed = narrow + (other_narrow if other_activations_path else [])
        for layer in computed:  # the gram stage's own check, for an n x n matrix
            check_gram_stage(grams.n_stim, grams.n_stim, layer, NUMPY)
        n_pairs = grams.n_stim * (grams.n_stim - 1) // 2
        check_free_space(Path(out_dir), 8 * grams.n_stim ** 2 * len(computed) + 4 * n_pairs * len(grams.layers),
                         "the similarity stage's scratch Grams and rdms.hdf5; fewer extract.layers, or free some space")
        temp = stack.enter_context(atomic_output(out_dir, directory=True))
        matrices = stack.enter_context(sim.layer_grams(grams, activations_path, temp / "scratch-grams.h5"))
        layers, cka = sim.layer_cka(matrices, grams.n_stim)
        network = network_record(grams.attrs)
        stimulus_set = table.header.get("title", Path(table_path).name)
        result = {"measure": "linear CKA (Kornblith et al. 2019) of the centred Gram matrices",
                  "network": network, "stimulus_set": stimulus_set, "n_stimuli": len(table),
                  "layers": layers, "cka": [[round(float(v), 6) for v in row] for row in cka],
                  "left_out": [],
                  "from_activations": narrow,
                  "from_activations_why": "fewer units than stimuli: data/gram.h5 holds X^T X (d x d), so "
                                          "their n x n Grams were computed from the activation file" if narrow else "",
                  "rdms": "rdms.hdf5: squared Euclidean distance per unit, rsatoolbox.rdm.load_rdm reads it"}
        if other is not None:
            other_matrices = stack.enter_context(sim.layer_grams(other, other_activations_path, temp / "scratch-other.h5")) \
                if other_activations_path else None
            rows, cols, cross = sim.cross_cka(grams, other, matrices, other_matrices)
            left_out = [layer for layer in other.layers if layer not in cols]
            result["other"] = {"gram": str(other_path), "network": network_record(other.attrs), "rows": rows, "columns": cols,
                               "cka": [[round(float(v), 6) for v in row] for row in cross],
                               "left_out": left_out,
                               "left_out_why": "fewer units than stimuli in the other Gram file (d x d moments): "
                                               "give its activation file (--other-activations)" if left_out else "",
                               "figure": "cka_other.png, cka_other.svg: rows this run's layers, columns the other's"}
            # Only with --other, which `dvc repro` never passes: its declared output is the folder, so the
            # stage's outputs stay the same files on every run of the pipeline.
            save_figure(cross_cka_figure(rows, cols, cross, network_words(network), network_words(result["other"]["network"]),
                                         f"{stimulus_set} (n={len(table)}): linear CKA between two networks' layers",
                                         left_out), temp / "cka_other")
        title = f"{stimulus_set} (n={len(table)}): linear CKA between layers\n{network_words(network)}"
        save_figure(cka_figure(layers, cka, [], title), temp / "cka")
        descriptors = {**{f"network_{key}": value for key, value in network.items()}, "stimulus_set": stimulus_set}
        sim.write_rdms(grams, table.stim_ids, temp / "rdms.hdf5", matrices=matrices, descriptors=descriptors)
        (temp / "cka.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


@click.option("--table", default="data/stimuli.stim.csv", show_default=True, help="Stimulus table (the stimulus ids).")
@click.option("--gram", "gram_path", default="data/gram.h5", show_default=True, help="Gram file from the gram stage.")
@click.option("--activations", "activations_path", default="data/activations.act.h5", show_default=True,
              help="Activation file the Gram file was computed from (read for layers with fewer units than stimuli).")
@click.option("--out", default="reports/similarity", show_default=True, help="Folder for cka.json, the figure and rdms.hdf5.")
@click.option("--other", default=None, show_default="none: this file's layers only",
              help="Another Gram file of the same stimuli (another network) to compare with: cka.json's `other` "
                   "and the figure cka_other.png (.svg).")
@click.option("--other-activations", "other_activations_path", default=None,
              show_default="none: the other file's layers with fewer units than stimuli are left out",
              help="The activation file the --other Gram file was computed from.")
@stage_command("similarity")
def command(params, progress, table, gram_path, activations_path, out, other, other_activations_path):
    """Linear CKA between layers and per-layer RDMs, from the Gram file (and the activation file for narrow layers)."""
    result = similarity(table, gram_path, out, other, activations_path, other_activations_path)
    computed = f"; from the activations (fewer units than stimuli): {', '.join(result['from_activations'])}" \
        if result["from_activations"] else ""
    click.echo(f"similarity: CKA of {len(result['layers'])} layers -> {out}{computed}")


if __name__ == "__main__":
    command()
