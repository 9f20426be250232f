"""The sweep figure: decoding score over relative depth, a line per DVC experiment and a panel per attribute.

Input is what ``dvc exp show --json`` prints, read by :mod:`dnnprobe.experiments.exp_show` (finished
experiments only, exact repeats once, only the settings dnnprobe reads). A sweep over pca
(``dvc exp run --queue -S pca=10 ...``) thus gives one line per pca value, and runs of several networks
(AlexNet's 14 layers, a ViT's 12 blocks, a ResNet's 4 stages) one line per network.

- **x: relative depth**, 0 = input side, 1 = the last layer probed: each layer's position in its
  network's layer order over the last probed layer's (:mod:`dnnprobe.experiments.depth`; a 12-block
  timm ViT's ``block6`` of ``block1 .. block12``: 7/13, ``patch_embed`` being first), so that networks of
  any depth share one axis. Where that order is not known here (a network not built here, a layer that
  is no friendly layer) the experiment's layers are spread evenly in the order probed, and the legend,
  the CSV's ``depth_from`` and one stderr line say so. When every experiment probed the same layer list
  at the same depths the ticks name its layers at those depths; otherwise they read 0 .. 1 and each
  legend entry names its experiment's first and last layer.
- **Panels**: one per (stimulus set, attribute, decoder and scoring as it ran: :func:`panel_key`), so
  that a run of several attributes never joins one attribute's last layer to the next one's first, and
  scores of different stimuli or scorings never share an axis; each titled by what it holds, with its
  chance level (dashed). probe.label/classifier/scoring are never shown raw (the CSV has each row's
  ``decoder`` and ``scoring``); a single layer probed is drawn at 1 and said to have no comparable depth.
- **Order and colour**: ``--param``; by default the network (the first of :data:`NETWORK_KEYS` that
  varies), else pca, else the first other setting that varies. Never ``extract.layers`` by default: it
  differs because the network does.

This is not a DVC stage: it looks across experiments, while a stage belongs to one of them.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import textwrap
from pathlib import Path

import click
import matplotlib

matplotlib.use("Agg")  # no screen needed; set before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.font_manager import FontProperties  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from dnnprobe.core.atomic import atomic_output  # noqa: E402
from dnnprobe.core.errors import DnnprobeError  # noqa: E402
from dnnprobe.experiments.depth import (  # noqa: E402
    EVENLY_SPACED, NOT_BUILT, SINGLE_LAYER, Depths, relative_depths, why_not_built,
)
from dnnprobe.experiments.exp_show import (  # noqa: E402
    DECODER_KEYS, METRICS_FILE, Experiment, attribute_scores, experiments_from_exp_show, load_exp_show, ran, repeats_lines,
    run_exp_show, shown_settings, stimulus_set, varying_params,
)

# What a network is, as params.yaml says it: the keys that tell two experiments' networks apart, in the
# order that sorts them and names them in the legend.
NETWORK_KEYS = ("model.source", "model.arch", "model.weights", "model.seed", "extract.tokens", "extract.preprocess")
CONSEQUENCES = ("extract.layers",)  # differs because the network does: never what orders the lines by default
LEGEND_POINTS, TICK_POINTS = 8, 8
LEGEND_CHARACTERS = 60  # a legend entry's lines are wrapped at " · " to this many characters
MARKERS = ("o", "s", "^", "D", "v")  # beyond 10 lines, colours of tab20 come in similar pairs: a marker each too
PANEL_INCHES = 3.0  # the height of one attribute's axes


def _sort_value(value: object) -> tuple:
    if isinstance(value, (int, float)):
        return (0, float(value), "")
    return (1, 0.0, ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value))


def _text(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def default_param(experiments: list[Experiment]) -> str:
    """What orders the lines unless --param says: the network if it varies (the first of
    :data:`NETWORK_KEYS` that does), else pca if it varies, else the first other setting that does."""
    varying = varying_params(experiments)
    for key in (*NETWORK_KEYS, "pca"):
        if key in varying:
            return key
    return ([key for key in varying if key not in CONSEQUENCES] or varying or ["pca"])[0]


def order_by(experiments: list[Experiment], param: str) -> list[Experiment]:
    """The experiments sorted by `param`, then by network, then by name; DnnprobeError (one line) when
    `param` is no experiment's key, or the same in all."""
    if not any(param in e.params for e in experiments):
        raise DnnprobeError(f"--param {param}: not a params.yaml key of any experiment")
    varying = varying_params(experiments)
    if len(experiments) > 1 and param not in varying:
        value = experiments[0].params.get(param)
        raise DnnprobeError(f"--param {param}: {value} in every experiment, so it cannot order them; "
                            f"the settings that vary: {', '.join(varying) or 'none'}")
    return sorted(experiments, key=lambda e: (_sort_value(e.params.get(param)),
                                              [_sort_value(e.params.get(key)) for key in NETWORK_KEYS], e.name))


