"""The tests' helper library: small data, a throwaway repository run with real DVC, one-line error checks.

Imported by name (`from helpers import copy_repo`); the fixtures that use them are in conftest.py."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from dnnprobe.stages.params import Params, load_params

REPO = Path(__file__).resolve().parents[1]



def tiny_params(**overrides: object) -> Params:
    """params.yaml defaults scaled down: 24 demo images of 64 px, pca 4, 3 folds."""
    settings = {
        "pca=4", "cv=3", "stimuli.demo.n_per_class=12", "stimuli.demo.image_size=64",
        "extract.batch_size=8", "extract.num_workers=0",
    }
    return load_params(REPO / "params.yaml", tuple(sorted(settings)) + tuple(f"{k}={v}" for k, v in overrides.items()))


# The defaults scaled down as tiny_params, as command-line overrides.
TINY_SETS = ("pca=4", "cv=3", "stimuli.demo.n_per_class=12", "stimuli.demo.image_size=64",
             "extract.batch_size=8", "extract.num_workers=0")


def cli(stage: str, *args: object, env: dict | None = None):
    """`dnnprobe <stage> --quiet --params params.yaml <tiny overrides> <args>` in this process (click's runner)."""
    from click.testing import CliRunner

    from dnnprobe.cli import main

    options = ["--quiet", "--params", str(REPO / "params.yaml")]
    for setting in TINY_SETS:
        options += ["--set", setting]
    return CliRunner().invoke(main, [stage, *options, *map(str, args)], env=env)


def assert_one_line_error(result, stage: str, *fragments: str) -> str:
    """Exit status 1 and exactly one line on stderr, `dnnprobe <stage>: error: ...`, holding each fragment."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"dnnprobe {stage}: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def assert_nothing_written(folder: Path) -> None:
    """No output, no temporary and no lock: the folder is absent or empty."""
    assert not folder.exists() or [p.name for p in folder.rglob("*")] == []


def one_line_error(call, match: str) -> str:
    """Run `call`, expect a DnnprobeError matching `match`, and return its message (one line)."""
    from dnnprobe.core.errors import DnnprobeError

    with pytest.raises(DnnprobeError, match=match) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def can_mount_tmpfs() -> bool:
    """Whether this machine lets a test mount a small tmpfs (a real full disk) in a user namespace."""
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-r", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


def rgb_image(path: Path, value: int = 100, size: int = 40) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (value, 255 - value, 50)).save(path)
    return path


def latest_probe_run():
    """The most recent probe (parent) run in the test's MLflow store."""
    import mlflow

    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              order_by=["attributes.start_time DESC"])
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert parents, "no probe run in the MLflow store"
    return parents[0]


def run_probe(tmp_path, tiny_stimuli, tiny_gram, tiny_activations, **overrides):
    """The probe stage on the tiny data, its outputs under `tmp_path`; returns its summary."""
    from dnnprobe.stages.probe import probe

    return probe(tiny_params(**overrides), tiny_stimuli, tiny_gram, tiny_activations, tmp_path / "probe",
                 tmp_path / "metrics.json", tmp_path / "probes", progress=False)


