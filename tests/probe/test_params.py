"""The probe's settings (top-level pca and cv, the probe section): each value checked, in one line naming the key."""

from __future__ import annotations

import re

import pytest

from helpers import REPO
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.core.params import load, schema
from dnnprobe.probe.params import FoldParams, ProbeParams


def probe_params(*overrides: str):
    return load(schema(FoldParams, ProbeParams), REPO / "params.yaml", overrides)


@pytest.mark.parametrize("override, message", [
    ("probe.C=-1", "probe.C must be > 0, got -1.0"),
    ("cv=1", "cv must be >= 2, got 1"),
    ("pca=ten", "pca must be an integer, got 'ten'"),
    ("probe.permutatons=10", "unknown key probe.permutatons"),
    ("probe.label=[a,a]", "probe.label lists a column twice: ['a', 'a']"),
    ("probe.C=[1,0]", "probe.C must be a number > 0, auto, or a list of numbers > 0, got [1, 0]"),
    ("probe.device=cuda:01", "probe.device must be auto, cpu, cuda or cuda:N (N without leading zeros), got 'cuda:01'"),
    ("probe.seed=-1", "probe.seed must be between 0 and 2**32 - 1 (numpy's seed range), got -1"),
    ("probe.seed=4294967296", "probe.seed must be between 0 and 2**32 - 1"),
])
def test_bad_values_name_the_key_path(override, message):
    with pytest.raises(DnnprobeError, match=re.escape(message)):
        probe_params(override)


def test_label_and_c_take_one_value_or_a_list():
    params = probe_params("probe.label=[a]", "probe.C=auto")
    assert (params.probe.label, params.probe.C) == ("a", "auto")
    params = probe_params("probe.label=[a,b:ridge]", "probe.C=[0.1,1]")
    assert (params.probe.label, params.probe.C) == (("a", "b:ridge"), (0.1, 1.0))


def test_numbers_in_exponent_notation_are_numbers():
    """YAML 1.2 (DVC's reader, and ours) reads 1e-3 as a number, where YAML 1.1 (PyYAML) reads a string."""
    assert probe_params("probe.C=1e-3").probe.C == 0.001
    assert probe_params("probe.C=2E+1").probe.C == 20.0
    with pytest.raises(DnnprobeError, match="probe.C must be a number > 0, auto, or a list of numbers > 0, got 'one'"):
        probe_params("probe.C=one")
    with pytest.raises(DnnprobeError, match="probe.C must be a finite number"):
        probe_params("probe.C=.inf")
