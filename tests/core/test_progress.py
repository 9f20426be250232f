"""Progress in a captured log (not a terminal): a line per step, never one long line of redraws."""

from __future__ import annotations

import io
import json
import sys

from click.testing import CliRunner

from helpers import REPO, TINY_SETS
from dnnprobe.core.progress import progress_bar


def test_a_captured_progress_bar_writes_whole_lines_about_every_tenth(monkeypatch):
    captured = io.StringIO()  # not a terminal: isatty() is False
    monkeypatch.setattr(sys, "stderr", captured)
    assert list(progress_bar(range(50), desc="extract", unit="batch")) == list(range(50))
    lines = captured.getvalue().splitlines()
    assert "\r" not in captured.getvalue()
    assert 10 <= len(lines) <= 13 and all(line.startswith("extract: ") for line in lines), lines
    assert "50/50" in lines[-1] and "100%" in lines[-1] and "50/50" not in lines[-2]  # the last count once


def test_a_stage_run_with_its_output_captured_logs_progress_as_lines(tmp_path, tiny_activations):
    from dnnprobe.cli import main

    options = ["--params", str(REPO / "params.yaml"), *[a for s in TINY_SETS for a in ("--set", s)]]
    result = CliRunner().invoke(main, ["gram", *options, "--activations", str(tiny_activations),
                                       "--out", str(tmp_path / "g.h5")])
    assert result.exit_code == 0, result.output
    assert "\r" not in result.stderr
    progress = [line for line in result.stderr.splitlines() if line.startswith("gram: ")]
    assert len(progress) >= 2 and "100%" in progress[-1], result.stderr


def test_the_permutation_null_has_its_own_progress_counted_in_shuffles(tmp_path, monkeypatch, tiny_stimuli, tiny_gram,
                                                                    tiny_activations):
    """Thousands of refits per layer can take far longer than the layer itself: counted per fold, in shuffles."""
    from dnnprobe.stages.probe import probe
    from helpers import tiny_params

    captured = io.StringIO()
    monkeypatch.setattr(sys, "stderr", captured)
    params = tiny_params(**{"probe.permutations": 20})
    probe(params, tiny_stimuli, tiny_gram, tiny_activations, tmp_path / "probe", tmp_path / "metrics.json",
          tmp_path / "probes", progress=True)
    lines = [line for line in captured.getvalue().splitlines() if line.startswith("permutations: ")]
    total = len(json.loads((tmp_path / "metrics.json").read_text())) * params.cv * 20
    assert len(lines) >= 2 and f"{total}/{total}" in lines[-1] and "100%" in lines[-1], captured.getvalue()
