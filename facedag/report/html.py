"""The HTML report of a run: what happened, in pictures, in one page that opens from disk.

`write_report(root, out, identities, target)` reads the outputs a run left under `root` and
writes `out/index.html` plus `out/images/` (or, with `inline=True`, one self-contained page
with base64 images). The page shows, per identity: the pose and lighting scatter before and
after dedupe, contact sheets of kept faces and of rejected faces with their reasons, the
rejections of every data stage, and trim coverage; then the loss and SSIM curves (dvclive),
the preview timelapse, before/after frames of the output, and its provenance record.

Why it is built this way:
- A run is often partial (a stage failed, training still going): every part is built on its
  own and a missing or unreadable input becomes a short note in the page, never a crash.
- Identity names, face ids, rejection reasons and messages come from user data and stage
  output: every piece of text goes through `html.escape`, image file names are numbered
  (never derived from user data), and the page has no script.
- Inputs can be large (a week of training, 100k faces): aligned.parquet is read in batches
  and only the rows shown are decoded; the timelapse samples at most a few previews.
- The page replaces the previous one whole: it is built in a temp folder beside `out`, then
  swapped in, so a reader or a kill never sees half a report.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from facedag.records import atomic_path

DATA_STAGES = ("download", "trim", "extract", "align", "dedupe")
KEPT_MAX = 60  # kept faces shown per identity, in selection order
REJECTED_PER_REASON = 12  # rejected faces shown per reason and identity
TILE = 96  # side of a face tile (px)
PREVIEWS_MAX = 8  # preview grids in the strip (first and last included)
GIF_MAX = 24  # frames of the animated timelapse
PREVIEW_WIDTH = 640
FRAME_PAIRS = 4  # before/after pairs of the output
FRAME_MAX_SIDE = 480
READ_BATCH = 256
_STEP = re.compile(r"^step-(\d+)\.png$")


def esc(value: object) -> str:
    """Text for HTML (element content and quoted attributes alike)."""
    return html.escape(str(value), quote=True)


def _mpl(text: object) -> str:
    """Text for matplotlib: a `$` in user data would otherwise start mathtext (and may fail to parse)."""
    return str(text).replace("\\", "\\\\").replace("$", r"\$")


def _note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


class Images:
    """Where the page's images go: numbered files under `folder` (relative `src`) or data: URIs.

    Names are numbered, never derived from identity names or face ids, so user data cannot
    shape a path.
    """

    def __init__(self, folder: Path | None, rel: str = "images") -> None:
        self.folder = folder
        self.rel = rel
        self.count = 0

    def add_bytes(self, data: bytes, ext: str) -> str:
        """Store encoded image bytes (`ext`: png, jpg or gif) and return the `src` for them."""
        self.count += 1
        mime = {"jpg": "jpeg"}.get(ext, ext)
        if self.folder is None:
            return f"data:image/{mime};base64,{base64.b64encode(data).decode('ascii')}"
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{self.count:04d}.{ext}"
        (self.folder / name).write_bytes(data)
        return f"{self.rel}/{name}"

    def add_array(self, rgb: np.ndarray, fmt: str = "png", quality: int = 88) -> str:
        """Store an RGB uint8 array as png or jpg."""
        from PIL import Image

        buf = io.BytesIO()
        img = Image.fromarray(np.ascontiguousarray(rgb[:, :, :3]).astype(np.uint8), "RGB")
        if fmt == "jpg":
            img.save(buf, format="JPEG", quality=quality)
        else:
            img.save(buf, format="PNG", optimize=True)
        return self.add_bytes(buf.getvalue(), fmt)

    def add_figure(self, fig: Figure, dpi: int = 90) -> str:
        """Store a matplotlib figure as png and close it."""
        buf = io.BytesIO()
        try:
            fig.savefig(buf, format="png", dpi=dpi)
        finally:
            plt.close(fig)
        return self.add_bytes(buf.getvalue(), "png")

    def add_file(self, path: Path, max_width: int | None = None) -> str:
        """Store an image file (png), downscaled to `max_width` when wider; it must decode."""
        from PIL import Image

        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
        if max_width and rgb.width > max_width:
            rgb = rgb.resize((max_width, max(1, round(rgb.height * max_width / rgb.width))), Image.Resampling.LANCZOS)
        return self.add_array(np.asarray(rgb), "png")


def _img(src: str, alt: str, cls: str = "") -> str:
    klass = f' class="{esc(cls)}"' if cls else ""
    return f'<img src="{esc(src)}" alt="{esc(alt)}"{klass} loading="eager">'


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def _decode(blob: bytes | None) -> np.ndarray | None:
    from facedag.tables import decode_image

    return decode_image(blob)


def _square(rgb: np.ndarray, side: int = TILE) -> np.ndarray:
    import cv2

    return cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)


def _fit(rgb: np.ndarray, max_side: int) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


# -- sections ---------------------------------------------------------------------------------------


class Report:
    """One report being built: the project root, where images go, and the page's sections."""

    def __init__(self, root: Path, images: Images, out: Path) -> None:
        self.root = root
        self.images = images
        self.out = out
        self.sections: list[str] = []
        self.toc: list[tuple[str, str, int]] = []
        self.failed: list[str] = []

    def section(self, key: str, title: str, build: Callable[[], str], level: int = 3) -> None:
        """Add a section; an exception while building it becomes a note, so one bad input spoils one part."""
        anchor = f"s{len(self.sections) + 1}"
        try:
            body = build()
        except Exception as exc:  # a report never fails on one part: it says what went wrong there
            self.failed.append(f"{title}: {type(exc).__name__}: {exc}")
            print(f"[report] {title}: could not build this part: {type(exc).__name__}: {exc}", file=sys.stderr)
            body = _note(f"could not build this part: {type(exc).__name__}: {exc}")
        self.toc.append((anchor, title, level))
        self.sections.append(f'<section id="{anchor}" data-section="{esc(key)}">'
                             f"<h{level}>{esc(title)}</h{level}>{body}</section>")

    def heading(self, title: str, key: str) -> None:
        anchor = f"s{len(self.sections) + 1}"
        self.toc.append((anchor, title, 2))
        self.sections.append(f'<h2 id="{anchor}" data-heading="{esc(key)}">{esc(title)}</h2>')

    def rel(self, path: Path) -> Path:
        return path.relative_to(self.root) if path.is_relative_to(self.root) else path


