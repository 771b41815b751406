"""The streams yt-dlp chose for a page, fetched with the guarded client and merged here.

Video sites serve HD only as separate video and audio streams (DASH) or as HLS playlists;
the one progressive file, where there is one, is 360p or less. So download asks yt-dlp
(extraction only) for the best video up to `download.max_height` plus the best audio
(`format_spec`), and fetches what it names itself:

- `http`/`https`: one file, fetched by the guarded client (resumable from the byte, `Partial`).
- `http_dash_segments`: the segment URLs yt-dlp read from the MPD (initialisation first),
  each fetched by the guarded client and appended: an init segment followed by its media
  segments is one valid fragmented MP4. Resumable from the first segment not finished.
- `m3u8_native`/`m3u8`: the HLS media playlist fetched and read here (EXT-X-MAP init, then
  the segments in order); segments of MPEG-TS or fMP4 concatenate into one playable file.
  Resumable like DASH.
  An encrypted playlist (EXT-X-KEY other than NONE) or byte-range segments are refused
  `unsupported_protocol`.

Every request, segments and their redirects included, goes through `open_url`: each host
checked by the address policy, one size cap (`download.max_bytes`) and one time cap over
all the streams of a source. No URL is ever handed to ffmpeg, whose own connections
nothing would check; ffmpeg only merges the local files (`merge`), copying the streams.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from facedag.records import Rejected, atomic_write_json
from facedag.sources.guarded import Guard, Partial, open_url, save
from facedag.sources.media import ffmpeg_input, run_ffmpeg

PLAYLIST_MAX_BYTES = 16 << 20  # an HLS media playlist of a few hours is well under a megabyte


def format_spec(max_height: int) -> str:
    """yt-dlp's format choice: separate best video (<= max_height) + best audio, else the best
    file with both, else the best video alone; only when nothing fits under max_height, the
    smallest above it (normalisation caps the size anyway)."""
    h = int(max_height)
    return f"bv[height<={h}]+ba/b[height<={h}]/bv*[height<={h}]/wv*+ba/w"


@dataclass(frozen=True)
class Stream:
    """One stream to fetch: `role` is video, audio or av (both in one file)."""

    role: str
    protocol: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    fragments: tuple[str, ...] = ()  # absolute segment URLs of a DASH stream, init segment first


def streams_from_info(info: Mapping[str, Any]) -> list[Stream]:
    """The streams of yt-dlp's chosen format(s) (`requested_formats` when it merges two)."""
    chosen: Sequence[Mapping[str, Any]] = info.get("requested_formats") or [info]
    streams = []
    for fmt in chosen:
        vcodec, acodec = str(fmt.get("vcodec") or ""), str(fmt.get("acodec") or "")
        role = "audio" if vcodec == "none" else "video" if acodec == "none" else "av"
        protocol = str(fmt.get("protocol") or "")
        url = str(fmt.get("url") or "")
        headers = {str(k): str(v) for k, v in (fmt.get("http_headers") or {}).items()}
        fragments: tuple[str, ...] = ()
        if protocol == "http_dash_segments":
            base = str(fmt.get("fragment_base_url") or url)
            fragments = tuple(str(f.get("url") or urljoin(base, str(f.get("path") or "")))
                              for f in fmt.get("fragments") or [])  # fmt: skip
            if not fragments:
                raise Rejected("unsupported_protocol", "a DASH stream without segments")
        elif protocol not in ("http", "https", "m3u8_native", "m3u8"):
            raise Rejected("unsupported_protocol", f"only a {protocol or 'unknown'} stream is offered")
        if not url and not fragments:
            raise Rejected("extraction_failed", "yt-dlp named a stream without a URL")
        streams.append(Stream(role, protocol, url, headers, fragments))
    return streams


