"""``dnnprobe``: one click command per pipeline stage, each a thin shell over :mod:`dnnprobe.stages`.

Every command reads params.yaml (``--params``), accepts ``--set key.path=value`` overrides (as
``dvc exp run -S`` does), validates all parameters before any work, and reports bad input as one
line on stderr with exit status 1. SIGTERM is turned into an exception so that temporaries are
removed, as they are on Ctrl-C.
"""

from __future__ import annotations

import functools
import signal
import sys
import time
from pathlib import Path

import click

from dnnprobe.atomic import remove_orphaned_temporaries
from dnnprobe.errors import DnnprobeError
from dnnprobe.params import load_params


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def output_folders(dvc_yaml: Path = Path("dvc.yaml")) -> list[Path]:
    """The folders that hold the pipeline's outputs (every stage's outs, metrics and plots in dvc.yaml)."""
    import yaml

    try:
        stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {})
    except (OSError, yaml.YAMLError, AttributeError):
        return []
    folders = set()
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind) or []:
                for path in entry if isinstance(entry, dict) else [entry]:
                    folders.add(Path(str(path)).parent)
    return sorted(folders)


def stage_command(function):
    """Load params, run the stage, and turn DnnprobeError into a one-line message and exit 1."""

    @click.option("--params", "params_path", default="params.yaml", show_default=True,
                  help="Parameter file (it must exist).")
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                  help="Override a parameter, e.g. --set pca=50 (repeatable).")
    @click.option("--quiet", is_flag=True, help="No progress bars.")
    @functools.wraps(function)
    def wrapper(params_path, overrides, quiet, **kwargs):
        signal.signal(signal.SIGTERM, _terminate)
        name = function.__name__.rstrip("_")
        started = time.perf_counter()
        try:
            # A stage killed earlier (SIGKILL, out of memory) left its temporary; DVC may never rerun that
            # stage (its run cache restores it), so every stage cleans up after any dead one.
            remove_orphaned_temporaries(output_folders())
            params = load_params(params_path, overrides)
            function(params, progress=not quiet, **kwargs)
        except DnnprobeError as exc:
            click.echo(f"dnnprobe {name}: error: {exc}", err=True)
            sys.exit(1)
        click.echo(f"dnnprobe {name}: done in {time.perf_counter() - started:.1f} s", err=True)

    return wrapper


@click.group()
@click.version_option(package_name="dnnprobe")
def main():
    """Which layer of a deep network explicitly encodes a stimulus attribute?

    The pipeline (dvc.yaml): stimuli -> check -> network -> extract -> gram -> probe -> report.
    """


@main.command()
@click.option("--table", default="data/stimuli.stim.csv", show_default=True, help="Stimulus table to write.")
@click.option("--images", default="data/images", show_default=True, help="Image folder to write.")
@stage_command
def stimuli(params, progress, table, images):
    """Write the stimulus table (.stim.csv) and its images, from stimuli.source."""
    from dnnprobe.stages import make_stimuli

    written = make_stimuli(params, table, images)
    click.echo(f"stimuli: {len(written)} stimuli from source {params.stimuli.source} -> {table}, {images}/")


@main.command()
@click.option("--out", default="models/network.pt", show_default=True, help="state_dict to write (+ .json sidecar).")
@stage_command
def network(params, progress, out):
    """Save the network's weights (model.arch, model.weights, model.seed) under models/."""
    from dnnprobe.stages import make_network

    info = make_network(params, out)
    click.echo(f"network: {info.arch} weights {info.source_name} sha256 {info.sha256[:12]} -> {out}")


@main.command()
@click.option("--table", default="data/stimuli.stim.csv", show_default=True, help="Stimulus table to check.")
@click.option("--out", default="data/images.sha256", show_default=True,
              help="Image list to write (sha256 of each image, in table order), next to the image folder.")
@stage_command
def check(params, progress, table, out):
    """Check the table against the probe's settings before any expensive stage; write the image list."""
    from dnnprobe.stages import check as run_check

    images = run_check(params, table, out)
    click.echo(f"check: {len(images)} stimuli; pca, cv and {params.probe.label!r} fit -> {out}")