def _summary(rep: Report, identities: Sequence[str]) -> str:
    rows = []
    for name in identities:
        m = _read_json(rep.root / "data" / "dedupe" / name / "metrics.json") or {}
        t = _read_json(rep.root / "data" / "trim" / name / "metrics.json") or {}
        bins = f"{m['bins_covered']} / {m['bins_total']}" if "bins_covered" in m and "bins_total" in m else None
        rows.append([name, t.get("seconds_kept"), m.get("faces_in"), m.get("kept"),
                     m.get("blurry"), m.get("duplicates"), m.get("over_budget"), bins])
    parts = []
    if rows:
        parts.append(_table(["identity", "seconds kept (trim)", "faces aligned", "faces kept", "blurry",
                             "near-duplicates", "over budget", "bins covered"], rows))
    live = _read_json(rep.root / "models" / "live" / "metrics.json")
    if live:
        flat = _flatten(live)
        parts.append(_table(["training metric", "value"], sorted(flat.items())))
    else:
        parts.append(_note("no training metrics yet (models/live/metrics.json): run train"))
    render = _read_json(rep.root / "data" / "render" / "metrics.json")
    if render:
        parts.append(_table(["output metric", "value"], sorted(render.items())))
    video = rep.root / "data" / "render" / "output.mp4"
    if video.is_file():
        href = os.path.relpath(video, rep.out)
        parts.append(f'<p>Output video: <a href="{esc(Path(href).as_posix())}">{esc(rep.rel(video))}</a></p>')
    return "".join(parts)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{key}."))
        else:
            flat[key] = v
    return flat


