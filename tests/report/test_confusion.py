"""The confusion-matrix figure: readable, and small enough to open, at any class count."""

from __future__ import annotations

import numpy as np


def test_the_confusion_figure_is_readable_at_any_class_count(tmp_path):
    """150 classes drew a 13,800 px square PNG that PIL refuses to open (and past ~725 matplotlib failed):
    beyond 30 classes the matrix is drawn without cell text, beside the most frequent confusions."""
    from PIL import Image

    from dnnprobe.report.confusion import confusion_figure
    from dnnprobe.report.save import save_figure

    n = 150
    conf_m = np.zeros((3, n, n), dtype=np.int64)
    conf_m[:, range(n), range(n)] = 8
    conf_m[0, 7, 42] = 5  # the most frequent confusion: 5 of class 7's 29 stimuli taken for class 42
    names = [f"class {i}" for i in range(n)]
    png, svg = save_figure(confusion_figure(conf_m, names, "fc2"), tmp_path / "confusion")
    with Image.open(png) as image:
        assert image.size[0] <= 2000 and image.size[1] <= 1200
        image.load()
    text = svg.read_text()
    assert "class 7 \u2192 class 42 (5)" in text and "150 classes" in text
    assert svg.stat().st_size < 1_000_000