def network_label(experiment: Experiment, varying: list[str]) -> str:
    """The network in a few words, named by what differs between the experiments:
    ``timm vit_small_patch16_224 · tokens=cls``; empty when every experiment ran the same network."""
    if not any(key in varying for key in NETWORK_KEYS):
        return ""
    params = experiment.params
    parts = [f"{params.get('model.source', 'torchvision')} {params.get('model.arch', '?')}"]
    shown = {"model.weights": "weights", "model.seed": "seed", "extract.tokens": "tokens", "extract.preprocess": "preprocess"}
    parts += [f"{name}={_text(params.get(key))}" for key, name in shown.items() if key in varying]
    return " · ".join(parts)


def line_label(experiment: Experiment, param: str, varying: list[str], layers: list[str] | None = None) -> str:
    """A legend entry: the network (where networks differ), `param` and the other settings that differ
    (never a layer list), and the experiment's name; with `layers` (when the experiments' layer lists
    differ) a second line names its first and last layer."""
    # never probe.label/classifier/scoring (each panel's title names its attribute's decoder and scoring as it
    # ran) nor stimuli.* (each panel's title names its stimulus set), never an empty value
    parts = [network_label(experiment, varying)]
    others = dict.fromkeys(key for key in [param, *varying] if key not in NETWORK_KEYS and key not in CONSEQUENCES
                           and key not in DECODER_KEYS and not key.startswith("stimuli."))
    parts += [f"{key}={text}" for key in others if (text := _text(experiment.params.get(key)))]
    text = " · ".join(part for part in parts if part)
    text = f"{text} · ({experiment.name})" if text else experiment.name
    text = "\n".join(_wrap(text.split(" · ")))
    if layers:
        text += f"\n{len(layers)} layers: {layers[0]} .. {layers[-1]}" if len(layers) > 1 else f"\n1 layer: {layers[0]}"
    return text


def _wrap(parts: list[str]) -> list[str]:
    """`parts` joined by " · " into lines of at most :data:`LEGEND_CHARACTERS` (a longer part alone)."""
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + 3 + len(part) <= LEGEND_CHARACTERS:
            lines[-1] += f" · {part}"
        else:
            lines.append(part)
    return lines


def layer_depths(experiment: Experiment) -> dict[str, Depths]:
    """attribute -> the relative depth of its layers in the experiment's network (:func:`relative_depths`)."""
    params = experiment.params
    return {attribute: relative_depths(params.get("model.source"), params.get("model.arch"), list(scores))
            for attribute, scores in attribute_scores(experiment).items()}


def single_layer_note(experiment: Experiment) -> str:
    """``1 layer: depth not comparable`` when an attribute's scores are of one layer (drawn at 1, the last
    layer probed, which says nothing of where in the network it is); empty otherwise."""
    return SINGLE_LAYER if any(d.depth_from == SINGLE_LAYER for d in layer_depths(experiment).values()) else ""