def runs_by_name() -> dict:
    """Every run in the test's MLflow store, by name."""
    import mlflow

    return {r.info.run_name: r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")}


def run_statuses() -> dict[str, tuple[str, str | None]]:
    """Run name -> (status, its dnnprobe.orphaned tag)."""
    from dnnprobe.track.tags import ORPHANED_TAG

    return {name: (r.info.status, r.data.tags.get(ORPHANED_TAG)) for name, r in runs_by_name().items()}


def database_full_error():
    """SQLAlchemy's error for a full disk under an SQLite store."""
    from sqlalchemy.exc import OperationalError

    return OperationalError("INSERT INTO metrics ...", {}, sqlite3.OperationalError("database or disk is full"))


def mlflow_database_full_error():
    """What MLflow's SQLAlchemy store raises: its exception, caused by SQLAlchemy's."""
    from mlflow.exceptions import MlflowException

    try:
        raise MlflowException(str(database_full_error()), error_code="TEMPORARILY_UNAVAILABLE") from database_full_error()
    except MlflowException as exc:
        return exc


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


# ---- a throwaway copy of the repository, run with real DVC on tiny data ------------------------


TINY = {
    "pca": 4, "cv": 3,
    "stimuli": {"demo": {"n_per_class": 12, "image_size": 64}},
    "extract": {"batch_size": 8, "num_workers": 0},
}


def merge(base: dict, change: dict) -> dict:
    for key, value in change.items():
        base[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


def copy_repo(target: Path, params: dict = TINY) -> Path:
    """The files a clone would have (tracked or new, not ignored), with tiny params, committed."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO / name
        output = name.startswith(("data/", "models/", "reports/")) and not name.startswith(("data/external/",
                                                                                            "models/external/"))
        if source.is_file() and not output and name != "dvc.lock":
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    data = yaml.safe_load((target / "params.yaml").read_text())
    (target / "params.yaml").write_text(yaml.safe_dump(merge(data, params), sort_keys=False))
    git(target, "init", "-q")
    git(target, "add", "-A")
    git(target, "commit", "-qm", "tiny pipeline")
    return target


def built_once(tmp_path_factory, name: str, build) -> Path:
    """`build(folder)` run once for the whole test run, its outputs in `folder`: the first xdist worker that needs
    them builds them under a lock, where every worker finds them (a session fixture alone is built per worker).
    The tests only read what is built here."""
    import fcntl

    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "built-once"
    shared.mkdir(exist_ok=True)
    folder, done = shared / name, shared / f"{name}.done"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a build that failed in another worker left
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


def copy_built_repo(built: Path, target: Path) -> Path:
    """A repository copy that `dvc repro` already ran in (conftest's `built_tiny_repo`), copied to `target` as
    `cp -a` copies: the workspace's outputs stay hard links into its own DVC cache, read-only as DVC left them.
    The MLflow store's absolute paths (artifact locations, source names) are moved to the copy."""
    links: dict[tuple[int, int], str] = {}

    def copy(source: str, destination: str) -> str:
        info = os.lstat(source)
        if info.st_nlink > 1:
            if (info.st_dev, info.st_ino) in links:
                os.link(links[info.st_dev, info.st_ino], destination)
                return destination
            links[info.st_dev, info.st_ino] = destination
        return shutil.copy2(source, destination)

    shutil.copytree(built, target, symlinks=True, copy_function=copy, dirs_exist_ok=True)
    with sqlite3.connect(target / "mlflow.db") as connection:
        for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri"), ("tags", "value")):
            connection.execute(f"update {table} set {column} = replace({column}, ?, ?)", (str(built), str(target)))
    connection.close()
    return target


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                          capture_output=True, text=True, check=True).stdout


def env_without_tracking_uri() -> dict[str, str]:
    env = clean_env()
    env.pop("MLFLOW_TRACKING_URI", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def dvc(repo: Path, *args: str, env: dict | None = None) -> str:
    result = subprocess.run(["dvc", *args], cwd=repo, capture_output=True, text=True,
                            env=env or env_without_tracking_uri())
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def chromium() -> str | None:
    found = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None)
    if found is None and os.environ.get("DNNPROBE_REQUIRE_CHROMIUM"):
        pytest.fail("chromium not found (Debian: apt-get install chromium); .ci/run installs it")
    return found


def render(page: Path) -> str:
    """The page's DOM after its scripts ran, in headless Chromium with every network request refused."""
    browser = chromium()
    if browser is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--proxy-server=127.0.0.1:9",
         "--proxy-bypass-list=<-loopback>", "--virtual-time-budget=15000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def visible_marks(dom: str, experiment: str) -> tuple[int, int]:
    """(lines, points) of one experiment that a rendered `dvc plots` page really draws: a line with a stroke
    colour, a point with a fill (a mark whose colour the scale leaves undefined is in the SVG but invisible)."""
    lines = [m for m in re.findall(r'<path [^>]*aria-roledescription="line mark"[^>]*>', dom) if f"[{experiment}]" in m]
    points = [m for m in re.findall(r'<path [^>]*aria-roledescription="point"[^>]*>', dom)
              if f"experiment: {experiment};" in m]
    return (sum(bool(re.search(r' stroke="#[0-9A-Fa-f]{6}"', m)) for m in lines),
            sum(bool(re.search(r' fill="#[0-9A-Fa-f]{6}"', m)) for m in points))


def line_colours(dom: str, experiment: str) -> set[str]:
    """The stroke colours of one experiment's line marks on a rendered `dvc plots` page."""
    lines = [m for m in re.findall(r'<path [^>]*aria-roledescription="line mark"[^>]*>', dom) if f"[{experiment}]" in m]
    return {colour for m in lines for colour in re.findall(r' stroke="(#[0-9A-Fa-f]{6})"', m)}


def point_positions(dom: str, experiment: str) -> dict[str, float]:
    """layer -> x (pixels) of one experiment's points on a rendered `dvc plots` page."""
    found = {}
    for mark in re.findall(r'<path [^>]*aria-roledescription="point"[^>]*>', dom):
        label = re.search(r'aria-label="([^"]*)"', mark).group(1)
        if f"experiment: {experiment};" in label:
            layer = re.search(r"layer: ([^;]+);", label).group(1)
            found[layer] = float(re.search(r'transform="translate\(([-\d.]+),', mark).group(1))
    return found


def mlflow_runs(db: Path) -> list[dict]:
    with sqlite3.connect(db) as connection:
        connection.row_factory = sqlite3.Row
        runs = [dict(r) for r in connection.execute("select run_uuid, status, name from runs")]
        for run in runs:
            run["tags"] = dict(connection.execute("select key, value from tags where run_uuid=?", (run["run_uuid"],)).fetchall())
            run["params"] = dict(connection.execute("select key, value from params where run_uuid=?", (run["run_uuid"],)).fetchall())
    return runs


def stages_run(log: str) -> set[str]:
    return set(re.findall(r"Running stage '(\w+)'", log))


def dvc_status(repo: Path) -> tuple[dict, str]:
    """`dvc status --json` as a dict (stdout), and DVC's warnings (stderr)."""
    result = subprocess.run(["dvc", "status", "--json"], cwd=repo, capture_output=True, text=True,
                            env=env_without_tracking_uri())
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def changed_stages(repo: Path) -> set[str]:
    """The stages `dvc status --json` names, asked of DVC in this process as that command asks it (the tests ask
    it often, and each `dvc` process takes a second to start)."""
    import contextlib

    from dvc.repo import Repo, lock_repo

    with contextlib.chdir(repo), Repo() as dvc_repo, lock_repo(dvc_repo):  # stage names relative to the repo, as there
        return set(dvc_repo.status(check_updates=True))


def set_param(repo: Path, key: str, value) -> None:
    data = yaml.safe_load((repo / "params.yaml").read_text())
    node = data
    for part in key.split(".")[:-1]:
        node = node[part]
    node[key.split(".")[-1]] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


@dataclasses.dataclass
class MlflowServer:
    url: str
    artifacts: Path  # the folder it serves artifacts from
    database: Path  # its SQLite backend store
    process: subprocess.Popen  # the leader of its process group (the server and its uvicorn worker)

    def kill(self) -> None:
        """Stop it at once, as a crash or a lost network would (SIGKILL to its process group)."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused at once)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"

def exactly_low_rank(n: int, d: int, rank: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 activations of rank `rank` (plus a constant, as activations far from zero), a weak binary label."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    rng.shuffle(y)
    factors = rng.standard_normal((n, rank)) / np.arange(1, rank + 1)
    factors[:, 2] += 0.6 * (y - 0.5)
    return (factors @ rng.standard_normal((rank, d)) + 3.0).astype(np.float32), y



def corrupt_jpeg(path: Path) -> Path:
    """A JPEG whose scan data (not its length) is damaged: PIL decodes it without a word."""
    rng = np.random.default_rng(0)
    buffer = __import__("io").BytesIO()
    __import__("PIL.Image").Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    data = bytearray(buffer.getvalue())
    start = data.find(b"\xff\xda") + 40
    for i in range(start, len(data) - 100, 37):
        if data[i] != 0xFF and data[i] ^ 0x55 != 0xFF:
            data[i] ^= 0x55
    path.write_bytes(bytes(data))
    return path



def synthetic(folder: Path, n: int, layers: list[str]) -> Path:
    """A synthetic activation file from the benchmarks' generator (benchmarks/make_synthetic.py)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from make_synthetic import write_synthetic

    act, _ = write_synthetic(folder / "synthetic", n, layers=layers)
    return act


def direct_linear_cka(X, Y):
    """Kornblith et al. (2019), eq. 4 with explicit centring matrices, from the raw activations:
    HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), HSIC(K, L) = tr(K H L H), K = X X^T."""
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    H = np.eye(len(X)) - 1.0 / len(X)
    K, L = X @ X.T, Y @ Y.T

    def hsic(a, b):
        return np.trace(a @ H @ b @ H)

    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def build_network(arch, weights, seed):
    """The torchvision network and the name of its weights (the default source)."""
    from dnnprobe.network.build import build_from_source

    model, name, _ = build_from_source("torchvision", arch, weights, seed)
    return model, name


def same_weights(a, b):
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def drawn_texts(figure) -> list:
    """Every text the figure draws: its title, legend entries, and each panel's title, axis labels, notes
    and tick labels (those of ticks within the axis' limits: matplotlib keeps, but does not draw, others)."""
    texts = [figure.get_suptitle() and figure._suptitle, *(t for legend in figure.legends for t in legend.get_texts())]
    for axes in figure.axes:
        texts += [axes.title, axes.xaxis.label, axes.yaxis.label, *axes.texts]
        for axis, (low, high) in ((axes.xaxis, sorted(axes.get_xlim())), (axes.yaxis, sorted(axes.get_ylim()))):
            texts += [tick.label1 for tick in axis.get_major_ticks() if low <= tick.get_loc() <= high]
    return [text for text in texts if text and text.get_visible() and text.get_text()]


def texts_outside(figure) -> list[str]:
    """The texts (:func:`drawn_texts`) whose extent leaves the figure, by more than half a pixel."""
    figure.canvas.draw()
    renderer, box = figure.canvas.get_renderer(), figure.bbox
    outside = []
    for text in drawn_texts(figure):
        extent = text.get_window_extent(renderer)
        if extent.x0 < box.x0 - 0.5 or extent.x1 > box.x1 + 0.5 or extent.y0 < box.y0 - 0.5 or extent.y1 > box.y1 + 0.5:
            outside.append(text.get_text())
    return outside


_HEALTH: list[str] = []


def health_server() -> str:
    """The URI of a stand-in MLflow server (this process, a thread) that answers ``/health``: what
    `dnnprobe cluster submit` asks before submitting. Started once per test process."""
    if not _HEALTH:
        import http.server
        import threading

        class Health(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the name http.server calls
                self.send_response(200 if self.path.rstrip("/") == "/health" else 404)
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        _HEALTH.append(f"http://127.0.0.1:{server.server_address[1]}")
    return _HEALTH[0]
