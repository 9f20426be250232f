"""The report: DNNBrain's figure layout, DVC plot data, reproducible files."""

from __future__ import annotations

import json

import pytest

from conftest import tiny_params
from dnnprobe.report import plot_rows
from dnnprobe.stages.probe import probe
from dnnprobe.stages.report import report




@pytest.fixture
def probed(tmp_path, tiny_stimuli, tiny_gram, tiny_activations):
    params = tiny_params()
    probe(params, tiny_stimuli, tiny_gram, tiny_activations, tmp_path / "probe", tmp_path / "metrics.json",
          tmp_path / "probes", progress=False)
    return params, tmp_path


def test_report_writes_figures_and_plot_table_reproducibly(probed):
    params, folder = probed
    paths = report(params, folder / "probe", folder / "figures", folder / "plots" / "s.csv")
    names = sorted(p.name for p in paths)
    assert names == ["confusion.png", "confusion.svg", "conv_vs_relu.png", "conv_vs_relu.svg"]
    first = {p.name: p.read_bytes() for p in paths}
    report(params, folder / "probe", folder / "figures", folder / "plots" / "s.csv")
    assert {p.name: p.read_bytes() for p in (folder / "figures").iterdir()} == first
    rows = (folder / "plots" / "s.csv").read_text().splitlines()
    assert rows[0] == "depth,layer,conv,conv_sem,relu,relu_sem" and len(rows) == 8
    summary = json.loads((folder / "probe" / "summary.json").read_text())
    assert plot_rows(summary)[0]["layer"] == "Conv1"
    svg = (folder / "figures" / "conv_vs_relu.svg").read_text()
    for text in ("alexnet", "random weights", "PCA 4", "3-fold", "pipeline check"):
        assert text in svg, text
