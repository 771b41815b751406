"""facedag.sources.fetch: normalisation results, the SSRF guard (with real HTTP on 127.0.0.1), caps,
and the yt-dlp extractor allowlist (offline)."""

from __future__ import annotations

import ipaddress
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import pytest

from facedag.params import Download
from facedag.records import Rejected
from facedag.sources import fetch
from facedag.sources.fetch import fetch_source, make_clip, target_fps, target_size
from facedag.sources.guarded import Guard, forbidden_ip, guarded_lookups
from facedag.sources.media import constant_rate, cut_clip, probe
from tests import badinputs as bad


def _cfg(**kw) -> Download:
    return Download(**{"preset": "ultrafast", **kw})


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fetch_in")
    return {
        "good": bad.good(folder),
        "rotated": bad.rotated(folder),
        "vfr": bad.vfr(folder),
        "ten_bit": bad.ten_bit(folder),
        "odd_size": bad.odd_size(folder),
        "grayscale": bad.grayscale(folder),
        "big": bad.good(folder, "big.mp4", size="640x360"),
    }


def _clip(path: Path, tmp_path: Path, cfg: Download | None = None, start=None, end=None) -> fetch.Clip:
    return make_clip(str(path), start, end, cfg or _cfg(), tmp_path / "clips", tmp_path / "work", tmp_path)


def _stream_props(path: Path) -> tuple[str, int, list[float]]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frame = next(c.decode(s))
        rot = frame.rotation or 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        pts = sorted(float(p.pts * p.time_base) for p in c.demux(s) if p.pts is not None)
    return s.codec_context.pix_fmt or frame.format.name, int(rot), pts


def test_rotation_applied(inputs, tmp_path) -> None:
    clip = _clip(inputs["rotated"], tmp_path)
    pix, rot, _ = _stream_props(clip.path)
    assert (clip.info.width, clip.info.height, clip.info.rotation, rot) == (120, 160, 0, 0)
    assert pix == "yuv420p" and not clip.copied


def test_vfr_stored_as_fetched_and_cut_constant(inputs, tmp_path) -> None:
    """A variable-rate H.264 source is stored as it came (a stream copy, no full re-encode of
    footage trim will mostly drop); the cut of a kept shot is what makes it constant-rate."""
    clip = _clip(inputs["vfr"], tmp_path)
    _, _, pts = _stream_props(clip.path)
    deltas = [b - a for a, b in itertools.pairwise(pts)]
    assert clip.copied and max(deltas) - min(deltas) > 0.05  # 10 fps, then 30 fps, as fetched
    cut = tmp_path / "cut.mp4"
    cut_clip(clip.path, cut, 0.0, None, crf=30, preset="ultrafast", fps=constant_rate(30.0))
    _, _, pts = _stream_props(cut)
    deltas = [b - a for a, b in itertools.pairwise(pts)]
    assert max(deltas) - min(deltas) < 1e-3 and probe(cut).fps == pytest.approx(30.0)
    assert abs(probe(cut).duration - 1.6) < 0.05


def test_ten_bit_gray_odd_made_8bit_even(inputs, tmp_path) -> None:
    for name, size in (("ten_bit", (160, 120)), ("grayscale", (160, 120)), ("odd_size", (320, 240))):
        clip = _clip(inputs[name], tmp_path)
        assert clip.info.pix_fmt == "yuv420p" and clip.info.codec == "h264", name
        assert (clip.info.width, clip.info.height) == size, name


def test_max_side_and_fps_caps(inputs, tmp_path) -> None:
    clip = _clip(inputs["big"], tmp_path, _cfg(max_side=320, max_fps=12.5))
    assert (clip.info.width, clip.info.height) == (320, 180)
    assert clip.info.fps == pytest.approx(12.5) and clip.info.has_audio


def test_conforming_clip_is_copied_and_cut(inputs, tmp_path) -> None:
    whole = _clip(inputs["good"], tmp_path)
    assert whole.copied and whole.path.name == f"{whole.sha256}.mp4"
    again = _clip(inputs["good"], tmp_path)
    assert again.duplicate and again.path == whole.path
    part = _clip(inputs["good"], tmp_path, start=0.2, end=9.0)  # end beyond the clip is clamped
    assert not part.copied and part.end == pytest.approx(1.0) and abs(part.info.duration - 0.8) < 0.05
    with pytest.raises(Rejected) as err:
        _clip(inputs["good"], tmp_path, start=1.0)
    assert err.value.reason == "empty_cut"


def test_targets() -> None:
    assert target_fps(29.97, 60) == pytest.approx(30000 / 1001)
    assert target_fps(30.0, 60) == 30 and target_fps(120, 60) == 60
    assert target_size(321, 241, 1920) == (320, 240) and target_size(3840, 2160, 1920) == (1920, 1080)


