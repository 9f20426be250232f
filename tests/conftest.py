"""Shared fixtures: small data the tests make themselves (no downloads, no GPU). Helpers are in helpers.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest


from helpers import MlflowServer, built_once, clean_env, closed_port_url, tiny_params


# `make test` runs the files on two workers, a whole file on one (--dist loadfile). The slowest files start first,
# longest first, so that the workers finish together instead of one waiting on a long file that came last;
# every other file follows in collection order. Seconds on a quiet 2-core machine (-n 2): update them when a
# file's time changes much (pytest --durations=0), and add a file that takes more than a minute.
SLOW_FILES = {
    "tests/pipeline/test_reliability.py": 420,
    "tests/pipeline/test_pipeline.py": 240,
    "tests/pipeline/test_sharing.py": 230,
    "tests/experiments/test_cluster.py": 220,
    "tests/pipeline/test_benchmarks.py": 200,
    "tests/pipeline/test_five_networks.py": 60,
    "tests/pipeline/test_dvc_boundary.py": 130,
    "tests/extract/test_forward.py": 115,
    "tests/pipeline/test_own_network.py": 100,
    "tests/pipeline/test_interrupt.py": 100,
    "tests/track/test_runs.py": 85,
    "tests/network/test_sources.py": 75,
    "tests/experiments/test_slurm.py": 70,
    "tests/probe/test_crossval.py": 70,
    "tests/probe/test_design.py": 50,
    "tests/track/test_store.py": 45,
}


def pytest_configure(config):
    if getattr(config.option, "dist", "no") == "loadfile":
        config.option.loadscopereorder = False  # xdist would order the files by their number of tests


def pytest_collection_modifyitems(items):
    rank = {path: i for i, path in enumerate(sorted(SLOW_FILES, key=SLOW_FILES.__getitem__, reverse=True))}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: tests keep their order


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path, monkeypatch):
    """Every test gets its own MLflow store; nothing lands in the repo's mlflow.db."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)  # the stages set it explicitly, which would outlive the env var
    # Artifact folders are anchored on the repository root ($DVC_ROOT): point it at the test's folder.
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.delenv("DVC_EXP_BASELINE_REV", raising=False)
    # The stages bound MLflow's HTTP retries in os.environ (store.HTTP_LIMITS): undone after each test.
    from dnnprobe.track.store import HTTP_LIMITS

    for name in HTTP_LIMITS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def tiny_stimuli(tmp_path_factory) -> Path:
    """data/stimuli.stim.csv and data/images of the tiny demo set; returns the table's path."""
    from dnnprobe.stages.stimuli import make_stimuli

    def build(root):
        make_stimuli(tiny_params(), root / "data" / "stimuli.stim.csv", root / "data" / "images")

    return built_once(tmp_path_factory, "stimuli", build) / "data" / "stimuli.stim.csv"


@pytest.fixture(scope="session")
def tiny_image_list(tmp_path_factory, tiny_stimuli) -> Path:
    """data/images.sha256 of the tiny demo set, as the check stage writes it."""
    from dnnprobe.stages.check import check

    path = tiny_stimuli.parent / "images.sha256"
    built_once(tmp_path_factory, "image-list", lambda _: check(tiny_params(), tiny_stimuli, path))
    return path


@pytest.fixture(scope="session")
def tiny_network(tmp_path_factory) -> Path:
    from dnnprobe.stages.network import make_network

    return built_once(tmp_path_factory, "models", lambda root: make_network(tiny_params(), root / "network.pt")) / "network.pt"


@pytest.fixture(scope="session")
def tiny_activations(tmp_path_factory, tiny_image_list, tiny_network) -> Path:
    """All 14 tutorial layers of random-weight AlexNet for the tiny demo set."""
    from dnnprobe.stages.extract import extract

    def build(root):
        extract(tiny_params(), tiny_image_list, tiny_network, root / "activations.act.h5", progress=False)

    return built_once(tmp_path_factory, "activations", build) / "activations.act.h5"


