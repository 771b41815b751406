"""`facedag verify FILE`: which synthetic-media marks a video carries, as one JSON report.

A rendered video carries four marks, each for a different reader and each lost in a
different way, so verify looks for all of them and says what it found:

- `label`: the visible text ("AI-generated"), found by matching the label as render draws it
  (same font, text and size relative to the frame height) in the frame's corners. It survives
  re-encoding and rescaling; cropping removes it.
- `tags`: the container keys (`synthetic`, `provenance`, `facedag_mark`); any re-mux can drop them.
- `watermark`: the invisible payload in every frame (facedag.provenance.watermark); it survives
  re-encoding, rescaling, cuts, flips and turns, and (v2) crops, reframes to 9:16, letterboxes,
  zoom and borders: its `registration` says where the tile grid was found, and `located` the
  scale and crop against the marked frame when output.json gives that frame's size.
- `c2pa`: the signed manifest (facedag.provenance.c2pa_sign) and its validation state; any re-encode
  drops it, and one changed byte makes its validation fail.

And `provenance`: the output.json that matches the file (by the watermark's mark id, or by
the file's sha256), looked up beside the file (the name in its `provenance` tag, else
output.json) or given with `--record`.

`marked` is true when any mark is found. Exit status: 0 marked, 1 unmarked, 2 not a video.
Unmarked videos must read as unmarked: each detector has a threshold far from what plain
footage gives (see tests/provenance/test_verify.py), and the watermark also needs its checksum to agree.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facedag.params import Render
from facedag.records import Rejected, sha256_file
from facedag.sources.media import iter_frames, probe, run_ffmpeg
from facedag.swap.render import default_font, label_filter, read_tags

# Normalised cross-correlation of the label template that counts as the label being there.
# The label on a rendered frame scores 0.8-1.0 (its box is translucent, so content shows
# through); text-free footage stays below 0.4 (tests/provenance/test_verify.py checks both sides).
LABEL_THRESHOLD = 0.6
LABEL_SECONDS = 10.0  # the label is on every frame: the first seconds are enough
LABEL_SAMPLES_FPS = 1.0
_GREY = 128  # template background: the translucent box shows as darker than it


def label_template(cfg: Render, width: int, height: int, timeout: float = 60.0) -> np.ndarray:
    """The label as render draws it on a `width` x `height` frame, cut to its box (grey uint8).

    Drawn by the same ffmpeg drawtext filter on a mid-grey frame, so that the translucent box
    (darker than the background) and the text (white) both show in the template.
    """
    with tempfile.TemporaryDirectory(prefix="facedag-verify.") as tmp:
        work = Path(tmp)
        (work / "label.txt").write_text(cfg.label_text, encoding="utf-8", newline="")
        shutil.copyfile(default_font(), work / "font.ttf")
        run_ffmpeg(["-f", "lavfi", "-i", f"color=c=0x808080:s={width}x{height}:d=1", "-frames:v", "1",
                    "-vf", label_filter(cfg, height), "-f", "rawvideo", "-pix_fmt", "gray", "label.gray"],
                   timeout=timeout, what="label template", cwd=work)  # fmt: skip
        grey = np.fromfile(work / "label.gray", np.uint8)[: width * height].reshape(height, width)
    ys, xs = np.nonzero(np.abs(grey.astype(np.int16) - _GREY) > 8)
    if len(ys) == 0:
        raise ValueError("the label drew nothing")
    return grey[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _corners(gray: np.ndarray, tw: int, th: int) -> dict[str, np.ndarray]:
    """The four corner regions where a label of `tw` x `th` px can sit (with slack for margins)."""
    h, w = gray.shape
    rw, rh = min(w, int(tw * 1.6) + 16), min(h, int(th * 2.5) + 16)
    return {"top-left": gray[:rh, :rw], "top-right": gray[:rh, w - rw :],
            "bottom-left": gray[h - rh :, :rw], "bottom-right": gray[h - rh :, w - rw :]}  # fmt: skip


def detect_label(path: str | os.PathLike[str], cfg: Render | None = None) -> dict[str, Any]:
    """Whether the visible label is in the video: the best corner's median match over sampled frames."""
    cfg = cfg or Render()
    info = probe(path)
    template = label_template(cfg, info.width, info.height)
    th, tw = template.shape
    scores: dict[str, list[float]] = {}
    for frame in iter_frames(path, fps=LABEL_SAMPLES_FPS, end=LABEL_SECONDS):
        gray = cv2.cvtColor(frame.image, cv2.COLOR_RGB2GRAY)
        for corner, region in _corners(gray, tw, th).items():
            if region.shape[0] < th or region.shape[1] < tw:
                continue
            match = cv2.matchTemplate(region, template, cv2.TM_CCOEFF_NORMED)
            scores.setdefault(corner, []).append(float(match.max()))
    if not scores:
        return {"detected": False, "score": 0.0, "threshold": LABEL_THRESHOLD, "position": None, "text": None}
    medians = {corner: float(np.median(values)) for corner, values in scores.items()}
    corner = max(medians, key=lambda c: medians[c])
    found = medians[corner] >= LABEL_THRESHOLD
    return {"detected": found, "score": round(medians[corner], 4), "threshold": LABEL_THRESHOLD,
            "position": corner if found else None, "text": cfg.label_text if found else None}  # fmt: skip


