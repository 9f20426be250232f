"""The targets: what the data must offer for a cross-validation to mean something, refused before any work."""

from __future__ import annotations

import numpy as np
import pytest

from dnnprobe.core.errors import DnnprobeError
from dnnprobe.probe.decoders import ProbeSettings
from dnnprobe.probe.targets import check_targets


@pytest.mark.parametrize(
    "y, settings, n_units, message",
    [
        (np.zeros(20, int), ProbeSettings(n_components=2, cv=2), None, "single class"),
        (np.r_[np.zeros(18, int), np.ones(2, int)], ProbeSettings(n_components=2, cv=3), None, "fewer than cv=3"),
        (np.arange(20) % 2, ProbeSettings(n_components=16, cv=4), None, "smallest training fold (15"),
        (np.arange(20) % 2, ProbeSettings(n_components=5, cv=2), 4, "layer's 4 units"),
        (np.arange(20) % 2, ProbeSettings(n_components=2, cv=21), None, "larger than the number of stimuli"),
        (np.arange(21) % 3, ProbeSettings(n_components=2, cv=3, scoring="roc_auc"), None, "needs two classes"),
    ],
)
def test_bad_probe_settings_are_rejected_before_work(y, settings, n_units, message):
    with pytest.raises(DnnprobeError, match=message.replace("(", r"\(")):
        check_targets(y, settings, n_units)


def test_check_refuses_groups_that_make_a_fold_impossible():
    y = np.array([0, 1] * 10)
    settings = ProbeSettings(n_components=2, cv=5)
    few = np.array([f"g{i % 4}" for i in range(20)])
    with pytest.raises(DnnprobeError, match="probe.groups column 'concept' has 4 groups, fewer than cv=5 folds"):
        check_targets(y, settings, groups=few, groups_name="concept")
    lonely = np.array([f"g{i}" for i in range(20)])
    lonely[y == 1] = "cat"  # every stimulus of class 1 in one group
    with pytest.raises(DnnprobeError, match="every stimulus of class 1 is in one group, 'cat'"):
        check_targets(y, settings, groups=lonely, groups_name="concept")
    check_targets(y, settings, groups=np.array([f"g{i // 2}" for i in range(20)]), groups_name="concept")
