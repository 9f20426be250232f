"""dnnprobe.stimuli.download against what public file hosts do, each served by a local server on 127.0.0.1:
redirects to another host, no Content-Length, no Range support, a file changed between tries,
429/503 with Retry-After, connections that close early, and pages that are not the file."""

from __future__ import annotations

import email.utils
import hashlib
import http.server
import io
import tarfile
import threading
import time
import zipfile

import pytest

from dnnprobe.stimuli import download as dl
from dnnprobe.core.errors import DnnprobeError
from dnnprobe.stimuli.download import download, expect_zip

from helpers import one_line_error


def zip_bytes(n: int = 40) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for i in range(n):
            bundle.writestr(f"folder/{i}.txt", f"file {i} " * (i + 1))
    return buffer.getvalue()


class Host:
    """A file host on 127.0.0.1: serves `files` with ETag, Range and If-Range, unless a scripted reply
    for the path is queued in `script[path]` (each used once, in order)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.script: dict[str, list] = {}
        self.requests: list[dict] = []
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                host.requests.append({"path": self.path, "range": self.headers.get("Range"),
                                      "if_range": self.headers.get("If-Range")})
                queued = host.script.get(self.path)
                reply = queued.pop(0) if queued else ("serve",)
                getattr(host, "_" + reply[0])(self, *reply[1:])

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def etag(self, path: str) -> str:
        return '"' + hashlib.sha256(self.files[path]).hexdigest()[:16] + '"'

    def _serve(self, handler, honour_range: bool = True):
        data = self.files[handler.path]
        wanted = handler.headers.get("Range")
        if_range = handler.headers.get("If-Range")
        if wanted and honour_range and (if_range is None or if_range == self.etag(handler.path)):
            start = int(wanted.split("=")[1].split("-")[0])
            if start >= len(data):
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{len(data)}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            start = 0
            handler.send_response(200)
        handler.send_header("ETag", self.etag(handler.path))
        handler.send_header("Content-Type", "application/zip")
        handler.send_header("Content-Length", str(len(data) - start))
        handler.end_headers()
        handler.wfile.write(data[start:])

    def _ignore_range(self, handler):
        self._serve(handler, honour_range=False)

    def _status(self, handler, code: int, headers: dict | None = None, body: bytes = b"busy"):
        handler.send_response(code)
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _redirect(self, handler, location: str, code: int = 302):
        self._status(handler, code, {"Location": location}, b"")

    def _no_length(self, handler, content_type: str = "application/octet-stream"):
        """HTTP/1.0, no Content-Length: the body ends when the connection closes."""
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.end_headers()
        handler.wfile.write(self.files[handler.path])

    def _cut(self, handler, count: int):
        """Promise the whole file (or the requested rest of it), send `count` bytes, close."""
        data = self.files[handler.path]
        wanted = handler.headers.get("Range")
        start = int(wanted.split("=")[1].split("-")[0]) if wanted else 0
        handler.send_response(206 if wanted else 200)
        if wanted:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.send_header("ETag", self.etag(handler.path))
        handler.send_header("Content-Length", str(len(data) - start))
        handler.end_headers()
        handler.wfile.write(data[start:start + count])
        handler.wfile.flush()
        handler.close_connection = True

    def _page(self, handler, body: bytes, content_type: str):
        self._status(handler, 200, {"Content-Type": content_type}, body)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hosts():
    """Make as many hosts as a test needs; each on its own port (another host, as far as URLs go)."""
    made: list[Host] = []

    def make() -> Host:
        made.append(Host())
        return made[-1]

    yield make
    for host in made:
        host.close()


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """The waits between tries, recorded instead of slept."""
    waited: list[float] = []
    monkeypatch.setattr(dl, "_sleep", waited.append)
    return waited


def test_a_redirect_to_another_host_is_followed_and_a_resume_keeps_its_range(hosts, tmp_path):
    front, storage = hosts(), hosts()
    data = zip_bytes()
    storage.files["/blob"] = data
    front.script["/get"] = [("redirect", f"{storage.url}/blob")] * 2
    target = tmp_path / "f.zip"
    target.with_name("f.zip.part").write_bytes(data[:500])  # an earlier, interrupted download
    download(f"{front.url}/get", target, hashlib.sha256(data).hexdigest(), expect=expect_zip)
    assert target.read_bytes() == data
    assert storage.requests[0]["range"] == "bytes=500-"  # the redirect kept the Range header


def test_no_content_length_and_the_first_download_prints_size_and_sha256_to_pin(hosts, tmp_path, capsys):
    host = hosts()
    data = zip_bytes()
    host.files["/f"] = data
    host.script["/f"] = [("no_length",)]
    target = download(f"{host.url}/f", tmp_path / "f.zip", expect=expect_zip, pin_as="stimuli.bold5000.images")
    assert target.read_bytes() == data
    digest = hashlib.sha256(data).hexdigest()
    assert (f"f.zip from {host.url}/f: {len(data)} bytes, sha256 {digest}; pin them in params.yaml: "
            f"stimuli.bold5000.images_size: {len(data)}, stimuli.bold5000.images_sha256: {digest}") in capsys.readouterr().err
    # Pinned, the same file is used from the cache without a request, and without the note.
    count = len(host.requests)
    download(f"{host.url}/f", target, digest, len(data), expect=expect_zip, pin_as="stimuli.bold5000.images")
    assert len(host.requests) == count and "pin them" not in capsys.readouterr().err


def test_a_server_without_range_support_restarts_the_file(hosts, tmp_path):
    host = hosts()
    data = zip_bytes()
    host.files["/f"] = data
    host.script["/f"] = [("ignore_range",)]
    target = tmp_path / "f.zip"
    target.with_name("f.zip.part").write_bytes(b"X" * 700)  # bytes that are not the start of the file
    download(f"{host.url}/f", target, hashlib.sha256(data).hexdigest())
    assert host.requests[0]["range"] == "bytes=700-"
    assert target.read_bytes() == data  # not 700 stale bytes followed by the whole file


def test_a_file_changed_on_the_server_between_tries_is_not_spliced(hosts, tmp_path):
    host = hosts()
    old, new = zip_bytes(40), zip_bytes(45)
    host.files["/f"] = old
    host.script["/f"] = [("cut", 600)]
    target = tmp_path / "f.zip"
    with pytest.raises(DnnprobeError):  # no retries left: the part file stays
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(dl, "RETRIES", 0)
            download(f"{host.url}/f", target)
    assert target.with_name("f.zip.part").read_bytes() == old[:600]
    host.files["/f"] = new  # the host replaces the file; its ETag changes
    download(f"{host.url}/f", target)
    assert host.requests[-1]["if_range"] == '"' + hashlib.sha256(old).hexdigest()[:16] + '"'
    assert target.read_bytes() == new


def test_a_connection_closed_early_is_resumed(hosts, tmp_path, sleeps, capsys):
    host = hosts()
    data = zip_bytes()
    host.files["/f"] = data
    host.script["/f"] = [("cut", 1000), ("cut", 100)]  # each later try resumes where the last one stopped
    target = download(f"{host.url}/f", tmp_path / "f.zip", hashlib.sha256(data).hexdigest())
    assert target.read_bytes() == data
    assert [r["range"] for r in host.requests] == [None, "bytes=1000-", "bytes=1100-"]
    assert sleeps == [2.0, 4.0]
    assert f"the connection closed after 1000 of {len(data)} bytes; try 2 of 6 in 2 s" in capsys.readouterr().err


def test_busy_replies_are_retried_after_retry_after(hosts, tmp_path, sleeps, capsys):
    host = hosts()
    data = zip_bytes()
    host.files["/f"] = data
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    host.script["/f"] = [("status", 429, {"Retry-After": "7"}), ("status", 503, {"Retry-After": later}),
                         ("status", 503)]
    target = download(f"{host.url}/f", tmp_path / "f.zip", hashlib.sha256(data).hexdigest())
    assert target.read_bytes() == data and len(host.requests) == 4
    assert sleeps[0] == 7.0 and 25 <= sleeps[1] <= 30 and sleeps[2] == 8.0  # no Retry-After: 2, 4, 8 s
    assert "HTTP 429 Too Many Requests; try 2 of 6 in 7 s" in capsys.readouterr().err


def test_retries_are_bounded_in_number_and_in_total_wait(hosts, tmp_path, sleeps):
    host = hosts()
    host.files["/f"] = zip_bytes()
    host.script["/f"] = [("status", 503)] * 10
    message = one_line_error(lambda: download(f"{host.url}/f", tmp_path / "f.zip"),
                             r"HTTP 503 Service Unavailable; gave up after 6 tries and 62 s of waiting; rerun later")
    assert len(host.requests) == 6 and sum(sleeps) <= dl.MAX_WAIT_S
    host.script["/f"] = [("status", 429, {"Retry-After": "3600"})]
    one_line_error(lambda: download(f"{host.url}/f", tmp_path / "f.zip"),
                   r"asks to wait 3600 s \(Retry-After\), more than the 300 s a download waits; rerun later")
    assert sum(sleeps) == 62 and "put the file at" in message


def test_a_complete_part_file_is_finished_with_a_416(hosts, tmp_path):
    host = hosts()
    data = zip_bytes()
    host.files["/f"] = data
    target = tmp_path / "f.zip"
    target.with_name("f.zip.part").write_bytes(data)
    download(f"{host.url}/f", target, hashlib.sha256(data).hexdigest())
    assert target.read_bytes() == data and host.requests[0]["range"] == f"bytes={len(data)}-"
    # A part longer than the file on the server (which changed): 416 names another size, start over.
    longer = tmp_path / "g.zip"
    longer.with_name("g.zip.part").write_bytes(data + b"junk")
    download(f"{host.url}/f", longer, hashlib.sha256(data).hexdigest())
    assert longer.read_bytes() == data


@pytest.mark.parametrize("body, content_type, kind", [
    (b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>", "text/html; charset=utf-8", "an HTML page"),
    ("tar", "application/gzip", r"gzip data \(a .tar.gz or .gz\)"),
])
def test_a_download_that_is_not_a_zip_is_described_kept_and_not_fetched_again(hosts, tmp_path, body, content_type, kind):
    if body == "tar":
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            info = tarfile.TarInfo("a.txt")
            info.size = 3
            archive.addfile(info, io.BytesIO(b"abc"))
        body = buffer.getvalue()
    host = hosts()
    host.files["/f"] = zip_bytes()
    host.script["/f"] = [("page", body, content_type)]
    target = tmp_path / "BOLD5000_Stimuli.zip"
    kept = tmp_path / "BOLD5000_Stimuli.zip.rejected"
    message = one_line_error(lambda: download(f"{host.url}/f", target, expect=expect_zip, wanted="a zip"),
                             rf"download rejected: it is {kind}, not a zip \(Content-Type {content_type}, "
                             rf"{len(body)} bytes, begins b['\"]")
    assert f"kept as {kept}" in message and kept.read_bytes() == body and not target.exists()
    # A rerun says so instead of downloading the same thing again.
    count = len(host.requests)
    one_line_error(lambda: download(f"{host.url}/f", target, expect=expect_zip, wanted="a zip"),
                   rf"an earlier download from .* was rejected \({kind}, {len(body)} bytes\); read it, then delete it")
    assert len(host.requests) == count
    kept.unlink()  # what the message says to do once the host serves the file again
    assert zipfile.is_zipfile(download(f"{host.url}/f", target, expect=expect_zip, wanted="a zip"))


def test_a_file_of_the_wrong_kind_put_there_by_hand_is_named_and_left_alone(hosts, tmp_path):
    host = hosts()
    target = tmp_path / "BOLD5000_Stimuli.zip"
    target.write_bytes(b"\x1f\x8b\x08\x00" + bytes(100))  # a .tar.gz, renamed
    one_line_error(lambda: download(f"{host.url}/f", target, expect=expect_zip, wanted="a zip"),
                   r"BOLD5000_Stimuli.zip: is gzip data \(a .tar.gz or .gz\), not a zip \(104 bytes, begins b'\\x1f\\x8b")
    assert target.read_bytes() == b"\x1f\x8b\x08\x00" + bytes(100) and host.requests == []


def test_a_second_process_downloading_the_same_file_stops_in_one_line(hosts, tmp_path):
    import subprocess
    import sys

    host = hosts()
    target = tmp_path / "f.zip"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom dnnprobe.core.atomic import claim\n"
         f"with claim({str(target)!r}):\n    print('held', flush=True)\n    time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        one_line_error(lambda: download(f"{host.url}/f", target), rf"f.zip: pid {holder.pid} is writing it right now")
        assert host.requests == []
    finally:
        holder.kill()
        holder.wait()
