"""`dnnprobe compare`: every layer and every setting that differs, in any terminal width (synthetic, fast;
tests/pipeline/test_pipeline.py runs it on two real experiments)."""

from __future__ import annotations

import math

from dnnprobe.experiments.compare import compare_table
from dnnprobe.experiments.exp_show import Experiment

LAYERS = ["conv1", "conv1_relu", "conv2", "conv2_relu", "fc1", "fc1_relu"]


def experiment(name: str, pca: int, classifier: str, shift: float) -> Experiment:
    params = {"pca": pca, "cv": 10, "probe.classifier": classifier, "probe.C": 1.0}
    scores = {layer: (0.5 + shift + i / 100, 0.01) for i, layer in enumerate(LAYERS)}
    return Experiment(name, params, "accuracy", scores)


def test_every_layer_and_every_differing_setting_is_shown_within_the_width():
    experiments = [experiment(f"exp-{i}", 10 * (i + 1), "ridge" if i % 2 else "logistic", i / 100) for i in range(12)]
    for width in (300, 80, 40):
        text = compare_table(experiments, width)
        assert max(len(line) for line in text.splitlines()) <= width
        tables = text.strip().split("\n\n")
        # rows named up to 17 characters ("attribute label"), columns 21 ("logistic (accuracy)")
        assert len(tables) == math.ceil(12 / max(1, (width - 17) // 21))  # as many as needed
        shown = []
        for table in tables:
            rows = {line.split()[0]: line.split()[1:] for line in table.splitlines() if line.strip()}
            assert set(LAYERS) | {"pca", "attribute"} <= set(rows)  # every row in every table
            assert "probe.classifier" not in rows  # as each attribute ran: "attribute label  ridge (accuracy)"
            assert "cv" not in rows and "probe.C" not in rows  # the same everywhere: not a difference
            shown += rows["experiment"]
            for column, name in enumerate(rows["experiment"]):
                i = int(name.split("-")[1])
                assert rows["pca"][column] == str(10 * (i + 1))
                assert rows["fc1_relu"][column] == f"{0.5 + i / 100 + 5 / 100:.3f}"
        assert shown == [e.name for e in experiments]  # each experiment once, in order
