"""Fetch a source (local path, file:// or http(s):// URL), cut it and normalise it into a clip.

A source becomes a clip in three steps, each of which raises `Rejected` with a stable
reason code when the source cannot be used (the download stage records it and carries on):

1. `fetch_source`: find or download the raw file.
   - Local paths are relative to the project root; `file://` URLs are local paths too.
   - `http(s)://` URLs go through the guarded client (facedag.sources.guarded): every address
     the host resolves to is checked against an IP policy (loopback, private, shared
     100.64/10, link-local incl. 169.254.169.254, multicast, reserved, unspecified, and IPv4
     addresses hidden in IPv6 are refused unless `download.allow_private`), at first and
     after every redirect (at most 5), and the connection goes to the checked address.
     Direct media (video/* or application/octet-stream, or a video file extension) streams
     to a file under a size cap and a time cap; with a partial folder (the download stage's
     `data/download/.partial`) a fetch that was killed or cut off resumes with an HTTP Range
     request (`guarded.Partial`). Other pages go to yt-dlp, for extraction only, restricted
     to `download.extractors` (`generic` includes its html5 <video> reader); yt-dlp fetches
     the page itself, but every host name it looks up is checked by the same policy in the
     lookup (`guarded_lookups`), so a DNS answer that changes after our check (rebinding) is
     refused too, and once `timeout_s` has passed its next lookup fails. The streams it
     picks (best video up to `download.max_height` + best audio; progressive files, DASH
     segments or HLS playlists) are fetched by the same guarded client and merged locally
     by ffmpeg, streams copied (facedag.sources.streams): no URL is handed to ffmpeg.
2. `normalise`: cut to the source's start/end (end clamped to the clip), apply rotation
   metadata, make the frame rate constant (min of native and `max_fps`), 8-bit yuv420p,
   even width/height, long side <= `max_side`, H.264 at `crf`, AAC audio when there is
   audio. A whole source that is already H.264 yuv420p, upright, within the caps, with AAC
   or no audio, is stream-copied into mp4 as it is, even at a variable frame rate or with
   damaged packets (`conforms`): hours of footage are then stored in the time it takes to
   copy them, and trim re-encodes only the shots it keeps, at a constant rate.
3. `store`: probe the result with PyAV and move it to `clips/<sha256>.mp4` (a clip reached
   from two sources is stored once).

Reason codes (stable; scripts may rely on them):

=========================== ===========================================================
not_found                   a local path or file:// URL that does not exist
unsupported_scheme          a URL scheme other than file, http, https
unsupported_protocol        yt-dlp offers no stream we fetch (RTMP, encrypted HLS, ...)
private_address             the host resolves to a forbidden address (see above)
dns_failed                  the host name does not resolve
network_error               connection refused, reset, TLS failure
http_error                  an HTTP status >= 400, or a redirect without a Location
too_many_redirects          more than 5 redirects
too_large                   more than `download.max_bytes`
timeout                     the download or an ffmpeg run took longer than `timeout_s`
extractor_not_allowed       a page URL that no allowed yt-dlp extractor takes
extraction_failed           yt-dlp could not extract the page (private, removed, ...)
not_a_single_video          the page is a playlist or channel and the source has no max_items
empty_file                  zero bytes (from `media.probe`)
not_a_video                 not a video container: random bytes, text, a still picture
no_video_stream             a container without video, e.g. audio only
undecodable                 a video whose frames do not decode (truncated, corrupt)
too_short                   shorter than `download.min_seconds` (after the cut)
empty_cut                   the source's start is at or past the end of the clip
ffmpeg_failed               ffmpeg could not normalise it
=========================== ===========================================================
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from facedag.params import Download
from facedag.records import Rejected, sha256_file
from facedag.sources.guarded import Guard, Partial, guarded_lookups, open_url, save
from facedag.sources.media import VideoInfo, constant_rate, ffmpeg_input, probe, run_ffmpeg
from facedag.sources.streams import Stream, fetch_streams, format_spec, streams_from_info

REASONS = (
    "not_found", "unsupported_scheme", "unsupported_protocol", "private_address", "dns_failed",
    "network_error", "http_error", "too_many_redirects", "too_large", "timeout",
    "extractor_not_allowed", "extraction_failed", "not_a_single_video", "empty_file", "not_a_video",
    "no_video_stream", "undecodable", "too_short", "empty_cut", "ffmpeg_failed",
)  # fmt: skip

VIDEO_EXTENSIONS = {
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
    ".flv", ".wmv", ".3gp", ".ogv", ".mxf",
}  # fmt: skip
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(uri: str) -> bool:
    """Whether a source uri is a URL (any scheme, file:// included) rather than a plain path."""
    return bool(_URL_RE.match(uri))


def _looks_like_media(url: str, content_type: str = "") -> bool:
    if content_type.startswith("video/") or content_type in ("application/octet-stream", "binary/octet-stream"):
        return True
    return Path(urlsplit(url).path).suffix.lower() in VIDEO_EXTENSIONS


def fetch_url(url: str, dest: Path, cfg: Download, guard: Guard, headers: dict[str, str] | None = None,
              resume: Partial | None = None) -> Path:
    """Download a direct media URL to `dest` with the guarded client (size and time caps).

    With `resume`, the bytes go to a partial file that outlives the process: a fetch killed
    half-way (or cut off by the network or the time cap) continues from there on the next
    run instead of starting over (`Partial.fetch`)."""
    deadline = time.monotonic() + cfg.timeout_s
    if resume is not None:
        return resume.fetch(url, dest, cfg.max_bytes, deadline, guard, headers)
    return save(open_url(url, guard, deadline, headers), dest, cfg.max_bytes, deadline)


# --- yt-dlp -----------------------------------------------------------------------------


def _extractor_classes() -> dict[str, Any]:
    from yt_dlp.extractor import gen_extractor_classes

    return {ie.IE_NAME.lower(): ie for ie in gen_extractor_classes()}


def extractors_for(url: str, allowed: Sequence[str]) -> tuple[list[str], list[str]]:
    """(allowed extractors that take `url`, all specific extractors that take it), offline.

    `allowed` has yt-dlp's `allowed_extractors` meaning (names or regexes, "default", "all").
    The generic extractor counts as specific only when it is named in `allowed`.
    """
    from yt_dlp.utils import orderedSet_from_options

    every = _extractor_classes()
    try:
        names = orderedSet_from_options(
            list(allowed),
            {"all": list(every), "default": [n for n, ie in every.items() if ie._ENABLED]},
            use_regex=True,
        )
    except re.error as exc:
        raise Rejected("extractor_not_allowed", f"bad download.extractors pattern: {exc}") from None
    takers = [n for n, ie in every.items() if n != "generic" and ie.suitable(url)]
    ok = [n for n in names if n in every and every[n].suitable(url)]
    return ok, takers


class _QuietLogger:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def debug(self, msg: str) -> None:
        pass

    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        pass

    def error(self, msg: str) -> None:
        self.errors.append(msg)


def _with_page_embeds(allowed: Sequence[str]) -> list[str]:
    """yt-dlp's extractor allowlist: the generic extractor reads a page's <video> and <source>
    tags (DASH, HLS, files) through its `html5` embed extractor, which takes no URL of its own;
    allowing `generic` allows that part of it too."""
    names = list(allowed)
    if any(n.lower() == "generic" for n in names) and "html5" not in names:
        names.append("html5")
    return names


def ytdlp_options(cfg: Download, workdir: Path, logger: Any = None) -> dict[str, Any]:
    """yt-dlp's options: extraction only, from allowed extractors, and nothing that writes or runs.

    yt-dlp never downloads here (the media URL it picks is fetched by our guarded client), but
    the options still pin everything that could write or execute, so a change elsewhere cannot
    turn a page's metadata into a path or a command: file names restricted to ASCII without
    separators and templated only from the video id, all paths inside `workdir`, no
    post-processors (their `exec` hooks take metadata), no cache. (The Python API reads no
    config files.)
    """
    return {
        "allowed_extractors": _with_page_embeds(cfg.extractors),
        "format": format_spec(cfg.max_height),
        # at equal height, H.264 + AAC: stored as fetched (stream copy), where VP9 or AV1 would be re-encoded whole
        "format_sort": ["res", "vcodec:h264", "acodec:aac"],
        "noplaylist": True,
        "skip_download": True,
        "restrictfilenames": True,
        "windowsfilenames": True,
        "paths": {"home": os.fspath(workdir), "temp": os.fspath(workdir)},
        "outtmpl": {"default": "%(id)s.%(ext)s"},
        "postprocessors": [],
        "writeinfojson": False,
        "writethumbnail": False,
        "writesubtitles": False,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "logger": logger,
        "socket_timeout": min(60.0, cfg.timeout_s),
        "extractor_retries": 1,
        "cachedir": False,
    }


def extract_streams(url: str, cfg: Download, workdir: Path, guard: Guard) -> list[Stream]:
    """Ask yt-dlp (allowed extractors only, no download) which streams make the video: the best
    video up to `download.max_height` and the best audio (`streams.format_spec`), every lookup
    it makes checked by `guard` and none after `download.timeout_s` (guarded_lookups)."""
    info = extract_info(url, cfg, workdir, guard, flat=False)
    if info.get("_type") in ("playlist", "multi_video"):
        raise Rejected("not_a_single_video", "the URL is a playlist or channel; name one video, or give the "
                       "source max_items to take its videos")  # fmt: skip
    return streams_from_info(info)


def extract_info(url: str, cfg: Download, workdir: Path, guard: Guard, flat: bool,
             extra: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """yt-dlp's info for `url` (`flat`: a playlist's entries listed, not resolved), guarded."""
    import yt_dlp

    logger = _QuietLogger()
    opts = {**ytdlp_options(cfg, workdir, logger), **(extra or {})}
    if flat:
        opts.update(noplaylist=False, extract_flat="in_playlist")
    with guarded_lookups(guard, time.monotonic() + cfg.timeout_s) as refused:
        try:
            with yt_dlp.YoutubeDL(opts) as ydl:
                info = ydl.extract_info(url, download=False)
                info = ydl.sanitize_info(info) if info else info
        except yt_dlp.utils.DownloadError as exc:
            if refused:
                raise refused[0] from None
            text = (logger.errors[-1] if logger.errors else str(exc)).replace("ERROR: ", "").strip()
            if "no suitable extractor" in text.lower() or "unsupported url" in text.lower():
                raise Rejected("extractor_not_allowed", f"no allowed extractor takes {url}") from None
            raise Rejected("extraction_failed", text.splitlines()[0][:300] if text else "yt-dlp failed") from None
        except Exception as exc:  # yt-dlp raises many kinds; one bad page must not stop the batch
            if refused:
                raise refused[0] from None
            raise Rejected("extraction_failed", f"{type(exc).__name__}: {exc}"[:300]) from None
    if not info:
        raise Rejected("extraction_failed", "yt-dlp returned nothing")
    return dict(info)


# --- sources ----------------------------------------------------------------------------


def _local(uri: str, root: Path) -> Path:
    if uri.lower().startswith("file://"):
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise Rejected("unsupported_scheme", f"file URL with a remote host: {uri}")
        path = Path(urllib.request.url2pathname(parts.path))
    else:
        path = Path(uri).expanduser()
    if not path.is_absolute():
        path = root / path
    return path


def local_dir(uri: str, root: Path) -> Path | None:
    """The folder a path or file:// URL names, or None when it names no folder (or is a URL)."""
    if is_url(uri) and not uri.lower().startswith("file://"):
        return None
    path = _local(uri, root)
    return path if path.is_dir() else None


def local_path(uri: str, root: Path) -> Path:
    """The local file a path or file:// URL names (relative paths are under `root`)."""
    path = _local(uri, root)
    if not path.is_file():
        raise Rejected("not_found", f"no such file: {path}")
    return path


def fetch_source(uri: str, workdir: Path, cfg: Download, root: Path, guard: Guard | None = None,
                 partial_dir: Path | None = None) -> Path:
    """The raw file of a source: a local file as it is, a URL downloaded into `workdir`
    (resumable through `partial_dir` when given: see `Partial`)."""
    if not is_url(uri) or uri.lower().startswith("file://"):
        return local_path(uri, root)
    scheme = uri.split(":", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise Rejected("unsupported_scheme", f"{scheme}:// URLs are not supported (use http, https, file or a path)")
    guard = guard or Guard(cfg.allow_private)
    workdir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="fetch-", suffix=".media", dir=workdir)
    os.close(fd)
    dest = Path(name)

    def resume(role: str = "") -> Partial | None:
        return Partial.for_source(partial_dir, uri, role) if partial_dir is not None else None

    if _looks_like_media(uri):
        return fetch_url(uri, dest, cfg, guard, resume=resume())
    ok, takers = extractors_for(uri, cfg.extractors)
    if takers and not ok:
        raise Rejected(
            "extractor_not_allowed", f"{uri} needs yt-dlp extractor {takers[0]!r}, not in download.extractors"
        )
    parts = urlsplit(uri)
    if not parts.hostname:
        raise Rejected("http_error", f"no host in {uri}")
    guard.resolve(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    if not ok:
        # No extractor knows it: it may still be a media file behind an extensionless URL.
        deadline = time.monotonic() + cfg.timeout_s
        response = open_url(uri, guard, deadline)
        if _looks_like_media(response.url, response.content_type):
            if partial_dir is None:
                return save(response, dest, cfg.max_bytes, deadline)
            response.close()  # fetched again, resumably, from where the redirects led
            return fetch_url(response.url, dest, cfg, guard, resume=resume())
        response.close()
        if "generic" not in ok:
            raise Rejected(
                "extractor_not_allowed",
                f"{uri} is a {response.content_type or 'web'} page and no allowed extractor takes it",
            )
    streams = extract_streams(uri, cfg, workdir, guard)
    return fetch_streams(streams, dest, guard, time.monotonic() + cfg.timeout_s, cfg.max_bytes, resume)


# --- normalise and store ----------------------------------------------------------------

def target_fps(native: float, max_fps: float) -> Fraction:
    """The constant frame rate of a normalised clip: native (snapped to a common rate when
    within 1%), capped at `max_fps`."""
    return min(constant_rate(native), Fraction(max_fps).limit_denominator(1001))


def target_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Even width and height, long side <= max_side, aspect kept."""
    scale = min(1.0, max_side / max(width, height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def conforms(info: VideoInfo, cfg: Download) -> bool:
    """Whether the clip can be stored as it is (stream copy into mp4): H.264 yuv420p, upright,
    even size within `max_side`, average rate within `max_fps`, AAC or no audio.

    Two things are not asked, on purpose, because each would cost a full pass over footage
    that may last hours: a constant frame rate (trim scans by timestamp and cuts the shots it
    keeps at a constant rate, so only the kept minutes are ever re-encoded) and a clean
    decode of every frame (trim's scan reads past damaged packets, and its cuts are
    re-encoded, which conceals them).
    """
    return (
        info.codec == "h264"
        and info.pix_fmt == "yuv420p"
        and info.rotation == 0
        and info.width % 2 == 0
        and info.height % 2 == 0
        and max(info.width, info.height) <= cfg.max_side
        and info.fps <= cfg.max_fps + 1e-3
        and info.audio_codec in (None, "aac")
    )


def cut_range(info: VideoInfo, start: float | None, end: float | None) -> tuple[float, float | None]:
    """(start, end) within the clip; end None = to the end. Raises `empty_cut`."""
    begin = float(start or 0.0)
    if begin >= info.duration:
        raise Rejected("empty_cut", f"start {begin:g} s is at or past the end of the clip ({info.duration:.2f} s)")
    stop = None if end is None or end >= info.duration else float(end)
    if stop is not None and stop <= begin:
        raise Rejected("empty_cut", f"end {stop:g} s is not after start {begin:g} s")
    return begin, stop


def normalise(
    src: Path, dst: Path, info: VideoInfo, cfg: Download, start: float = 0.0, end: float | None = None
) -> bool:
    """Write the normalised clip to `dst` (mp4). Returns True when it was stream-copied."""
    if start <= 0 and end is None and conforms(info, cfg):
        args = ["-i", ffmpeg_input(src), "-map", "0:v:0", "-map", "0:a:0?", "-c", "copy", "-sn", "-dn",
                "-map_metadata", "-1", "-movflags", "+faststart", ffmpeg_input(dst)]  # fmt: skip
        run_ffmpeg(args, timeout=cfg.timeout_s, what="stream copy")
        return True
    fps = target_fps(info.fps, cfg.max_fps)
    width, height = target_size(info.width, info.height, cfg.max_side)
    head: list[str] = ["-ss", f"{start:.6f}"] if start > 0 else []
    head += ["-i", ffmpeg_input(src)]  # ffmpeg applies rotation metadata (autorotate) on input
    if end is not None:
        head += ["-t", f"{end - start:.6f}"]
    video = [
        "-map", "0:v:0", "-sn", "-dn", "-map_metadata", "-1", "-map_chapters", "-1",
        "-vf", f"fps={fps.numerator}/{fps.denominator},scale={width}:{height}:flags=bicubic,setsar=1,format=yuv420p",
        "-fps_mode", "cfr", "-c:v", "libx264", "-preset", cfg.preset, "-crf", str(cfg.crf), "-pix_fmt", "yuv420p",
        "-profile:v", "high", "-movflags", "+faststart", "-avoid_negative_ts", "make_zero",
    ]  # fmt: skip
    audio = ["-map", "0:a:0", "-c:a", "aac", "-b:a", "192k"] if info.has_audio else ["-an"]
    try:
        run_ffmpeg([*head, *video, *audio, ffmpeg_input(dst)], timeout=cfg.timeout_s, what="normalise")
    except Rejected as exc:
        if exc.reason != "ffmpeg_failed" or not info.has_audio:
            raise
        # A broken audio track must not cost the video: try once more without it.
        run_ffmpeg([*head, *video, "-an", ffmpeg_input(dst)], timeout=cfg.timeout_s, what="normalise")
    return False


@dataclass(frozen=True)
class Clip:
    """A stored clip: `path` is clips/<sha256>.mp4; `duplicate` when an identical clip was already there."""

    path: Path
    sha256: str
    source_sha256: str  # of the bytes as fetched, before cut and normalisation: what provenance cites
    info: VideoInfo
    start: float
    end: float
    copied: bool
    duplicate: bool


def store(tmp: Path, clips_dir: Path, min_seconds: float = 0.0) -> tuple[Path, str, VideoInfo, bool]:
    """Probe `tmp` and move it to clips_dir/<sha256>.mp4 (fsync, rename). Returns (path, sha, info, duplicate)."""
    info = probe(tmp, min_duration=min_seconds)
    sha = sha256_file(tmp)
    final = clips_dir / f"{sha}.mp4"
    info = dataclasses.replace(info, path=os.fspath(final), size_bytes=tmp.stat().st_size)
    if final.exists():
        tmp.unlink()
        return final, sha, info, True
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    return final, sha, info, False


def make_clip(
    uri: str,
    start: float | None,
    end: float | None,
    cfg: Download,
    clips_dir: Path,
    workdir: Path,
    root: Path,
    guard: Guard | None = None,
    partial_dir: Path | None = None,
) -> Clip:
    """Fetch, probe, cut, normalise and store one source. Raises Rejected."""
    raw = fetch_source(uri, workdir, cfg, root, guard, partial_dir)
    try:
        source_sha = sha256_file(raw)
        info = probe(raw)
        begin, stop = cut_range(info, start, end)
        clips_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".norm-", suffix=".mp4", dir=clips_dir)
        os.close(fd)
        tmp = Path(name)
        try:
            copied = normalise(raw, tmp, info, cfg, begin, stop)
            path, sha, out, duplicate = store(tmp, clips_dir, cfg.min_seconds)
        finally:
            tmp.unlink(missing_ok=True)
        stop = stop if stop is not None else info.duration
        return Clip(path, sha, source_sha, out, begin, round(min(stop, begin + out.duration), 6), copied, duplicate)
    finally:
        if raw.is_relative_to(workdir):
            raw.unlink(missing_ok=True)
