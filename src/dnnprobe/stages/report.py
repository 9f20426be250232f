"""Stage ``report``: DNNBrain's Conv-vs-ReLU figure, a confusion figure and the DVC plot table, from
the probe's results; attached to the probe's MLflow run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import numpy as np

from dnnprobe.core.atomic import atomic_output, claim
from dnnprobe.core.command import stage_command
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.hashing import text_sha256
from dnnprobe.core.params import schema
from dnnprobe.probe.stats import attribute_summaries
from dnnprobe.report.confusion import confusion_figure
from dnnprobe.report.figure import conv_vs_relu_figure
from dnnprobe.report.plots import write_plot_csv
from dnnprobe.report.save import save_figure
from dnnprobe.report.params import ReportParams
from dnnprobe.track.params import TrackingParams

Params = schema(ReportParams, TrackingParams)  # the sections of params.yaml this stage reads


def _read_summary(probe_dir: Path) -> tuple[dict, str]:
    """The probe's summary.json, and the sha256 of its text (how the report finds the MLflow run)."""
    path = probe_dir / "summary.json"
    try:
        text = path.read_text()
        summary = json.loads(text)
        if not isinstance(summary, dict) or "layer_order" not in summary or not {"layers", "attributes"} & set(summary):
            raise ValueError("no 'layers' and 'layer_order'")
    except FileNotFoundError:
        raise DnnprobeError(f"{path}: missing; run the probe stage first") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        raise DnnprobeError(f"{path}: not a probe summary ({reason}); rerun the probe stage") from None
    return summary, text_sha256(text)


def report(
    params: Params,
    probe_dir: str | os.PathLike,
    figures_dir: str | os.PathLike,
    plot_path: str | os.PathLike,
) -> list[Path]:
    """The Conv-vs-ReLU figure, a confusion-matrix figure and the DVC plot table.

    They are attached to the MLflow run that produced exactly these probe results (found by the sha256
    of summary.json in ``tracking.experiment``); without such a run they are only written, with a warning.
    A store or artifact location that cannot take them is refused before anything is written.
    """
    from dnnprobe.track import lookup, store

    probe_dir = Path(probe_dir)
    summary, summary_sha256 = _read_summary(probe_dir)
    store.check_store(params.tracking.experiment)  # before any figure is drawn
    layer = params.report.confusion_layer or summary["layer_order"][-1]
    if layer not in summary["layer_order"]:
        raise DnnprobeError(
            f"params.yaml: report.confusion_layer {layer!r} was not probed (layers: {', '.join(summary['layer_order'])})"
        )
    # One figure of each kind per decoded attribute (probe.label a list): <kind>_<label>.png.
    attributes = attribute_summaries(summary)
    with claim(figures_dir, plot_path), atomic_output(figures_dir, directory=True) as temp:
        paths = []
        for name, part in attributes:
            suffix = f"_{name}" if name else ""
            folder = probe_dir / name if name else probe_dir
            try:
                paths += save_figure(conv_vs_relu_figure(part), temp / f"conv_vs_relu{suffix}")
            except KeyError as exc:  # valid JSON, but not what the probe writes
                raise DnnprobeError(f"{probe_dir / 'summary.json'}: not a probe summary (no {exc}); rerun the probe stage") from None
            conf_path = folder / layer / "conf_m.npy"
            if conf_path.is_file():
                conf_m = np.load(conf_path, allow_pickle=False)
                paths += save_figure(
                    confusion_figure(conf_m, part.get("class_names", []), layer), temp / f"confusion{suffix}")
    with atomic_output(plot_path) as temp_plot:
        write_plot_csv(attributes, temp_plot)
    final = [Path(figures_dir) / p.name for p in paths]
    warning = lookup.log_artifacts_to_probe_run(params.tracking.experiment, summary_sha256,
                                                final + [Path(plot_path)], "report")
    if warning:
        print(f"dnnprobe report: warning: {warning}")
    return final


@click.option("--probe", "probe_dir", default="reports/probe", show_default=True, help="The probe stage's results.")
@click.option("--figures", default="reports/figures", show_default=True, help="Folder for the figures.")
@click.option("--plot", default="reports/plots/layer_scores.csv", show_default=True, help="DVC plot table to write.")
@stage_command("report", Params)
def command(params, progress, probe_dir, figures, plot):
    """The Conv-vs-ReLU figure (PNG, SVG), a confusion figure and DVC plot data."""
    paths = report(params, probe_dir, figures, plot)
    click.echo("report: " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    command()
