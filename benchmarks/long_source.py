"""A long 1080p H.264 source built from the samples, with a timestamp skip where it was joined.

Encoding ten minutes of 1080p on two shared cores would take longer than the benchmark
itself, so only one pass of the samples (about 20 s) is encoded, once, and the long source
is that piece joined to itself by ffmpeg's concat demuxer with stream copy. One join says the
piece lasts one frame longer than it does, so the timestamps skip a frame there, as phone
and screen recordings joined by a tool do: the source is not constant-rate, which is what
made download re-encode all of it before. Both files are cached in benchmarks/.cache
(gitignored), keyed by their recipe.
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.common import SAMPLES
from facedag.records import atomic_path
from facedag.sources.media import ffmpeg_input, probe, run_ffmpeg

CACHE = Path(__file__).resolve().parent / ".cache"
RECIPE = "v1"  # change when the recipe below changes, so a stale cache is not reused


def piece(cache: Path = CACHE) -> Path:
    """The samples one after the other, scaled and padded to 1920x1080, H.264 High + AAC."""
    out = cache / f"piece-{RECIPE}.mp4"
    if out.is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    srcs = [SAMPLES / "video_02.mp4", SAMPLES / "video_01.mp4"]
    args: list[str] = []
    for src in srcs:
        args += ["-i", ffmpeg_input(src)]
    chains = "".join(f"[{k}:v]scale=1440:1080:flags=bicubic,pad=1920:1080:240:0,setsar=1,fps=30000/1001[v{k}];"
                     f"[{k}:a]aresample=48000[a{k}];" for k in range(len(srcs)))  # fmt: skip
    joined = "".join(f"[v{k}][a{k}]" for k in range(len(srcs)))
    with atomic_path(out) as tmp:
        run_ffmpeg([*args, "-filter_complex", f"{chains}{joined}concat=n={len(srcs)}:v=1:a=1[v][a]",
                    "-map", "[v]", "-map", "[a]", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
                    "-pix_fmt", "yuv420p", "-g", "60", "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart",
                    "-f", "mp4", ffmpeg_input(tmp)], timeout=3600, what="building the 1080p piece")  # fmt: skip
    return out


def long_source(minutes: float = 10.0, cache: Path = CACHE) -> Path:
    """At least `minutes` of 1080p: the piece joined to itself (stream copy), one join a frame late."""
    base = piece(cache)
    info = probe(base)
    copies = max(2, int(minutes * 60 / info.duration) + 1)
    out = cache / f"long-{RECIPE}-{copies}.mp4"
    if out.is_file():
        return out
    listing = cache / f"long-{RECIPE}-{copies}.txt"
    frame = 1.0 / info.fps
    lines = ["ffconcat version 1.0"]
    for k in range(copies):
        lines.append(f"file '{os.path.basename(base)}'")
        if k == copies // 2:
            lines.append(f"duration {info.duration + frame:.6f}")  # the next piece starts a frame late
    listing.write_text("\n".join(lines) + "\n")
    with atomic_path(out) as tmp:
        run_ffmpeg(["-f", "concat", "-safe", "0", "-i", ffmpeg_input(listing), "-c", "copy",
                    "-movflags", "+faststart", "-f", "mp4", ffmpeg_input(tmp)], timeout=3600,
                   what="joining the long source")  # fmt: skip
    listing.unlink()
    return out
