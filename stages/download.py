"""download@ID: fetch every source of one identity, cut and normalise it, store clips by sha256.

    python -m stages.download <ID> [--params params.yaml]

Reads `download` and `identities.<ID>.sources` from params.yaml. Writes, under
`data/download/<ID>/`:

- `clips/<sha256>.mp4`: normalised clips (H.264 yuv420p, even size, rotation applied, AAC
  audio when the source has audio); a clip reached from two sources is stored once. A whole
  source already in that form is stored as fetched (stream copy), even at a variable frame
  rate: trim cuts the shots it keeps at a constant rate (`fps` below is the average).
- `manifest.parquet`: one row per usable video: source (index in the sources list), uri
  (of the video), playlist (the playlist or folder source it was listed from, null when the
  source is one video), sha256 (of the stored clip), source_sha256 (of the source as
  fetched), path (relative to the project root), duration, fps, width, height, frames,
  audio, licence, start, end (the cut, in the source's seconds), copied (stream copy),
  duplicate.
- `rejected.jsonl`: one line per unusable source (reason codes in `facedag.sources.fetch`).
- `metrics.json`: sources, videos (after expanding playlists and folders), clips, duplicates,
  rejected, seconds.

A source may stand for many videos (facedag.sources.playlist): a playlist or channel URL
with `max_items` (optional `title`, `after`, `before` filters), recorded in
`data/download/.playlists/` so a rerun takes the same videos unless the source says
`refresh: true`; or a local folder, which expands to its video files. A source that cannot
be listed is rejected under its own uri; each video it gives is fetched, rejected or kept
under the video's uri.

Interrupted URL fetches are kept in `data/download/.partial/` (outside the outputs, which DVC
deletes before a run) and resume with HTTP Range requests on the next run
(`facedag.sources.fetch.Partial`).

One bad source never stops the others; the stage fails (one line, exit 1) only when no
source gives a usable clip.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from facedag.params import Download, Params, Source
from facedag.records import Rejected, Rejections, StageFailed, atomic_path, write_metrics
from facedag.sources.fetch import make_clip
from facedag.sources.guarded import Guard
from facedag.sources.playlist import Item, expand
from facedag.stagekit import fresh_dir, identity_main

STAGE = "download"
PARTIAL_DIR = Path("data/download/.partial")  # interrupted fetches, kept for the rerun (not an output)
PLAYLIST_DIR = Path("data/download/.playlists")  # the videos each playlist source was expanded to

SCHEMA = pa.schema(
    [
        ("source", pa.int32()),
        ("uri", pa.string()),
        ("playlist", pa.string()),  # the playlist or folder source the video was listed from (null: none)
        ("sha256", pa.string()),  # of the stored, normalised clip (its file name)
        ("source_sha256", pa.string()),  # of the source as fetched (provenance)
        ("path", pa.string()),
        ("duration", pa.float64()),
        ("fps", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("frames", pa.int64()),
        ("audio", pa.bool_()),
        ("licence", pa.string()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("copied", pa.bool_()),
        ("duplicate", pa.bool_()),
    ]
)


def _fetch_one(item: Item, source: Source, index: int, cfg: Download, clips_dir: Path, work: Path, root: Path,
               guard: Guard, partial_dir: Path, rejections: Rejections) -> dict[str, object] | None:
    """One video to one manifest row, or to one rejection (None)."""
    try:
        clip = make_clip(item.uri, source.start, source.end, cfg, clips_dir, work, root, guard, partial_dir)
    except Rejected as exc:
        rejections.add_error(item.uri, exc)
        return None
    except Exception as exc:  # a bug or an unforeseen input must not stop the batch
        rejections.add(item.uri, "internal_error", f"{type(exc).__name__}: {exc}"[:300])
        return None
    info = clip.info
    note = " (same clip as an earlier source, stored once)" if clip.duplicate else ""
    print(f"[{STAGE}] {item.uri} -> {clip.path.name} {info.width}x{info.height} "
          f"{info.fps:g} fps {info.duration:.2f} s{note}", flush=True)  # fmt: skip
    return {
        "source": index,
        "uri": item.uri,
        "playlist": item.playlist,
        "sha256": clip.sha256,
        "source_sha256": clip.source_sha256,
        "path": clip.path.relative_to(root).as_posix(),
        "duration": info.duration,
        "fps": info.fps,
        "width": info.width,
        "height": info.height,
        "frames": info.frames,
        "audio": info.has_audio,
        "licence": source.licence,
        "start": clip.start,
        "end": clip.end,
        "copied": clip.copied,
        "duplicate": clip.duplicate,
    }


def run(params: Params, identity: str, root: Path | None = None) -> None:
    root = Path.cwd() if root is None else root
    cfg = params.download
    sources = params.identities[identity].sources
    out = fresh_dir(root / "data" / STAGE / identity)
    clips_dir = out / "clips"
    clips_dir.mkdir()
    rejections = Rejections(out, STAGE)
    guard = Guard(cfg.allow_private)
    partial_dir = root / PARTIAL_DIR
    rows: list[dict[str, object]] = []
    videos = 0
    with tempfile.TemporaryDirectory(prefix="facedag-download-") as work:
        for index, source in enumerate(sources):
            try:
                items = expand(source, cfg, root, Path(work), guard, root / PLAYLIST_DIR)
            except Rejected as exc:
                rejections.add_error(source.uri, exc)
                continue
            except Exception as exc:  # a bug or an unforeseen input must not stop the batch
                rejections.add(source.uri, "internal_error", f"{type(exc).__name__}: {exc}"[:300])
                continue
            if items[0].playlist is not None:
                print(f"[{STAGE}] {source.uri} -> {len(items)} video(s)", flush=True)
            videos += len(items)
            for item in items:
                row = _fetch_one(item, source, index, cfg, clips_dir, Path(work), root, guard, partial_dir,
                                 rejections)  # fmt: skip
                if row is not None:
                    rows.append(row)
    with atomic_path(out / "manifest.parquet") as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp)
    rejections.close()
    write_metrics(
        out,
        {
            "sources": len(sources),
            "videos": videos,
            "clips": sum(1 for r in rows if not r["duplicate"]),
            "duplicates": sum(1 for r in rows if r["duplicate"]),
            "rejected": len(rejections),
            "seconds": round(sum(float(r["duration"]) for r in rows if not r["duplicate"]), 3),
        },
    )
    if not rows:
        raise StageFailed(
            f"no usable clip: all {len(sources)} source(s) were rejected (see {out.relative_to(root)}/rejected.jsonl)"
        )


if __name__ == "__main__":
    identity_main(STAGE, run)
