"""``dnnprobe compare``: experiments side by side in the terminal, one column each, every layer shown.

``dvc exp show`` gives each layer a column of about 12 characters and each parameter and dependency
hash one more, so in 200 columns it folds layers, and settings that tell experiments apart, into "…"
(and ``--only-changed`` drops a layer whose value happens to be equal). Here the table is turned on its
side: one row per setting that differs between the experiments, then one row per layer (the mean fold
score, ``reports/metrics.json``), and one column per experiment. When the columns do not fit the
terminal, the experiments are shown in several tables one under the other, each with every row.

The experiments are those ``dvc exp show`` lists (the workspace, HEAD and its experiments; every
commit's with ``--all-commits``), read the way ``dnnprobe sweep`` reads them (:mod:`dnnprobe.experiments.exp_show`):
queued, running and failed experiments are left out, and exact repeats are shown once.
"""

from __future__ import annotations

import shutil
import sys

import click

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.experiments.exp_show import (
    Experiment, attribute_rows, attribute_scores, experiments_from_exp_show, load_exp_show, repeats_lines, run_exp_show,
    shown_settings,
)

MAX_VALUE = 24  # characters of a setting's value (a changed layer list is long), then "…"


def _text(value: object) -> str:
    text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return text if len(text) <= MAX_VALUE else text[:MAX_VALUE - 1] + "…"


def compare_rows(experiments: list[Experiment]) -> list[tuple[str, list[str]]]:
    """(row name, one cell per experiment): the header, the settings that differ (probe.label, probe.classifier
    and probe.scoring as each attribute ran: a row ``attribute <name>`` per attribute, ``<decoder> (<scoring>)``
    in each experiment's column, the scoring of the numbers below it), a rule, every layer."""
    rows = [("experiment", [e.name for e in experiments])]
    rows += [(key, [_text(e.params.get(key, "-")) for e in experiments]) for key in shown_settings(experiments)]
    rows += attribute_rows(experiments)
    rows.append(("mean per layer", [""] * len(experiments)))  # each column in its scoring, above
    # Where the experiments decoded different attributes, every layer row names its attribute (`size/conv1`):
    # one experiment's `conv1` (label, accuracy) and another's (size, r2) are never one row.
    named = len({name for e in experiments for name in attribute_scores(e)}) > 1
    scores = [{f"{name}/{layer}" if named else layer: value for name, layers in attribute_scores(e).items()
               for layer, value in layers.items()} for e in experiments]
    for layer in dict.fromkeys(key for each in scores for key in each):
        rows.append((layer, [f"{each[layer][0]:.3f}" if layer in each else "-" for each in scores]))
    return rows


def compare_table(experiments: list[Experiment], width: int = 200) -> str:
    """The rows of :func:`compare_rows` as text no wider than `width` (several tables if need be)."""
    if not experiments:
        raise DnnprobeError("dvc exp show: no experiment has reports/metrics.json; run `dvc repro` or `dvc exp run` first")
    rows = compare_rows(experiments)
    label = max(len(name) for name, _ in rows) + 2
    widths = [max(len(cells[i]) for _, cells in rows) + 2 for i in range(len(experiments))]
    blocks, block, used = [], [], label
    for i, w in enumerate(widths):  # as many experiments per table as the width holds (at least one)
        if block and used + w > width:
            blocks.append(block)
            block, used = [], label
        block.append(i)
        used += w
    blocks.append(block)
    tables = []
    for block in blocks:
        lines = []
        for name, cells in rows:
            line = name.ljust(label) + "".join(cells[i].rjust(widths[i]) for i in block)
            lines.append(line.rstrip())
        tables.append("\n".join(lines))
    return "\n\n".join(tables) + "\n"


@click.command("compare")
@click.argument("names", nargs=-1)
@click.option("--exp-show", "exp_show_path", type=click.Path(dir_okay=False), show_default="none: run it here",
              help="Saved `dvc exp show --json` output.")
@click.option("--all-commits", is_flag=True, show_default="off", help="Experiments of every commit, not only of HEAD.")
@click.option("--width", type=click.IntRange(min=40), default=None, show_default="the terminal's ($COLUMNS)",
              help="Characters per line.")
def command(names, exp_show_path, all_commits, width):
    """Experiments side by side: the settings that differ, then every layer's mean score.

    NAMES: experiments, branches or short commits to show (default: all that `dvc exp show` lists).
    """
    try:
        exp_show = load_exp_show(exp_show_path) if exp_show_path else run_exp_show(".", all_commits)
        skipped: list[str] = []
        repeats: list[tuple[str, str]] = []
        experiments = experiments_from_exp_show(exp_show, None, skipped, keep_named_repeats=bool(names), repeats=repeats)
        if names:
            unknown = [name for name in names if name not in {e.name for e in experiments}]
            if unknown:
                hint = "" if all_commits else "; experiments of earlier commits: add --all-commits"
                raise DnnprobeError(f"{', '.join(unknown)}: not among the finished experiments "
                                    f"({', '.join(e.name for e in experiments)}){hint}")
            experiments = [e for name in names for e in experiments if e.name == name]
        text = compare_table(experiments, width or shutil.get_terminal_size((200, 24)).columns)
    except DnnprobeError as exc:
        click.echo(f"dnnprobe compare: error: {exc}", err=True)
        sys.exit(1)
    if skipped:
        click.echo(f"compare: left out (not finished or failed, no metrics of their own): {', '.join(skipped)}", err=True)
    for line in repeats_lines(repeats, "shown"):
        click.echo(f"compare: {line}", err=True)
    click.echo(text, nl=False)
