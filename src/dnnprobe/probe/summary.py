"""What a probe run reports: ``summary.json`` (the run's settings, provenance and each layer's statistics)
and the two metrics files DVC reads from it (``metrics.json``, ``metrics_detail.json``).

With several attributes (probe.label a list) each attribute's part sits in summary.json's
``attributes`` and the metric keys are ``<label>/<layer>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dnnprobe.network.provenance import network_record
from dnnprobe.probe import stats
from dnnprobe.probe.decoders import INNER_CV
from dnnprobe.probe.stats import attribute_summaries

if TYPE_CHECKING:
    from dnnprobe.stimuli.table import StimulusTable


def run_summary(params, table_path, table: StimulusTable, attributes, groups, layers: list[str], provenance: dict) -> dict:
    """summary.json before any layer is decoded: the network (as the activations record it, `provenance`:
    source, arch, weights, preprocessing, tokens), the stimulus set, the settings (the folds and how C is
    set, in words) and, per attribute, its classes (:func:`class_description`)."""
    several = len(attributes) > 1
    network = network_record(provenance, params.model.source, params.model.arch, params.model.weights)
    # One attribute: the decoder and scoring that ran (a ``column:decoder`` label names its own). Several:
    # probe.classifier and probe.scoring, for the columns that name none; each attribute's part says its own.
    ran = attributes[0].settings if not several else params.probe
    summary = {
        "arch": provenance.get("network_arch", params.model.arch),
        "weights": provenance.get("network_weights", params.model.weights),
        "weights_sha256": provenance.get("network_sha256", ""),
        "network_source": network["source"], "preprocess": network["preprocess"],
        **({"preprocess_from": network["preprocess_from"]} if "preprocess_from" in network else {}),
        "tokens": network["tokens"],
        "stimulus_set": table.header.get("title", Path(table_path).name),
        "is_demo": table.header.get("source") == "demo",
        "source": table.header.get("source", ""),
        "n_stimuli": len(table), "pca": params.pca, "cv": params.cv,
        "label": [target.name for target in attributes] if several else attributes[0].name,
        "classifier": ran.classifier, "C": params.probe.C, "scoring": ran.scoring,
        "standardize": params.probe.standardize, "permutations": params.probe.permutations,
        "layer_order": layers,
    }
    # Folds (stratified or not) and C depend on each attribute's decoder: one value for the run when every
    # attribute agrees, else each attribute's part says its own (the figures read the part).
    folds = {target.name: fold_words(params, groups, target.settings.is_regression) for target in attributes}
    c_choice = {target.name: c_words(target.settings) for target in attributes}
    for key, words in (("folds", folds), ("C_choice", c_choice)):
        summary[key] = next(iter(words.values())) if len(set(words.values())) == 1 else "per attribute"
    if groups is not None or params.probe.shuffle:  # only then: DNNBrain's summary keeps its keys
        summary.update({"groups": params.probe.groups, "shuffle": params.probe.shuffle})
    for target in attributes:
        part = summary if not several else {"label": target.name, "classifier": target.settings.classifier,
                                             "scoring": target.settings.scoring, "folds": folds[target.name],
                                             "C_choice": c_choice[target.name]}
        part.update(class_description(table, target))
        if several:
            summary.setdefault("attributes", {})[target.name] = part
    return summary


def fold_words(params, groups, regression: bool) -> str:
    """The outer folds in words: ``10-fold CV (StratifiedKFold), not grouped, not shuffled``."""
    if groups is not None:
        kind, grouped = ("GroupKFold" if regression else "StratifiedGroupKFold"), f"grouped by '{params.probe.groups}'"
    else:
        kind, grouped = ("KFold" if regression else "StratifiedKFold"), "not grouped"
    order = f"shuffled (seed {params.probe.seed})" if params.probe.shuffle else "not shuffled"
    return f"{params.cv}-fold CV ({kind}), {grouped}, {order}"


def c_words(settings) -> str:
    """How the decoder's C was set, in words: fixed, or chosen per training fold from a grid."""
    if settings.classifier == "lda":
        return "no C (lda)"
    if settings.C_grid is None:
        return f"C = {settings.C:g} (fixed)"
    grid = settings.C_grid
    return (f"C chosen per training fold by {INNER_CV}-fold inner CV from {len(grid)} values "
            f"{min(grid):g} .. {max(grid):g}")


