"""``dnnprobe``, the command for people: ``dnnprobe <stage>`` runs a pipeline stage by hand, exactly as
``python -m dnnprobe.stages.<stage>`` (what dvc.yaml runs) does; ``dnnprobe sweep`` (a figure) and
``dnnprobe compare`` (a table) compare experiments; ``dnnprobe layers`` lists what a network can record.

Commands are imported only when run, so ``dnnprobe --help`` is quick. No stage depends on this module.
"""

from __future__ import annotations

import importlib

import click

STAGES = ("params", "stimuli", "check", "network", "extract", "gram", "probe", "report", "similarity")
COMMANDS = {**{stage: f"dnnprobe.stages.{stage}" for stage in STAGES}, "sweep": "dnnprobe.experiments.sweep",
            "compare": "dnnprobe.experiments.compare", "layers": "dnnprobe.network.layer_table",
            "cluster": "dnnprobe.experiments.cluster"}


class _Commands(click.Group):
    """A click group whose commands live in other modules, each imported when asked for."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        module = COMMANDS.get(name)
        return importlib.import_module(module).command if module else None


@click.group(cls=_Commands)
@click.version_option(package_name="dnnprobe")
def main():
    """Which layer of a deep network explicitly encodes a stimulus attribute?

    The pipeline (dvc.yaml): params, then stimuli -> check -> network -> extract -> gram -> probe -> report;
    gram -> similarity.
    """


if __name__ == "__main__":
    main()
