"""The sweep figure: decoding score per layer across DVC experiments, one line per experiment.

Input is what ``dvc exp show --json`` prints: for every commit and each of its experiments, the
params.yaml values and reports/metrics.json. A sweep over pca (``dvc exp run --queue -S pca=10 ...``)
thus gives one line per pca value. Experiments that did not compute their own metrics are skipped:
queued, running and failed ones (DVC shows its baseline's metrics under a failed experiment's name and
params, treeverse/dvc#9787), and so are exact repeats (the workspace repeats the commit or experiment
last run there). Only keys dnnprobe reads count as settings: a key it does not know (``classifier:
ridge`` at the top level) is no setting, since no stage read it.

This is not a DVC stage: it looks across experiments, while a stage belongs to one of them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import matplotlib

matplotlib.use("Agg")  # no screen needed; set before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dnnprobe.core.atomic import atomic_output  # noqa: E402
from dnnprobe.core.errors import DnnprobeError  # noqa: E402
from dnnprobe.core.params import comparable, flatten  # noqa: E402
from dnnprobe.stages.params import Params  # noqa: E402

METRICS_FILE = "reports/metrics.json"  # layer -> mean fold score
DETAILS_FILE = "reports/metrics_detail.json"  # "sem" -> layer -> SEM over folds; in git, read with `git show`
PARAMS_FILE = "params.yaml"


@dataclass(frozen=True)
class Experiment:
    name: str  # DVC experiment name, branch or short commit, or "workspace"
    params: dict[str, object]  # params.yaml flattened to dotted keys ("probe.C": 1.0)
    scoring: str  # probe.scoring: what the per-layer means are
    scores: dict[str, tuple[float, float]]  # layer -> (mean, SEM over folds), in layer order


KNOWN_PARAMS = frozenset(Params().flat())  # the params.yaml keys dnnprobe reads, dotted


def _experiment(entry: dict, name: str, repo: str | os.PathLike | None) -> Experiment | None:
    # Only finished results: a queued or running experiment's entry shows its baseline's metrics (stale
    # numbers under its name), and so does a failed one (marked by "error"; treeverse/dvc#9787).
    state = (entry.get("executor") or {}).get("state")
    if state not in (None, "success") or entry.get("error"):
        return None
    data = entry.get("data") or {}
    metrics = ((data.get("metrics") or {}).get(METRICS_FILE) or {}).get("data")
    details = _details(repo, str(entry.get("rev", ""))) if metrics and repo is not None else {}
    params = ((data.get("params") or {}).get(PARAMS_FILE) or {}).get("data")
    if not metrics or not params:
        return None
    params = {key: value for key, value in flatten(params).items() if key in KNOWN_PARAMS}
    scoring = str(params.get("probe.scoring", "accuracy"))
    sems = details.get("sem") or {}
    scores = {}
    for layer, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            scores[layer] = (float(value), float(sems.get(layer, np.nan)))
        elif isinstance(value, dict) and f"{scoring}_mean" in value:  # the nested metrics.json of earlier commits
            scores[layer] = (float(value[f"{scoring}_mean"]), float(value.get(f"{scoring}_sem", np.nan)))
    return Experiment(name, params, scoring, scores) if scores else None


def _details(repo: str | os.PathLike, rev: str) -> dict:
    """metrics_detail.json of a commit or experiment (``git show``), or of the workspace; {} if absent.

    It is a git-tracked output rather than a DVC metric (which keeps `dvc exp show` to one column per
    layer), so `dvc exp show --json` does not carry it.
    """
    try:
        if rev == "workspace":
            text = (Path(repo) / DETAILS_FILE).read_text()
        else:
            result = subprocess.run(["git", "show", f"{rev}:{DETAILS_FILE}"], cwd=repo, capture_output=True, text=True)
            if result.returncode != 0:
                return {}
            text = result.stdout
        details = json.loads(text)
    except (OSError, ValueError):
        return {}
    return details if isinstance(details, dict) else {}


def experiments_from_exp_show(exp_show: list[dict], repo: str | os.PathLike | None = None,
                              skipped: list[str] | None = None, keep_named_repeats: bool = False) -> list[Experiment]:
    """Every commit and experiment in `dvc exp show --json` output that computed probe metrics.

    With `repo` (the repository the output is of), each one's SEM comes from its metrics_detail.json;
    without it the SEM is NaN (no band in the figure). The names of experiments left out because they
    did not finish (queued, running, failed) are appended to `skipped`. One that repeats an earlier
    one's settings and scores is left out (one line per result in a figure), unless it is a named
    experiment and `keep_named_repeats` is set (for a user who asks for it by name).
    """
    _check_exp_show(exp_show, "dvc exp show --json")
    entries = []
    for commit in exp_show:
        entries.append((commit, _name(commit)))
        for experiment in commit.get("experiments") or []:
            entries += [(rev, _name(rev)) for rev in experiment.get("revs") or []]
    # The workspace last: when it repeats a commit or an experiment, that one's name is kept.
    entries.sort(key=lambda pair: pair[1] == "workspace")
    found, seen = [], set()
    for entry, name in entries:
        experiment = _experiment(entry, name, repo)
        if experiment is None:
            unfinished = entry.get("error") or (entry.get("executor") or {}).get("state") not in (None, "success")
            if skipped is not None and unfinished:
                skipped.append(name)
            continue
        params = {key: comparable(value) for key, value in experiment.params.items()}
        key = json.dumps([params, experiment.scores], sort_keys=True)
        if key not in seen or (keep_named_repeats and entry.get("name")):
            seen.add(key)
            found.append(experiment)
    return found


def _name(entry: dict) -> str:
    rev = str(entry.get("rev", ""))
    return entry.get("name") or (rev if rev == "workspace" else rev[:7])


def run_exp_show(repo: str | os.PathLike = ".", all_commits: bool = False) -> list[dict]:
    """`dvc exp show --json` in `repo`, parsed."""
    dvc = shutil.which("dvc")
    if dvc is None:
        raise DnnprobeError("dvc: not on PATH (activate .venv, or pass --exp-show with saved `dvc exp show --json` output)")
    command = [dvc, "exp", "show", "--json"] + (["--all-commits"] if all_commits else [])
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise DnnprobeError(f"dvc exp show --json in {Path(repo).resolve()} failed: {message}")
    return json.loads(result.stdout)


def load_exp_show(path: str | os.PathLike) -> list[dict]:
    try:
        exp_show = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DnnprobeError(f"{path}: not readable `dvc exp show --json` output ({exc})") from None
    _check_exp_show(exp_show, str(path))
    return exp_show


def _check_exp_show(exp_show: object, where: str) -> None:
    """`dvc exp show --json` prints a JSON list with one object per commit; refuse anything else in one line."""
    if isinstance(exp_show, list) and all(isinstance(commit, dict) for commit in exp_show):
        return
    kinds = {dict: "an object", list: "a list of other values", str: "a string"}
    got = kinds.get(type(exp_show), "a number or null")
    raise DnnprobeError(f"{where}: not `dvc exp show --json` output (a JSON list of commits; this is {got})")


def varying_params(experiments: list[Experiment]) -> list[str]:
    """The params.yaml keys whose value differs between the experiments (what the sweep changed)."""
    keys = sorted({key for experiment in experiments for key in experiment.params})
    return [key for key in keys if len({comparable(e.params.get(key)) for e in experiments}) > 1]


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


def layer_order(experiments: list[Experiment]) -> list[str]:
    layers: list[str] = []
    for experiment in experiments:
        layers += [layer for layer in experiment.scores if layer not in layers]
    return layers


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
    scorings = sorted({e.scoring for e in experiments})
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