def hls_segments(text: str, playlist_url: str) -> list[str]:
    """The absolute URLs of an HLS media playlist's init segment (if any) and segments, in order."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0] != "#EXTM3U":
        raise Rejected("unsupported_protocol", "the HLS playlist does not start with #EXTM3U")
    urls: list[str] = []
    for line in lines[1:]:
        if line.startswith("#EXT-X-STREAM-INF"):
            raise Rejected("unsupported_protocol", "a master playlist where a media playlist was expected")
        if line.startswith("#EXT-X-KEY") and "METHOD=NONE" not in line:
            raise Rejected("unsupported_protocol", "an encrypted HLS stream")
        if line.startswith("#EXT-X-BYTERANGE") or (line.startswith("#EXT-X-MAP") and "BYTERANGE" in line):
            raise Rejected("unsupported_protocol", "HLS byte-range segments")
        if line.startswith("#EXT-X-MAP"):
            uri = line.split('URI="', 1)[1].split('"', 1)[0] if 'URI="' in line else ""
            if uri:
                urls.append(urljoin(playlist_url, uri))
        elif not line.startswith("#"):
            urls.append(urljoin(playlist_url, line))
    if not urls:
        raise Rejected("unsupported_protocol", "an HLS playlist without segments")
    return urls


def _read_text(url: str, guard: Guard, deadline: float, headers: Mapping[str, str], dest: Path) -> tuple[str, str]:
    """(text, final URL) of a small document such as a playlist, under its own size cap."""
    response = open_url(url, guard, deadline, dict(headers))
    final = response.url
    save(response, dest, PLAYLIST_MAX_BYTES, deadline)
    try:
        return dest.read_text(encoding="utf-8", errors="replace"), final
    finally:
        dest.unlink(missing_ok=True)


def _append_all(urls: Sequence[str], dest: Path, guard: Guard, deadline: float, max_bytes: int,
                headers: Mapping[str, str], resume: Partial | None = None) -> Path:  # fmt: skip
    """Fetch the segments in order, appended into one file; with `resume`, into its part file,
    recording after each segment how many are done, so a run that is killed or cut off goes on
    from the first segment it did not finish (the list must be the same, by URL path: a site
    may sign each visit's segment URLs anew)."""
    if resume is None:
        dest.write_bytes(b"")
        for url in urls:
            save(open_url(url, guard, deadline, dict(headers)), dest, max_bytes, deadline, offset=dest.stat().st_size)
        return dest
    resume.folder.mkdir(parents=True, exist_ok=True)
    listing = hashlib.sha256("\n".join(urlsplit(u).path for u in urls).encode()).hexdigest()
    start, size = 0, 0
    try:
        state = json.loads(resume.meta.read_text())
        if state.get("segments") == listing and resume.part.stat().st_size >= int(state["bytes"]):
            start, size = int(state["done"]), int(state["bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    with open(resume.part, "ab" if start else "wb") as fh:
        fh.truncate(size)  # drop what arrived of the segment that was cut off
    for k in range(start, len(urls)):
        save(open_url(urls[k], guard, deadline, dict(headers)), resume.part, max_bytes, deadline,
             offset=resume.part.stat().st_size, keep_partial=True)  # fmt: skip
        atomic_write_json(resume.meta, {"segments": listing, "done": k + 1, "bytes": resume.part.stat().st_size})
    os.replace(resume.part, dest)
    resume.meta.unlink(missing_ok=True)
    return dest


def fetch_stream(stream: Stream, dest: Path, guard: Guard, deadline: float, max_bytes: int,
                 resume: Partial | None = None) -> Path:  # fmt: skip
    """Fetch one stream into `dest` with the guarded client (segments appended in order);
    resumable with `resume`, from the byte (one file) or from the segment (DASH, HLS)."""
    if stream.protocol in ("http", "https"):
        if resume is not None:
            return resume.fetch(stream.url, dest, max_bytes, deadline, guard, dict(stream.headers))
        return save(open_url(stream.url, guard, deadline, dict(stream.headers)), dest, max_bytes, deadline)
    if stream.fragments:
        return _append_all(stream.fragments, dest, guard, deadline, max_bytes, stream.headers, resume)
    text, final = _read_text(stream.url, guard, deadline, stream.headers, dest.with_suffix(".m3u8"))
    return _append_all(hls_segments(text, final), dest, guard, deadline, max_bytes, stream.headers, resume)


def merge(inputs: Sequence[Path], dst: Path, timeout: float) -> Path:
    """Put the fetched streams (one file, or video then audio) into one mp4, copying the streams
    (no re-encode); into Matroska when mp4 cannot hold a codec. Returns the file written."""
    args: list[str] = []
    for path in inputs:
        args += ["-i", ffmpeg_input(path)]
    args += ["-map", "0:v:0"]
    args += ["-map", "1:a:0"] if len(inputs) > 1 else ["-map", "0:a:0?"]
    args += ["-c", "copy", "-sn", "-dn"]
    try:
        run_ffmpeg([*args, "-movflags", "+faststart", "-f", "mp4", ffmpeg_input(dst)], timeout=timeout,
                   what="merging the streams")  # fmt: skip
    except Rejected as exc:
        if exc.reason != "ffmpeg_failed":
            raise
        run_ffmpeg([*args, "-f", "matroska", ffmpeg_input(dst)], timeout=timeout, what="merging the streams")
    return dst


def fetch_streams(streams: Sequence[Stream], dest: Path, guard: Guard, deadline: float, max_bytes: int,
                  partial_for: Callable[[str], Partial | None] | None = None) -> Path:  # fmt: skip
    """Fetch every stream (one size cap over all of them) into `dest`: one progressive file as it
    is, segments and separate streams merged into one file.

    `partial_for(role)` gives the `Partial` a stream resumes from (None: not resumable)."""
    if len(streams) == 1 and streams[0].protocol in ("http", "https"):
        resume = partial_for(streams[0].role) if partial_for is not None else None
        return fetch_stream(streams[0], dest, guard, deadline, max_bytes, resume)
    parts: list[Path] = []
    try:
        left = max_bytes
        for k, stream in enumerate(streams):
            part = dest.with_name(f"{dest.stem}.{k}.{stream.role}")
            resume = partial_for(stream.role) if partial_for is not None else None
            fetch_stream(stream, part, guard, deadline, left, resume)
            parts.append(part)
            left -= part.stat().st_size
        return merge(parts, dest, max(1.0, deadline - time.monotonic()))
    finally:
        for part in parts:
            if os.path.exists(part):
                part.unlink()
