"""The free-disk refusal (dnnprobe.compute.disk.check_free_space), the one the activation writer and the
gram stage both use: one line naming the output, both sizes and what to change; nothing created."""

from __future__ import annotations

import re
import shutil

from helpers import one_line_error
from dnnprobe.compute import disk


def test_an_output_its_disk_cannot_hold_is_refused_in_one_line_creating_nothing(tmp_path, monkeypatch):
    seen = []

    def small_disk(path):
        seen.append(path)
        return shutil._ntuple_diskusage(10**9, 10**9 - 10**6, 10**6)

    monkeypatch.setattr("dnnprobe.compute.disk.shutil.disk_usage", small_disk)
    out = tmp_path / "not" / "yet" / "out.h5"
    one_line_error(lambda: disk.check_free_space(out, 2 * 10**6, "free some space"),
                   rf"^{re.escape(str(out))}: needs 2 MB but its disk has 1 MB free \(free some space\)$")
    assert seen == [tmp_path] and not (tmp_path / "not").exists()  # the nearest existing folder, left as it was
    disk.check_free_space(out, 10**6, "free some space")  # exactly what is free fits
