"""Where runs go and whether they can: the store's location, HTTP limits, failing stores and artifact locations."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import pytest

from helpers import can_mount_tmpfs, closed_port_url, one_line_error, run_probe, tiny_params
from dnnprobe.track.runs import probe_run
from dnnprobe.track.store import HTTP_LIMITS, artifact_location, check_reachable, check_store, tracking_uri
from dnnprobe.core.errors import DnnprobeError


def test_default_store_is_anchored_on_dvc_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", "/some/real/repo")
    assert tracking_uri() == "sqlite:////some/real/repo/mlflow.db"
    assert artifact_location() == "file:///some/real/repo/mlruns"
    monkeypatch.delenv("DVC_ROOT")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"


def test_tracking_uri_environment_variable_wins(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    monkeypatch.setenv("DVC_ROOT", "/x")
    assert tracking_uri() == "http://127.0.0.1:1"


def test_unreachable_tracking_server_fails_fast_in_one_line(tmp_path, tiny_stimuli, tiny_gram, tiny_activations, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", closed_port_url())
    started = time.perf_counter()
    with pytest.raises(DnnprobeError, match="tracking server not reachable") as caught:
        run_probe(tmp_path, tiny_stimuli, tiny_gram, tiny_activations)
    assert time.perf_counter() - started < 20
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "probe").exists()


FULL_DISK_PROBE = textwrap.dedent("""
    import sys
    from dnnprobe.track.runs import probe_run
    from dnnprobe.core.errors import DnnprobeError

    def fill(path):
        '''Write zeros until the disk is full.'''
        with open(path, "wb", buffering=0) as handle:
            try:
                while True:
                    handle.write(bytes(4096))
            except OSError:
                pass

    filler, when = sys.argv[1:]
    try:
        if when == "before":
            fill(filler)
        with probe_run("dnnprobe", "full", {"pca": 4}, "accuracy") as run:
            if when == "during":
                fill(filler)
            run.log_layer("fc1", [0.5, 0.6, 0.7], 0.6, 0.05)
    except DnnprobeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
""")


AFTER_FREEING_THE_DISK = textwrap.dedent("""
    import mlflow
    from dnnprobe.track.runs import probe_run

    with probe_run("dnnprobe", "next", {"pca": 4}, "accuracy"):
        pass
    for run in sorted(mlflow.search_runs(search_all_experiments=True, output_format="list"),
                      key=lambda run: run.info.start_time):
        print(run.info.run_name, run.info.status)
""")


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs user namespaces to mount a small tmpfs (unshare -r -m)")
@pytest.mark.parametrize("when", ["before", "during"])
def test_a_full_disk_under_the_store_is_one_line_on_a_real_small_disk(tmp_path, when):
    """The SQLite store on a 4 MB tmpfs that a file fills, before the probe's run or while it is open."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    scripts = {"probe": FULL_DISK_PROBE, "after": AFTER_FREEING_THE_DISK,
               "setup": "from dnnprobe.track.store import ensure_experiment\nensure_experiment('dnnprobe')\n"}
    for name, text in scripts.items():
        (tmp_path / f"{name}.py").write_text(text)
    python = sys.executable
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{mount}/mlflow.db", "DVC_ROOT": str(mount)}
    # The mount lives as long as this shell: everything happens inside it.
    script = (f"mount -t tmpfs -o size=4m tmpfs {mount} && {python} {tmp_path}/setup.py >/dev/null 2>&1 && "
              f"{python} {tmp_path}/probe.py {mount}/filler {when}; echo exit=$?; "
              f"rm {mount}/filler && {python} {tmp_path}/after.py 2>/dev/null")
    result = subprocess.run(["unshare", "-r", "-m", "sh", "-c", script], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=300)
    [error] = result.stderr.splitlines()
    error = re.fullmatch(re.escape(f"error: MLflow store sqlite:///{mount}/mlflow.db: cannot write (database or disk is "
                                   "full)") + r"(; left RUNNING there: [0-9a-f]{32} \(the probe run\) \(the next probe "
                         r"or report on this host ends them as KILLED\))?", error)
    assert error, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "exit=1"
    if when == "before":
        assert lines[1:] == ["next FINISHED"] and not error.group(1)
    else:
        # The run had started; marking it FAILED needs the full disk too, so it may have stayed RUNNING (and
        # the line says so) until the next probe, which found its process gone and ended it as KILLED.
        assert lines[1] == ("full KILLED" if error.group(1) else "full FAILED") and lines[2:] == ["next FINISHED"]


