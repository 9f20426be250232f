"""The gram section: each value checked, in one line naming the key."""

from __future__ import annotations

import pytest

from helpers import REPO
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.params import load, schema
from dnnprobe.gram.params import GramParams


def test_the_storage_type_is_float32_or_float64():
    assert load(schema(GramParams), REPO / "params.yaml", ("gram.dtype=float64",)).gram.dtype == "float64"
    with pytest.raises(DnnprobeError, match="gram.dtype must be one of float32, float64, got 'float16'"):
        load(schema(GramParams), REPO / "params.yaml", ("gram.dtype=float16",))
