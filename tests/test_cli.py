"""The command line: thin commands, one-line errors, non-zero exits."""

from __future__ import annotations

from click.testing import CliRunner

from conftest import REPO
from dnnprobe.cli import main


def test_bad_parameter_is_one_line_and_exit_1(tmp_path):
    result = CliRunner().invoke(main, ["network", "--params", str(REPO / "params.yaml"), "--set", "probe.C=-2",
                                       "--out", str(tmp_path / "n.pt")])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == ["dnnprobe network: error: " + f"{REPO / 'params.yaml'}: probe.C must be > 0, got -2.0"]
    assert not (tmp_path / "n.pt").exists()


def test_missing_table_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["extract", "--params", str(REPO / "params.yaml"),
                                       "--table", str(tmp_path / "none.stim.csv"), "--out", str(tmp_path / "a.h5")])
    assert result.exit_code == 1
    assert "stimulus table not found" in result.output and result.output.count("\n") == 1


def test_help_lists_every_stage():
    result = CliRunner().invoke(main, ["--help"])
    for stage in ("stimuli", "network", "extract", "gram", "probe", "report"):
        assert stage in result.output
