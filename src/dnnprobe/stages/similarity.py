"""Stage ``similarity``: linear CKA between every pair of layers and each layer's RDM, from the Gram file
alone (:mod:`dnnprobe.gram.similarity`): ``reports/similarity/cka.json``, ``cka.png``/``.svg`` and
``rdms.hdf5`` (rsatoolbox's layout). With ``--other`` another run's Gram file of the same stimuli (say
another network's) is compared layer by layer too."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from dnnprobe.core.atomic import atomic_output, claim
from dnnprobe.core.command import stage_command
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.gram import similarity as sim
from dnnprobe.gram.reader import GramFile
from dnnprobe.network.provenance import network_record, network_words
from dnnprobe.report.cka import cka_figure
from dnnprobe.report.save import save_figure
from dnnprobe.stimuli.table import StimulusTable


def similarity(table_path: str | os.PathLike, gram_path: str | os.PathLike, out_dir: str | os.PathLike,
               other_path: str | os.PathLike | None = None) -> dict:
    """Write cka.json (what ran: the network and stimulus set the Gram file records; layers, the CKA matrix,
    the layers left out and why), the CKA figure (titled by the same) and rdms.hdf5 in `out_dir`; returns cka.json's content. Raises DnnprobeError when the table's stimuli are not the
    Gram file's, or (with `other_path`) the two Gram files are not of the same stimuli."""
    table = StimulusTable.read(table_path)
    with claim(out_dir), GramFile(gram_path) as grams, atomic_output(out_dir, directory=True) as temp:
        if grams.n_stim != len(table):
            raise DnnprobeError(f"{gram_path}: {grams.n_stim} stimuli, but {table_path} lists {len(table)}")
        layers, cka, left_out = sim.layer_cka(grams)
        network = network_record(grams.attrs)
        stimulus_set = table.header.get("title", Path(table_path).name)
        result = {"measure": "linear CKA (Kornblith et al. 2019) of the centred Gram matrices",
                  "network": network, "stimulus_set": stimulus_set, "n_stimuli": len(table),
                  "layers": layers, "cka": [[round(float(v), 6) for v in row] for row in cka],
                  "left_out": left_out,
                  "left_out_why": "covariance route: data/gram.h5 holds X^T X (d x d), not the n x n Gram" if left_out else "",
                  "rdms": "rdms.hdf5: squared Euclidean distance per unit, rsatoolbox.rdm.load_rdm reads it"}
        if other_path:
            with GramFile(other_path) as other:
                rows, cols, cross = sim.cross_cka(grams, other)
                other_network = network_record(other.attrs)
            result["other"] = {"gram": str(other_path), "network": other_network, "rows": rows, "columns": cols,
                               "cka": [[round(float(v), 6) for v in row] for row in cross]}
        title = f"{stimulus_set} (n={len(table)}): linear CKA between layers\n{network_words(network)}"
        save_figure(cka_figure(layers, cka, left_out, title), temp / "cka")
        descriptors = {**{f"network_{key}": value for key, value in network.items()}, "stimulus_set": stimulus_set}
        sim.write_rdms(grams, table.stim_ids, temp / "rdms.hdf5", descriptors=descriptors)
        (temp / "cka.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


@click.option("--table", default="data/stimuli.stim.csv", show_default=True, help="Stimulus table (the stimulus ids).")
@click.option("--gram", "gram_path", default="data/gram.h5", show_default=True, help="Gram file from the gram stage.")
@click.option("--out", default="reports/similarity", show_default=True, help="Folder for cka.json, the figure and rdms.hdf5.")
@click.option("--other", default=None, show_default="none: this file's layers only",
              help="Another Gram file of the same stimuli (another network) to compare with.")
@stage_command("similarity")
def command(params, progress, table, gram_path, out, other):
    """Linear CKA between layers and per-layer RDMs, from the Gram file only."""
    result = similarity(table, gram_path, out, other)
    skipped = f"; left out (covariance route): {', '.join(result['left_out'])}" if result["left_out"] else ""
    click.echo(f"similarity: CKA of {len(result['layers'])} layers -> {out}{skipped}")


if __name__ == "__main__":
    command()
