"""How long a probe takes to fail when its MLflow tracking server stops answering mid-run.

Starts a real `mlflow server` on 127.0.0.1 (SQLite backend, in a temporary folder), opens a probe run
as the probe stage does (`dnnprobe.track.runs.probe_run`), logs one layer, then stops the server and
logs the next layer, timing from the stop to dnnprobe's one-line error:

- ``killed``: SIGKILL to the server's processes (a crash, a restart): connections are refused.
- ``frozen``: SIGSTOP (a hung server, a network that drops packets): the kernel still accepts
  connections, but nothing answers; each request waits for MLFLOW_HTTP_REQUEST_TIMEOUT.

Both with the stages' bounds on MLflow's HTTP retries (`dnnprobe.track.store.HTTP_LIMITS`), or with
MLflow's own defaults (--mlflow-defaults: 7 retries, 120 s timeout; expect minutes). Prints each
case's error and ends with one line ``killed_s=<seconds> frozen_s=<seconds>`` (``-`` for a case not run).

    python benchmarks/bench_tracking.py                    # both cases, the stages' bounds
    python benchmarks/bench_tracking.py --cases killed
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(folder / "server.log", "wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
         "--artifacts-destination", str(folder / "artifacts")],
        cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return server, url
        except OSError:
            time.sleep(0.5)


def time_failure(case: str, folder: Path) -> float:
    """Seconds from stopping the server to dnnprobe's error, for `case` killed or frozen."""
    from dnnprobe.track.runs import probe_run
    from dnnprobe.core.errors import DnnprobeError

    server, url = start_server(folder)
    os.environ["MLFLOW_TRACKING_URI"] = url
    try:
        with probe_run("bench", f"{case} server", {"pca": 4}, "accuracy") as run:
            run.log_layer("conv1", [0.5, 0.6, 0.7], 0.6, 0.05)
            os.killpg(server.pid, signal.SIGKILL if case == "killed" else signal.SIGSTOP)
            stopped = time.perf_counter()
            run.log_layer("conv1_relu", [0.5, 0.6, 0.7], 0.6, 0.05)
    except DnnprobeError as exc:
        elapsed = time.perf_counter() - stopped
        print(f"{case}: {elapsed:.1f} s: dnnprobe probe: error: {exc}")
        return elapsed
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            os.killpg(server.pid, signal.SIGCONT)
        server.wait()
    raise SystemExit(f"{case}: the run did not fail")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="killed,frozen", help="comma-separated: killed, frozen")
    parser.add_argument("--mlflow-defaults", action="store_true",
                        help="leave MLflow's own retries and timeout (7 retries, 120 s) in place")
    args = parser.parse_args(argv)
    if args.mlflow_defaults:
        from dnnprobe.track.store import HTTP_LIMITS

        HTTP_LIMITS.clear()
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}")
    times = {}
    for case in args.cases.split(","):
        with tempfile.TemporaryDirectory() as folder:
            os.environ["DVC_ROOT"] = folder
            times[case] = time_failure(case, Path(folder))
    print(" ".join(f"{case}_s={times[case]:.1f}" if case in times else f"{case}_s=-" for case in ("killed", "frozen")))


if __name__ == "__main__":
    main()
