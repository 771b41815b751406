"""Fetch a source (local path, file:// or http(s):// URL), cut it and normalise it into a clip.

A source becomes a clip in three steps, each of which raises `Rejected` with a stable
reason code when the source cannot be used (the download stage records it and carries on):

1. `fetch_source`: find or download the raw file.
   - Local paths are relative to the project root; `file://` URLs are local paths too.
   - `http(s)://` URLs: every address the host resolves to is checked against an IP policy
     (loopback, private, shared 100.64/10, link-local incl. 169.254.169.254, multicast,
     reserved, unspecified, and IPv4 addresses hidden in IPv6 are refused unless
     `download.allow_private`), at first and after every redirect (followed here, at most
     5), and the connection goes to the checked address (no second DNS lookup to race).
     Direct media (video/* or application/octet-stream, or a video file extension) streams
     to a temp file under a size cap and a time cap. Other pages go to yt-dlp, for
     extraction only, restricted to `download.extractors`; yt-dlp fetches the page itself,
     but every host name it looks up is checked by the same policy in the lookup
     (`guarded_lookups`), so a DNS answer that changes after our check (rebinding) is
     refused too, and once `timeout_s` has passed its next lookup fails. The media URL it
     picks (a single progressive file) is fetched by the same guarded client.
2. `normalise`: cut to the source's start/end (end clamped to the clip), apply rotation
   metadata, make the frame rate constant (min of native and `max_fps`), 8-bit yuv420p,
   even width/height, long side <= `max_side`, H.264 at `crf`, AAC audio when there is
   audio. A clip that already conforms and is not cut is stream-copied.
3. `store`: probe the result with PyAV and move it to `clips/<sha256>.mp4` (a clip reached
   from two sources is stored once).

Reason codes (stable; scripts may rely on them):

=========================== ===========================================================
not_found                   a local path or file:// URL that does not exist
unsupported_scheme          a URL scheme other than file, http, https
unsupported_protocol        yt-dlp offers only a non-http(s) stream (HLS, DASH, ...)
private_address             the host resolves to a forbidden address (see above)
dns_failed                  the host name does not resolve
network_error               connection refused, reset, TLS failure
http_error                  an HTTP status >= 400, or a redirect without a Location
too_many_redirects          more than 5 redirects
too_large                   more than `download.max_bytes`
timeout                     the download or an ffmpeg run took longer than `timeout_s`
extractor_not_allowed       a page URL that no allowed yt-dlp extractor takes
extraction_failed           yt-dlp could not extract the page (private, removed, ...)
not_a_single_video          the page is a playlist or channel, not one video
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
import hashlib
import http.client
import ipaddress
import itertools
import json
import os
import re
import socket
import ssl
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import av

from facedag.params import Download
from facedag.records import Rejected, atomic_write_json, sha256_file
from facedag.sources.media import VideoInfo, decodes_cleanly, ffmpeg_input, probe, run_ffmpeg

REASONS = (
    "not_found", "unsupported_scheme", "unsupported_protocol", "private_address", "dns_failed",
    "network_error", "http_error", "too_many_redirects", "too_large", "timeout",
    "extractor_not_allowed", "extraction_failed", "not_a_single_video", "empty_file", "not_a_video",
    "no_video_stream", "undecodable", "too_short", "empty_cut", "ffmpeg_failed",
)  # fmt: skip

MAX_REDIRECTS = 5
VIDEO_EXTENSIONS = {
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
    ".flv", ".wmv", ".3gp", ".ogv", ".mxf",
}  # fmt: skip
YTDLP_FORMAT = "best[ext=mp4][vcodec!=none][acodec!=none]/best[vcodec!=none][acodec!=none]/best[vcodec!=none]"
USER_AGENT = "facedag/0.1 (+https://github.com/; video dataset builder)"
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(uri: str) -> bool:
    """Whether a source uri is a URL (any scheme, file:// included) rather than a plain path."""
    return bool(_URL_RE.match(uri))
_CHUNK = 1 << 16

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpPolicy = Callable[[IPAddress], "str | None"]
"""Says why an address is forbidden (a short label), or None when it may be reached."""

_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def forbidden_ip(ip: IPAddress) -> str | None:
    """The default IP policy: only globally routable unicast addresses may be reached.

    IPv4 addresses carried inside IPv6 (IPv4-mapped ::ffff:a.b.c.d, 6to4 2002::/16, Teredo,
    NAT64 64:ff9b::/96) are judged by the IPv4 address they carry.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return forbidden_ip(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            return forbidden_ip(ip.sixtofour)
        if ip.teredo is not None:
            return forbidden_ip(ip.teredo[1])
        if ip in _NAT64:
            return forbidden_ip(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("shared address space", isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED),
        ("reserved", ip.is_reserved),
        ("not globally routable", not ip.is_global),
    )
    for label, hit in checks:
        if hit:
            return label
    return None


@dataclass
class Guard:
    """Which hosts may be reached: `allow_private` lifts the policy; `policy` is injectable for tests."""

    allow_private: bool = False
    policy: IpPolicy = forbidden_ip

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address `host` resolves to, all checked; raises Rejected when one is forbidden."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise Rejected("dns_failed", f"cannot resolve {host}: {exc}") from None
        ips: list[IPAddress] = []
        for info in infos:
            ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if ip not in ips:
                ips.append(ip)
        if not ips:
            raise Rejected("dns_failed", f"{host} resolves to no address")
        if not self.allow_private:
            for ip in ips:
                why = self.policy(ip)
                if why:
                    raise Rejected(
                        "private_address",
                        f"{host} resolves to {ip} ({why}); set download.allow_private: true to allow it",
                    )
        return ips


class _PinnedHTTP(http.client.HTTPConnection):
    """HTTP to an address checked beforehand (the Host header keeps the name)."""

    def __init__(self, host: str, port: int, ip: IPAddress, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._ip = ip

    def connect(self) -> None:
        self.sock = socket.create_connection((str(self._ip), self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to an address checked beforehand; SNI and certificate check use the host name."""

    def __init__(self, host: str, port: int, ip: IPAddress, timeout: float) -> None:
        self._ctx = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self._ctx)
        self._ip = ip

    def connect(self) -> None:
        sock = socket.create_connection((str(self._ip), self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self.host)


@dataclass
class _Response:
    url: str
    conn: http.client.HTTPConnection
    resp: http.client.HTTPResponse

    @property
    def content_type(self) -> str:
        return (self.resp.getheader("Content-Type") or "").split(";")[0].strip().lower()

    def close(self) -> None:
        self.conn.close()


def _remaining(deadline: float, what: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise Rejected("timeout", f"{what} took longer than the time cap")
    return left


def open_url(url: str, guard: Guard, deadline: float, headers: dict[str, str] | None = None) -> _Response:
    """GET `url`, following at most MAX_REDIRECTS redirects, checking the host every time."""
    for _hop in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise Rejected("unsupported_scheme", f"cannot fetch {parts.scheme or 'a schemeless'} URL {url}")
        host = parts.hostname
        if not host:
            raise Rejected("http_error", f"no host in {url}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise Rejected("http_error", f"bad port in {url}") from None
        ips = guard.resolve(host, port)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        cls = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
        send = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", "Accept": "*/*", **(headers or {})}
        send = {k: v for k, v in send.items() if k.lower() != "host"}
        last_error: Exception | None = None
        for ip in ips:
            conn = cls(host, port, ip, timeout=min(60.0, _remaining(deadline, "download")))
            try:
                conn.request("GET", path, headers=send)
                resp = conn.getresponse()
                break
            except TimeoutError:
                conn.close()
                raise Rejected("timeout", f"no answer from {host} in time") from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                last_error = exc
        else:
            raise Rejected("network_error", f"cannot fetch {url}: {last_error}")
        if resp.status in (301, 302, 303, 307, 308):
            location = resp.getheader("Location")
            conn.close()
            if not location:
                raise Rejected("http_error", f"HTTP {resp.status} without a Location from {url}")
            url = urljoin(url, location)
            continue
        if resp.status >= 400:
            conn.close()
            raise Rejected("http_error", f"HTTP {resp.status} {resp.reason} from {url}")
        return _Response(url, conn, resp)
    raise Rejected("too_many_redirects", f"more than {MAX_REDIRECTS} redirects from {url}")


def _save(response: _Response, dest: Path, max_bytes: int, deadline: float, offset: int = 0,
          keep_partial: bool = False) -> Path:
    """Stream the body to `dest` under the size and time caps; with `offset` > 0 the body is
    the rest of a file whose first `offset` bytes `dest` already holds (a resumed fetch).

    Every block is written through unbuffered, so a fetch killed at any point leaves on disk
    exactly the bytes it received. `keep_partial`: after a network error or a timeout, `dest`
    stays for the next run to resume from; otherwise (and after any other refusal) it is deleted.
    """
    length = response.resp.getheader("Content-Length")
    if length and length.isdigit() and offset + int(length) > max_bytes:
        response.close()
        dest.unlink(missing_ok=True)
        raise Rejected("too_large", f"{offset + int(length)} bytes is more than download.max_bytes={max_bytes}")
    total = offset
    try:
        with open(dest, "ab" if offset else "wb", buffering=0) as fh:
            while True:
                _remaining(deadline, "download")
                try:
                    block = response.resp.read1(_CHUNK)  # what has arrived: a kill loses none of it
                except TimeoutError:
                    raise Rejected("timeout", "the server stopped sending") from None
                except (OSError, http.client.HTTPException) as exc:
                    raise Rejected("network_error", f"download interrupted: {exc}") from None
                if not block:
                    break
                total += len(block)
                if total > max_bytes:
                    raise Rejected("too_large", f"more than download.max_bytes={max_bytes} bytes")
                fh.write(block)
    except Rejected as exc:
        if not (keep_partial and exc.reason in ("timeout", "network_error")):
            dest.unlink(missing_ok=True)
        raise
    finally:
        response.close()
    return dest


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
    return _save(open_url(url, guard, deadline, headers), dest, cfg.max_bytes, deadline)


_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+)$")


@dataclass(frozen=True)
class Partial:
    """Interrupted downloads, kept between runs in `folder` so they can resume.

    One pair of files per `key` (the source and which of its streams): `<key>.part`, the bytes
    received so far, and `<key>.json`, what the server said about the whole file when the
    fetch began (URL, length, ETag, Last-Modified). A resumed fetch asks for the rest with
    `Range: bytes=<have>-` and `If-Range: <validator>`; the answer is used only when it is a
    206 whose Content-Range starts where the part ends and states the same total length, and
    whose validator (when it sends one) is the recorded one. Anything else (a 200: the file
    changed or the server ignores ranges; a different length or ETag) starts over from zero,
    so the stored file is always byte-identical to an uninterrupted fetch of one version.
    Without a strong validator or a length there is nothing to check a resume against, and
    the fetch starts over too.

    Why a folder outside the stage's outputs: DVC deletes a stage's outputs before it runs
    it, and the stage empties its own folder, so a partial file kept there would never
    survive to the rerun that needs it.
    """

    folder: Path
    key: str

    @staticmethod
    def for_source(folder: Path, uri: str, role: str = "") -> Partial:
        """The partial of one stream (`role`: "", "video", "audio") of the source `uri`; keyed by
        the source, not the media URL, since video sites sign a new media URL on every visit."""
        digest = hashlib.sha256(f"{uri}\n{role}".encode()).hexdigest()[:32]
        return Partial(folder, digest)

    @property
    def part(self) -> Path:
        return self.folder / f"{self.key}.part"

    @property
    def meta(self) -> Path:
        return self.folder / f"{self.key}.json"

    def discard(self) -> None:
        self.part.unlink(missing_ok=True)
        self.meta.unlink(missing_ok=True)

    def _recorded(self) -> tuple[int, dict[str, Any]]:
        """(bytes held, the record) when there is something to resume, else (0, {})."""
        try:
            record = json.loads(self.meta.read_text())
            have = self.part.stat().st_size
        except (OSError, ValueError):
            return 0, {}
        length = record.get("length")
        if not isinstance(length, int) or not 0 < have < length or not record.get("validator"):
            return 0, {}
        return have, record

    def fetch(self, url: str, dest: Path, max_bytes: int, deadline: float, guard: Guard,
              headers: dict[str, str] | None = None) -> Path:
        """Fetch `url` into the part file (resuming when it can), then move it to `dest`."""
        self.folder.mkdir(parents=True, exist_ok=True)
        have, record = self._recorded()
        response: _Response | None = None
        if have:
            ask = {**(headers or {}), "Range": f"bytes={have}-", "If-Range": record["validator"]}
            try:
                response = open_url(url, guard, deadline, ask)
            except Rejected as exc:
                if exc.reason != "http_error":  # e.g. 416: the range no longer fits; start over below
                    raise
                response = None
            if response is not None and not self._continues(response, have, record):
                if response.resp.status != 200:  # a 200 to If-Range is the whole (new) file: taken as it is
                    response.close()
                    response = None
                have = 0
            if response is None:
                have = 0
        if not have:
            self.discard()
            if response is None:
                response = open_url(url, guard, deadline, headers)
            if response.resp.status != 200:
                response.close()
                raise Rejected("http_error", f"HTTP {response.resp.status} to a request for the whole file: {url}")
            atomic_write_json(self.meta, {"url": url, "length": _int_header(response, "Content-Length"),
                                          "validator": _validator(response)})  # fmt: skip
        assert response is not None
        _save(response, self.part, max_bytes, deadline, offset=have, keep_partial=True)
        length = record.get("length") if have else json.loads(self.meta.read_text()).get("length")
        size = self.part.stat().st_size
        if isinstance(length, int) and size != length:
            raise Rejected("network_error", f"the server sent {size} of {length} bytes; the next run resumes")
        os.replace(self.part, dest)
        self.meta.unlink(missing_ok=True)
        return dest

    @staticmethod
    def _continues(response: _Response, have: int, record: dict[str, Any]) -> bool:
        """Whether a ranged answer is the rest of the recorded file."""
        if response.resp.status != 206:
            return False
        match = _CONTENT_RANGE.match(response.resp.getheader("Content-Range") or "")
        if not match or int(match[1]) != have or int(match[3]) != record["length"]:
            return False
        validator = _validator(response)
        return validator is None or validator == record["validator"]


def _int_header(response: _Response, name: str) -> int | None:
    value = (response.resp.getheader(name) or "").strip()
    return int(value) if value.isdigit() else None


def _validator(response: _Response) -> str | None:
    """What If-Range may carry: a strong ETag, else Last-Modified (a weak ETag may not be used)."""
    etag = (response.resp.getheader("ETag") or "").strip()
    if etag and not etag.startswith("W/"):
        return etag
    return (response.resp.getheader("Last-Modified") or "").strip() or None


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
        "allowed_extractors": list(cfg.extractors),
        "format": YTDLP_FORMAT,
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


@contextmanager
def guarded_lookups(guard: Guard, deadline: float) -> Iterator[list[Rejected]]:
    """While it is open, every host name this process looks up (socket.getaddrinfo, which
    urllib, requests and yt-dlp's own connections all call) is checked by `guard`'s policy,
    and no lookup starts after `deadline`. Yields the list of refusals, for the caller to raise
    the first of them instead of the error its library makes of a failed lookup.

    Why: yt-dlp fetches pages (and the APIs its extractors call) with its own lookups, so a
    check of the host before it runs leaves a window for an answer that changes in between
    (DNS rebinding to 127.0.0.1 or 169.254.169.254). Checked in the lookup, the address
    connected to is the address checked. Not thread-safe: the download stage fetches its
    sources one at a time, and the original function is back when the block ends.
    """
    refused: list[Rejected] = []
    real = socket.getaddrinfo

    def checked(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if time.monotonic() > deadline:
            refused.append(Rejected("timeout", "yt-dlp's extraction took longer than the time cap"))
            raise socket.gaierror(socket.EAI_AGAIN, "past facedag's time cap")
        infos = real(host, port, *args, **kwargs)
        if not guard.allow_private:
            for info in infos:
                ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
                why = guard.policy(ip)
                if why:
                    refused.append(Rejected(
                        "private_address", f"{host} resolves to {ip} ({why}) when yt-dlp looks it up; set "
                        "download.allow_private: true to allow it"))  # fmt: skip
                    raise socket.gaierror(socket.EAI_FAIL, "refused by facedag's address policy")
        return infos

    socket.getaddrinfo = checked
    try:
        yield refused
    finally:
        socket.getaddrinfo = real


def extract_media(url: str, cfg: Download, workdir: Path, guard: Guard) -> tuple[str, dict[str, str]]:
    """Ask yt-dlp (allowed extractors only, no download) for one progressive media URL, every
    lookup it makes checked by `guard` and none after `download.timeout_s` (guarded_lookups)."""
    import yt_dlp

    logger = _QuietLogger()
    opts = ytdlp_options(cfg, workdir, logger)
    with guarded_lookups(guard, time.monotonic() + cfg.timeout_s) as refused:
        try:
            with yt_dlp.YoutubeDL(opts) as ydl:
                info = ydl.extract_info(url, download=False)
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
    if info.get("_type") in ("playlist", "multi_video"):
        raise Rejected("not_a_single_video", "the URL is a playlist or channel; name one video")
    protocol = str(info.get("protocol") or "")
    media_url = info.get("url")
    if not media_url or protocol not in ("http", "https"):
        raise Rejected("unsupported_protocol", f"only a {protocol or 'non-progressive'} stream is offered")
    return str(media_url), {str(k): str(v) for k, v in (info.get("http_headers") or {}).items()}


# --- sources ----------------------------------------------------------------------------


def local_path(uri: str, root: Path) -> Path:
    """The local file a path or file:// URL names (relative paths are under `root`)."""
    if uri.lower().startswith("file://"):
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise Rejected("unsupported_scheme", f"file URL with a remote host: {uri}")
        path = Path(urllib.request.url2pathname(parts.path))
    else:
        path = Path(uri).expanduser()
    if not path.is_absolute():
        path = root / path
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
                return _save(response, dest, cfg.max_bytes, deadline)
            response.close()  # fetched again below, resumably, from where the redirects led
            return fetch_url(response.url, dest, cfg, guard, resume=resume())
        response.close()
        if "generic" not in ok:
            raise Rejected(
                "extractor_not_allowed",
                f"{uri} is a {response.content_type or 'web'} page and no allowed extractor takes it",
            )
    media_url, headers = extract_media(uri, cfg, workdir, guard)
    return fetch_url(media_url, dest, cfg, guard, headers, resume=resume("media"))


# --- normalise and store ----------------------------------------------------------------

_COMMON_RATES = [Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30),
                 Fraction(48), Fraction(50), Fraction(60000, 1001), Fraction(60)]  # fmt: skip


def target_fps(native: float, max_fps: float) -> Fraction:
    """The constant frame rate of a normalised clip: native (snapped to a common rate when
    within 1%), capped at `max_fps`."""
    if native <= 0:
        native = 25.0
    nearest = min(_COMMON_RATES, key=lambda r: abs(float(r) - native))
    rate = nearest if abs(float(nearest) - native) <= 0.01 * native else Fraction(native).limit_denominator(1001)
    cap = Fraction(max_fps).limit_denominator(1001)
    return min(rate, cap)


def target_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Even width and height, long side <= max_side, aspect kept."""
    scale = min(1.0, max_side / max(width, height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def _is_cfr(path: Path, timeout: float) -> bool:
    """Whether the first video stream's packets are evenly spaced (one packet scan, no decode)."""
    deadline = time.monotonic() + timeout
    pts = []
    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if time.monotonic() > deadline:
                raise Rejected("timeout", f"reading the packets ran longer than {timeout:g} s")
            if packet.pts is not None:
                pts.append(packet.pts)
    pts.sort()
    if len(pts) < 3:
        return True
    deltas = [b - a for a, b in itertools.pairwise(pts)]
    return max(deltas) - min(deltas) <= max(1, 0.01 * min(deltas))


def conforms(info: VideoInfo, cfg: Download, path: Path) -> bool:
    """Whether the clip can be stored as it is (stream copy): everything `normalise` would make."""
    return (
        info.codec == "h264"
        and info.pix_fmt == "yuv420p"
        and info.rotation == 0
        and info.width % 2 == 0
        and info.height % 2 == 0
        and max(info.width, info.height) <= cfg.max_side
        and info.fps <= cfg.max_fps + 1e-3
        and info.audio_codec in (None, "aac")
        and "mp4" in info.container.split(",")
        and _is_cfr(path, cfg.timeout_s)
        and decodes_cleanly(path, cfg.timeout_s)  # damage in the middle: re-encode, do not copy it
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
    if start <= 0 and end is None and conforms(info, cfg, src):
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
