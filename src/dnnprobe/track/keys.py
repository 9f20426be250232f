"""The names MLflow accepts as metric and param keys: a layer name (or a label column) becomes part
of keys such as ``balanced_accuracy_mean/<layer>``, so a name MLflow would reject is refused before
any work."""

from __future__ import annotations

import re

from dnnprobe.core.errors import DnnprobeError

# MLflow accepts metric and param keys of letters, digits, '_', '-', '.', '/' and spaces, at most 250
# characters.
MLFLOW_KEY = re.compile(r"[\w\-. /]+", re.ASCII)
MAX_LAYER_NAME = 200  # leaves room for the longest prefix we put before it


def check_layer_names(layers, where: str) -> None:
    """Refuse, before any work, a layer name that MLflow would reject as part of a metric key."""
    for layer in layers:
        if not MLFLOW_KEY.fullmatch(layer) or len(layer) > MAX_LAYER_NAME:
            shown = layer if len(layer) <= 60 else layer[:57] + "..."
            raise DnnprobeError(
                f"{where}: layer name {shown!r} cannot be logged to MLflow (allowed: letters, digits, "
                f"_ - . / and spaces, at most {MAX_LAYER_NAME} characters); rename the layer")