def test_mlflow_http_retries_are_bounded_unless_the_user_set_them(monkeypatch):
    assert not any(name in os.environ for name in HTTP_LIMITS)  # conftest clears them for each test
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")  # the user's own setting stays
    check_reachable("sqlite:///x.db")  # a local store: nothing to bound
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    with pytest.raises(DnnprobeError, match="tracking server not reachable"):
        check_reachable(closed_port_url())
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2" and os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "300"
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR, MLFLOW_HTTP_REQUEST_BACKOFF_JITTER

    assert MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get() == 1 and MLFLOW_HTTP_REQUEST_BACKOFF_JITTER.get() == 0.5


@pytest.fixture
def failing_server():
    """An HTTP server on 127.0.0.1 whose /health answers and whose API answers 500 to everything (a
    server whose own store cannot be written); yields its URL and the number of API requests it got."""
    import http.server
    import threading

    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self):
            if self.path != "/health":
                requests.append(self.path)
            self.send_response(200 if self.path == "/health" else 500)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        do_GET = do_POST = _answer

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_failing_every_request_is_one_line_within_seconds(tmp_path, tiny_stimuli, tiny_gram,
                                                                     tiny_activations, monkeypatch, failing_server):
    url, requests = failing_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    started = time.perf_counter()
    message = one_line_error(lambda: run_probe(tmp_path, tiny_stimuli, tiny_gram, tiny_activations), "MLflow store")
    assert time.perf_counter() - started < 15  # MLflow's own retries: minutes
    assert message == (f"MLflow store {url}: cannot open (the server answered HTTP 500 to each of 3 tries; "
                       "see the server's log)")
    assert len(requests) == 3 and not (tmp_path / "probe").exists()


