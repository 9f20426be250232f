"""Outputs: atomic, locked against a second writer, and cleaned up after a writer that was killed."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import assert_nothing_written, assert_one_line_error, cli
from dnnprobe.core.atomic import atomic_output, remove_orphaned_temporaries
from dnnprobe.core.errors import DnnprobeError

HOLDER = textwrap.dedent("""
    import sys, time
    from dnnprobe.core.atomic import atomic_output
    with atomic_output(sys.argv[1], directory=True) as temp:
        (temp / "part").write_text("half written")
        print("writing", flush=True)
        time.sleep(120)
""")


@pytest.fixture
def writer():
    """Start a process that is writing an output (inside atomic_output); yields a function that starts one."""
    started = []

    def start(output: Path) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", HOLDER, str(output)], stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "writing"
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_a_second_writer_of_the_same_output_stops_in_one_line(tmp_path, writer):
    process = writer(tmp_path / "probe")
    with pytest.raises(DnnprobeError) as caught:
        with atomic_output(tmp_path / "probe", directory=True):
            pass
    message = str(caught.value)
    assert f"probe: pid {process.pid} is writing it right now" in message and "\n" not in message
    # the live writer's temporary is untouched
    assert (tmp_path / f".dnnprobe-tmp-{process.pid}-probe" / "part").read_text() == "half written"


def test_two_probes_writing_the_same_outputs(tmp_path, writer, tiny_stimuli, tiny_gram, tiny_activations):
    out = tmp_path / "out"
    writer(out / "probe")
    result = cli("probe", "--table", tiny_stimuli, "--gram", tiny_gram, "--activations", tiny_activations,
                 "--out", out / "probe", "--metrics", out / "metrics.json", "--models", out / "probes")
    assert_one_line_error(result, "probe", "is writing it right now (two runs writing the same outputs)")
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".dnnprobe-")) == []
    assert not (tmp_path / "mlflow.db").exists()  # refused before any MLflow run was started


def test_temporaries_of_a_killed_writer_are_removed_and_a_live_writers_are_kept(tmp_path, writer):
    killed = writer(tmp_path / "activations.act.h5")
    live = writer(tmp_path / "gram.h5")
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    dead_temp = tmp_path / f".dnnprobe-tmp-{killed.pid}-activations.act.h5"
    live_temp = tmp_path / f".dnnprobe-tmp-{live.pid}-gram.h5"
    assert dead_temp.exists() and live_temp.exists()
    # a lock file alone, as a writer killed between its rename and its release leaves it
    (tmp_path / ".dnnprobe-lock-metrics.json").write_text("999999999\n")

    assert remove_orphaned_temporaries([tmp_path]) == [dead_temp]
    assert not dead_temp.exists() and live_temp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".dnnprobe-lock-gram.h5", live_temp.name]  # the dead writer's lock file is gone too


def test_any_stage_start_removes_what_a_killed_stage_left(tmp_path, writer, monkeypatch, tiny_stimuli):
    """After a SIGKILL, DVC may restore the killed stage from its run cache: the next stage cleans up."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages:\n  extract:\n    cmd: x\n    outs:\n      - data/activations.act.h5\n")
    killed = writer(tmp_path / "data" / "activations.act.h5")
    killed.kill()
    killed.wait()
    result = cli("check", "--table", tiny_stimuli, "--out", tiny_stimuli.parent / "images.sha256")
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "data").iterdir()) == []


def test_a_full_disk_while_writing_is_one_line_and_leaves_nothing(tmp_path):
    with pytest.raises(DnnprobeError) as caught:
        with atomic_output(tmp_path / "out" / "metrics.json") as temp:
            temp.write_text("{")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(caught.value) == f"{tmp_path / 'out' / 'metrics.json'}: writing failed (No space left on device)"
    assert_nothing_written(tmp_path / "out")


def test_a_finished_output_leaves_no_lock_or_temporary(tmp_path):
    with atomic_output(tmp_path / "a.txt") as temp:
        temp.write_text("done")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
