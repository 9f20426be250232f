"""The stage command wrapper (dnnprobe.core.command.stage_command): SIGTERM ends a stage with its temporaries
removed, and the process's own handler comes back when the stage returns."""

from __future__ import annotations

import signal

import pytest
from click.testing import CliRunner

from dnnprobe.core.command import stage_command
from dnnprobe.core.errors import DnnprobeError


def _stage(fail: bool):
    seen = {}

    @stage_command("demo")
    def demo(params, progress):
        seen["handler"] = signal.getsignal(signal.SIGTERM)
        if fail:
            raise DnnprobeError("bad input")

    return demo, seen


@pytest.mark.parametrize("fail, exit_code", [(False, 0), (True, 1)])
def test_a_stage_run_in_process_gives_back_the_sigterm_handler_it_found(tmp_path, monkeypatch, fail, exit_code):
    """A stage's handler (SIGTERM -> SystemExit, so temporaries are removed) is the stage's only: left behind, it
    went on in the caller and in every process the caller forked afterwards (the check stage's workers)."""
    monkeypatch.chdir(tmp_path)  # no dvc.yaml: no output folders to clean

    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        command, seen = _stage(fail)
        result = CliRunner().invoke(command, ["--quiet"])
        assert result.exit_code == exit_code, result.output
        assert seen["handler"] is not mine and seen["handler"] is not signal.SIG_DFL  # the stage's, while it ran
        with pytest.raises(SystemExit):
            seen["handler"](signal.SIGTERM, None)
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)