def test_a_database_store_without_its_driver_is_one_line_before_any_work(tmp_path, tiny_stimuli, tiny_gram,
                                                                          tiny_activations, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("psycopg") is not None:
        pytest.skip("psycopg is installed here")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://mlflow:secret@127.0.0.1:1/mlflow")
    message = one_line_error(lambda: run_probe(tmp_path, tiny_stimuli, tiny_gram, tiny_activations), "driver")
    # SQLAlchemy 2.1's driver for postgresql:// is psycopg (3); postgresql+psycopg2:// would name psycopg2.
    # The password is not shown.
    assert message == ("MLflow store postgresql://mlflow:***@127.0.0.1:1/mlflow: its database driver psycopg is not "
                       "installed (pip install psycopg[binary])")
    assert not (tmp_path / "probe").exists()


def test_a_file_store_refused_by_mlflow_names_the_fix_in_full(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "./mlruns")
    message = one_line_error(lambda: check_store("dnnprobe", create=True), "file store")
    assert message.startswith(f"MLflow store {tmp_path / 'mlruns'}: ")  # anchored on the repository ($DVC_ROOT)
    assert "MLFLOW_ALLOW_FILE_STORE=true" in message and "mlflow migrate-filestore" in message
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert check_store("dnnprobe", create=True)  # allowed: it works
    assert (tmp_path / "mlruns").is_dir()


@pytest.mark.parametrize("where", ["under a file", "s3 without boto3"])
def test_an_artifact_location_that_cannot_be_written_is_one_line_before_the_probe_and_the_report(
        tmp_path, tiny_stimuli, tiny_gram, tiny_activations, monkeypatch, where):
    import importlib.util

    from dnnprobe.stages.report import report

    if where == "under a file":
        (tmp_path / "a-file").write_text("not a folder")
        location, reason = (tmp_path / "a-file" / "artifacts").as_uri(), "cannot write (Not a directory)"
    elif importlib.util.find_spec("boto3") is not None:
        pytest.skip("boto3 is installed here")
    else:
        location, reason = "s3://lab-bucket/mlflow", "needs boto3, which is not installed (pip install boto3)"
    store = os.environ["MLFLOW_TRACKING_URI"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'other.db'}")
    run_probe(tmp_path / "results", tiny_stimuli, tiny_gram, tiny_activations)  # results for the report
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mlflow.set_tracking_uri(store)
    mlflow.create_experiment("dnnprobe", artifact_location=location)

    message = one_line_error(lambda: run_probe(tmp_path, tiny_stimuli, tiny_gram, tiny_activations), "artifact location")
    assert message.startswith(f"MLflow artifact location {location}: {reason}")
    assert not (tmp_path / "probe").exists() and not mlflow.search_runs(experiment_names=["dnnprobe"], output_format="list")
    # The report checks the same before it writes anything.
    figures = tmp_path / "figures"
    message = one_line_error(lambda: report(tiny_params(), tmp_path / "results" / "probe", figures, tmp_path / "plot.csv"),
                             "artifact location")
    assert message.startswith(f"MLflow artifact location {location}: {reason}")
    assert not figures.exists() and not (tmp_path / "plot.csv").exists()


def test_a_relative_store_uri_is_anchored_on_the_repository_not_a_temporary_copy(tmp_path, monkeypatch):
    """`dvc exp run --temp` and queued runs work in a copy under .dvc/tmp/exps that DVC deletes."""
    copy = tmp_path / ".dvc" / "tmp" / "exps" / "tmp1234"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    for given, anchored in (("sqlite:///mlflow.db", f"sqlite:///{tmp_path}/mlflow.db"),
                            ("sqlite:///runs/m.db?timeout=20", f"sqlite:///{tmp_path}/runs/m.db?timeout=20"),
                            ("file:mlruns", (tmp_path / "mlruns").as_uri()), ("./mlruns", str(tmp_path / "mlruns")),
                            ("sqlite:////abs/m.db", "sqlite:////abs/m.db"), ("sqlite:///:memory:", "sqlite:///:memory:"),
                            ("file:///abs/mlruns", "file:///abs/mlruns"), ("/abs/mlruns", "/abs/mlruns"),
                            ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
                            ("postgresql://u@db/mlflow", "postgresql://u@db/mlflow"), ("databricks", "databricks")):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", given)
        assert tracking_uri() == anchored, given
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    with probe_run("dnnprobe", "in a temporary copy", {"pca": 4}, "accuracy"):
        pass
    assert not (copy / "mlflow.db").exists() and not (copy / "mlruns").exists()
    runs = tracking_runs_in(tmp_path / "mlflow.db")
    assert runs == [("in a temporary copy", "FINISHED")]


def tracking_runs_in(database: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(database) as db:
        return list(db.execute("SELECT name, status FROM runs"))


@pytest.mark.parametrize("address", ["127.0.0.1:9", "localhost:5000", "mlflow.lab.org:443/"])
def test_a_server_address_without_http_names_the_scheme(tmp_path, monkeypatch, address):
    """Not a "file store" problem: the address lacks http://."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", address)
    message = one_line_error(lambda: check_store("dnnprobe", create=True), "scheme")
    assert message == (f"MLFLOW_TRACKING_URI={address}: a tracking server's address needs its scheme: "
                       f"MLFLOW_TRACKING_URI=http://{address} (or https://)")
    assert not (tmp_path / address).exists()