def evenly_spaced_note(experiment: Experiment) -> str:
    """``evenly spaced: network not built here`` when the experiment's depths are not from its network's layer
    order (the reasons, once each); empty when they are."""
    reasons = dict.fromkeys(d.reason for d in layer_depths(experiment).values() if d.depth_from == EVENLY_SPACED)
    return f"evenly spaced: {'; '.join(reasons)}" if reasons else ""


def panel_key(experiment: Experiment, attribute: str) -> tuple[str, str, str]:
    """What one panel holds: (stimulus set, attribute, decoder (scoring) as it ran). Scores of different
    stimulus sets (the demo set and one's own; 400 images and 24) or of different scorings are never one
    attribute's lines on one axis."""
    return stimulus_set(experiment.params), attribute, ran(experiment, attribute)


def _panels(experiments: list[Experiment]) -> dict[tuple[str, str, str], list[tuple[Experiment, dict, Depths]]]:
    """:func:`panel_key` -> [(experiment, layer -> (mean, SEM), depths)], in the order the experiments list them."""
    panels: dict[tuple[str, str, str], list] = {}
    for experiment in experiments:
        depths = layer_depths(experiment)
        for attribute, scores in attribute_scores(experiment).items():
            panels.setdefault(panel_key(experiment, attribute), []).append((experiment, scores, depths[attribute]))
    return panels


def _colours(experiments: list[Experiment], param: str) -> list:
    """One colour per experiment, in their order: a gradient for a number (pca, C), else distinct hues."""
    n = len(experiments)
    numeric = all(isinstance(e.params.get(param), (int, float)) for e in experiments)
    if numeric or n > 20:
        return list(plt.get_cmap("viridis")(np.linspace(0, 0.9, n)))
    return list(plt.get_cmap("tab10" if n <= 10 else "tab20")(np.arange(n)))


def _inches(figure: plt.Figure, lines: list[str], points: float) -> float:
    """The width of the widest of `lines` (each may hold line breaks) at `points`, in inches."""
    renderer, font = figure.canvas.get_renderer(), FontProperties(size=points)
    widths = [renderer.get_text_width_height_descent(part, font, ismath=False)[0]
              for line in lines for part in line.split("\n") if part]
    return max(widths, default=0.0) / figure.dpi


def _draw_chance(axes: plt.Axes, lines: list, attribute: str, colours: dict[int, object]) -> None:
    """The attribute's chance level: one grey dashed line where the experiments agree (to 0.01), else one
    dashed line in each experiment's colour; a note where an experiment did not record it."""
    known = [(e, e.chance[attribute]) for e, *_ in lines if attribute in e.chance]
    if known and max(v for _, v in known) - min(v for _, v in known) <= 0.01:
        level = float(np.mean([v for _, v in known]))
        axes.axhline(level, color="grey", linestyle="--", linewidth=1)
        axes.annotate(f"chance {level:.2f}", (1.0, level), xycoords=("axes fraction", "data"), xytext=(-2, 2),
                      textcoords="offset points", ha="right", va="bottom", fontsize=7, color="grey")
    else:
        for experiment, level in known:
            axes.axhline(level, color=colours[id(experiment)], linestyle="--", linewidth=0.8, alpha=0.7)
    missing = [e.name for e, *_ in lines if attribute not in e.chance]
    if missing:  # accuracy's chance is the majority class's share: only the probe run knows the class counts
        which = "" if len(missing) == len(lines) else f" for {len(missing)} of this panel's {len(lines)} experiments"
        axes.text(0.99, 0.02, f"chance level unknown{which}: no `chance` read from metrics_detail.json",
                  transform=axes.transAxes, ha="right", va="bottom", fontsize=7, color="grey")


