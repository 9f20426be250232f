"""Stage ``params``: params.yaml validated as a whole, first, whenever the file changes.

DVC reruns a stage only when a parameter listed under its ``params:`` changes. A key no stage lists (a
typo, or a key at the wrong level, ``classifier: ridge`` meant as ``probe.classifier``) would pass
without a word: ``dvc repro`` would say "up to date" and ``dvc exp run`` would record an experiment
identical to its baseline under the new setting's name. This stage depends on the file itself, so any
edit runs it, and it refuses what every stage refuses (unknown keys, wrong types, out-of-range values),
in one line naming the key. It writes nothing.
"""

from __future__ import annotations

import click

from dnnprobe.core.command import stage_command


@stage_command("params")
def command(params, progress):
    """Check params.yaml as a whole: every key known, every value in range."""
    click.echo(f"params: {len(params.flat())} settings, every key known and every value in range")


if __name__ == "__main__":
    command()
