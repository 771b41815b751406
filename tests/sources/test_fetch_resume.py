"""facedag.sources.fetch.Partial: a fetch killed half-way resumes with an HTTP Range request and
stores the same bytes (real HTTP on 127.0.0.1, a real process killed with SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from facedag.params import Download
from facedag.records import sha256_file
from facedag.sources.fetch import make_clip
from facedag.sources.guarded import Guard, Partial
from tests import badinputs as bad

ROOT = Path(__file__).resolve().parents[2]


class _Server(ThreadingHTTPServer):
    """Serves one file at /clip.mp4 with Range and If-Range support; logs every request's Range.

    While `stall` is set, a request for the whole file gets its first half, then nothing more
    until `stall` is cleared (a connection that hangs, for the client to be killed on)."""

    def __init__(self, body: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.body = body
        self.etag = '"v1"'
        self.ranges: list[str | None] = []
        self.stall = threading.Event()
        self.half_sent = threading.Event()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        if self.path != "/clip.mp4":
            self.send_error(404)
            return
        want = self.headers.get("Range")
        srv.ranges.append(want)
        body, start = srv.body, 0
        if want and self.headers.get("If-Range") in (None, srv.etag):
            start = int(want.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("ETag", srv.etag)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if start == 0 and srv.stall.is_set():
            half = len(body) // 2
            self.wfile.write(body[:half])
            self.wfile.flush()
            srv.half_sent.set()
            while srv.stall.is_set():
                time.sleep(0.05)
            return  # the client is gone by now
        self.wfile.write(body[start:])


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Server]:
    src = bad.good(tmp_path_factory.mktemp("resume_in"), "big.mp4", dur=2.0, size="640x360")
    srv = _Server(src.read_bytes())
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.stall.clear()
    srv.shutdown()
    srv.server_close()


def _url(srv: _Server) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/clip.mp4"


_CHILD = """
import sys
from pathlib import Path
from facedag.params import Download
from facedag.sources.fetch import fetch_source
fetch_source(sys.argv[1], Path(sys.argv[2]), Download(allow_private=True), Path(sys.argv[2]), None, Path(sys.argv[3]))
"""


def _kill_half_way(srv: _Server, work: Path, partial: Path) -> None:
    """Start a fetch in a child process, let it receive half the file, then SIGKILL it."""
    srv.stall.set()
    child = subprocess.Popen([sys.executable, "-c", _CHILD, _url(srv), os.fspath(work), os.fspath(partial)],
                             cwd=ROOT)  # fmt: skip
    try:
        assert srv.half_sent.wait(120), "the child never asked for the file"
        part = Partial.for_source(partial, _url(srv)).part
        deadline = time.monotonic() + 60
        while (not part.exists() or part.stat().st_size < len(srv.body) // 2) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        srv.stall.clear()
    assert part.stat().st_size == len(srv.body) // 2


def test_killed_fetch_resumes_with_a_range_request(server: _Server, tmp_path: Path) -> None:
    partial, cfg = tmp_path / "partial", Download(allow_private=True, preset="ultrafast")
    whole = make_clip(_url(server), None, None, cfg, tmp_path / "ref", tmp_path / "w0", tmp_path)  # uninterrupted
    server.ranges.clear()
    _kill_half_way(server, tmp_path / "w1", partial)
    clip = make_clip(_url(server), None, None, cfg, tmp_path / "clips", tmp_path / "w2", tmp_path, None, partial)
    half = len(server.body) // 2
    assert server.ranges == [None, f"bytes={half}-"]  # the killed fetch, then only the rest
    assert clip.source_sha256 == whole.source_sha256 and clip.sha256 == whole.sha256
    assert sha256_file(clip.path) == sha256_file(whole.path)
    assert list(partial.iterdir()) == []  # nothing left to resume


def test_changed_file_starts_over(server: _Server, tmp_path: Path) -> None:
    """A new version on the server (another ETag): the If-Range answer is the whole new file,
    and what is stored is that file, never half of each."""
    partial = tmp_path / "partial"
    _kill_half_way(server, tmp_path / "w1", partial)
    server.etag = '"v2"'
    server.body = server.body[::-1]
    server.ranges.clear()
    dest = tmp_path / "out.bin"
    Partial.for_source(partial, _url(server)).fetch(_url(server), dest, 10**9, time.monotonic() + 60,
                                                    _allow_all(), None)  # fmt: skip
    assert server.ranges == [f"bytes={len(server.body) // 2}-"]  # asked to resume; got a 200
    assert dest.read_bytes() == server.body


def _allow_all() -> Guard:
    return Guard(allow_private=True)


def test_no_validator_no_resume(tmp_path: Path) -> None:
    """Without a length and a strong validator recorded, nothing is resumed."""
    p = Partial(tmp_path, "k")
    p.part.write_bytes(b"x" * 10)
    p.meta.write_text('{"url": "u", "length": 20, "validator": null}')
    assert p._recorded() == (0, {})
    p.meta.write_text('{"url": "u", "length": 20, "validator": "\\"e\\""}')
    assert p._recorded()[0] == 10
    Download()  # params still validate without any resume key
