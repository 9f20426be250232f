"""Stage ``probe``: cross-validated PCA + decoding of ``probe.label`` from every layer, in DNNBrain's
files (``reports/probe/<layer>/score.npy``...), ``reports/metrics.json`` and an MLflow run.

With several attributes (probe.label a list) every file is per attribute: ``reports/probe/<label>/<layer>/``,
metric keys ``<label>/<layer>``, summary.json's ``attributes``; one MLflow run holds them all."""

from __future__ import annotations

import json
import os
from pathlib import Path

from typing import TYPE_CHECKING

import click
import numpy as np

from dnnprobe.compute.arrays import resolve_device
from dnnprobe.core.atomic import atomic_output, claim
from dnnprobe.core.command import stage_command
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.hashing import file_sha256, text_sha256
from dnnprobe.core.params import schema
from dnnprobe.core.progress import progress_bar
from dnnprobe.network.params import ModelParams
from dnnprobe.network.provenance import NO_TOKENS
from dnnprobe.probe import budget
from dnnprobe.probe import stats
from dnnprobe.probe.params import FoldParams, ProbeParams
from dnnprobe.probe.stats import attribute_summaries
from dnnprobe.probe.summary import add_statistics, attribute_part, layer_means, run_summary, score_details
from dnnprobe.stimuli.table import StimulusTable
from dnnprobe.track import naming, runs
from dnnprobe.track.failures import shown
from dnnprobe.track.keys import check_layer_names
from dnnprobe.track.params import TrackingParams
from dnnprobe.track.store import tracking_uri
from dnnprobe.track.tags import C_EDGE_TAG

if TYPE_CHECKING:
    from dnnprobe.probe.targets import Target

# The sections of params.yaml this stage reads.
Params = schema(FoldParams, ModelParams, ProbeParams, TrackingParams)

# scikit-learn and h5py (the decoders, targets, cross-validation, refits and the HDF5 files) are imported
# inside the functions that use them: `dnnprobe --help` imports every stage module and stays quick.

# What this stage reads of params.yaml (its params in dvc.yaml), all logged to MLflow as dotted keys.
PARAMS = ("pca", "cv", "probe", "tracking", "model")


def _check_same_stimuli(table_path, table: StimulusTable, grams) -> None:
    """The Gram matrices' rows must be the table's stimuli: same count, and the same images in the same
    order. The table's images are hashed here and compared with the ``images_sha256`` extraction recorded
    (through the Gram file), so a table edited or reordered after its header was written is caught too."""
    if grams.n_stim != len(table):
        raise DnnprobeError(f"{grams.path}: {grams.n_stim} stimuli, but {table_path} lists {len(table)}")
    recorded = grams.attrs.get("images_sha256")
    if recorded is None:  # a Gram file of activations from another tool: only the count can be compared
        return
    ours = text_sha256(table.image_checksums())
    if ours != str(recorded):
        raise DnnprobeError(
            f"{grams.path} was computed from other images, or the same images in another order, than {table_path} "
            f"lists (images_sha256 {str(recorded)[:12]}... vs {ours[:12]}...); rerun the pipeline from the check stage (dvc repro)")


def _check_activations_match(activations_path, grams, n_stim: int, table_path, read_data: bool) -> str:
    """The activation file must be the one the Gram matrices were computed from; returns its sha256.

    Its recorded provenance (images, weights, rows, layers) is compared always; its bytes are hashed
    and compared with the sha256 the gram stage recorded only when the probe reads its data
    (``probe.save_models``), since hashing a BOLD5000-sized file takes a while.
    """
    from dnnprobe.extract.actfile import ActivationFile  # h5py: see the note on imports above

    recorded = grams.activations_sha256
    with ActivationFile(activations_path) as activations:
        activations.check_rows(n_stim, str(table_path))
        missing = [layer for layer in grams.layers if layer not in activations.layers]
        if missing:
            raise DnnprobeError(
                f"{activations_path}: no layer {missing[0]!r}, which {grams.path} has; rerun the gram stage (dvc repro gram)"
            )
        for key in ("images_sha256", "network_sha256"):
            mine, theirs = activations.attrs.get(key), grams.attrs.get(key)
            if mine is not None and theirs is not None and str(mine) != str(theirs):
                raise DnnprobeError(f"{grams.path} was not computed from {activations_path} ({key} differs); "
                                    "rerun the gram stage (dvc repro gram)")
    if read_data and recorded:
        actual = file_sha256(activations_path)
        if actual != recorded:
            raise DnnprobeError(f"{grams.path} was not computed from {activations_path} (the file's sha256 differs "
                                "from the one the gram stage recorded); rerun the gram stage (dvc repro gram)")
    return recorded


