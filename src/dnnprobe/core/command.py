"""What every stage command does around its work: read params.yaml, clean up after dead runs, and
report bad input as one line.

Each stage module (:mod:`dnnprobe.stages`) declares its click command with :func:`stage_command`;
``python -m dnnprobe.stages.<stage>`` (what dvc.yaml runs) and ``dnnprobe <stage>`` run the same code.
"""

from __future__ import annotations

import functools
import signal
import sys
import time
from pathlib import Path

import click

from dnnprobe.core.atomic import remove_orphaned_temporaries
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.params import load


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


def stage_command(name: str, params_schema: type | None = None, every_key: bool = False):
    """Decorator: a click command named `name` that runs ``function(params, progress=..., **options)``.

    `params` holds the params.yaml sections the stage reads, `params_schema` (made by
    :func:`dnnprobe.core.params.schema`); other sections' keys are left to the params stage, which checks
    the whole file (`every_key`). Option --quiet is added, and --params and --set for a stage that reads
    parameters; one that does not (no `params_schema`) gets ``params=None`` and needs no file. SIGTERM
    and Ctrl-C end the stage with its temporaries removed; a DnnprobeError becomes ``dnnprobe <name>: error: <message>`` and exit 1.
    """

    def decorate(function):
        @functools.wraps(function)
        def command(quiet, params_path="params.yaml", overrides=(), **options):
            # The previous handler comes back afterwards: a stage run in-process (a notebook, the tests) must
            # not leave it to the caller, nor to processes the caller forks later.
            previous_handler = signal.signal(signal.SIGTERM, _terminate)
            started = time.perf_counter()
            try:
                # A stage killed earlier (SIGKILL, out of memory) left its temporary; DVC may never rerun
                # that stage (its run cache restores it), so every stage cleans up after any dead one.
                remove_orphaned_temporaries(output_folders())
                params = load(params_schema, params_path, overrides, every_key) if params_schema else None
                function(params, progress=not quiet, **options)
            except DnnprobeError as exc:
                click.echo(f"dnnprobe {name}: error: {exc}", err=True)
                sys.exit(1)
            finally:
                if previous_handler is not None:  # None: set outside Python, which cannot be restored from here
                    signal.signal(signal.SIGTERM, previous_handler)
            click.echo(f"dnnprobe {name}: done in {time.perf_counter() - started:.1f} s", err=True)

        command = click.option("--quiet", is_flag=True, show_default="off", help="No progress bars.")(command)
        if params_schema:
            command = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", show_default="none",
                                   help="Override a parameter, e.g. --set pca=50 (repeatable).")(command)
            command = click.option("--params", "params_path", default="params.yaml", show_default=True,
                                   help="Parameter file (it must exist).")(command)
        return click.command(name, help=function.__doc__)(command)

    return decorate