def _title(experiments: list[Experiment], param: str, varying: list[str], inches: float) -> str:
    def values(key: str) -> str:  # every experiment's value of a key, once each
        return ", ".join(dict.fromkeys(_text(e.params.get(key)) for e in experiments))

    by = f"network ({param} first)" if param in NETWORK_KEYS else param
    lines = [f"Decoding per layer across {len(experiments)} experiments, ordered and coloured by {by}"]
    if not any(key in varying for key in NETWORK_KEYS) and any("model.arch" in e.params for e in experiments):
        # one network (else the legend names each line's)
        lines.append(f"{values('model.source')} {values('model.arch')} ({values('model.weights')} weights)")
    sets = list(dict.fromkeys(stimulus_set(e.params) for e in experiments))
    if len(sets) == 1:  # else each panel's title names its stimulus set
        lines.append(f"stimuli: {sets[0]}")
    if all(e.params.get("stimuli.source") == "demo" for e in experiments):
        lines.append("built-in demo stimuli: a pipeline check, not a scientific finding")
    width = max(40, int(inches * 72 / (10 * 0.55)))  # characters of 10 points the figure's width holds
    return "\n".join(part for line in lines for part in textwrap.wrap(line, width=width))


def _x_label(panels: dict[str, list]) -> str:
    """What x is: the position in the network's layer order, or evenly spaced where that was not known here."""
    sources = {depths.depth_from for lines in panels.values() for *_, depths in lines} - {SINGLE_LAYER}
    if sources <= {EVENLY_SPACED}:
        return "relative depth: the layers probed spaced evenly, 0 = first (input side), 1 = last (network order not known here)"
    label = "relative depth: 0 = input side, 1 = last layer probed (position in the network's layer order)"
    return label + ("; evenly spaced where the legend says" if EVENLY_SPACED in sources else "")


def _slots(depths: tuple[float, ...]) -> float:
    """How many equal slots the narrowest gap between the ticks `depths` asks for (n evenly spaced: n)."""
    gaps = np.diff(sorted(depths))
    return round(1.0 / float(min(gaps)), 6) + 1 if len(gaps) and min(gaps) > 0 else float(len(depths))


def _draw_panel(axes: plt.Axes, key: tuple[str, str, str], lines: list, shared: list[str] | None, colours: dict,
                x_label: str, n: int, one_set: bool) -> None:
    """One attribute's panel: each experiment's line over relative depth with its SEM band, the chance
    level, and as ticks the layer names at their depths (`shared`: the one layer list of every experiment,
    at the same depths in each) or 0 .. 1; titled by the attribute, its decoder and scoring as they ran and
    (`one_set` false) the stimulus set; `n` experiments in all."""
    stimuli, attribute, measured = key
    for experiment, scores, depths in lines:
        order = np.argsort(depths.values, kind="stable")  # input side first, also for layers probed out of order
        mean, sem = (np.array([value[i] for value in scores.values()])[order] for i in (0, 1))
        x = np.array(depths.values)[order]
        axes.plot(x, mean, marker=colours[("marker", id(experiment))], markersize=3, color=colours[id(experiment)])
        axes.fill_between(x, mean - sem, mean + sem, color=colours[id(experiment)], alpha=0.15, linewidth=0)
    _draw_chance(axes, lines, attribute, colours)
    if shared:
        ticks = lines[0][2].values
        many = _slots(ticks) > 12  # vertical names in narrower slots
        axes.set_xticks(ticks, shared, rotation=90 if many else 45, ha="center" if many else "right", fontsize=TICK_POINTS)
    else:
        axes.set_xticks(np.linspace(0, 1, 5))
    axes.set_xlabel(x_label, fontsize=9)
    axes.set_xlim(-0.03, 1.03)
    ylabel = f"{measured.split(' (')[-1].rstrip(')')} (mean over folds, band: SEM)"
    axes.set_ylabel("\n".join(textwrap.wrap(ylabel, int(PANEL_INCHES * 72 / (9 * 0.55)))), fontsize=9)
    title = f"attribute: {attribute} · {measured}" + ("" if one_set else f" · stimuli: {stimuli}")
    title += f" · {len(lines)} of {n} experiments" if len(lines) < n else ""
    chars = int(axes.figure.get_size_inches()[0] * 0.6 * 72 / (10 * 0.55))  # the axes take most of the width
    axes.set_title("\n".join(textwrap.wrap(title, chars)), fontsize=10)
    axes.grid(axis="y", alpha=0.3)


