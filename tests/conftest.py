"""Shared fixtures: small data the tests make themselves (no downloads, no GPU)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from dnnprobe.params import Params, load_params

REPO = Path(__file__).resolve().parents[1]


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


def tiny_params(**overrides: object) -> Params:
    """params.yaml defaults scaled down: 24 demo images of 64 px, pca 4, 3 folds."""
    settings = {
        "pca=4", "cv=3", "stimuli.demo.n_per_class=12", "stimuli.demo.image_size=64",
        "extract.batch_size=8", "extract.num_workers=0",
    }
    return load_params(REPO / "params.yaml", tuple(sorted(settings)) + tuple(f"{k}={v}" for k, v in overrides.items()))


@pytest.fixture(scope="session")
def tiny_stimuli(tmp_path_factory) -> Path:
    """data/stimuli.stim.csv and data/images of the tiny demo set; returns the table's path."""
    from dnnprobe.stages import make_stimuli

    root = tmp_path_factory.mktemp("stimuli")
    table = root / "data" / "stimuli.stim.csv"
    make_stimuli(tiny_params(), table, root / "data" / "images")
    return table


@pytest.fixture(scope="session")
def tiny_network(tmp_path_factory) -> Path:
    from dnnprobe.stages import make_network

    path = tmp_path_factory.mktemp("models") / "network.pt"
    make_network(tiny_params(), path)
    return path


@pytest.fixture(scope="session")
def tiny_activations(tmp_path_factory, tiny_stimuli, tiny_network) -> Path:
    """All 14 tutorial layers of random-weight AlexNet for the tiny demo set."""
    from dnnprobe.stages import extract

    path = tmp_path_factory.mktemp("activations") / "activations.act.h5"
    extract(tiny_params(), tiny_stimuli, tiny_network, path, progress=False)
    return path


@pytest.fixture(scope="session")
def tiny_gram(tmp_path_factory, tiny_activations) -> Path:
    from dnnprobe.stages import gram

    path = tmp_path_factory.mktemp("gram") / "gram.h5"
    gram(tiny_activations, path, progress=False)
    return path


def low_rank_data(n: int, d: int, seed: int = 0, signal: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Activations-like data: a decaying spectrum plus noise, and a weakly encoded binary label."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    rng.shuffle(y)
    factors = rng.standard_normal((n, 30)) * (1.0 / np.arange(1, 31))
    factors[:, 3] += signal * (y - 0.5)
    X = factors @ rng.standard_normal((30, d)) + 0.3 * rng.standard_normal((n, d))
    return X.astype(np.float32), y


def write_table(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n".join(rows) + ("\n" if rows else ""))
    return path


def clean_env() -> dict[str, str]:
    env = dict(os.environ)
    for key in ("DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        env.pop(key, None)
    return env


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


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused at once)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
