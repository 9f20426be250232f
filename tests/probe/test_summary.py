"""What a run records names the decoder and scoring that ran (issue 26, item 1): a ``column:decoder``
label (``size:ridge_regression``, ``label:lda``), alone, as a one-item list or beside other columns, is
recorded in summary.json, the metrics, the plot table, the figure, the MLflow run and the compare and
sweep headings as what it is, never as probe.classifier / probe.scoring's defaults."""

from __future__ import annotations

import csv
import json

import pytest

from helpers import latest_probe_run, tiny_params
from dnnprobe.experiments.compare import compare_rows
from dnnprobe.experiments.exp_show import experiments_from_exp_show
from dnnprobe.experiments.sweep import sweep_figure
from dnnprobe.report.figure import figure_title


def table_with_size(tiny_stimuli, folder):
    """The tiny demo table with a continuous column ``size``, its images where they are."""
    lines = tiny_stimuli.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("data="))
    header = [f"path={tiny_stimuli.parent / 'images'}" if line.startswith("path=") else line for line in lines[:start]]
    rows = [f"{row},{(i * 7) % 11 / 3:.3f}" for i, row in enumerate(lines[start + 1:])]
    path = folder / "table.stim.csv"
    path.write_text("\n".join(header + [lines[start] + ",size"] + rows) + "\n")
    return path