def sweep_figure(experiments: list[Experiment], param: str | None = None) -> plt.Figure:
    """Score against relative depth (mean over folds, SEM band), one line per experiment coloured in
    `param` order (default :func:`default_param`), one panel per attribute, chance dashed."""
    param = param or default_param(experiments)
    experiments = order_by(experiments, param)
    varying = varying_params(experiments)
    panels = _panels(experiments)
    layer_lists = {tuple(scores) for lines in panels.values() for _, scores, _ in lines}
    depth_lists = {depths.values for lines in panels.values() for *_, depths in lines}
    # ticks named by the layers only where they stand at the same depths in every experiment
    shared = list(next(iter(layer_lists))) if len(layer_lists) == 1 and len(depth_lists) == 1 else None
    colours = dict(zip(map(id, experiments), _colours(experiments, param)))
    colours.update({("marker", id(e)): MARKERS[i // 10 % len(MARKERS)] if len(experiments) > 10 else "o"
                    for i, e in enumerate(experiments)})
    labels = [line_label(e, param, varying, None if shared else list(next(iter(attribute_scores(e).values()))))
              for e in experiments]
    labels = [label + "".join("\n" + "\n".join(textwrap.wrap(f"({note})", LEGEND_CHARACTERS))
                              for note in (evenly_spaced_note(e), single_layer_note(e)) if note)
              for e, label in zip(experiments, labels)]
    figure = plt.figure(layout="constrained")
    # Sizes from the texts themselves, so that constrained layout always has room: the legend beside the
    # panels, one slot per layer name (vertical beyond 12), the panels stacked.
    slots = _slots(next(iter(depth_lists))) if shared else 0.0  # the narrowest gap between two ticks, as slots
    many = slots > 12
    axes_width = max(6.0, (0.3 if many else 0.6) * slots + 1.0) if shared else 7.0
    legend_width = _inches(figure, labels, LEGEND_POINTS) + 1.0
    tick_height = 0.3 if not shared else _inches(figure, shared, TICK_POINTS) * (1.0 if many else 0.75) + 0.2
    legend_height = (sum(label.count("\n") + 1 for label in labels) + 1) * LEGEND_POINTS * 1.7 / 72 + 0.5
    width = axes_width + 1.2 + legend_width
    title = _title(experiments, param, varying, axes_width + 1.0)  # over the panels, clear of the legend
    height = max(len(panels) * (PANEL_INCHES + tick_height + 0.8) + 0.25 * (title.count("\n") + 1) + 0.3, legend_height)
    figure.set_size_inches(width, height)
    x_label = "\n".join(textwrap.wrap(_x_label(panels), int(axes_width * 72 / (9 * 0.6))))
    one_set = len({key[0] for key in panels}) == 1
    for axes, (key, lines) in zip(figure.subplots(len(panels), 1, squeeze=False)[:, 0], panels.items()):
        _draw_panel(axes, key, lines, shared, colours, x_label, len(experiments), one_set)
    handles = [Line2D([], [], color=colours[id(e)], marker=colours[("marker", id(e))], markersize=3, label=label)
               for e, label in zip(experiments, labels)]
    if any(e.chance for e in experiments):
        handles.append(Line2D([], [], color="grey", linestyle="--", linewidth=1, label="chance level"))
    figure.legend(handles=handles, loc="outside right upper", fontsize=LEGEND_POINTS)  # never over the lines
    figure.suptitle(title, fontsize=10, x=0.01, ha="left")
    return figure


def sweep_table(experiments: list[Experiment], param: str | None = None) -> str:
    """The figure's numbers as CSV: one row per experiment, attribute and layer, with the settings that
    vary, the network, the layer's relative depth and where it comes from (``network order`` or ``evenly
    spaced``), mean, SEM and the attribute's chance level (empty where it was not recorded)."""
    param = param or default_param(experiments)
    experiments = order_by(experiments, param)
    settings = [key for key in dict.fromkeys([param, *shown_settings(experiments)]) if key not in DECODER_KEYS]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["experiment", *settings, "network", "stimulus_set", "attribute", "decoder", "scoring", "layer",
                     "relative_depth", "depth_from", "mean", "sem", "chance"])
    for experiment in experiments:
        params = experiment.params  # the whole network, in ASCII: "torchvision alexnet, weights=random, seed=0, ..."
        network = ", ".join([f"{params.get('model.source', 'torchvision')} {params.get('model.arch', '?')}"]
                            + [f"{key.split('.')[1]}={_text(params[key])}" for key in NETWORK_KEYS[2:] if key in params])
        depths = layer_depths(experiment)
        for attribute, scores in attribute_scores(experiment).items():
            chance = experiment.chance.get(attribute)
            stimuli, _, measured = panel_key(experiment, attribute)
            decoder, _, scoring = measured.rstrip(")").partition(" (")  # as this attribute ran
            for (layer, (mean, sem)), depth in zip(scores.items(), depths[attribute].values):
                writer.writerow([experiment.name, *(_text(experiment.params.get(key)) for key in settings), network,
                                 stimuli, attribute, decoder, scoring, layer, f"{depth:.6f}", depths[attribute].depth_from, f"{mean:.6f}", f"{sem:.6f}",
                                 "" if chance is None else f"{chance:.6f}"])
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
        temp.write_text(table, encoding="utf-8")
    return [png_path, csv_path]


