"""facedag.sources.playlist: a playlist (an RSS feed read by real yt-dlp's generic extractor, on a
real HTTP server on 127.0.0.1) and a local folder expand to their videos; the download stage
gives each its own row."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
import yaml

from facedag.params import Download, Source
from facedag.records import Rejected
from facedag.sources.guarded import Guard
from facedag.sources.playlist import expand, record_path
from tests import badinputs as bad

REPO = Path(__file__).resolve().parents[2]
VIDEOS = [("Talk one", "Mon, 01 Jan 2024 10:00:00 GMT"), ("Interview two", "Mon, 01 Jul 2024 10:00:00 GMT"),
          ("Talk three", "Wed, 01 Jan 2025 10:00:00 GMT")]  # fmt: skip


def _feed(base: str, videos: list[tuple[str, str]]) -> str:
    items = "".join(f"<item><title>{title}</title><link>{base}/v{k + 1}.mp4</link><pubDate>{day}</pubDate></item>"
                    for k, (title, day) in enumerate(videos))  # fmt: skip
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>Talks</title>{items}</channel></rss>'


class _Handler(SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, list[str]]]:
    folder = tmp_path_factory.mktemp("feed")
    for k in range(1, 5):
        bad.good(folder, f"v{k}.mp4", dur=0.6 + 0.2 * k)
    requests: list[str] = []
    handler = type("H", (_Handler,), {"requests": requests})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    (folder / "feed.xml").write_text(_feed(base, VIDEOS))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield base, folder, requests
    httpd.shutdown()
    httpd.server_close()


def _cfg() -> Download:
    return Download(allow_private=True, extractors=["generic"], preset="ultrafast")


def test_playlist_expands_capped_filtered_and_recorded(site, tmp_path: Path) -> None:
    base, folder, _ = site
    record = tmp_path / "playlists"

    def uris(**kw) -> list[str]:
        items = expand(Source(uri=f"{base}/feed.xml", **kw), _cfg(), tmp_path, tmp_path, Guard(True), record)
        assert all(i.playlist == f"{base}/feed.xml" for i in items)
        return [f"{i.uri.rsplit('/', 1)[1]} {i.title}" for i in items]

    assert uris(max_items=2) == ["v1.mp4 Talk one", "v2.mp4 Interview two"]
    assert uris(max_items=5, title="^talk") == ["v1.mp4 Talk one", "v3.mp4 Talk three"]
    assert uris(max_items=5, after="2024-06-01", before="2024-12-31") == ["v2.mp4 Interview two"]
    saved = json.loads(record_path(record, Source(uri=f"{base}/feed.xml", max_items=2)).read_text())
    assert [i["title"] for i in saved["items"]] == ["Talk one", "Interview two"]
    try:  # the channel posts a new video first: a rerun takes the recorded ones, refresh lists again
        (folder / "feed.xml").write_text(_feed(base, [("New", "Thu, 01 May 2025 10:00:00 GMT"), *VIDEOS]))
        assert uris(max_items=2) == ["v1.mp4 Talk one", "v2.mp4 Interview two"]
        assert uris(max_items=2, refresh=True) == ["v1.mp4 New", "v2.mp4 Talk one"]
    finally:
        (folder / "feed.xml").write_text(_feed(base, VIDEOS))


def test_private_playlist_refused(site, tmp_path: Path) -> None:
    base, _, requests = site
    requests.clear()
    with pytest.raises(Rejected) as err:
        expand(Source(uri=f"{base}/feed.xml", max_items=2), Download(extractors=["generic"]), tmp_path, tmp_path,
               Guard(False), tmp_path / "rec")  # fmt: skip
    assert err.value.reason == "private_address" and requests == []


def test_folder_expands_to_its_videos(tmp_path: Path) -> None:
    folder = tmp_path / "footage"
    for name in ("b.mp4", "a.MOV", "sub/c.mkv", ".hidden/d.mp4", "notes.txt"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")
    got = expand(Source(uri="footage"), Download(), tmp_path, tmp_path, Guard(), tmp_path / "rec")
    assert [i.uri for i in got] == ["footage/a.MOV", "footage/b.mp4", "footage/sub/c.mkv"]
    got = expand(Source(uri=folder.as_uri(), max_items=1, title="b"), Download(), tmp_path, tmp_path, Guard(),
                 tmp_path / "rec")  # fmt: skip
    assert [i.uri for i in got] == ["footage/b.mp4"]
    with pytest.raises(Rejected) as err:
        expand(Source(uri="footage", title="zzz"), Download(), tmp_path, tmp_path, Guard(), tmp_path / "rec")
    assert err.value.reason == "not_found"


def test_download_stage_gives_each_video_its_row(site, tmp_path: Path) -> None:
    base, folder, _ = site
    (tmp_path / "local").mkdir()
    for k in (3, 4):
        os.link(folder / f"v{k}.mp4", tmp_path / "local" / f"v{k}.mp4")
    (tmp_path / "local" / "broken.mp4").write_bytes(b"not a video")
    params = {
        "identities": {"src": {"sources": [{"uri": f"{base}/feed.xml", "max_items": 2, "licence": "CC0"},
                                           {"uri": "local"}]}},
        "target": {"uri": "none.mp4"},
        "download": {"preset": "ultrafast", "allow_private": True, "extractors": ["generic"]},
    }  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, "-m", "stages.download", "src"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "data" / "download" / "src"
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert [u.rsplit("/", 1)[1] for u in manifest["uri"]] == ["v1.mp4", "v2.mp4", "v3.mp4", "v4.mp4"]
    assert list(manifest["source"]) == [0, 0, 1, 1] and manifest["sha256"].nunique() == 4
    assert list(manifest["playlist"]) == [f"{base}/feed.xml"] * 2 + ["local"] * 2
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert [(r["item"], r["reason"]) for r in rejected] == [("local/broken.mp4", "not_a_video")]
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["sources"], metrics["videos"], metrics["clips"]) == (2, 5, 4)
