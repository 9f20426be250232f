"""The sweep figure (synthetic, fast; tests/pipeline/test_sharing.py draws it from real experiments)."""

from __future__ import annotations


def test_sweep_figure_of_48_layers_stays_readable():
    """A 48-block transformer across three experiments: vertical, non-colliding layer names, within ~22 inches."""
    import matplotlib.pyplot as plt

    from dnnprobe.experiments.exp_show import Experiment
    from dnnprobe.experiments.sweep import sweep_figure

    layers = [f"block{i}" for i in range(1, 49)]
    experiments = [Experiment(f"exp-{pca}", {"pca": pca}, "accuracy", {layer: (0.6, 0.01) for layer in layers})
                   for pca in (10, 50, 100)]
    figure = sweep_figure(experiments, "pca")
    figure.canvas.draw()
    axes = figure.axes[0]
    renderer = figure.canvas.get_renderer()
    ticks = [label.get_window_extent(renderer) for label in axes.get_xticklabels()]
    assert [label.get_text() for label in axes.get_xticklabels()] == layers
    assert not any(a.overlaps(b) for a, b in zip(ticks, ticks[1:])), "layer names collide"
    assert figure.get_size_inches()[0] <= 0.3 * 48 + 7 + 1e-9
    plt.close(figure)
