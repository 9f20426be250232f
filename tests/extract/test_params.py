"""The extract section: each value checked, in one line naming the key."""

from __future__ import annotations

import re

import pytest

from helpers import REPO
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.params import load, schema
from dnnprobe.extract.params import ExtractParams


@pytest.mark.parametrize("override, message", [
    ("extract.device=tpu", "extract.device must be auto, cpu, cuda or cuda:N"),
    ("extract.device=cuda:01", "extract.device must be auto, cpu, cuda or cuda:N (N without leading zeros)"),
    ("extract.layers=[fc1,fc1]", "extract.layers must be a list of distinct names"),
    ("extract.batch_size=0", "extract.batch_size must be > 0, got 0"),
    ("extract.dtype=float64", "extract.dtype must be one of float32, float16, got 'float64'"),
    ("extract.tokens=first", "extract.tokens must be one of all, cls, mean, cls+mean, got 'first'"),
    ("extract.preprocess=timm", "extract.preprocess must be one of dnnbrain, model, got 'timm'"),
])
def test_bad_values_name_the_key_path(override, message):
    with pytest.raises(DnnprobeError, match=re.escape(message)):
        load(schema(ExtractParams), REPO / "params.yaml", (override,))


def test_devices_are_auto_cpu_or_a_cuda_device():
    for value in ("auto", "cpu", "cuda", "cuda:0", "cuda:12"):
        assert load(schema(ExtractParams), REPO / "params.yaml", (f"extract.device={value}",)).extract.device == value