def test_local_sources(inputs, tmp_path) -> None:
    cfg = _cfg()
    assert fetch_source(inputs["good"].as_uri(), tmp_path, cfg, Path("/")) == inputs["good"]
    with pytest.raises(Rejected) as err:
        fetch_source("missing/clip.mp4", tmp_path, cfg, tmp_path)
    assert err.value.reason == "not_found"
    with pytest.raises(Rejected) as err:
        fetch_source("ftp://example.com/a.mp4", tmp_path, cfg, tmp_path)
    assert err.value.reason == "unsupported_scheme"


# --- the IP policy ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.5.5.5", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "100.64.0.1",
        "169.254.169.254", "0.0.0.0", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
        "::1", "::", "fc00::1", "fd12:3456::1", "fe80::1", "ff02::1",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "2002:7f00:1::1", "64:ff9b::a00:1",
    ],
)  # fmt: skip
def test_forbidden_addresses(address: str) -> None:
    assert forbidden_ip(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "172.32.0.1", "2001:4860:4860::8888", "::ffff:8.8.8.8"])
def test_public_addresses(address: str) -> None:
    assert forbidden_ip(ipaddress.ip_address(address)) is None


def test_every_resolved_address_is_checked(monkeypatch) -> None:
    answers = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 80)) for ip in ("8.8.8.8", "10.0.0.5")]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: answers)
    with pytest.raises(Rejected) as err:
        Guard().resolve("mixed.example", 80)
    assert err.value.reason == "private_address" and "10.0.0.5" in err.value.message
    assert len(Guard(allow_private=True).resolve("mixed.example", 80)) == 2


# --- real HTTP on 127.0.0.1 ----------------------------------------------------------------


PAGE_HITS = [0]  # requests /page has had (whoever made them)


class _Handler(BaseHTTPRequestHandler):
    body = b""
    redirect_port = 0

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/clip.mp4") or self.path == "/media":
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(self.body)))
            self.end_headers()
            self.wfile.write(self.body)
        elif self.path == "/nolength":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.wfile.write(self.body)
            self.close_connection = True
        elif self.path == "/to-forbidden":
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.2:{self.redirect_port}/clip.mp4")
            self.end_headers()
        elif self.path.startswith("/loop"):
            n = int(self.path[5:] or 0)
            self.send_response(302)
            self.send_header("Location", f"/loop{n + 1}")
            self.end_headers()
        elif self.path == "/hop":
            self.send_response(301)
            self.send_header("Location", "/clip.mp4")
            self.end_headers()
        elif self.path == "/page":
            PAGE_HITS[0] += 1
            body = b"<html><body>no video here</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def server(inputs) -> Iterator[str]:
    handler = type("H", (_Handler,), {"body": inputs["good"].read_bytes()})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.redirect_port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _only_127_0_0_1(ip) -> str | None:
    return None if str(ip) == "127.0.0.1" else "forbidden in this test"


def test_loopback_refused_by_default(server, tmp_path) -> None:
    with pytest.raises(Rejected) as err:
        fetch_source(f"{server}/clip.mp4", tmp_path, _cfg(), tmp_path)
    assert err.value.reason == "private_address"
    with pytest.raises(Rejected) as err:
        fetch_source(f"{server}/watch?v=1", tmp_path, _cfg(extractors=["generic"]), tmp_path)
    assert err.value.reason == "private_address"  # refused before yt-dlp sees it


def test_loopback_allowed_when_asked(server, inputs, tmp_path) -> None:
    raw = fetch_source(f"{server}/clip.mp4", tmp_path, _cfg(allow_private=True), tmp_path)
    assert raw.read_bytes() == inputs["good"].read_bytes()
    clip = make_clip(f"{server}/hop", None, None, _cfg(allow_private=True), tmp_path / "c", tmp_path / "w", tmp_path)
    assert clip.info.duration == pytest.approx(1.0, abs=0.05)
    raw = fetch_source(f"{server}/media", tmp_path, _cfg(allow_private=True, extractors=[]), tmp_path)
    assert raw.stat().st_size == inputs["good"].stat().st_size  # media by Content-Type, no extension