def probe(
    params: Params,
    table_path: str | os.PathLike,
    gram_path: str | os.PathLike,
    activations_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    metrics_path: str | os.PathLike,
    models_dir: str | os.PathLike,
    progress: bool = True,
    details_path: str | os.PathLike | None = None,
) -> dict:
    """Cross-validated decoding of probe.label from every layer; outputs, metrics and an MLflow run.

    Writes DNNBrain's per-layer files and summary.json in `out_dir`, the mean score per layer in
    `metrics_path` and its SEM, p-values and Conv-vs-ReLU tests in `details_path` (default:
    ``metrics_detail.json`` beside `metrics_path`), and refit probes in `models_dir`.

    Refuses, before any work, a table, Gram file and activation file that do not come from each other,
    and any setting the data cannot support. Every hash logged to MLflow is of a file as it was read.
    """
    from dnnprobe.extract.actfile import ActivationFile  # scikit-learn, h5py: see the note on imports above
    from dnnprobe.gram.reader import GramFile
    from dnnprobe.probe.refit import save_probe_models
    from dnnprobe.probe.targets import decoded_targets, group_column

    table = StimulusTable.read(table_path)
    attributes = decoded_targets(params, table)
    groups = group_column(params, table)
    details_path = details_path or Path(metrics_path).with_name("metrics_detail.json")
    outputs = (out_dir, metrics_path, details_path, models_dir)
    ops = resolve_device(params.probe.device)
    with claim(*outputs), GramFile(gram_path) as grams:
        activations_sha256 = _check_inputs(params, table_path, table, gram_path, grams, activations_path, attributes,
                                           groups, ops)
        provenance = {k: (v.item() if hasattr(v, "item") else v) for k, v in grams.attrs.items()
                      if k.startswith(("network_", "stimuli_"))}
        summary = run_summary(params, table_path, table, attributes, groups, grams.layers, provenance)
        run_params = _run_params(params, table_path, table, gram_path, grams, attributes, summary, provenance,
                                 activations_sha256)
        run_name = _run_name(params, len(table), summary, provenance)
        with runs.probe_run(params.tracking.experiment, run_name, run_params, attributes[0].settings.scoring) as run:
            _log_stimuli(run, table_path, table, attributes, summary, run_params["stimuli_sha256"])
            # Scores, metrics and refit models are renamed into place together, once all are written:
            # a failure anywhere leaves none of them (and the MLflow run FAILED).
            with atomic_output(out_dir, directory=True) as temp_dir, atomic_output(metrics_path) as temp_metrics, \
                    atomic_output(details_path) as temp_details, atomic_output(models_dir, directory=True) as temp_models, \
                    ActivationFile(activations_path) as acts, ops.precision():
                results = _decode_layers(params, grams, acts, ops, attributes, groups, run, temp_dir, progress)
                add_statistics(summary, attributes, results)
                for line in summary.get("C_at_grid_edge", []):  # one line each, naming attribute and layer
                    click.echo(f"probe: warning: {line}; the best C may lie beyond it: widen the grid "
                               "(probe.C: a list of candidates)", err=True)
                if summary.get("C_at_grid_edge"):
                    run.tag(C_EDGE_TAG, "; ".join(summary["C_at_grid_edge"]))
                summary_text = json.dumps(summary, indent=2) + "\n"
                (temp_dir / "summary.json").write_text(summary_text)
                temp_metrics.write_text(json.dumps(layer_means(summary), indent=2) + "\n")
                temp_details.write_text(json.dumps(score_details(summary), indent=2) + "\n")
                save_probe_models(params, attributes, results, grams, activations_path, temp_models)
                # Logged before the outputs are renamed into place: a store failing here leaves them as they were.
                run.log_artifact(temp_metrics, name=Path(metrics_path).name)
                run.log_artifact(temp_details, name=Path(details_path).name)
                # The report stage finds this run by the sha256 of the summary it produced: no run id in
                # an output (it would change every run, and with it dvc.lock).
                run.record_summary(text_sha256(summary_text))
    return summary


