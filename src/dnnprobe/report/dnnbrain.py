"""DNNBrain's published decoding accuracies (its Figure 1), drawn in the report's figure against a run of
the same setting: a check that dnnprobe reproduces them."""

from __future__ import annotations

# DNNBrain's published values (read off its Figure 1, +-0.005): AlexNet, ImageNet weights,
# BOLD5000 animate vs inanimate, PCA 100, 10-fold CV.
DNNBRAIN_PUBLISHED = {
    "conv1": 0.61, "conv2": 0.71, "conv3": 0.765, "conv4": 0.815, "conv5": 0.85, "fc1": 0.88, "fc2": 0.885,
    "conv1_relu": 0.705, "conv2_relu": 0.77, "conv3_relu": 0.81, "conv4_relu": 0.845, "conv5_relu": 0.865,
    "fc1_relu": 0.89, "fc2_relu": 0.90,
}
# The run those values come from; only such a run is drawn against them.
TUTORIAL_RUN = {"arch": "alexnet", "weights": "imagenet", "source": "bold5000", "pca": 100, "cv": 10,
                "classifier": "logistic", "scoring": "accuracy"}


def is_tutorial_run(summary: dict) -> bool:
    """Whether a probe summary is of DNNBrain's tutorial setting, the one its published values are for."""
    return all(summary.get(key) == value for key, value in TUTORIAL_RUN.items())
