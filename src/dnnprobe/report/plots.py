"""The report stage's DVC plot data, ``reports/plots/layer_scores.csv``: the score per depth, Conv and
ReLU, with SEM, drawn by ``dvc plots show`` / ``dvc plots diff`` with the template
``.dvc/plots/layer_scores.json``."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from dnnprobe.probe.pairing import depth_groups

DEFAULT_ARCH = "alexnet"  # model.arch's default (ModelParams.arch): its depth names stay Conv1 .. FC2


def network_name(arch: str | None) -> str:
    """The network as a depth name ends, ``vit_tiny_patch16_224``; a folder or file (an ``hf`` or ``local``
    network) by its last part; empty for the default network, or where the summary does not say."""
    if not arch or arch == DEFAULT_ARCH:
        return ""
    return Path(str(arch).rstrip("/\\")).name


def plot_rows(summary: dict) -> list[dict]:
    """The DVC plot table: one row per layer, in depth order, Conv before ReLU.

    ``depth`` is the x axis label (Conv1..FC2), followed by the network for any network but the default
    (``block1 (vit_tiny_patch16_224)``), so that in ``dvc plots diff`` layers of different networks never
    share a depth (a ViT's ``block3`` and DINOv2's ``block3`` are not at the same depth), ``type`` the series (Conv: the layer's output before
    the ReLU; ReLU: after it), ``score`` the mean fold score and ``sem`` its SEM over folds; ``layer``
    is the layer's own name (conv1_relu), ``scoring`` what the score is (accuracy, r2, ...) and
    ``settings`` what differs from the defaults (``pca=50 classifier=ridge``), which labels the line in
    ``dvc plots diff`` beside DVC's name for the experiment.
    """
    metrics = summary["layers"]
    rows = []
    groups = depth_groups(summary["layer_order"])
    network = network_name(summary.get("arch"))
    single = not any(g.conv and g.relu for g in groups)  # no _relu partners (a ViT's blocks): one series
    for group in groups:
        for kind, layer in (("layer" if single else "Conv", group.conv), ("ReLU", group.relu)):
            if layer:
                rows.append({"depth": f"{group.label} ({network})" if network else group.label, "type": kind, "layer": layer, "score": round(metrics[layer]["mean"], 6),
                             "sem": round(metrics[layer]["sem"], 6), "scoring": summary["scoring"],
                             "settings": summary.get("settings", "")})
    return rows


def write_plot_csv(attributes: dict | list[tuple[str | None, dict]], path: Path) -> None:
    """The DVC plot table of a summary, or of each attribute's (``(name, summary)`` pairs, from
    :func:`dnnprobe.probe.stats.attribute_summaries`): then ``scoring`` also names the attribute, ``accuracy
    (animacy)``, so that ``dvc plots show`` draws one series per attribute."""
    if isinstance(attributes, dict):
        attributes = [(None, attributes)]
    rows = []
    for name, summary in attributes:
        for row in plot_rows(summary):
            rows.append({**row, "scoring": f"{row['scoring']} ({name})"} if name else row)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue())