def probe_and_report(table, tiny_gram, tiny_activations, folder, **overrides):
    """The probe and report stages on the tiny data; (summary, metrics, plot rows, MLflow run, figure title)."""
    from dnnprobe.stages.probe import probe
    from dnnprobe.stages.report import report

    params = tiny_params(**overrides)
    summary = probe(params, table, tiny_gram, tiny_activations, folder / "probe", folder / "metrics.json",
                    folder / "models", progress=False)
    run = latest_probe_run()
    report(params, folder / "probe", folder / "figures", folder / "plot.csv")
    rows = list(csv.DictReader((folder / "plot.csv").read_text().splitlines()))
    written = json.loads((folder / "probe" / "summary.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    details = json.loads((folder / "metrics_detail.json").read_text())
    assert written == summary
    return written, (metrics, details), rows, run


# label, the same run spelled with probe.classifier / probe.scoring, what ran
CASES = {
    "size:ridge_regression": ({"probe.label": "size", "probe.classifier": "ridge_regression", "probe.scoring": "r2"},
                              "size", "ridge_regression", "r2"),
    "label:lda": ({"probe.classifier": "lda"}, "label", "lda", "accuracy"),
}


@pytest.mark.parametrize("entry", list(CASES))
@pytest.mark.parametrize("as_list", [False, True], ids=["one label", "one-item list"])
def test_a_label_naming_its_decoder_is_recorded_as_what_ran(entry, as_list, tiny_stimuli, tiny_gram, tiny_activations,
                                                            tmp_path):
    spelled, column, decoder, scoring = CASES[entry]
    table = table_with_size(tiny_stimuli, tmp_path)
    label = f"['{entry}']" if as_list else entry
    summary, metrics, rows, run = probe_and_report(table, tiny_gram, tiny_activations, tmp_path / "entry",
                                                   **{"probe.label": label})
    assert (summary["label"], summary["classifier"], summary["scoring"]) == (column, decoder, scoring)
    # the numbers are those of the same probe spelled with probe.classifier and probe.scoring
    reference, reference_metrics, reference_rows, reference_run = probe_and_report(
        table, tiny_gram, tiny_activations, tmp_path / "spelled", **spelled)
    assert metrics == reference_metrics
    assert metrics[1]["chance"] == {column: round(summary["chance"], 6)}  # metrics_detail.json, by attribute
    assert {key: summary[key] for key in ("label", "classifier", "scoring", "settings", "layers", "chance")} == \
        {key: reference[key] for key in ("label", "classifier", "scoring", "settings", "layers", "chance")}
    # the plot table and the figure say what the score is and which decoder gave it
    assert rows == reference_rows and {row["scoring"] for row in rows} == {scoring}
    assert f"classifier={decoder}" in rows[0]["settings"]
    assert f"{decoder} decoder" in figure_title(summary)
    # the MLflow run: its params and its name
    assert run.data.params[f"attribute.{column}"] == f"{decoder} ({scoring})"
    assert f"classifier={decoder}" in run.info.run_name and run.info.run_name == reference_run.info.run_name
    # dnnprobe compare and sweep: the attribute's row names its decoder and scoring (as it ran)
    exp_show = [{"rev": "workspace", "name": None, "data": {
        "params": {"params.yaml": {"data": {"pca": 4, "cv": 3, "probe": {"label": [entry] if as_list else entry}}}},
        "metrics": {"reports/metrics.json": {"data": metrics[0]}}}}]
    experiment, = experiments_from_exp_show(exp_show)
    assert experiment.scoring == scoring
    attribute_rows = [(name, values) for name, values in compare_rows([experiment]) if name.startswith("attribute ")]
    assert attribute_rows == [(f"attribute {column}", [f"{decoder} ({scoring})"])]
    axes = sweep_figure([experiment]).axes[0]
    assert axes.get_ylabel().startswith(f"{scoring} ") and axes.get_title().endswith(f"{column} · {decoder} ({scoring})")


def test_several_labels_each_name_their_decoder_everywhere(tiny_stimuli, tiny_gram, tiny_activations, tmp_path):
    table = table_with_size(tiny_stimuli, tmp_path)
    summary, (_, details), rows, run = probe_and_report(table, tiny_gram, tiny_activations, tmp_path / "several",
                                                        **{"probe.label": "['label:lda', 'size:ridge_regression']"})
    assert {name: (part["classifier"], part["scoring"]) for name, part in summary["attributes"].items()} == \
        {"label": ("lda", "accuracy"), "size": ("ridge_regression", "r2")}
    # each attribute's chance level, by its name, for `dnnprobe sweep`'s panels
    assert details["chance"] == {"label": round(summary["attributes"]["label"]["chance"], 6), "size": 0.0}
    assert {row["scoring"] for row in rows} == {"accuracy (label)", "r2 (size)"}
    assert run.data.params["attribute.label"] == "lda (accuracy)"
    assert run.data.params["attribute.size"] == "ridge_regression (r2)"
    exp_show = [{"rev": "workspace", "name": None, "data": {
        "params": {"params.yaml": {"data": {"probe": {"label": ["label:lda", "size:ridge_regression"]}}}},
        "metrics": {"reports/metrics.json": {"data": {"label/fc1": 0.5, "size/fc1": 0.1}}}}}]
    experiment, = experiments_from_exp_show(exp_show)
    assert [(name, values) for name, values in compare_rows([experiment]) if name.startswith("attribute ")] == \
        [("attribute label", ["lda (accuracy)"]), ("attribute size", ["ridge_regression (r2)"])]


def test_several_labels_each_name_their_own_folds_in_the_summary_and_figure(tiny_stimuli, tiny_gram,
                                                                             tiny_activations, tmp_path):
    """A class label is decoded on stratified folds, a continuous one on plain KFold: each attribute's part
    (what its figure's title reads) names its own scheme, whichever comes first in probe.label."""
    from dnnprobe.probe.stats import attribute_summaries

    table = table_with_size(tiny_stimuli, tmp_path)
    for order in (["size:ridge_regression", "label"], ["label", "size:ridge_regression"]):
        summary, *_ = probe_and_report(table, tiny_gram, tiny_activations, tmp_path / "-".join(order)[:12],
                                       **{"probe.label": repr(order)})
        assert summary["folds"] == "per attribute"
        parts = dict(attribute_summaries(summary))
        assert parts["label"]["folds"].startswith("3-fold CV (StratifiedKFold)")
        assert parts["size"]["folds"].startswith("3-fold CV (KFold)")
        assert "(StratifiedKFold)" in figure_title(parts["label"]) and "(KFold)" in figure_title(parts["size"])
