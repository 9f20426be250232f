"""Stage ``params``: params.yaml validated as a whole, first, whenever the file changes.

DVC reruns a stage only when a parameter listed under its ``params:`` changes. A key no stage lists (a
typo, or a key at the wrong level, ``classifier: ridge`` meant as ``probe.classifier``) would pass
without a word: ``dvc repro`` would say "up to date" and ``dvc exp run`` would record an experiment
identical to its baseline under the new setting's name. This stage depends on the file itself, so any
edit runs it, and it refuses, in one line naming the key, what the stages would (wrong types,
out-of-range values in every part's section) and what no stage reads (unknown keys). It writes nothing.

Each other stage reads and checks only its own sections. This module is the one place that composes
them all (:data:`Params`, :func:`load_params`: the whole file, for the tests, the sweep and the
benchmarks); it is not in :mod:`dnnprobe.core.params`, which every stage imports, so that a stage does
not depend on the other parts' sections.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dnnprobe.core.command import stage_command
from dnnprobe.core.params import load, schema
from dnnprobe.extract.params import ExtractParams
from dnnprobe.gram.params import GramParams
from dnnprobe.network.params import ModelParams
from dnnprobe.probe.params import FoldParams, ProbeParams
from dnnprobe.report.params import ReportParams
from dnnprobe.stimuli.params import StimuliParams
from dnnprobe.track.params import TrackingParams

# params.yaml's order: pca, cv, stimuli, model, extract, gram, probe, report, tracking
SECTIONS = (FoldParams, StimuliParams, ModelParams, ExtractParams, GramParams, ProbeParams, ReportParams,
            TrackingParams)
Params = schema(*SECTIONS)


def load_params(path: str | Path = "params.yaml", overrides: tuple[str, ...] = ()) -> Any:
    """The whole params file, every section, validated; an unknown key is refused (:func:`dnnprobe.core.params.load`)."""
    return load(Params, path, overrides, every_key=True)


@stage_command("params", Params, every_key=True)
def command(params, progress):
    """Check params.yaml as a whole: every key known, every value in range."""
    click.echo(f"params: {len(params.flat())} settings, every key known and every value in range")


if __name__ == "__main__":
    command()