@pytest.fixture(scope="session")
def tiny_gram(tmp_path_factory, tiny_activations) -> Path:
    from dnnprobe.stages.gram import gram

    return built_once(tmp_path_factory, "gram", lambda root: gram(tiny_activations, root / "gram.h5", progress=False)) / "gram.h5"


@pytest.fixture(scope="session")
def built_tiny_repo(tmp_path_factory) -> Path:
    """A repository copy on the tiny params (helpers.TINY) after `dvc repro`, built once for the whole run. Never
    change it: copy it with helpers.copy_built_repo."""
    from helpers import copy_repo, dvc

    def build(repo):
        copy_repo(repo)
        dvc(repo, "repro")

    return built_once(tmp_path_factory, "repo", build)


@pytest.fixture
def http_server(tmp_path):
    """Serve tmp_path/'www' on 127.0.0.1; yields (base_url, folder, log of (path, range) requests)."""
    import functools
    import http.server
    import threading

    folder = tmp_path / "www"
    folder.mkdir()
    requests: list[tuple[str, str | None]] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            requests.append((self.path, self.headers.get("Range")))
            target = folder / self.path.lstrip("/").split("?")[0]
            byte_range = self.headers.get("Range")
            if not target.is_file() or not byte_range:
                return super().do_GET()
            data = target.read_bytes()
            start = int(byte_range.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Length", str(len(data) - start))
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            self.wfile.write(data[start:])

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder, requests
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` on 127.0.0.1 (a free port): SQLite backend, artifacts served from its own folder."""
    import time
    import urllib.request

    port = int(closed_port_url().rsplit(":", 1)[1])
    artifacts = tmp_path / "server-artifacts"
    database = tmp_path / "server.db"
    log = tmp_path / "server.log"
    env = clean_env()
    env.pop("MLFLOW_TRACKING_URI", None)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no background job workers: fewer processes on 2 cores
    with open(log, "wb") as log_file:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{database}",
             "--serve-artifacts", "--artifacts-destination", str(artifacts)],
            cwd=tmp_path, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, f"mlflow server exited: {log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, f"mlflow server did not start: {log.read_text()[-3000:]}"
                time.sleep(0.5)
        yield MlflowServer(url, artifacts, database, server)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A SLURM cluster for `dnnprobe cluster`: the one configured here, else a one-node cluster started by
    scripts/slurm-local (needs root and Debian's slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
    and stopped, every daemon by its pid, at the end. Missing SLURM skips, or fails with
    DNNPROBE_REQUIRE_SLURM=1 (CI). Yields the environment (SLURM_CONF) the clients need."""
    import shutil
    import socket

    env = dict(os.environ)
    if shutil.which("sinfo") and subprocess.run(["sinfo"], capture_output=True, env=env).returncode == 0:
        yield env
        return
    daemons = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")
    missing = [name for name in (*daemons, "sbatch") if not (shutil.which(name) or Path(f"/usr/sbin/{name}").exists())]
    reason = (f"no SLURM here: {', '.join(missing)} missing (apt-get install slurmctld slurmd slurm-client munge "
              "slurmdbd mariadb-server)" if missing else "starting a local SLURM needs root" if os.geteuid() else "")
    if reason:
        if os.environ.get("DNNPROBE_REQUIRE_SLURM") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    ports = []
    for _ in range(2):  # free ports: slurmctld (slurmd and slurmdbd take the next two) and mariadbd
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    base = 20000 + ports[0] % 20000
    folder = tmp_path_factory.mktemp("slurm")
    script = Path(__file__).resolve().parents[1] / "scripts" / "slurm-local"
    env.update(SLURM_LOCAL_PORT=str(base), SLURM_LOCAL_DB_PORT=str(ports[1]))
    try:
        started = subprocess.run([str(script), "start", str(folder)], env=env, capture_output=True, text=True)
        assert started.returncode == 0, f"slurm-local start failed:\n{started.stdout}\n{started.stderr}"
        env["SLURM_CONF"] = str(folder / "slurm.conf")
        env["PATH"] = f"/usr/sbin{os.pathsep}{env['PATH']}"
        yield env
    finally:
        subprocess.run([str(script), "stop", str(folder)], env=env, capture_output=True)