class _Rebinding:
    """A policy whose DNS answer turns private after the first lookup it is asked about (DNS
    rebinding): 127.0.0.1 passes once, then counts as forbidden."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, ip) -> str | None:
        self.calls += 1
        return None if self.calls == 1 else "rebound to a private address"


def test_yt_dlp_lookups_are_checked_too(server, tmp_path) -> None:
    """Our check passes, then yt-dlp looks the host up itself and gets the private answer: refused
    in that lookup, before it connects; with one answer throughout it reads the page."""
    real = socket.getaddrinfo
    hits = PAGE_HITS[0]
    guard = Guard(policy=_Rebinding())
    with pytest.raises(Rejected) as err:
        fetch_source(f"{server}/page", tmp_path, _cfg(extractors=["generic"]), tmp_path, guard)
    assert err.value.reason == "private_address" and "when yt-dlp looks it up" in err.value.message
    assert PAGE_HITS[0] == hits  # nothing reached the server
    assert socket.getaddrinfo is real  # the lookup is the library's own again
    with pytest.raises(Rejected) as err:  # allowed throughout: yt-dlp reads the page, which has no video
        fetch_source(f"{server}/page", tmp_path, _cfg(extractors=["generic"]), tmp_path, Guard(policy=_only_127_0_0_1))
    assert err.value.reason == "extractor_not_allowed" and PAGE_HITS[0] > hits


def test_no_lookup_after_the_time_cap() -> None:
    with guarded_lookups(Guard(allow_private=True), deadline=time.monotonic() - 1) as refused, pytest.raises(
            socket.gaierror):
        socket.getaddrinfo("127.0.0.1", 80)
    assert [r.reason for r in refused] == ["timeout"]


def test_redirect_to_forbidden_address_refused(server, tmp_path) -> None:
    guard = Guard(policy=_only_127_0_0_1)
    assert fetch_source(f"{server}/hop", tmp_path, _cfg(), tmp_path, guard).stat().st_size > 0
    with pytest.raises(Rejected) as err:
        fetch_source(f"{server}/to-forbidden", tmp_path, _cfg(), tmp_path, guard)
    assert err.value.reason == "private_address" and "127.0.0.2" in err.value.message


def test_too_many_redirects(server, tmp_path) -> None:
    with pytest.raises(Rejected) as err:
        fetch_source(f"{server}/loop0", tmp_path, _cfg(allow_private=True, extractors=[]), tmp_path)
    assert err.value.reason == "too_many_redirects"


def test_size_cap(server, tmp_path) -> None:
    cfg = _cfg(allow_private=True, max_bytes=1000)
    for path in ("/clip.mp4", "/nolength"):  # by Content-Length, and while streaming
        with pytest.raises(Rejected) as err:
            fetch_source(f"{server}{path}", tmp_path, cfg, tmp_path)
        assert err.value.reason == "too_large"
    assert not [p for p in tmp_path.iterdir() if p.stat().st_size > 0]


def test_http_errors(server, tmp_path) -> None:
    with pytest.raises(Rejected) as err:
        fetch_source(f"{server}/missing.mp4", tmp_path, _cfg(allow_private=True), tmp_path)
    assert err.value.reason == "http_error"
    with pytest.raises(Rejected) as err:  # an html page and no extractor allowed
        fetch_source(f"{server}/page", tmp_path, _cfg(allow_private=True, extractors=[]), tmp_path)
    assert err.value.reason == "extractor_not_allowed"


def test_extractor_allowlist_offline(monkeypatch, tmp_path) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("network I/O before the allowlist check")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    for extractors in ([], ["vimeo"]):
        with pytest.raises(Rejected) as err:
            fetch_source("https://www.youtube.com/watch?v=xxxxxxxxxxx", tmp_path, _cfg(extractors=extractors), tmp_path)
        assert err.value.reason == "extractor_not_allowed"
    ok, takers = fetch.extractors_for("https://www.youtube.com/watch?v=xxxxxxxxxxx", ["youtube"])
    assert ok == ["youtube"] and "youtube" in takers


def test_reason_codes_documented() -> None:
    for reason in fetch.REASONS:
        assert reason in fetch.__doc__


def test_probe_of_stored_clip(inputs, tmp_path) -> None:
    clip = _clip(inputs["rotated"], tmp_path)
    assert probe(clip.path).rotation == 0


@pytest.mark.parametrize(
    "video_id",
    ["../../../etc/passwd", "/abs/path", "$(touch PWNED)", "-o evil", "a/../../b", "x" * 400, "Zoë 日本 'q\"\n"],
)
def test_ytdlp_file_names_stay_inside_the_download_folder(tmp_path: Path, video_id: str) -> None:
    """Even if a page's metadata were used for a name, yt-dlp's own templating keeps it inside."""
    import yt_dlp

    opts = fetch.ytdlp_options(_cfg(), tmp_path / "work")
    assert opts["postprocessors"] == [] and opts["skip_download"] and opts["restrictfilenames"]
    with yt_dlp.YoutubeDL(opts) as ydl:
        name = ydl.prepare_filename({"id": video_id, "title": video_id, "ext": "mp4", "extractor": "generic"})
    path = Path(name).resolve()
    assert path.is_relative_to((tmp_path / "work").resolve()), name
    assert all(ch.isascii() and ch not in "$'\"\n` ;" for ch in path.name), path.name
