"""The sweep figure: decoding score per layer across DVC experiments, one line per experiment.

Input is what ``dvc exp show --json`` prints, read by :mod:`dnnprobe.experiments.exp_show` (finished
experiments only, exact repeats once, only the settings dnnprobe reads). A sweep over pca
(``dvc exp run --queue -S pca=10 ...``) thus gives one line per pca value.

This is not a DVC stage: it looks across experiments, while a stage belongs to one of them.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path

import click
import matplotlib

matplotlib.use("Agg")  # no screen needed; set before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dnnprobe.core.atomic import atomic_output  # noqa: E402
from dnnprobe.core.errors import DnnprobeError  # noqa: E402
from dnnprobe.experiments.exp_show import (  # noqa: E402
    METRICS_FILE, Experiment, experiments_from_exp_show, layer_order, load_exp_show, run_exp_show, varying_params,
)


def _sort_value(value: object) -> tuple:
    return (0, float(value), "") if isinstance(value, (int, float)) else (1, 0.0, str(value))


def default_param(experiments: list[Experiment]) -> str:
    """What orders the lines unless --param says: pca if it varies, else the first setting that does."""
    varying = varying_params(experiments)
    return "pca" if "pca" in varying or not varying else varying[0]


def order_by(experiments: list[Experiment], param: str) -> list[Experiment]:
    if not any(param in e.params for e in experiments):
        raise DnnprobeError(f"--param {param}: not a params.yaml key of any experiment")
    varying = varying_params(experiments)
    if len(experiments) > 1 and param not in varying:
        value = experiments[0].params.get(param)
        raise DnnprobeError(f"--param {param}: {value} in every experiment, so it cannot order them; "
                            f"the settings that vary: {', '.join(varying) or 'none'}")
    return sorted(experiments, key=lambda e: (_sort_value(e.params.get(param)), e.name))


def line_label(experiment: Experiment, param: str, varying: list[str]) -> str:
    shown = [param] + [key for key in varying if key != param]
    return ", ".join(f"{key}={experiment.params.get(key)}" for key in shown) + f"  ({experiment.name})"


def sweep_figure(experiments: list[Experiment], param: str = "pca") -> plt.Figure:
    """Score per layer (mean over folds, SEM band), one line per experiment, coloured in `param` order."""
    experiments = order_by(experiments, param)
    layers = layer_order(experiments)
    varying = varying_params(experiments)
    x = np.arange(len(layers))
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(experiments)))
    # + 4 inches at the right for the legend, one line per experiment; a transformer's 24-48 layers get
    # narrower slots and vertical names, so the figure stays within a screen's width
    many = len(layers) > 24
    figure, axes = plt.subplots(figsize=(max(7.0, (0.3 if many else 0.6) * len(layers) + 3) + 4,
                                         max(4.8, 0.25 * len(experiments) + 2)), layout="constrained")
    for experiment, colour in zip(experiments, colours):
        mean = np.array([experiment.scores.get(layer, (np.nan, np.nan))[0] for layer in layers])
        sem = np.array([experiment.scores.get(layer, (np.nan, np.nan))[1] for layer in layers])
        axes.plot(x, mean, marker="o", color=colour, label=line_label(experiment, param, varying))
        axes.fill_between(x, mean - sem, mean + sem, color=colour, alpha=0.15, linewidth=0)
    axes.set_xticks(x, layers, rotation=90 if many else 45, ha="center" if many else "right")
    scorings = list(dict.fromkeys(e.measure or e.scoring for e in experiments))  # scoring (decoder), as each ran
    axes.set_ylabel(" / ".join(scorings) + " (mean over folds, band: SEM)")
    def values(key: str) -> str:  # every experiment's value of a key, once each
        return ", ".join(dict.fromkeys(str(e.params.get(key)) for e in experiments))

    title = (f"Decoding per layer across {len(experiments)} experiments, ordered by {param}\n"
             f"{values('model.arch')} ({values('model.weights')} weights), stimuli {values('stimuli.source')}")
    if all(e.params.get("stimuli.source") == "demo" for e in experiments):
        title += "\nbuilt-in demo stimuli: a pipeline check, not a scientific finding"
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)  # never over the lines
    axes.grid(axis="y", alpha=0.3)
    return figure


def sweep_table(experiments: list[Experiment], param: str = "pca") -> str:
    """The figure's numbers as CSV: one row per experiment and layer."""
    experiments = order_by(experiments, param)
    varying = varying_params(experiments)
    columns = ["experiment", *dict.fromkeys([param, *varying]), "layer", "mean", "sem"]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    for experiment in experiments:
        for layer, (mean, sem) in experiment.scores.items():
            values = [experiment.params.get(key) for key in columns[1:-3]]
            writer.writerow([experiment.name, *values, layer, f"{mean:.6f}", f"{sem:.6f}"])
    return text.getvalue()


def write_sweep(experiments: list[Experiment], param: str, png_path: str | os.PathLike) -> list[Path]:
    """The sweep figure as PNG and its numbers as CSV beside it; returns both paths."""
    if not experiments:
        raise DnnprobeError(f"dvc exp show: no experiment has {METRICS_FILE}; run `dvc repro` or `dvc exp run` first")
    png_path = Path(png_path)
    csv_path = png_path.with_suffix(".csv")
    table = sweep_table(experiments, param)  # checks `param` before anything is written
    figure = sweep_figure(experiments, param)
    with atomic_output(png_path) as temp:
        figure.savefig(temp, format="png", dpi=150, metadata={"Software": None})
    plt.close(figure)
    with atomic_output(csv_path) as temp:
        temp.write_text(table)
    return [png_path, csv_path]


@click.command("sweep")
@click.option("--param", default=None, show_default="pca, or the first setting that varies",
              help="params.yaml key (dotted, e.g. probe.C) that orders and colours the lines.")
@click.option("--exp-show", "exp_show_path", type=click.Path(dir_okay=False), show_default="none: run it here",
              help="Saved `dvc exp show --json` output.")
@click.option("--all-commits", is_flag=True, show_default="off", help="Experiments of every commit, not only of HEAD.")
@click.option("--out", default=None, show_default="reports/sweep/sweep_<param>.png",
              help="PNG to write; a .csv goes beside it.")
def command(param, exp_show_path, all_commits, out):
    """Score per layer across DVC experiments (e.g. a queued pca sweep), one line per experiment."""
    try:
        exp_show = load_exp_show(exp_show_path) if exp_show_path else run_exp_show(".", all_commits)
        skipped: list[str] = []
        experiments = experiments_from_exp_show(exp_show, None if exp_show_path else ".", skipped)
        param = param or default_param(experiments)
        paths = write_sweep(experiments, param, out or f"reports/sweep/sweep_{param}.png")
    except DnnprobeError as exc:
        click.echo(f"dnnprobe sweep: error: {exc}", err=True)
        sys.exit(1)
    if skipped:
        click.echo(f"sweep: left out (not finished or failed, no metrics of their own): {', '.join(skipped)}", err=True)
    click.echo(f"sweep: {len(experiments)} experiments -> " + ", ".join(str(p) for p in paths))