@main.command()
@click.option("--images", "image_list", default="data/images.sha256", show_default=True,
              help="Image list from the check stage (its images are in the folder of the same name).")
@click.option("--network", "network_path", default="models/network.pt", show_default=True)
@click.option("--out", default="data/activations.act.h5", show_default=True)
@stage_command
def extract(params, progress, image_list, network_path, out):
    """One forward pass; every layer in extract.layers to one DNNBrain .act.h5."""
    from dnnprobe.stages import extract as run_extract

    summary = run_extract(params, image_list, network_path, out, progress=progress)
    for note in summary.notes:
        click.echo(note, err=True)
    click.echo(f"extract: {summary.n_stimuli} stimuli on {summary.device}, "
               f"{summary.images_per_second:.1f} images/s -> {out}")


@main.command()
@click.option("--activations", default="data/activations.act.h5", show_default=True)
@click.option("--out", default="data/gram.h5", show_default=True)
@stage_command
def gram(params, progress, activations, out):
    """Per-layer Gram matrices of the activations (the probe's cache)."""
    from dnnprobe.stages import gram as run_gram

    layers = run_gram(activations, out, progress=progress)
    click.echo(f"gram: {len(layers)} layers -> {out}")


@main.command()
@click.option("--table", default="data/stimuli.stim.csv", show_default=True)
@click.option("--gram", "gram_path", default="data/gram.h5", show_default=True)
@click.option("--activations", default="data/activations.act.h5", show_default=True)
@click.option("--out", default="reports/probe", show_default=True)
@click.option("--metrics", default="reports/metrics.json", show_default=True)
@click.option("--models", default="models/probes", show_default=True)
@stage_command
def probe(params, progress, table, gram_path, activations, out, metrics, models):
    """Cross-validated PCA + decoding of probe.label per layer; logged to MLflow."""
    from dnnprobe.stages import probe as run_probe
    from dnnprobe.tracking import tracking_uri

    summary = run_probe(params, table, gram_path, activations, out, metrics, models, progress=progress)
    best = max(summary["layers"], key=lambda layer: summary["layers"][layer]["mean"])
    click.echo(f"probe: best layer {best} ({params.probe.scoring} {summary['layers'][best]['mean']:.3f}); "
               f"MLflow store {tracking_uri()}")


@main.command()
@click.option("--probe", "probe_dir", default="reports/probe", show_default=True)
@click.option("--figures", default="reports/figures", show_default=True)
@click.option("--plot", default="reports/plots/layer_scores.csv", show_default=True)
@stage_command
def report(params, progress, probe_dir, figures, plot):
    """The Conv-vs-ReLU figure (PNG, SVG), a confusion figure and DVC plot data."""
    from dnnprobe.stages import report as run_report

    paths = run_report(params, probe_dir, figures, plot)
    click.echo("report: " + ", ".join(str(p) for p in paths))


@main.command()
@click.option("--param", default="pca", show_default=True,
              help="params.yaml key (dotted, e.g. probe.C) that orders and colours the lines.")
@click.option("--exp-show", "exp_show_path", type=click.Path(dir_okay=False),
              help="Saved `dvc exp show --json` output; by default it is run here.")
@click.option("--all-commits", is_flag=True, help="Experiments of every commit, not only of HEAD.")
@click.option("--out", default=None, help="PNG to write [default: reports/sweep/sweep_<param>.png]; a .csv goes beside it.")
def sweep(param, exp_show_path, all_commits, out):
    """Score per layer across DVC experiments (e.g. a queued pca sweep), one line per experiment."""
    from dnnprobe import sweep as sweeps

    try:
        exp_show = sweeps.load_exp_show(exp_show_path) if exp_show_path else sweeps.run_exp_show(".", all_commits)
        experiments = sweeps.experiments_from_exp_show(exp_show)
        paths = sweeps.write_sweep(experiments, param, out or f"reports/sweep/sweep_{param}.png")
    except DnnprobeError as exc:
        click.echo(f"dnnprobe sweep: error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"sweep: {len(experiments)} experiments -> " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