def _check_inputs(params: Params, table_path, table: StimulusTable, gram_path, grams, activations_path, attributes: list[Target],
                  groups: np.ndarray | None, ops) -> str:
    """Every check before any work: the inputs come from each other, the layer names, each target against
    each layer, and the memory the layers and the permutation nulls need. Returns the activation file's
    sha256 (:func:`_check_activations_match`)."""
    from dnnprobe.probe.targets import check_targets, class_names  # scikit-learn: see the note on imports above

    _check_same_stimuli(table_path, table, grams)
    # Covariance-route layers read the activations themselves: their bytes must be the Gram file's.
    reads_activations = params.probe.save_models or any(grams.route(layer) == "covariance" for layer in grams.layers)
    activations_sha256 = _check_activations_match(activations_path, grams, len(table), table_path,
                                                  read_data=reads_activations)
    check_layer_names(grams.layers, str(gram_path))
    for layer in grams.layers:
        for target in attributes:
            check_targets(target.y, target.settings, grams.n_units(layer), target.name, layer=layer,
                          table=str(table_path), groups=groups, groups_name=params.probe.groups,
                          names=class_names(table, target.name))
        budget.check_probe_stage(grams.n_stim, grams.n_units(layer), params.pca, params.cv, layer, ops)
    for target in attributes:
        settings = target.settings
        batched_null = settings.decoder.batched_null and not settings.is_regression and len(np.unique(target.y)) == 2
        budget.check_permutations(settings.permutations, grams.n_stim, params.pca, batched_null)
    return activations_sha256


def _run_params(params: Params, table_path, table: StimulusTable, gram_path, grams, attributes: list[Target],
                summary: dict, provenance: dict, activations_sha256: str) -> dict:
    """The MLflow run's params: every params.yaml key this stage reads (dotted, as `dvc params diff` shows
    them), the network the activations record, and the input files. Each hash is of a file as it was read,
    the activation file's by the gram stage that read it (and again here when the probe reads it)."""
    run_params = {
        **params.flat(PARAMS),
        **{key: value for key, value in provenance.items() if key.startswith("network_")},
        # what the summary says of the network, for every choice (an absent key is the extract stage's default)
        "network_source": summary["network_source"], "network_preprocess": summary["preprocess"],
        "network_tokens": summary["tokens"],
        "n_stimuli": len(table), "layers": grams.layers,
        # what the stimulus table says of itself (the stimuli stage wrote it from params.yaml's stimuli.*)
        "stimulus_set": summary["stimulus_set"], "stimuli_source": summary["source"],
        "stimuli_sha256": file_sha256(table_path), "images_sha256": grams.attrs.get("images_sha256", ""),
        "gram_sha256": file_sha256(gram_path), "activations_sha256": activations_sha256,
    }
    # Each attribute's decoder and scoring as they ran: probe.classifier and probe.scoring are only the
    # defaults for a column that names no decoder of its own (probe.label=size:ridge_regression).
    for target in attributes:
        run_params[f"attribute.{target.name}"] = f"{target.settings.classifier} ({target.settings.scoring})"
    return run_params


def _run_name(params: Params, n_stimuli: int, summary: dict, provenance: dict) -> str:
    """The MLflow run's name: what tells it apart from other runs, the network (and its seed when the weights
    are random and it is not 0), its preprocessing and tokens, the number of stimuli, pca, cv and any probe
    setting off its default.
    Also sets ``summary["settings"]``: what differs from the defaults, as the run name begins (`dvc plots
    diff` labels each experiment with it)."""
    # the preprocessing always, the tokens of a network that has token layers (extract.tokens' default: all)
    network = {"prep": summary["preprocess"], **({"tokens": summary["tokens"]} if summary["tokens"] != NO_TOKENS else {})}
    settings_named = {"n": n_stimuli, **network, **params.flat(("pca", "cv", "probe"))}
    if "attributes" not in summary:  # one attribute: named by its column and the decoder and scoring that ran
        settings_named.update({"probe.label": summary["label"], "probe.classifier": summary["classifier"],
                               "probe.scoring": summary["scoring"]})
    defaults_named = {"prep": "dnnbrain", "tokens": "all", **Params().flat(("pca", "cv", "probe"))}
    if summary["weights"] == "random":
        settings_named["weights_seed"], defaults_named["weights_seed"] = provenance.get("network_seed", params.model.seed), 0
    arch, weights = str(summary["arch"]), str(summary["weights"])
    name = naming.run_name(arch, weights, settings_named, defaults_named, always=("prep", "tokens", "n", "pca", "cv"))
    summary["settings"] = " ".join(naming.changed_settings(arch, weights, settings_named, defaults_named)) or "defaults"
    return name