_FEATURES = ("yaw", "pitch", "luminance", "asymmetry")


def _features(path: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    names = pq.ParquetFile(path).schema_arrow.names
    cols = [c for c in _FEATURES if c in names]
    table = pq.read_table(path, columns=cols)
    n = table.num_rows
    return {c: (np.asarray(table.column(c).to_numpy(zero_copy_only=False), float) if c in cols
                else np.full(n, np.nan)) for c in _FEATURES}


def _pose_light(rep: Report, name: str) -> str:
    aligned = rep.root / "data" / "align" / name / "aligned.parquet"
    dataset = rep.root / "data" / "dedupe" / name / "dataset.parquet"
    fallback = rep.root / "data" / "dedupe" / name / "report.png"
    if not (aligned.is_file() and dataset.is_file()):
        if fallback.is_file():
            return (_note(f"{rep.rel(aligned)} or {rep.rel(dataset)} is missing: showing dedupe's own figure")
                    + _img(rep.images.add_file(fallback), f"dedupe report of {name}", "wide"))
        return _note(f"missing {rep.rel(aligned)} and {rep.rel(dataset)}: run align@{name} and dedupe@{name}")
    before, after = _features(aligned), _features(dataset)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    panels = ((axes[0], "yaw", "pitch", "yaw (deg)", "pitch (deg)", "pose"),
              (axes[1], "luminance", "asymmetry", "face luminance (0..1)", "left/right asymmetry", "lighting"))
    for ax, x, y, xl, yl, title in panels:
        ax.scatter(before[x], before[y], s=10, c="0.6", alpha=0.6, linewidths=0,
                   label=f"aligned ({len(before[x])})")
        ax.scatter(after[x], after[y], s=14, c="C3", alpha=0.85, linewidths=0, label=f"kept ({len(after[x])})")
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_title(f"{title} before and after dedupe", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(_mpl(name), fontsize=11)
    fig.tight_layout()
    src = rep.images.add_figure(fig)
    return _img(src, f"pose and lighting of {name}, before and after dedupe", "wide")


def _tile(src: str | None, caption: str, detail: str, hover: str, alt: str) -> str:
    """A face with a caption, a smaller detail line (bin, or the rejection message) and a hover text (the face id)."""
    pic = _img(src, alt) if src else '<div class="noimg">no image</div>'
    small = f"<small>{esc(detail[:240])}</small>" if detail else ""
    return f'<figure class="tile" title="{esc(hover)}">{pic}<figcaption>{esc(caption)}{small}</figcaption></figure>'


def _kept(rep: Report, name: str) -> str:
    import pyarrow.parquet as pq

    path = rep.root / "data" / "dedupe" / name / "dataset.parquet"
    if not path.is_file():
        return _note(f"missing {rep.rel(path)}: run dedupe@{name}")
    source = pq.ParquetFile(path)
    names = source.schema_arrow.names
    if "image" not in names:
        return _note(f"{rep.rel(path)} has no image column")
    cols = [c for c in ("face", "rank", "bin_label") if c in names]
    picked: list[tuple[int, str, str, bytes]] = []
    row = 0
    for batch in source.iter_batches(batch_size=READ_BATCH, columns=[*cols, "image"]):
        data = batch.to_pydict()
        for k in range(batch.num_rows):
            rank = int(data["rank"][k]) if "rank" in data and data["rank"][k] is not None else row + 1
            row += 1
            face = str(data["face"][k]) if "face" in data else f"row {row}"
            label = str(data["bin_label"][k]) if "bin_label" in data and data["bin_label"][k] is not None else ""
            picked.append((rank, face, label, data["image"][k]))
            picked = sorted(picked, key=lambda p: p[0])[:KEPT_MAX] if len(picked) > 2 * KEPT_MAX else picked
    picked = sorted(picked, key=lambda p: p[0])[:KEPT_MAX]
    tiles = []
    for rank, face, label, blob in picked:
        img = _decode(blob)
        src = rep.images.add_array(_square(img), "jpg") if img is not None else None
        tiles.append(_tile(src, f"#{rank}", label, face, alt=f"kept face {face}"))
    head = f"<p>{esc(f'{min(row, KEPT_MAX)} of {row} kept faces, in selection order (caption: rank and bin)')}</p>"
    return head + f'<div class="sheet">{"".join(tiles)}</div>'


def _rejected(rep: Report, name: str) -> str:
    path = rep.root / "data" / "dedupe" / name / "rejected.jsonl"
    if not path.is_file():
        return _note(f"missing {rep.rel(path)}: run dedupe@{name}")
    rows = _read_jsonl(path)
    if not rows:
        return _note("dedupe rejected no face")
    by_reason: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_reason.setdefault(str(r.get("reason", "unknown")), []).append(r)
    order = sorted(by_reason, key=lambda k: (-len(by_reason[k]), k))
    shown = {str(r.get("item", "")) for k in order for r in by_reason[k][:REJECTED_PER_REASON]}
    images = _face_images(rep.root / "data" / "align" / name / "aligned.parquet", shown)
    parts = [_table(["reason", "faces"], [(k, len(by_reason[k])) for k in order])]
    if images is None:
        parts.append(_note(f"missing data/align/{name}/aligned.parquet: the rejected faces cannot be shown"))
    for reason in order:
        items = by_reason[reason]
        tiles = []
        for r in items[:REJECTED_PER_REASON]:
            face = str(r.get("item", ""))
            img = (images or {}).get(face)
            src = rep.images.add_array(_square(img), "jpg") if img is not None else None
            message = str(r.get("message", ""))
            tiles.append(_tile(src, reason, message, f"{face}: {message}", alt=f"rejected face {face}"))
        more = f" (first {REJECTED_PER_REASON} of {len(items)})" if len(items) > REJECTED_PER_REASON else ""
        parts.append(f'<h4 class="reason">{esc(reason)}{esc(more)}</h4><div class="sheet">{"".join(tiles)}</div>')
    return "".join(parts)


def _face_images(path: Path, wanted: set[str]) -> dict[str, np.ndarray] | None:
    """Decoded images of the faces `wanted`, read from aligned.parquet in batches (it can be large)."""
    import pyarrow.parquet as pq

    if not path.is_file():
        return None
    source = pq.ParquetFile(path)
    if not {"face", "image"} <= set(source.schema_arrow.names):
        return None
    found: dict[str, np.ndarray] = {}
    left = set(wanted)
    for batch in source.iter_batches(batch_size=READ_BATCH, columns=["face", "image"]):
        faces = batch.column("face").to_pylist()
        hits = [k for k, f in enumerate(faces) if str(f) in left]
        if hits:
            blobs = batch.column("image").to_pylist()
            for k in hits:
                img = _decode(blobs[k])
                if img is not None:
                    found[str(faces[k])] = img
                left.discard(str(faces[k]))
        if not left:
            break
    return found


def _stage_rejections(rep: Report, name: str) -> str:
    rows = []
    missing = []
    for stage in DATA_STAGES:
        path = rep.root / "data" / stage / name / "rejected.jsonl"
        if not path.is_file():
            missing.append(stage)
            continue
        counts = Counter(str(r.get("reason", "unknown")) for r in _read_jsonl(path))
        rows.append([stage, sum(counts.values()), ", ".join(f"{k} {v}" for k, v in counts.most_common()) or "-"])
    parts = [_table(["stage", "rejected", "reasons"], rows)] if rows else []
    if missing:
        parts.append(_note(f"not run yet for {name}: {', '.join(missing)}"))
    return "".join(parts)


def _coverage(rep: Report, name: str) -> str:
    path = rep.root / "data" / "trim" / name / "coverage.png"
    if not path.is_file():
        return _note(f"missing {rep.rel(path)}: run trim@{name}")
    return _img(rep.images.add_file(path, max_width=1100), f"trim coverage of {name}", "wide")


def _target_gaps(rep: Report, name: str) -> str:
    """What of the target's poses and lighting this identity's faces cover (trim, then dedupe)."""
    parts = []
    for stage in ("trim", "dedupe"):
        path = rep.root / "data" / stage / name / "target_gaps.json"
        data = _read_json(path)
        if data is None:
            parts.append(_note(f"missing {rep.rel(path)}: run {stage}@{name}"))
            continue
        if data.get("note") and not data.get("lines"):
            parts.append(f"<p>{esc(stage)}: {esc(data['note'])}</p>")
            continue
        cover = "n/a" if data.get("coverage") is None else f"{100 * data['coverage']:.0f} %"
        lines = "".join(f"<li>{esc(line)}</li>" for line in data.get("lines") or []) or "<li>no gaps</li>"
        parts.append(f"<p>{esc(stage)}: the target's frames whose pose this set covers: {esc(cover)}</p>"
                     f"<ul>{lines}</ul>")  # fmt: skip
    return "".join(parts)


def _quality(rep: Report) -> str:
    """evaluate_model's held-out reconstruction and evaluate_video's figures, with their goals."""
    parts = []
    model = _read_json(rep.root / "data" / "evaluate" / "model" / "metrics.json")
    if model is None:
        parts.append(_note("missing data/evaluate/model/metrics.json: run evaluate_model"))
    else:
        rows = [(name, _fmt(m.get("ssim")), _fmt(m.get("psnr")), _fmt(m.get("l1")), m.get("faces"))
                for name, m in model.items() if isinstance(m, dict)]  # fmt: skip
        parts.append(_table(["identity", "held-out SSIM", "PSNR (dB)", "L1", "faces"], rows))
    video = _read_json(rep.root / "data" / "evaluate" / "video" / "metrics.json")
    if video is None:
        parts.append(_note("missing data/evaluate/video/metrics.json: run evaluate_video"))
    else:
        goals = video.get("goals") or {}
        rows = [(key, _fmt(video.get(key)), (goals.get(key) or {}).get("goal", ""),
                 {True: "met", False: "not met"}.get((goals.get(key) or {}).get("met"), ""))
                for key in ("flicker", "seam", "colour_gap", "landmark_error", "detect_rate", "pose_error",
                            "expression_error")]  # fmt: skip
        parts.append(_table(["converted video", "value", "goal", ""], rows))
    return "".join(parts)


FRAME_CURVES = (("pose_error", "pose error (degrees)"), ("expression_error", "expression error"))


def _frame_curves(rep: Report) -> str:
    """evaluate_video's per-frame curves of the output: where in the video the swap drifts."""
    import pandas as pd

    path = rep.root / "data" / "evaluate" / "video" / "frames.parquet"
    if not path.is_file():
        return _note(f"missing {rep.rel(path)}: run evaluate_video")
    frames = pd.read_parquet(path)
    shown = [(key, label) for key, label in FRAME_CURVES if key in frames.columns and frames[key].notna().any()]
    if not shown:
        return _note(f"{rep.rel(path)} has no per-frame pose or identity figures: rerun evaluate_video")
    fig, axes = plt.subplots(len(shown), 1, figsize=(9.0, 2.4 * len(shown)), squeeze=False, sharex=True)
    for ax, (key, label) in zip(axes[:, 0], shown, strict=True):
        ax.plot(frames["frame"], frames[key], marker="." if len(frames) < 60 else None, lw=1)
        ax.set_ylabel(_mpl(label), fontsize=9)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("frame")
    fig.tight_layout()
    return _img(rep.images.add_figure(fig), "per-frame curves of the output against the target", "wide")


def _curves(rep: Report) -> str:
    import pandas as pd

    base = rep.root / "models" / "live" / "plots" / "metrics"
    files = sorted(base.rglob("*.tsv")) if base.is_dir() else []
    if not files:
        return _note(f"no training curves yet ({rep.rel(base)}): run train")
    groups: dict[str, list[tuple[str, pd.DataFrame, str]]] = {}
    for f in files:
        rel = f.relative_to(base)
        group = rel.parent.as_posix() if rel.parent != Path(".") else rel.stem
        try:
            frame = pd.read_csv(f, sep="\t")
        except (OSError, ValueError):
            continue
        ycols = [c for c in frame.columns if c not in ("step", "timestamp")]
        if "step" not in frame.columns or not ycols or frame.empty:
            continue
        groups.setdefault(group, []).append((f.stem, frame, ycols[-1]))
    if not groups:
        return _note(f"the curves in {rep.rel(base)} are empty")

    def rank(g: str) -> tuple[int, str]:
        return (0 if "loss" in g else 1 if "ssim" in g else 2, g)

    order = sorted(groups, key=rank)
    cols = min(3, len(order))
    rows = -(-len(order) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax, group in zip(axes.flat, order, strict=False):
        for label, frame, ycol in groups[group]:
            ax.plot(frame["step"], frame[ycol], marker="." if len(frame) < 30 else None, label=_mpl(label))
        ax.set_title(_mpl(group.replace("_", " ")), fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(groups[group]) > 1:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(order):]:
        ax.set_axis_off()
    fig.tight_layout()
    return _img(rep.images.add_figure(fig), "training curves: loss and held-out SSIM per identity", "wide")


def _previews(rep: Report) -> str:
    folder = rep.root / "models" / "previews"
    steps = sorted((int(m.group(1)), p) for p in (folder.glob("step-*.png") if folder.is_dir() else [])
                   if (m := _STEP.match(p.name)))
    if not steps:
        latest = folder / "latest.png"
        if latest.is_file():
            return _img(rep.images.add_file(latest, PREVIEW_WIDTH), "latest preview")
        return _note(f"no preview grids yet ({rep.rel(folder)}): run train")
    strip = [steps[i] for i in _spread(len(steps), PREVIEWS_MAX)]
    intro = (f"{len(steps)} preview grids, steps {steps[0][0]} to {steps[-1][0]}; rows: each identity "
             "to itself, then each other identity to the first (the swap); columns: input, output pairs")
    parts = [f"<p>{esc(intro)}</p>"]
    gif = _timelapse_gif([steps[i] for i in _spread(len(steps), GIF_MAX)])
    if gif is not None:
        parts.append(f'<figure class="gif">{_img(rep.images.add_bytes(gif, "gif"), "preview timelapse")}'
                     "<figcaption>timelapse (animated)</figcaption></figure>")
    figs = []
    for step, path in strip:
        src = rep.images.add_file(path, PREVIEW_WIDTH // 2)
        figs.append(f'<figure class="frame">{_img(src, f"preview at step {step}")}'
                    f"<figcaption>step {esc(step)}</figcaption></figure>")
    parts.append(f'<div class="strip">{"".join(figs)}</div>')
    return "".join(parts)


def _spread(n: int, k: int) -> list[int]:
    """Up to `k` indices of range(n), evenly spread, first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def _timelapse_gif(steps: Sequence[tuple[int, Path]]) -> bytes | None:
    from PIL import Image, ImageDraw

    frames = []
    for step, path in steps:
        try:
            with Image.open(path) as img:
                img.load()
                rgb = img.convert("RGB")
        except OSError:
            continue
        if rgb.width > PREVIEW_WIDTH:
            rgb = rgb.resize((PREVIEW_WIDTH, max(1, round(rgb.height * PREVIEW_WIDTH / rgb.width))),
                             Image.Resampling.LANCZOS)
        draw = ImageDraw.Draw(rgb)
        draw.rectangle((0, 0, 110, 16), fill=(0, 0, 0))
        draw.text((4, 2), f"step {step}", fill=(255, 255, 255))
        frames.append(rgb)
    if not frames:
        return None
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=600, loop=0)
    return buf.getvalue()


def _before_after(rep: Report, target: str | None) -> str:
    from facedag.sources.media import iter_frames, probe

    output = rep.root / "data" / "render" / "output.mp4"
    if not target:
        return _note("no target video in params: nothing to compare")
    target_path = Path(target) if Path(target).is_absolute() else rep.root / target
    missing = [str(rep.rel(p)) for p in (target_path, output) if not p.is_file()]
    if missing:
        return _note(f"missing {', '.join(missing)}: run convert and render")
    picks = _swapped_frames(rep.root / "data" / "convert" / "frames.parquet")
    if not picks:
        n = probe(output).frames or 0
        picks = [round((i + 0.5) * n / FRAME_PAIRS) for i in range(FRAME_PAIRS)] if n else [0]
    want = set(picks)
    got: dict[str, dict[int, tuple[float, np.ndarray]]] = {"before": {}, "after": {}}
    for key, path in (("before", target_path), ("after", output)):
        for frame in iter_frames(path):
            if frame.index in want:
                got[key][frame.index] = (frame.time, _fit(frame.image, FRAME_MAX_SIDE))
            if frame.index >= max(want):
                break
    pairs = []
    for index in picks:
        if index not in got["before"] or index not in got["after"]:
            continue
        t, before = got["before"][index]
        _, after = got["after"][index]
        b = rep.images.add_array(before, "jpg")
        a = rep.images.add_array(after, "jpg")
        pairs.append(f'<div class="pair"><figure>{_img(b, f"target frame {index}")}'
                     f"<figcaption>before: target, frame {esc(index)} ({t:.2f} s)</figcaption></figure>"
                     f'<figure>{_img(a, f"output frame {index}")}<figcaption>after: output</figcaption></figure></div>')
    if not pairs:
        return _note("no frame decoded in both the target and the output")
    return "".join(pairs)


def _swapped_frames(path: Path) -> list[int]:
    """Up to FRAME_PAIRS frame indices, spread over the frames where convert swapped a face."""
    if not path.is_file():
        return []
    import pyarrow.parquet as pq

    try:
        names = pq.ParquetFile(path).schema_arrow.names
        if not {"frame", "swapped"} <= set(names):
            return []
        table = pq.read_table(path, columns=["frame", "swapped"]).to_pydict()
    except (OSError, ValueError):
        return []
    frames = [int(f) for f, s in zip(table["frame"], table["swapped"], strict=True) if s]
    return [frames[i] for i in _spread(len(frames), FRAME_PAIRS)]


def _provenance(rep: Report) -> str:
    path = rep.root / "data" / "render" / "output.json"
    record = _read_json(path)
    if record is None:
        return _note(f"missing {rep.rel(path)}: run render")
    label = record.get("label") or {}
    model = record.get("model") or {}
    rows = [("description", record.get("description")), ("created", record.get("created")),
            ("visible label", f"{label.get('text', '')!s} ({'shown' if label.get('visible') else 'NOT shown'})"),
            ("model sha256", model.get("sha256")), ("code", json.dumps(record.get("code"), sort_keys=True))]
    return _table(["field", "value"], [r for r in rows if r[1] is not None])


# -- the page ---------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:0 16px 48px;color:#222}
h1{margin-top:24px}h2{border-bottom:2px solid #ccc;margin-top:40px}h4.reason{margin:12px 0 4px}
nav ul{columns:3;font-size:13px}nav li.l3{margin-left:14px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f3f3f3}.note{color:#8a5a00;background:#fff7e6;border-left:4px solid #f0b429;padding:6px 10px}
img.wide{max-width:100%;height:auto}.sheet{display:flex;flex-wrap:wrap;gap:6px}
figure{margin:0}.tile{width:112px;font-size:11px}.tile img,.noimg{width:96px;height:96px;display:block}
.noimg{background:#eee;color:#888;text-align:center;line-height:96px}
.tile figcaption{overflow-wrap:anywhere}.tile small{display:block;color:#666;overflow:hidden;max-height:7.5em}
.strip{display:flex;flex-wrap:wrap;gap:8px}.strip img{max-width:320px;height:auto}
.pair{display:flex;gap:8px;margin:8px 0;flex-wrap:wrap}.pair img{max-width:100%;height:auto}
figcaption{font-size:12px;color:#444}
"""


def build_page(root: Path, identities: Sequence[str], target: str | None, images: Images, out: Path) -> tuple[str,
                                                                                                           list[str]]:
    """The report's HTML (and the parts that could not be built), images stored through `images`."""
    from facedag.report import identity as who  # it builds on this module's helpers

    rep = Report(root, images, out)
    rep.heading("Summary", "summary")
    rep.section("summary", "The run in numbers", lambda: _summary(rep, identities))
    for name in identities:
        rep.heading(f"Identity: {name}", "identity")
        rep.section("pose-lighting", f"{name}: pose and lighting before and after dedupe",
                    lambda n=name: _pose_light(rep, n))
        rep.section("kept-faces", f"{name}: kept faces", lambda n=name: _kept(rep, n))
        rep.section("rejected-faces", f"{name}: faces rejected by dedupe, with their reasons",
                    lambda n=name: _rejected(rep, n))
        rep.section("stage-rejections", f"{name}: rejections by stage", lambda n=name: _stage_rejections(rep, n))
        rep.section("trim-coverage", f"{name}: trim coverage", lambda n=name: _coverage(rep, n))
        rep.section("target-gaps", f"{name}: the target's poses and lighting it covers",
                    lambda n=name: _target_gaps(rep, n))
        rep.section("identity-groups", f"{name}: who is in the footage", lambda n=name: who.identity_groups(rep, n))
    rep.heading("Training", "training")
    rep.section("curves", "Loss and held-out SSIM", lambda: _curves(rep))
    rep.section("timelapse", "Preview timelapse", lambda: _previews(rep))
    rep.heading("Output", "output")
    rep.section("quality", "Quality in numbers", lambda: _quality(rep))
    rep.section("frame-curves", "The output frame by frame", lambda: _frame_curves(rep))
    rep.section("target-identity", "Who is replaced in the target", lambda: who.target_identity(rep))
    rep.section("identity-curve", "Does the output look like src?", lambda: who.identity_curve(rep))
    rep.section("before-after", "Before and after", lambda: _before_after(rep, target))
    rep.section("provenance", "Provenance record", lambda: _provenance(rep))

    toc = "".join(f'<li class="l{level}"><a href="#{a}">{esc(t)}</a></li>' for a, t, level in rep.toc)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = ("<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>facedag report</title><style>{_CSS}</style></head><body>"
            f"<h1>facedag report</h1><p>Built {esc(when)} from {esc(len(identities))} identities. "
            "Every image below is part of this folder: the page works offline and from disk.</p>"
            f"<nav><ul>{toc}</ul></nav>{''.join(rep.sections)}</body></html>\n")
    return page, rep.failed


def write_report(root: str | os.PathLike[str], out: str | os.PathLike[str], identities: Sequence[str],
                 target: str | None = None, inline: bool = False) -> Path:
    """Build the report of the run under `root` into folder `out` (replaced whole) and return its index.html.

    With `inline`, the images are base64 inside index.html (one file to mail or attach);
    otherwise they are files under `out/images/` with relative links.
    """
    root, out = Path(root).resolve(), Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    # what a killed build left (its staging and swapped-out folders): DVC's lock means no other
    # build is running, so they are litter
    for litter in [*out.parent.glob(f".{out.name}.*.tmp"), *out.parent.glob(f".{out.name}.*.old")]:
        shutil.rmtree(litter, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        staging.chmod(0o755)
        images = Images(None if inline else staging / "images")
        page, _failed = build_page(root, list(identities), target, images, out)
        with atomic_path(staging / "index.html") as tmp:
            tmp.write_text(page, encoding="utf-8")
            tmp.chmod(0o644)  # a page for people: readable like the images beside it, not 0600 like a temp file
        _swap_in(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out / "index.html"


def _swap_in(staging: Path, out: Path) -> None:
    """Put the folder `staging` where `out` is: a rename, after moving any previous report aside."""
    old = None
    if out.exists() or out.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
