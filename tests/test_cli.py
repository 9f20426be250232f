"""The command line: thin commands, one-line errors, non-zero exits."""

from __future__ import annotations

from click.testing import CliRunner

from helpers import REPO
from dnnprobe.cli import main


def test_bad_parameter_is_one_line_and_exit_1(tmp_path):
    result = CliRunner().invoke(main, ["network", "--params", str(REPO / "params.yaml"), "--set", "model.seed=-2",
                                       "--out", str(tmp_path / "n.pt")])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == ["dnnprobe network: error: " + f"{REPO / 'params.yaml'}: model.seed must be between 0 and 2**63 - 1, got -2"]
    assert not (tmp_path / "n.pt").exists()


def test_missing_inputs_are_one_line(tmp_path):
    result = CliRunner().invoke(main, ["extract", "--params", str(REPO / "params.yaml"),
                                       "--images", str(tmp_path / "images.sha256"), "--out", str(tmp_path / "a.h5")])
    assert result.exit_code == 1
    assert "image list not found" in result.output and result.output.count("\n") == 1
    result = CliRunner().invoke(main, ["check", "--params", str(REPO / "params.yaml"), "--table", str(tmp_path),
                                       "--out", str(tmp_path / "images.sha256")])
    assert result.exit_code == 1
    assert f"{tmp_path}: is a folder, not a stimulus table (.stim.csv)" in result.output
    assert result.output.count("\n") == 1


def test_not_found_in_a_temporary_experiment_says_why(tmp_path, monkeypatch):
    """`dvc exp run --temp` and queued experiments run in a copy that holds only tracked files."""
    copy = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpabc"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "repo"))
    result = CliRunner().invoke(main, ["check", "--params", str(REPO / "params.yaml"),
                                       "--table", "data/mine.stim.csv", "--out", "data/images.sha256"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert ("data/mine.stim.csv: stimulus table not found; this runs in a temporary copy of the repository, "
            "which holds only the files git tracks") in result.output


def test_help_lists_every_stage():
    result = CliRunner().invoke(main, ["--help"])
    for stage in ("params", "stimuli", "check", "network", "extract", "gram", "probe", "report"):
        assert stage in result.output


def test_every_option_of_every_command_says_what_it_does_and_its_default():
    import click

    group_context = click.Context(main)
    options = [(f"dnnprobe {name}", option, click.Context(command, parent=group_context))
               for name in main.list_commands(group_context)
               for command in [main.get_command(group_context, name)]
               for option in command.params if isinstance(option, click.Option)]
    options += [("dnnprobe", option, group_context) for option in main.params if isinstance(option, click.Option)]
    assert {where for where, _, _ in options} >= {f"dnnprobe {stage}" for stage in
                                                 ("stimuli", "check", "network", "extract", "gram", "probe", "report", "sweep")}
    for where, option, context in options:
        name = f"{where} {option.opts[0]}"
        assert option.help and option.help.strip() and "\n" not in option.help.strip(), f"{name}: no one-line help"
        default = option.to_info_dict()["default"]  # None where the option has none
        _, shown = option.get_help_record(context)
        shown = " ".join(shown.split())
        if default not in (None, False, (), "") and not option.is_flag:
            assert f"[default: {default}]" in shown, f"{name}: the help does not show its default {default!r}"
        elif option.opts[0] not in ("--help", "--version"):  # flags, repeatable options, options without a value
            assert "[default: " in shown, f"{name}: the help does not say what happens without it"
    # and as a person reads it
    result = CliRunner().invoke(main, ["probe", "--help"])
    assert result.exit_code == 0 and "[default: reports/metrics.json]" in " ".join(result.output.split())
