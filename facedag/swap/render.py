"""Render: the lossless intermediate to the final H.264 video, labelled and tagged as synthetic.

- Video: H.264 (libx264, `render.crf`, `render.preset`), yuv420p (even size), +faststart.
- Audio: the target's first audio stream, copied when mp4 can hold its codec (AAC, MP3,
  Opus, ...), otherwise re-encoded to AAC; a target without audio gives a video without audio.
- Label: a visible text (`render.label_text`, "AI-generated" by default) on a translucent
  box, in a corner (`render.label_position`), its height a fraction of the frame height
  (`render.label_size`). It is on unless `render.label` is false; the choice is recorded
  in output.json by facedag.provenance.record.
- Invisible mark: every frame's luma carries a keyed, error-corrected spread-spectrum
  watermark (facedag.provenance.watermark) whose payload is the mark id that output.json records; it
  survives re-encoding, rescaling and cutting, where tags and C2PA manifests do not. There is
  no switch to turn it off. The frames are decoded from the intermediate here (PyAV, one at a
  time), marked, and piped to ffmpeg as raw yuv420p.
- Metadata: `comment` and `description` say the video is synthetic and name the provenance
  record; `synthetic=1`, `provenance=<record>` and `facedag_mark=<mark id>` are
  machine-readable keys (`-movflags use_metadata_tags` keeps custom keys in mp4).

The label text is untrusted (it comes from params.yaml). It never enters the filter string:
it is written to a file that drawtext reads (`textfile=`), with `expansion=none`, so `%{...}`
sequences, quotes, colons, backslashes and `$(...)` are drawn as they are and nothing is
evaluated (and no shell is ever involved). The font is DejaVu Sans from matplotlib's wheel,
so rendering works offline and looks the same everywhere. ffmpeg runs in a private temp
folder holding `label.txt` and `font.ttf`, so the filter names them by plain relative names
and no path needs escaping for the filter syntax.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from facedag.params import Render
from facedag.sources.media import EncoderPipe, ffmpeg_input, probe

SYNTHETIC_NOTE = "synthetic media (AI-generated face swap); provenance: {record}"
# audio codecs an mp4 holds as they are; others are re-encoded to AAC
MPEG_RANGE = 1  # AVCOL_RANGE_MPEG: Y in 16..235
MP4_AUDIO = {"aac", "mp3", "alac", "opus", "flac", "ac3", "eac3"}


def default_font() -> Path:
    """DejaVu Sans, shipped inside matplotlib's wheel (works offline, same on every machine)."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    if not path.is_file():  # pragma: no cover - a broken matplotlib install
        raise FileNotFoundError(f"font not found: {path}")
    return path


def label_geometry(cfg: Render, height: int) -> dict[str, Any]:
    """Font size, margin and drawtext x/y expressions of the label for a frame `height` px high."""
    size = max(10, round(cfg.label_size * height))
    margin = max(4, round(0.5 * size))
    x = str(margin) if cfg.label_position.endswith("left") else f"w-tw-{margin}"
    y = str(margin) if cfg.label_position.startswith("top") else f"h-th-{margin}"
    return {"fontsize": size, "margin": margin, "x": x, "y": y, "border": max(2, round(0.3 * size))}


def label_filter(cfg: Render, height: int, textfile: str = "label.txt", fontfile: str = "font.ttf") -> str:
    """The drawtext filter of the label. `textfile` and `fontfile` must be plain names (no
    filter syntax characters): ffmpeg runs in the folder that holds them."""
    for name in (textfile, fontfile):
        if not name.replace(".", "").replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"not a plain file name: {name!r}")
    g = label_geometry(cfg, height)
    return (
        f"drawtext=fontfile={fontfile}:textfile={textfile}:expansion=none:fontsize={g['fontsize']}"
        f":fontcolor=white:box=1:boxcolor=black@0.6:boxborderw={g['border']}:x={g['x']}:y={g['y']}:fix_bounds=1"
    )


