"""Ctrl-C during a stage that writes results (probe, report, similarity) leaves the previous results as they
were: DVC does not delete them first (``persist: true`` in dvc.yaml), the stage replaces them only once the
new ones are complete, git sees no change, and a rerun completes to the same bytes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from helpers import REPO, TINY, copy_repo, dvc, dvc_status, env_without_tracking_uri, git, merge, stages_run

# Four layers (two Conv/ReLU pairs) keep the pipeline short; the probe still takes seconds per layer.
PARAMS = merge(json.loads(json.dumps(TINY)), {"extract": {"layers": ["conv1", "conv1_relu", "fc2", "fc2_relu"]}})

# What each stage writes (dvc.yaml's outs, metrics and plots) and where its temporaries appear.
RESULTS = {
    "probe": ["reports/probe", "models/probes", "reports/metrics.json", "reports/metrics_detail.json"],
    "report": ["reports/figures", "reports/plots/layer_scores.csv"],
    "similarity": ["reports/similarity"],
}


def files_of(repo: Path, paths: list[str]) -> dict[str, str]:
    """sha256 of every file under `paths` (files or folders)."""
    found = {}
    for name in paths:
        path = repo / name
        for file in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
            found[file.relative_to(repo).as_posix()] = hashlib.sha256(file.read_bytes()).hexdigest()
    return found


def temporaries(repo: Path, pattern: str = ".dnnprobe-tmp-*") -> list[str]:
    """Outputs being written (or, with ``.dnnprobe-*``, also their lock files) under reports/ and models/."""
    return sorted(p.relative_to(repo).as_posix() for folder in ("reports", "models") for p in (repo / folder).rglob(pattern))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The tiny pipeline run once and committed, as a user's repository after `dvc repro` and `git commit`."""
    repo = copy_repo(tmp_path_factory.mktemp("interrupt"), PARAMS)
    dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "results")
    return repo


def interrupt(repo: Path, stage: str, log_path: Path) -> tuple[int, str, dict[str, str]]:
    """`dvc repro --force --single-item <stage>`; once the stage is writing its temporaries, Ctrl-C (SIGINT
    to the whole process group). The group is stopped first and checked to be mid-write, so that the
    signal lands before the stage could finish. Returns DVC's exit status, its output and the hashes of
    the stage's results at the moment of the signal."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(["dvc", "repro", "--force", "--single-item", stage], cwd=repo,
                                   env=env_without_tracking_uri(), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline and not temporaries(repo):
            time.sleep(0.005)
        os.killpg(process.pid, signal.SIGSTOP)
        assert process.poll() is None and temporaries(repo), "the stage ended before it could be interrupted:\n" + log_path.read_text()
        during = files_of(repo, RESULTS[stage])
        os.killpg(process.pid, signal.SIGINT)
        os.killpg(process.pid, signal.SIGCONT)
        status = process.wait(timeout=120)
    return status, log_path.read_text(), during


@pytest.mark.parametrize("stage", list(RESULTS))
def test_ctrl_c_leaves_the_previous_results_as_they_were_and_a_rerun_completes(finished, tmp_path, stage):
    repo = finished
    before = files_of(repo, RESULTS[stage])
    assert before and all(any(name == path or name.startswith(path + "/") for name in before) for path in RESULTS[stage])

    for _ in range(3):
        status, log, during = interrupt(repo, stage, tmp_path / "dvc.log")
        if status != 0:
            break
        # Python drops a KeyboardInterrupt raised inside a finaliser ("Exception ignored in: <function
        # WeakValueDictionary...>"), and the stage runs to its end, as after a missed Ctrl-C: try again.
        assert files_of(repo, RESULTS[stage]) == before, log
    # Usually `Aborted!`; a signal that lands while a C extension is imported is a traceback ending in
    # "ImportError: initialization failed": either way the stage fails, and the results must stay.
    assert status != 0 and "failed to reproduce" in log, log
    assert during == before  # DVC deleted nothing before the stage ran
    assert files_of(repo, RESULTS[stage]) == before  # nor did the interrupted stage: byte-identical
    assert temporaries(repo) == []  # nothing half-written left behind
    assert git(repo, "status", "--porcelain") == ""  # no `D reports/metrics.json`
    assert dvc_status(repo)[0] == {}  # the results are still the ones dvc.lock records

    log = dvc(repo, "repro", "--force", "--single-item", stage)
    assert stages_run(log) == {stage}
    assert files_of(repo, RESULTS[stage]) == before and git(repo, "status", "--porcelain") == ""
    assert dvc_status(repo)[0] == {} and temporaries(repo, ".dnnprobe-*") == []


def test_every_stage_that_writes_results_keeps_them_through_a_run():
    """Each output of the stages above is `persist: true` in dvc.yaml, and those are the only such stages
    (persist turns a stage's run cache off; extract and gram keep theirs: their outputs are in the DVC
    cache, `dvc checkout` brings them back)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    persisted = {}
    for name, stage in stages.items():
        for kind in ("outs", "metrics", "plots"):
            for out in stage.get(kind, []):
                path, flags = next(iter(out.items())) if isinstance(out, dict) else (out, {})
                if flags.get("persist"):
                    persisted.setdefault(name, []).append(path)
                else:
                    assert name not in RESULTS, f"{name}: {path} is not persist: true"
    assert {name: sorted(paths) for name, paths in persisted.items()} == {name: sorted(paths) for name, paths in RESULTS.items()}