def container_tags(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The synthetic-media keys among the container's metadata."""
    tags = {k.lower(): v for k, v in read_tags(path).items()}
    synthetic = tags.get("synthetic") == "1" or "synthetic media" in tags.get("comment", "").lower()
    return {"synthetic": synthetic, "provenance": tags.get("provenance"), "mark_id": tags.get("facedag_mark"),
            "comment": tags.get("comment")}  # fmt: skip


def find_record(
    path: Path, sha256: str, mark_ids: list[str], tag_name: str | None, record: Path | None = None
) -> dict[str, Any] | None:
    """The provenance record that matches the file, with how it matched; None when none does."""
    candidates = [record] if record else []
    if tag_name and Path(tag_name).name == tag_name:  # a bare name, beside the file (never a path from the file)
        candidates.append(path.parent / tag_name)
    candidates.append(path.parent / "output.json")
    for candidate in candidates:
        try:
            data = json.loads(candidate.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        matched = []
        if (data.get("watermark") or {}).get("mark_id") in mark_ids:
            matched.append("mark_id")
        if (data.get("output") or {}).get("sha256") == sha256:
            matched.append("sha256")
        if matched:
            return {"path": os.fspath(candidate), "matched_by": matched, "record": data}
    return None


def locate(mark: dict[str, Any], record: dict[str, Any] | None) -> dict[str, Any] | None:
    """Scale and crop of the copy against the marked video, from the v2 mark's registration and
    the marked frame size that output.json records (`watermark.width`/`height`); None without them.

    `scale`: copy px per marked px along the copy's x and y. `marked_frame_in_copy`: where the
    whole marked frame would lie in the copy [x, y, w, h] (outside the copy where it was cropped,
    inside it where bars or a border were added). `visible_in_marked_px`: the part of the marked
    frame the copy shows [x, y, w, h] in the marked frame's pixels (a crop is what is missing).
    The placement assumes the edit kept the picture centred to within a tile (see
    facedag.provenance.watermark's `_TileReader._registration`); a quarter turn swaps the axes.
    """
    reg = mark.get("registration")
    info = (record or {}).get("watermark") or {}
    if not reg or not isinstance(info.get("width"), int) or not isinstance(info.get("height"), int):
        return None
    from facedag.provenance.watermark import ORIENTATIONS

    marked_w, marked_h = info["width"], info["height"]
    if ORIENTATIONS[mark["orientation"]][0]:  # a quarter turn: the marked frame lies on its side
        marked_w, marked_h = marked_h, marked_w
    short = min(marked_w, marked_h)
    sx, sy = reg["marked_short_side_px"][0] / short, reg["marked_short_side_px"][1] / short
    (cw, ch), (cx, cy) = reg["copy_px"], reg["centre_px"]
    x0, y0, w, h = cx - marked_w * sx / 2, cy - marked_h * sy / 2, marked_w * sx, marked_h * sy
    vx0, vy0 = max(0.0, -x0) / sx, max(0.0, -y0) / sy
    vx1, vy1 = (min(cw, x0 + w) - x0) / sx, (min(ch, y0 + h) - y0) / sy
    return {"scale": [round(sx, 3), round(sy, 3)],
            "marked_frame_in_copy": [round(v, 1) for v in (x0, y0, w, h)],
            "visible_in_marked_px": [round(v, 1) for v in (vx0, vy0, vx1 - vx0, vy1 - vy0)]}  # fmt: skip


def verify(path: str | os.PathLike[str], record: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The JSON report of `path` (see the module docstring). Raises Rejected when it is not a video."""
    from facedag.provenance.c2pa_sign import read_manifest
    from facedag.provenance.watermark import detect_file

    file = Path(path)
    probe(file)  # not a video -> Rejected with its reason code
    sha = sha256_file(file)
    tags = container_tags(file)
    mark = detect_file(file).to_dict()
    manifest = read_manifest(file)
    mark_ids = [m for m in (mark.get("mark_id"), tags.get("mark_id")) if m]
    found = find_record(file, sha, mark_ids, tags.get("provenance"), Path(record) if record else None)
    label_cfg = Render()
    if found and isinstance((found["record"].get("label") or {}).get("text"), str):
        lab = found["record"]["label"]
        label_cfg = Render(label_text=lab["text"], label_position=lab.get("position", label_cfg.label_position),
                           label_size=lab.get("size", label_cfg.label_size))  # fmt: skip
    if mark.get("registration"):
        mark["registration"]["located"] = locate(mark, found["record"] if found else None)
    label = detect_label(file, label_cfg)
    marked = bool(label["detected"] or tags["synthetic"] or mark.get("found") or manifest.get("present"))
    return {"file": os.fspath(file), "sha256": sha, "marked": marked, "label": label, "tags": tags,
            "watermark": mark, "c2pa": manifest, "provenance": found}  # fmt: skip


def main(path: str, record: str | None = None) -> int:
    """Print the report; 0 when marked, 1 when unmarked, 2 when the file is not a readable video."""
    try:
        report = verify(path, record)
    except Rejected as exc:
        print(json.dumps({"file": path, "marked": None, "error": {"reason": exc.reason, "message": exc.message}}))
        return 2
    print(json.dumps(report, indent=2, default=str))
    return 0 if report["marked"] else 1
