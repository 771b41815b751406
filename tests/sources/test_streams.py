"""facedag.sources.streams: HD as separate DASH video + audio and as HLS, through real yt-dlp
(generic extractor), fetched by the guarded client from a real HTTP server on 127.0.0.1 and
merged by real ffmpeg; segments and redirects to forbidden addresses refused."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from facedag.params import Download
from facedag.records import Rejected
from facedag.sources.fetch import make_clip
from facedag.sources.guarded import Guard
from facedag.sources.media import ffmpeg_input, run_ffmpeg
from facedag.sources.streams import format_spec, hls_segments

_PAGE = ('<html><head><title>{title}</title></head>'
         '<body><video controls><source src="{src}" type="{type}"></video></body></html>')


def _make_media(folder: Path) -> None:
    """A 2 s 720p video with audio, as DASH (separate video and audio adaptation sets) and as HLS."""
    src = ["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25:duration=2",
           "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
           "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25",
           "-pix_fmt", "yuv420p", "-c:a", "aac"]  # fmt: skip
    (folder / "dash").mkdir()  # two video renditions (720p and 360p) and one audio
    run_ffmpeg([*src, "-map", "0:v", "-s:v:1", "640x360", "-f", "dash", "-seg_duration", "1", "-use_template", "1",
                "-use_timeline", "1", "-adaptation_sets", "id=0,streams=v id=1,streams=a",
                ffmpeg_input(folder / "dash" / "manifest.mpd")])
    (folder / "hls").mkdir()
    run_ffmpeg([*src, "-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod", "-hls_segment_filename",
                ffmpeg_input(folder / "hls" / "seg%03d.ts"), ffmpeg_input(folder / "hls" / "index.m3u8")])
    pages = {"dash": ("/dash/manifest.mpd", "application/dash+xml"),
             "hls": ("/hls/index.m3u8", "application/x-mpegURL"),
             "hls-evil": ("/hls-evil/index.m3u8", "application/x-mpegURL"),
             "hls-redir": ("/hls-redir/index.m3u8", "application/x-mpegURL")}  # fmt: skip
    for name, (path, kind) in pages.items():
        (folder / f"{name}.html").write_text(_PAGE.format(title=name, src=path, type=kind))


CUT_OFF: set[str] = set()  # paths whose next request gets half its body, then a closed connection


class _Handler(SimpleHTTPRequestHandler):
    """Files of the folder, plus playlists whose segments point at 127.0.0.2 (directly, or by a
    redirect); every path requested is logged."""

    requests: list[str]
    port: int

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.requests.append(self.path)
        folder = Path(self.directory)
        evil = f"http://127.0.0.2:{self.port}/hls/"
        if self.path in ("/hls-evil/index.m3u8", "/hls-redir/index.m3u8"):
            text = (folder / "hls" / "index.m3u8").read_text()
            prefix = evil if self.path.startswith("/hls-evil") else "/redir/"
            body = "\n".join(prefix + ln if ln.startswith("seg") else ln for ln in text.splitlines()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-mpegURL")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path in CUT_OFF:
            CUT_OFF.discard(self.path)
            body = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
        elif self.path.startswith("/redir/"):
            self.send_response(302)
            self.send_header("Location", evil + self.path.rsplit("/", 1)[1])
            self.end_headers()
        else:
            super().do_GET()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    folder = tmp_path_factory.mktemp("site")
    _make_media(folder)
    requests: list[str] = []
    handler = type("H", (_Handler,), {"requests": requests})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    handler.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    httpd.shutdown()
    httpd.server_close()


def _cfg(**kw) -> Download:
    return Download(**{"preset": "ultrafast", "extractors": ["generic"], **kw})


def _only_127_0_0_1(ip) -> str | None:
    return None if str(ip) == "127.0.0.1" else "forbidden in this test"


@pytest.mark.parametrize("page", ["dash", "hls"])
def test_hd_with_audio_is_stored(site, tmp_path: Path, page: str) -> None:
    base, requests = site
    requests.clear()
    clip = make_clip(f"{base}/{page}.html", None, None, _cfg(allow_private=True), tmp_path / "clips",
                     tmp_path / "work", tmp_path)  # fmt: skip
    assert (clip.info.width, clip.info.height) == (1280, 720) and clip.info.has_audio
    assert clip.info.duration == pytest.approx(2.0, abs=0.15)
    segments = [r for r in requests if r.endswith((".m4s", ".ts"))]
    assert len(segments) >= 2  # fetched segment by segment by our client
    if page == "dash":
        streams = {r.split("/")[-1].split("-")[1] for r in segments if r.startswith("/dash/chunk")}
        assert streams == {"stream0", "stream1"}  # separate video (the 720p one) and audio


def test_max_height_picks_the_rendition(site, tmp_path: Path) -> None:
    base, requests = site
    requests.clear()
    clip = make_clip(f"{base}/dash.html", None, None, _cfg(allow_private=True, max_height=480), tmp_path / "clips",
                     tmp_path / "work", tmp_path)  # fmt: skip
    assert (clip.info.width, clip.info.height) == (640, 360) and clip.info.has_audio
    assert not [r for r in requests if "stream0" in r and r.endswith(".m4s")]  # the 720p segments never fetched


@pytest.mark.parametrize("page", ["dash", "hls"])
def test_private_page_refused_before_any_request(site, tmp_path: Path, page: str) -> None:
    base, requests = site
    requests.clear()
    with pytest.raises(Rejected) as err:
        make_clip(f"{base}/{page}.html", None, None, _cfg(), tmp_path / "c", tmp_path / "w", tmp_path)
    assert err.value.reason == "private_address" and requests == []


@pytest.mark.parametrize("page", ["hls-evil", "hls-redir"])
def test_segments_to_private_addresses_refused(site, tmp_path: Path, page: str) -> None:
    """The page and playlist are allowed (127.0.0.1 here); the segments point at 127.0.0.2,
    directly or through a redirect, and are refused before any connection to it."""
    base, requests = site
    requests.clear()
    with pytest.raises(Rejected) as err:
        make_clip(f"{base}/{page}.html", None, None, _cfg(), tmp_path / "c", tmp_path / "w", tmp_path,
                  Guard(policy=_only_127_0_0_1))  # fmt: skip
    assert err.value.reason == "private_address" and "127.0.0.2" in err.value.message
    assert not [r for r in requests if r.startswith("/hls/seg")]


def test_format_spec_and_playlist_parsing() -> None:
    assert format_spec(720).startswith("bv[height<=720]+ba/")
    text = '#EXTM3U\n#EXT-X-MAP:URI="init.mp4"\n#EXTINF:1,\na.m4s\n#EXTINF:1,\nhttp://x.example/b.m4s\n#EXT-X-ENDLIST\n'
    assert hls_segments(text, "http://h.example/v/index.m3u8") == [
        "http://h.example/v/init.mp4", "http://h.example/v/a.m4s", "http://x.example/b.m4s"]
    for bad in ("#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI=\"k\"\na.ts\n",
                "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n", "not a playlist"):
        with pytest.raises(Rejected) as err:
            hls_segments(bad, "http://h.example/")
        assert err.value.reason == "unsupported_protocol"


def test_cut_off_segments_resume_from_the_segment(site, tmp_path: Path) -> None:
    """The connection drops half-way through the second HLS segment: the run is rejected
    network_error and keeps what it has; the next run asks only for the segments it lacks and
    stores the same clip as an uninterrupted fetch."""
    base, requests = site
    cfg = _cfg(allow_private=True)
    whole = make_clip(f"{base}/hls.html", None, None, cfg, tmp_path / "ref", tmp_path / "w0", tmp_path)
    partial = tmp_path / "partial"
    CUT_OFF.add("/hls/seg001.ts")
    requests.clear()
    with pytest.raises(Rejected) as err:
        make_clip(f"{base}/hls.html", None, None, cfg, tmp_path / "clips", tmp_path / "w1", tmp_path, None, partial)
    assert err.value.reason == "network_error" and list(partial.glob("*.part"))
    clip = make_clip(f"{base}/hls.html", None, None, cfg, tmp_path / "clips", tmp_path / "w2", tmp_path, None, partial)
    segments = [r for r in requests if r.startswith("/hls/seg")]
    assert segments.count("/hls/seg000.ts") == 1 and segments.count("/hls/seg001.ts") == 2
    assert clip.source_sha256 == whole.source_sha256 and clip.sha256 == whole.sha256
    assert list(partial.iterdir()) == []
