"""The model section: each value checked, in one line naming the key."""

from __future__ import annotations

import re

import pytest

from helpers import REPO
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.params import load, schema
from dnnprobe.network.params import ModelParams


@pytest.mark.parametrize("override, message", [
    ("model.seed=true", "model.seed must be an integer"),
    ("model.seed=99999999999999999999", "model.seed must be between 0 and 2**63 - 1, got 99999999999999999999"),
    ("model.seed=-3", "model.seed must be between 0 and 2**63 - 1, got -3"),
    ("model.source=keras", "model.source must be one of torchvision, timm, open_clip, hf, local, got 'keras'"),
])
def test_bad_values_name_the_key_path(override, message):
    with pytest.raises(DnnprobeError, match=re.escape(message)):
        load(schema(ModelParams), REPO / "params.yaml", (override,))
