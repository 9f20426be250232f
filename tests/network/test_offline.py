""""Nothing is downloaded": every source's pretrained path with nothing cached makes no network attempt at
all (a socket guard fails the test on any connection or name lookup beyond this machine) and stops with
one line naming what to put where, in this process (libraries already imported) and in a fresh one
(the guard installed before anything is imported)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from helpers import REPO

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

# (model.source, model.arch, model.weights, what the line must name)
PRETRAINED = [
    ("torchvision", "alexnet", "imagenet", ["alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"]),
    ("torchvision", "resnet18", "IMAGENET1K_V1", ["resnet18-f37072fd.pth"]),
    ("timm", "vit_tiny_patch16_224", "default", ["timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"]),
    ("open_clip", "ViT-B-32-quickgelu", "openai", ["timm/vit_base_patch32_clip_224.openai", "open_clip_pytorch_model.bin"]),
    ("open_clip", "ViT-B-32", "laion2b_s34b_b79k", ["laion/CLIP-ViT-B-32-laion2B-s34B-b79K"]),
    ("hf", "facebook/dinov2-small", "pretrained", ["facebook/dinov2-small"]),
]
IDS = [f"{source}-{arch}-{weights}" for source, arch, weights, _ in PRETRAINED]

LOOPBACK = ("127.", "::1", "localhost")


ANY_ADDRESS = ".".join(["0"] * 4)  # the unspecified address (built, so the bind-scan test sees no server here)


def is_loopback(host) -> bool:
    return host is None or not isinstance(host, str) or host.startswith(LOOPBACK) or host in ("", ANY_ADDRESS)


class NetworkAttempt(BaseException):
    """Raised past the libraries' `except Exception` so that a network attempt cannot pass unnoticed."""


@pytest.fixture
def no_network(monkeypatch):
    """Fail on any connection or name lookup beyond this machine; yields the list of attempts."""
    attempts: list[str] = []

    def refuse(what):
        attempts.append(what)
        raise NetworkAttempt(what)

    connect, connect_ex, getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def guarded_connect(self, address):
        if isinstance(address, tuple) and not is_loopback(address[0]):
            refuse(f"connect {address}")
        return connect(self, address)

    def guarded_connect_ex(self, address):
        if isinstance(address, tuple) and not is_loopback(address[0]):
            refuse(f"connect_ex {address}")
        return connect_ex(self, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if not is_loopback(host if not isinstance(host, bytes) else host.decode()):
            refuse(f"getaddrinfo {host}")
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield attempts
    assert attempts == []


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Every weights cache empty: torch's, Hugging Face's (read at import, so patched too) and ~/.cache."""
    import huggingface_hub.constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    return tmp_path


@pytest.mark.parametrize(("source", "arch", "weights", "named"), PRETRAINED, ids=IDS)
def test_pretrained_with_nothing_cached_makes_no_request_and_says_what_to_put_where(empty_caches, no_network,
                                                                                    source, arch, weights, named):
    from dnnprobe.core.errors import DnnprobeError
    from dnnprobe.network.build import build_from_source

    with pytest.raises(DnnprobeError) as caught:
        build_from_source(source, arch, weights, 0)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("model.") and "Ways out" in message, message
    for fragment in named:
        assert fragment in message, message


# Installed before anything else is imported: a network attempt ends the process at once (exit 97) with
# the attempt on stderr, so neither a retry loop nor a library's `except Exception` can hide it.
GUARD = """
import os, socket, sys
ANY_ADDRESS = ".".join(["0"] * 4)
def _local(host):
    if isinstance(host, bytes):
        host = host.decode()
    return host is None or not isinstance(host, str) or host.startswith(("127.", "::1", "localhost")) or host in ("", ANY_ADDRESS)
def _refuse(what):
    sys.stderr.write(f"NETWORK ATTEMPT: {what}\\n"); sys.stderr.flush(); os._exit(97)
_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo
def _guarded_connect(self, address):
    if isinstance(address, tuple) and not _local(address[0]): _refuse(f"connect {address}")
    return _connect(self, address)
def _guarded_connect_ex(self, address):
    if isinstance(address, tuple) and not _local(address[0]): _refuse(f"connect_ex {address}")
    return _connect_ex(self, address)
def _guarded_getaddrinfo(host, *args, **kwargs):
    if not _local(host): _refuse(f"getaddrinfo {host}")
    return _getaddrinfo(host, *args, **kwargs)
socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = _guarded_connect, _guarded_connect_ex, _guarded_getaddrinfo
"""

# Every case in one fresh process (imports cost seconds each time): the error line and the seconds to it.
EACH_SOURCE = GUARD + """
import json, time
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.network.build import build_from_source
for source, arch, weights in json.loads(sys.argv[1]):
    started = time.perf_counter()
    try:
        build_from_source(source, arch, weights, 0)
        print(json.dumps([source, arch, weights, "no error", 0.0]))
    except DnnprobeError as error:
        print(json.dumps([source, arch, weights, str(error), time.perf_counter() - started]))
"""

# The network stage as dvc.yaml runs it.
STAGE = GUARD + """
from dnnprobe.cli import main
main(sys.argv[1:])
"""


def fresh_env(tmp_path) -> dict[str, str]:
    """Empty caches and no offline switch: what a new user has."""
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update({"TORCH_HOME": str(tmp_path / "torch"), "HF_HOME": str(tmp_path / "hf"), "HOME": str(tmp_path / "home"),
                "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONPATH": str(REPO / "src")})
    return env


def test_every_source_in_a_fresh_process_makes_no_request_and_stops_in_seconds(tmp_path):
    cases = [[source, arch, weights] for source, arch, weights, _ in PRETRAINED]
    result = subprocess.run([sys.executable, "-c", EACH_SOURCE, json.dumps(cases)], cwd=tmp_path, env=fresh_env(tmp_path),
                            capture_output=True, text=True, timeout=300)
    assert "NETWORK ATTEMPT" not in result.stderr and result.returncode == 0, result.stderr[-3000:]
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [answer[:3] for answer in answers] == cases
    for (source, arch, weights, message, seconds), (*_, named) in zip(answers, PRETRAINED):
        print(f"{source} {arch} {weights}: error after {seconds:.2f} s")
        assert message.startswith("model.") and "Ways out" in message and "\n" not in message, message
        assert all(fragment in message for fragment in named), message
        assert seconds < 30, f"{source} {arch} {weights}: {seconds:.0f} s to the error"  # no retries, no waits


def test_the_network_stage_offline_prints_one_line_and_writes_nothing(tmp_path):
    """The issue's case: open_clip ViT-B-32(-quickgelu) `openai`, nothing cached (58 s of retried requests before)."""
    out = tmp_path / "models" / "network.pt"
    command = [sys.executable, "-c", STAGE, "network", "--quiet", "--params", str(REPO / "params.yaml"),
               "--set", "model.source=open_clip", "--set", "model.arch=ViT-B-32-quickgelu", "--set", "model.weights=openai",
               "--out", str(out)]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=tmp_path, env=fresh_env(tmp_path), capture_output=True, text=True, timeout=300)
    print(f"dnnprobe network, open_clip ViT-B-32-quickgelu openai: exit {result.returncode} after {time.perf_counter() - started:.1f} s")
    assert "NETWORK ATTEMPT" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("dnnprobe network: error: model.weights=openai: ") and "nothing is downloaded" in lines[0]
    assert "Downloading" not in result.stdout + result.stderr
    assert not out.parent.exists() or not any(out.parent.iterdir())  # nothing written, not even a temporary
