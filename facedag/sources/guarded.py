"""The guarded HTTP client: every address a fetch reaches is checked, and a fetch may resume.

- `Guard` / `forbidden_ip`: which addresses may be reached (loopback, private, shared 100.64/10,
  link-local incl. 169.254.169.254, multicast, reserved, unspecified, and IPv4 addresses
  hidden in IPv6 are refused unless `allow_private`).
- `open_url`: GET with the host checked at first and after every redirect (at most
  MAX_REDIRECTS), connecting to the checked address (no second DNS lookup to race).
- `save`: stream a body to a file under a size cap and a time cap (a bar with the time left
  on a terminal).
- `Partial`: a download kept between runs, resumed with HTTP Range requests.
- `guarded_lookups`: every host name the process looks up (yt-dlp's own connections) checked
  by the same policy.

Refusals raise `facedag.records.Rejected` with fetch's reason codes (facedag.sources.fetch).
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import os
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from facedag.progress import counter
from facedag.records import Rejected, atomic_write_json

MAX_REDIRECTS = 5
USER_AGENT = "facedag/0.1 (+https://github.com/; video dataset builder)"
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


def save(response: _Response, dest: Path, max_bytes: int, deadline: float, offset: int = 0,
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
    known = int(length) + offset if length and length.isdigit() else None
    bar = counter(known, initial=offset, desc="download", unit="B", unit_scale=True)
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
                bar.update(len(block))
        if known is not None and total < known:  # http.client's read1 takes an early close for the end
            raise Rejected("network_error", f"the connection closed after {total - offset} of {known - offset} bytes")
    except Rejected as exc:
        if not (keep_partial and exc.reason in ("timeout", "network_error")):
            dest.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
        response.close()
    return dest


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
        save(response, self.part, max_bytes, deadline, offset=have, keep_partial=True)
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


