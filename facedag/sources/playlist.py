"""A source that stands for many videos: a playlist or channel URL, or a local folder.

download@ID expands such a source into one item per video before fetching, and each item
then goes its own way (its own manifest row, sha256 and rejections):

- A URL with `max_items` is listed by yt-dlp (allowed extractors only, flat: the entries'
  URLs and titles, not their streams), every lookup checked (`guarded_lookups`). The first
  `max_items` entries that pass the optional filters are taken: `title` (a regular
  expression searched in the title, case-insensitive) and `after`/`before` (upload dates,
  inclusive; an entry that does not state its date is left out when a date filter is set).
  The expansion is recorded in `data/download/.playlists/<key>.json` (the key is made of
  the URL and the filters) and a rerun takes the same videos, so a channel that posts a new
  video does not change the dataset under a cached pipeline; `refresh: true` lists it again.
- A local folder (a path or file:// URL naming a directory) expands to its video files
  (by extension, sub-folders included, hidden ones not), sorted by path, filtered by
  `title` on the file name and capped by `max_items`. It is listed on every run: the
  folder itself is the record.
- Anything else is one video, as before.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from facedag.params import Download, Source
from facedag.records import Rejected, atomic_write_json
from facedag.sources.fetch import VIDEO_EXTENSIONS, extract_info, is_url, local_dir
from facedag.sources.guarded import Guard

SCAN_FACTOR = 50  # with a filter, up to this many entries per wanted item are listed


@dataclass(frozen=True)
class Item:
    """One video of a source: `uri` to fetch; `playlist` the source it was expanded from (None: it is one)."""

    uri: str
    title: str | None = None
    playlist: str | None = None


def _wanted(title: str | None, day: date | None, source: Source) -> bool:
    if source.title and not re.search(source.title, title or "", re.IGNORECASE):
        return False
    if source.after or source.before:
        if day is None:
            return False
        if (source.after and day < source.after) or (source.before and day > source.before):
            return False
    return True


def _entry_date(entry: dict[str, Any]) -> date | None:
    raw = entry.get("upload_date") or entry.get("release_date")
    if isinstance(raw, str) and re.fullmatch(r"\d{8}", raw):
        return date(int(raw[:4]), int(raw[4:6]), int(raw[6:]))
    stamp = entry.get("timestamp") or entry.get("release_timestamp")
    if isinstance(stamp, int | float):
        return datetime.fromtimestamp(stamp, UTC).date()
    return None


def record_path(folder: Path, source: Source) -> Path:
    """Where the expansion of `source` is recorded: keyed by its URL and filters."""
    key = json.dumps([source.uri, source.max_items, source.title, str(source.after), str(source.before)])
    return folder / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def list_playlist(source: Source, cfg: Download, workdir: Path, guard: Guard) -> list[Item]:
    """The playlist's entries, filtered and capped, as yt-dlp lists them (flat, guarded)."""
    from yt_dlp.utils import unsmuggle_url

    assert source.max_items is not None
    filtered = bool(source.title or source.after or source.before)
    end = source.max_items * (SCAN_FACTOR if filtered else 1)
    info = extract_info(source.uri, cfg, workdir, guard, flat=True, extra={"playlistend": end})
    entries = info.get("entries") if info.get("_type") in ("playlist", "multi_video") else [info]
    items: list[Item] = []
    for entry in entries or []:
        if not isinstance(entry, dict):
            continue
        url = entry.get("url") if entry.get("_type") in ("url", "url_transparent") else entry.get("webpage_url")
        if not isinstance(url, str) or not url or url == source.uri:
            continue  # an entry with no address of its own (e.g. one of several <video>s of one page)
        title = entry.get("title") if isinstance(entry.get("title"), str) else None
        if _wanted(title, _entry_date(entry), source):
            items.append(Item(unsmuggle_url(url)[0], title, source.uri))
        if len(items) >= source.max_items:
            break
    return items


def list_folder(folder: Path, source: Source, root: Path) -> list[Item]:
    """The video files in `folder` (and its sub-folders), sorted, filtered by name, capped."""
    items = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            continue
        day = datetime.fromtimestamp(path.stat().st_mtime, UTC).date()
        if not _wanted(path.stem, day, source):
            continue
        uri = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        items.append(Item(uri, path.stem, source.uri))
        if source.max_items is not None and len(items) >= source.max_items:
            break
    return items


def expand(source: Source, cfg: Download, root: Path, workdir: Path, guard: Guard, record_dir: Path) -> list[Item]:
    """The videos `source` stands for (see the module docstring). Raises Rejected when a
    playlist or folder cannot be listed or lists nothing."""
    folder = local_dir(source.uri, root)
    if folder is not None:
        items = list_folder(folder, source, root)
        if not items:
            raise Rejected("not_found", f"no video file in {folder} matches the source")
        return items
    if source.max_items is None or not is_url(source.uri):
        return [Item(source.uri)]
    record = record_path(record_dir, source)
    if record.is_file() and not source.refresh:
        try:
            saved = json.loads(record.read_text())
            return [Item(e["uri"], e.get("title"), source.uri) for e in saved["items"]]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a damaged record: list again
    items = list_playlist(source, cfg, workdir, guard)
    if not items:
        raise Rejected("extraction_failed", f"the playlist {source.uri} lists no video that matches the source")
    record.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(record, {"uri": source.uri, "listed": datetime.now(UTC).isoformat(timespec="seconds"),
                               "items": [{"uri": i.uri, "title": i.title} for i in items]})  # fmt: skip
    return items