def _why(experiment: Experiment, note: str) -> str:
    """The reason an experiment's depths are evenly spaced, with the library's own line where its network
    was not built here."""
    why = note.removeprefix(f"{EVENLY_SPACED}: ")
    error = why_not_built(experiment.params.get("model.source"), experiment.params.get("model.arch"))
    return f"{why}: {error[:160]}" if NOT_BUILT in why and error else why


@click.command("sweep")
@click.option("--param", default=None, show_default="the network if it varies, else pca, else the first setting that varies",
              help="params.yaml key (dotted, e.g. probe.C) that orders and colours the lines.")
@click.option("--exp-show", "exp_show_path", type=click.Path(dir_okay=False), show_default="none: run it here",
              help="Saved `dvc exp show --json` output.")
@click.option("--all-commits", is_flag=True, show_default="off", help="Experiments of every commit, not only of HEAD.")
@click.option("--out", default=None, show_default="reports/sweep/sweep_<param>.png",
              help="PNG to write; a .csv goes beside it.")
def command(param, exp_show_path, all_commits, out):
    """Score per layer across DVC experiments (a queued pca sweep, several networks), one line per experiment."""
    try:
        exp_show = load_exp_show(exp_show_path) if exp_show_path else run_exp_show(".", all_commits)
        skipped: list[str] = []
        repeats: list[tuple[str, str]] = []
        experiments = experiments_from_exp_show(exp_show, None if exp_show_path else ".", skipped, repeats=repeats)
        param = param or default_param(experiments)
        paths = write_sweep(experiments, param, out or f"reports/sweep/sweep_{param}.png")
    except DnnprobeError as exc:
        click.echo(f"dnnprobe sweep: error: {exc}", err=True)
        sys.exit(1)
    if skipped:
        click.echo(f"sweep: left out (not finished or failed, no metrics of their own): {', '.join(skipped)}", err=True)
    for line in repeats_lines(repeats, "drawn"):
        click.echo(f"sweep: {line}", err=True)
    evenly = [f"{e.name} ({_why(e, note)})" for e in experiments if (note := evenly_spaced_note(e))]
    if evenly:
        click.echo(f"sweep: relative depth evenly spaced in the order probed, not from the network's layer order, for "
                   f"{len(evenly)} of {len(experiments)} experiments: {', '.join(evenly)}", err=True)
    click.echo(f"sweep: {len(experiments)} experiments -> " + ", ".join(str(p) for p in paths))