def _log_stimuli(run, table_path, table: StimulusTable, attributes: list[Target], summary: dict,
                 stimuli_sha256: str) -> None:
    """The stimulus table as the run's dataset, with the first attribute's class counts (none for a
    continuous one)."""
    first = attribute_part(summary, attributes[0].name)
    counts = None if attributes[0].settings.is_regression else dict(zip(
        first["class_names"], np.unique(attributes[0].y, return_counts=True)[1].tolist()))
    run.log_stimuli(table_path, stimuli_sha256, summary["stimulus_set"], list(table.columns),
                    len(table), ",".join(target.name for target in attributes), counts, summary["source"])


def _decode_layers(params: Params, grams, acts, ops, attributes: list[Target], groups: np.ndarray | None, run,
                   out_dir: Path, progress: bool) -> dict[str, dict]:
    """Every attribute decoded from every layer: DNNBrain's per-layer files in `out_dir` and each layer's
    scores logged to the run. Returns attribute -> layer -> :class:`dnnprobe.probe.crossval.LayerResult`."""
    from dnnprobe.probe import crossval  # scikit-learn: see the note on imports above

    several = len(attributes) > 1
    results: dict[str, dict] = {target.name: {} for target in attributes}
    # The permutation null can take far longer than the observed scores: a bar of its own, per fold.
    shuffles = len(grams.layers) * sum(t.settings.cv * t.settings.permutations for t in attributes)
    null_bar = progress_bar(desc="permutations", unit="shuffle", total=shuffles, enabled=progress and shuffles > 0)
    for layer in progress_bar(grams.layers, desc="probe", unit="layer", enabled=progress):
        # Each fold's PCA once for every attribute that shares the folds.
        fold_pcas = crossval.layer_fold_pcas(grams, layer, params.pca, acts, ops)
        layer_results = crossval.cross_validate_targets(fold_pcas, attributes, groups, null_bar.update)
        for target in attributes:
            result = layer_results[target.name]
            results[target.name][layer] = result
            if result.pca_rank is not None and target is attributes[0]:  # one line per layer
                click.echo(rank_warning(layer, params.pca, result.pca_rank), err=True)
            name = f"{target.name}/{layer}" if several else layer
            crossval.save_layer_result(result, out_dir / name)
            run.log_layer(name, result.score, result.mean, result.sem, stats.layer_extras(result),
                          scoring=target.settings.scoring, per_fold=None if result.C is None else {"C": result.C})
    null_bar.close()
    return results


def rank_warning(layer: str, pca: int, rank: int) -> str:
    """The line the probe prints when ``pca`` exceeds a layer's rank (:attr:`dnnprobe.probe.crossval.LayerResult.pca_rank`)."""
    return (f"probe: warning: layer {layer}: pca {pca} exceeds its rank: a training fold has variance in {rank} "
            f"directions only; the others score 0 (pca_rank in metrics_detail.json)")


@click.option("--table", default="data/stimuli.stim.csv", show_default=True, help="Stimulus table (the labels).")
@click.option("--gram", "gram_path", default="data/gram.h5", show_default=True, help="Gram file from the gram stage.")
@click.option("--activations", default="data/activations.act.h5", show_default=True,
              help="Activation file the Gram file was computed from.")
@click.option("--out", default="reports/probe", show_default=True, help="Folder for per-layer scores and summary.json.")
@click.option("--metrics", default="reports/metrics.json", show_default=True,
              help="DVC metrics file to write: the mean score per layer.")
@click.option("--details", default="reports/metrics_detail.json", show_default=True,
              help="Detail file beside the metrics (in git, not a DVC metric): SEM, p-values and Conv-vs-ReLU tests per layer.")
@click.option("--models", default="models/probes", show_default=True, help="Folder for refit probes (probe.save_models).")
@stage_command("probe", Params)
def command(params, progress, table, gram_path, activations, out, metrics, details, models):
    """Cross-validated PCA + decoding of probe.label per layer; logged to MLflow."""
    summary = probe(params, table, gram_path, activations, out, metrics, models, progress=progress, details_path=details)
    best = []
    for name, part in attribute_summaries(summary):
        layer = max(part["layers"], key=lambda layer: part["layers"][layer]["mean"])
        best.append(f"{name + ': ' if name else ''}best layer {layer} ({part['scoring']} {part['layers'][layer]['mean']:.3f})")
    click.echo(f"probe: {'; '.join(best)}; MLflow store {shown(tracking_uri())}")


if __name__ == "__main__":
    command()