def render_video(
    frames: str | os.PathLike[str],
    target: str | os.PathLike[str],
    out: str | os.PathLike[str],
    cfg: Render | None = None,
    record_name: str = "output.json",
    timeout: float | None = None,
    mark_id: str | None = None,
) -> dict[str, Any]:
    """Encode `frames` (the intermediate) to `out` (mp4) with `target`'s audio, the invisible mark
    `mark_id` (a new one when None), the label and the tags.

    Returns what was done: label (bool), audio ("copy", "aac" or None), fontsize, frames,
    watermark (mark id and method). The caller writes atomically (`out` is a temp path with
    the .mp4 suffix).
    """
    import av

    from facedag.provenance.watermark import METHOD, Embedder, new_mark_id

    cfg = cfg or Render()
    mark_id = mark_id or new_mark_id()
    tgt = probe(target)
    note = SYNTHETIC_NOTE.format(record=record_name)
    audio: str | None = None
    with av.open(os.fspath(frames)) as source, tempfile.TemporaryDirectory(prefix="facedag-render.") as tmp:
        stream = source.streams.video[0]
        stream.thread_type = "AUTO"
        width, height = stream.codec_context.width // 2 * 2, stream.codec_context.height // 2 * 2
        rate = stream.average_rate or stream.guessed_rate or 25
        total = stream.frames or 0
        timeout = timeout if timeout is not None else 120.0 + 2.0 * max(total, 1)
        work = Path(tmp)
        filters = []
        if cfg.label:
            # newline="" keeps the text's own line breaks; nothing else is interpreted
            (work / "label.txt").write_text(cfg.label_text, encoding="utf-8", newline="")
            shutil.copyfile(default_font(), work / "font.ttf")
            filters.append(label_filter(cfg, height))
        args = ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{width}x{height}",
                "-framerate", f"{rate.numerator}/{rate.denominator}", "-i", "pipe:0"]  # fmt: skip
        if tgt.has_audio:
            args += ["-i", ffmpeg_input(target)]
        args += ["-map", "0:v:0"]
        if tgt.has_audio:
            audio = "copy" if tgt.audio_codec in MP4_AUDIO else "aac"
            args += ["-map", "1:a:0", "-c:a", "copy"] if audio == "copy" else ["-map", "1:a:0", "-c:a", "aac"]
        args += [
            *(["-vf", ",".join(filters)] if filters else []),
            "-c:v", "libx264", "-crf", str(cfg.crf), "-preset", cfg.preset, "-pix_fmt", "yuv420p",
            "-map_metadata", "-1", "-sn", "-dn",
            "-metadata", f"comment={note}", "-metadata", f"description={note}",
            "-metadata", "synthetic=1", "-metadata", f"provenance={record_name}",
            "-metadata", f"facedag_mark={mark_id}",
            "-movflags", "+faststart+use_metadata_tags",
            ffmpeg_input(out),
        ]  # fmt: skip
        embedder = Embedder(mark_id, width, height)
        encoder = EncoderPipe(args, timeout=timeout, what="render", cwd=work)
        try:
            for index, frame in enumerate(source.decode(stream)):
                # limited ("MPEG") range, as x264 and every player assume for untagged yuv420p; the
                # RGB intermediate is tagged full range, which swscale would otherwise carry over
                planes = frame.reformat(width=width, height=height, format="yuv420p",
                                        dst_color_range=MPEG_RANGE).to_ndarray()  # fmt: skip
                embedder.mark_y(planes[:height], index)  # the luma plane, in place
                encoder.write(np.ascontiguousarray(planes).data)
        except BaseException:
            encoder.abort()
            raise
        encoder.close()
    return {"label": cfg.label, "audio": audio, "fontsize": label_geometry(cfg, height)["fontsize"],
            "frames": encoder.frames,
            "watermark": {"mark_id": mark_id, "method": METHOD, "width": width, "height": height}}  # fmt: skip


def read_tags(path: str | os.PathLike[str]) -> dict[str, str]:
    """The container metadata of a video (PyAV), e.g. to check the synthetic tag."""
    import av

    with av.open(os.fspath(path)) as container:
        return dict(container.metadata)