def attribute_part(summary: dict, name: str) -> dict:
    """The part of `summary` that describes attribute `name`: the summary itself with a single attribute."""
    return summary["attributes"][name] if "attributes" in summary else summary


def add_statistics(summary: dict, attributes, results: dict[str, dict]) -> None:
    """Each attribute's per-layer statistics (:func:`dnnprobe.probe.stats.summarise`) and chance level, from
    `results` (attribute -> layer -> :class:`dnnprobe.probe.crossval.LayerResult`)."""
    for target in attributes:
        part = attribute_part(summary, target.name)
        part.update(stats.summarise(results[target.name], summary["layer_order"], target.settings))
        part["chance"], part["chance_source"] = stats.chance_level(results[target.name], target.y,
                                                                   target.settings.scoring)
    edges = grid_edge_lines(summary)
    if edges:  # C searched and chosen at an end of its grid: the best C may lie beyond it
        summary["C_at_grid_edge"] = edges


def grid_edge_lines(summary: dict) -> list[str]:
    """One line per attribute and layer whose C, chosen per fold (``probe.C: auto`` or a list), sits at an
    end of its grid (``C_at_grid_edge`` of :func:`dnnprobe.probe.stats.summarise`), naming both."""
    lines = []
    for name, part in attribute_summaries(summary):
        for layer in summary["layer_order"]:
            edge = part["layers"][layer].get("C_at_grid_edge")
            if edge:
                lines.append(f"attribute {name or part['label']}, layer {layer}: C = {edge['C']:g}, the {edge['edge']} "
                             f"of its grid, chosen in {edge['folds']} of {edge['of']} folds")
    return lines


def class_description(table: StimulusTable, target) -> dict:
    """``classes`` and ``class_names`` of a class target (nothing for a continuous one)."""
    if target.settings.is_regression:
        return {}
    classes = [str(c) for c in np.unique(target.y)]
    # DNNBrain's tables name the classes of `label` in `condition`; any other column's values are the names.
    # Keyed by the class as decoded: a label written 1.0 is class 1.
    names = dict(zip(map(str, target.y), table.columns.get("condition", []))) if target.name == "label" else {}
    return {"classes": classes, "class_names": [names.get(c, c) for c in classes]}


def layer_means(summary: dict) -> dict[str, float]:
    """reports/metrics.json: one number per layer, the mean fold score (``probe.scoring``), in layer order.

    Flat on purpose: ``dvc exp show`` and ``dvc metrics show`` give one short column per layer. With
    several attributes the keys are ``<label>/<layer>``, attribute after attribute.
    """
    means = {}
    for name, part in attribute_summaries(summary):
        prefix = f"{name}/" if name else ""
        means.update({prefix + layer: round(part["layers"][layer]["mean"], 6) for layer in summary["layer_order"]})
    return means


def score_details(summary: dict) -> dict:
    """reports/metrics_detail.json: what qualifies the means, statistic first, then layer (``<label>/<layer>``
    with several attributes).

    ``sem`` always; ``chance`` per attribute, keyed by its name (probe.label's column), not by layer: the
    chance level (:func:`dnnprobe.probe.stats.chance_level`); ``p_value``, ``null_mean`` and ``null_p95``
    when permutations ran; ``C_median`` when C was searched; ``conv_vs_relu`` per depth (the test the
    figure's brackets show). Non-numbers are left out (DVC shows numbers).
    """
    details: dict = {}
    for name, part in attribute_summaries(summary):
        prefix = f"{name}/" if name else ""
        layers = part["layers"]
        details.setdefault("sem", {}).update({prefix + layer: round(layers[layer]["sem"], 6)
                                             for layer in summary["layer_order"]})
        if isinstance(part.get("chance"), (int, float)):  # per attribute: what `dnnprobe sweep` draws per panel
            details.setdefault("chance", {})[name or part["label"]] = round(part["chance"], 6)
        for key in ("p_value", "null_mean", "null_p95", "pca_rank", "C_median"):
            values = {prefix + layer: round(layers[layer][key], 6) for layer in summary["layer_order"] if key in layers[layer]}
            if values:
                details.setdefault(key, {}).update(values)
        tests = {prefix + label: {key: round(value, 6) for key, value in test.items()
                                  if isinstance(value, (int, float)) and not isinstance(value, bool)}
                 for label, test in part.get("conv_vs_relu", {}).items()}
        if tests:
            details.setdefault("conv_vs_relu", {}).update(tests)
    return details
