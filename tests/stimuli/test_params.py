"""The stimuli section: each value checked, in one line naming the key."""

from __future__ import annotations

import re

import pytest

from helpers import REPO
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.params import load, schema
from dnnprobe.stimuli.params import StimuliParams


@pytest.mark.parametrize("override, message", [
    ("stimuli.source=web", "stimuli.source must be one of demo, stimcsv, folder, bold5000"),
    ("stimuli.demo.seed=-1", "stimuli.demo.seed must be >= 0, got -1"),
    ("stimuli.demo.image_size=16", "stimuli.demo.image_size must be >= 32, got 16"),
    ("stimuli.folder=' '", "stimuli.folder must name a folder, got ' '"),
    ("stimuli.bold5000.expected_class_sizes=[a]", "stimuli.bold5000.expected_class_sizes must be a list of integers"),
])
def test_bad_values_name_the_key_path(override, message):
    with pytest.raises(DnnprobeError, match=re.escape(message)):
        load(schema(StimuliParams), REPO / "params.yaml", (override,))
