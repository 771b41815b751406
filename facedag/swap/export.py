"""Export: ground truth for detector research and patches for compositing, from one conversion.

Detector researchers need to know exactly which pixels were synthesised; compositors need the
swapped face apart from the plate. Both come from what convert already wrote: its lossless
intermediate (every target frame, bit-exact where nothing was pasted) and its table (the blend
mask of each frame, and per pasted face its track and aligned->frame matrix,
facedag.swap.frames.CONVERT_SCHEMA). Nothing is recomputed and no model runs.

Layout, after FaceForensics++ (ondyari/FaceForensics, dataset/download script: `DATASETS` maps
`original` to `original_sequences/youtube` and each method to `manipulated_sequences/<Method>`,
each with `raw|c23|c40/videos/<id>.mp4`; masks are `manipulated_sequences/<Method>/masks/videos`;
its extract script writes `<...>/images/<id>/0000.png`), one folder per video under `out`:

    original_sequences/facedag/raw/images/<video>/0000.png      the real target frame (RGB)
    manipulated_sequences/facedag/raw/images/<video>/0000.png   the swapped frame, marked (RGB)
    manipulated_sequences/facedag/masks/images/<video>/0000.png the blend alpha, full frame, 8-bit grey
    manipulated_sequences/facedag/patches/<video>/0000.png      the pasted face: RGBA, its matte as alpha
    manipulated_sequences/facedag/patches/<video>/transforms.json  per patch: offset, size, faces' matrices

Where it differs from FaceForensics++: frames as lossless PNG, not c0/c23/c40 videos (a detector
set picks its own compression); `facedag` stands for both the source ("youtube") and the method
("Deepfakes", ...); masks are the 8-bit blend alpha (0..255, threshold as you like) rather than a
binarised mask video; frames are named by their index in the target (with `export.every` > 1 the
names skip, so each file still says which target frame it is); `patches/` is ours (faceswap's
"patch" writer, for compositing).

The swapped frames carry render's invisible mark (facedag.provenance.watermark) with render's
mark id (data/render/output.json), every frame at its own index, as render marks the video, so
no synthetic frame leaves unmarked and the frames tie back to the record. The mark is spread over
the luma: the change the Embedder makes to the frame's luma is added to R, G and B alike (which
changes the luma by that much and keeps the chroma). It is read from consecutive frames (it is
keyed in time), so an export with `every` 1 reads back with facedag.provenance.watermark.detect_frames.
No visible label is drawn (`label: false` in the index): a label is a trivial cue a detector
would learn instead of the face; the mark and the index tie each frame back instead.

Patches are in frame space: the RGBA crop of the mask's bounding box and its offset in the plate.
faceswap's patch writer gives the aligned face and a matrix, which a compositor must warp with
the same interpolation to match; a frame-space patch composites with a plain "over" at an
offset, and the matrices (aligned px -> frame px, per face, with the track) are still in
transforms.json for tracking. The patch's RGB is the face as pasted, before the blend: where the
matte is opaque that is the swapped frame itself; under a feathered edge it is un-blended from
the swapped and the real frame (`unblend`), so that compositing the patch over the real frame
with its matte gives back the swapped frame: within one level (the 8-bit matte) where the matte
is at least half. Since it is taken from the marked frame, the composite carries the mark where
the face is. Two places match only within the mark's amplitude (1-3 levels): under a faint edge
(alpha 1/255 moves the plate by one level at most), and where the mark pushed a face near 255 or
0 past what an 8-bit patch reaches through the blend (1.2 % of the opaque pixels of the
inverted-face test).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow.parquet as pq

from facedag.params import Export
from facedag.provenance.watermark import Embedder
from facedag.records import Rejected, Rejections, atomic_write_bytes, atomic_write_json
from facedag.sources.media import Frame, iter_frames
from facedag.swap.frames import CONVERT_SCHEMA, PLACEMENT_COLUMNS, decode_mask
from facedag.tables import missing_columns

DATASET = "facedag"  # the source and method folder name (FaceForensics++: "youtube", "Deepfakes", ...)
FORMAT = "facedag-export/1"
LABEL_NOTE = ("no visible label on exported frames: a label is a trivial cue a detector would learn "
              "instead of the face; each swapped frame carries the invisible mark (mark_id) instead")  # fmt: skip
UNBLEND_SIGMA = 3.0  # px: how far the opaque face's colour is carried into the feathered edge


def folders(out: str | os.PathLike[str], video: str) -> dict[str, Path]:
    """The export's folders for one video (module docstring)."""
    root = Path(out)
    fake = root / "manipulated_sequences" / DATASET
    return {
        "original": root / "original_sequences" / DATASET / "raw" / "images" / video,
        "manipulated": fake / "raw" / "images" / video,
        "masks": fake / "masks" / "images" / video,
        "patches": fake / "patches" / video,
    }


def mark_rgb(embedder: Embedder, rgb: np.ndarray, index: int) -> np.ndarray:
    """`rgb` (HxWx3 uint8) with frame `index`'s mark: the Embedder's change to its luma, added to
    R, G and B alike (a grey offset changes the luma by as much and leaves the chroma)."""
    luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    marked = embedder.mark_y(luma.copy(), index)
    delta = marked.astype(np.int16) - luma.astype(np.int16)
    return np.clip(rgb.astype(np.int16) + delta[..., None], 0, 255).astype(np.uint8)


def unblend(real: np.ndarray, swapped: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The face as pasted (RGB uint8) from the `real` and `swapped` crops and the 8-bit `alpha`.

    convert blended `swapped = round(real + a * (face - real))`. Any integer face value in
    [real + (swapped - 0.5 - real) / a, real + (swapped + 0.5 - real) / a] gives `swapped` back
    through the same blend: where a is near 1 that pins the face to the swapped pixel, under a
    faint edge it leaves a wide range, and the value picked there is the one nearest the colour
    of the opaque face nearby (a normalised blur weighted by a^2), not the noise that dividing by
    a small a would amplify. Where alpha is 0 the face is that nearby colour too (it is not seen).
    """
    a = alpha.astype(np.float64)[..., None] / 255.0
    r = real.astype(np.float64)
    s = swapped.astype(np.float64)
    seen = a > 0
    safe = np.where(seen, a, 1.0)
    direct = np.where(seen, r + (s - r) / safe, s)
    weight = (a * a).astype(np.float32)
    spread = cv2.GaussianBlur(weight[..., 0], (0, 0), UNBLEND_SIGMA)[..., None].astype(np.float64)
    carried = cv2.GaussianBlur((direct * weight).astype(np.float32), (0, 0), UNBLEND_SIGMA).astype(np.float64)
    guess = np.where(spread > 1e-6, carried / np.maximum(spread, 1e-6), direct)
    eps = 1e-6  # keep off the rounding ties of the blend
    lo = np.ceil(r + (s - 0.5 + eps - r) / safe)
    hi = np.floor(r + (s + 0.5 - eps - r) / safe)
    lo, hi = np.maximum(lo, 0.0), np.minimum(hi, 255.0)
    fits = seen & (lo <= hi)
    face = np.where(fits, np.clip(np.rint(guess), lo, hi), np.rint(np.where(seen, direct, guess)))
    return np.clip(face, 0, 255).astype(np.uint8)


def composite(plate: np.ndarray, patch: np.ndarray, offset: tuple[int, int]) -> np.ndarray:
    """`patch` (RGBA, straight alpha) over a copy of `plate` (RGB) at `offset` (x, y), rounded as
    convert blends: what a compositing package does with the patch and transforms.json."""
    out = plate.copy()
    x0, y0 = offset
    h, w = patch.shape[:2]
    roi = out[y0:y0 + h, x0:x0 + w]
    a = patch[..., 3:4].astype(np.float32) / 255.0
    base = roi.astype(np.float32)
    roi[...] = np.clip(base + a * (patch[..., :3].astype(np.float32) - base) + 0.5, 0, 255).astype(np.uint8)
    return out


def write_png(path: Path, image: np.ndarray) -> None:
    """An RGB, RGBA or grey uint8 image as a PNG, atomically."""
    if image.ndim == 3:
        code = cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR
        image = cv2.cvtColor(image, code)
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:  # pragma: no cover - cv2 encodes any uint8 image
        raise ValueError(f"cannot encode {path.name}")
    atomic_write_bytes(path, buf.tobytes())


def read_png(path: str | os.PathLike[str]) -> np.ndarray:
    """A PNG written by `write_png`, back as RGB, RGBA or grey (tests, readers of the export)."""
    image = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot read {path}")
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return image


@dataclass
class ExportStats:
    frames: int = 0  # frames of the conversion read
    exported: int = 0  # frames written (original, manipulated and mask)
    swapped: list[int] = field(default_factory=list)  # indices of exported frames with a pasted face
    patches: int = 0
    rejected: int = 0

    def metrics(self) -> dict[str, int]:
        return {"frames": self.frames, "exported": self.exported, "swapped": len(self.swapped),
                "patches": self.patches, "rejected": self.rejected}  # fmt: skip


def _rows(table: Path, patches: bool) -> Iterator[dict[str, Any]]:
    """convert's table, row by row (one row group at a time). With `patches`, a table written
    before convert recorded the faces' matrices is refused by name, not misread."""
    missing = missing_columns(table, CONVERT_SCHEMA)
    need = {"frame", "swapped", "mask_box", "mask", *(PLACEMENT_COLUMNS if patches else ())}
    if need & set(missing):
        raise Rejected("old_table", f"{table} has no {', '.join(sorted(need & set(missing)))} column(s): it was "
                                    "written by an older convert; run convert again")  # fmt: skip
    columns = sorted(need)
    for batch in pq.ParquetFile(table).iter_batches(batch_size=256, columns=columns):
        yield from batch.to_pylist()


def _pairs(target: Path, frames: Path, table: Path, patches: bool, every: int,
           rejections: Rejections, video: str) -> Iterator[tuple[Frame, Frame, dict[str, Any]]]:  # fmt: skip
    """(real frame, swapped frame, table row) by frame index; a frame one of them lacks is rejected
    (when the stride would have exported it)."""
    real_it, fake_it, rows = iter_frames(target), iter_frames(frames), _rows(table, patches)
    while True:
        real, fake, row = next(real_it, None), next(fake_it, None), next(rows, None)
        if real is None and fake is None and row is None:
            return
        if real is None or fake is None or row is None:
            index = next(x.index for x in (real, fake) if x is not None) if row is None else row["frame"]
            lacking = ", ".join(n for n, x in (("target", real), ("converted video", fake), ("table", row))
                                if x is None)  # fmt: skip
            if index % every == 0:
                rejections.add(f"{video}/{index:04d}", "frame_missing", f"frame {index} is not in the {lacking}")
            continue
        yield real, fake, row


def export_video(target: str | os.PathLike[str], frames: str | os.PathLike[str], table: str | os.PathLike[str],
                 record: dict[str, Any], out: str | os.PathLike[str], cfg: Export, video: str,
                 rejections: Rejections) -> ExportStats:  # fmt: skip
    """Write one conversion's frames, masks and patches under `out` (module docstring).

    `target` is the real video convert read, `frames` and `table` convert's intermediate and
    table, `record` render's output.json (its mark id marks the frames). An unusable frame (one
    the target, the converted video or the table lacks, a mask that does not fit its box, a frame
    of another size, one too small to carry the mark) is added to `rejections` and the rest goes
    on. Raises Rejected when the mark
    id is missing or the table is too old for `cfg.patches`.
    """
    mark_id = (record.get("watermark") or {}).get("mark_id")
    if not mark_id:
        raise Rejected("no_mark", "output.json records no watermark mark id: render again")
    dirs = folders(out, video)
    for kind, path in dirs.items():
        if kind != "patches" or cfg.patches:
            path.mkdir(parents=True, exist_ok=True)
    stats = ExportStats()
    transforms: list[dict[str, Any]] = []
    embedder: Embedder | None = None
    for real, fake, row in _pairs(Path(target), Path(frames), Path(table), cfg.patches, cfg.every, rejections,
                                  video):
        stats.frames += 1
        index = fake.index
        if index % cfg.every:
            continue
        item = f"{video}/{index:04d}"
        if real.image.shape != fake.image.shape or row["frame"] != index:
            rejections.add(item, "frame_mismatch", f"target frame {real.image.shape[1]}x{real.image.shape[0]} "
                                                   f"and converted frame {fake.image.shape[1]}x{fake.image.shape[0]} "
                                                   f"(table row {row['frame']}) do not match")  # fmt: skip
            continue
        h, w = fake.image.shape[:2]
        try:
            if embedder is None or (embedder.width, embedder.height) != (w, h):
                embedder = Embedder(mark_id, w, h)
        except ValueError as exc:  # smaller than the mark's grid: no synthetic frame leaves unmarked
            rejections.add(item, "too_small_to_mark", str(exc))
            continue
        marked = mark_rgb(embedder, fake.image, index)  # at its own index: the mark is keyed in time
        try:
            mask = decode_mask(row["mask_box"], row["mask"], h, w)
        except ValueError as exc:
            rejections.add(item, "mask_unreadable", str(exc))
            continue
        name = f"{index:04d}.png"
        write_png(dirs["original"] / name, real.image)
        write_png(dirs["manipulated"] / name, marked)
        write_png(dirs["masks"] / name, mask if mask is not None else np.zeros((h, w), np.uint8))
        stats.exported += 1
        if mask is None or not row["swapped"]:
            continue
        stats.swapped.append(index)
        if cfg.patches:
            x0, y0, x1, y1 = (int(v) for v in row["mask_box"])
            alpha = mask[y0:y1, x0:x1]
            face = unblend(real.image[y0:y1, x0:x1], marked[y0:y1, x0:x1], alpha)
            write_png(dirs["patches"] / name, np.dstack([face, alpha]))
            stats.patches += 1
            transforms.append({
                "frame": index, "file": name, "offset": [x0, y0], "size": [x1 - x0, y1 - y0],
                "faces": [{"track": int(t), "aligned_to_frame": [list(m[:3]), list(m[3:])]}
                          for t, m in zip(row["face_tracks"], row["face_matrices"], strict=True)],
            })  # fmt: skip
    if cfg.patches:
        atomic_write_json(dirs["patches"] / "transforms.json", {
            "video": video, "space": "frame", "alpha": "straight (not premultiplied), 8-bit",
            "composite": "plate + alpha * (patch - plate) at offset (x, y) of the plate; faces' aligned_to_frame "
                         "maps a face's aligned px to the plate's px (x' = a x + b y + c)",
            "patches": transforms,
        })  # fmt: skip
    stats.rejected = len(rejections)
    return stats


def video_entry(record: dict[str, Any], record_path: str, record_sha256: str, video: str, stats: ExportStats,
                width: int, height: int, rate: Fraction, cfg: Export, out: Path) -> dict[str, Any]:  # fmt: skip
    """One video's entry of index.json: what it is, where its files are, and what it traces back to."""
    model = record.get("model") or {}
    rel = {k: os.fspath(p.relative_to(out)) for k, p in folders(out, video).items()}
    return {
        "target": record.get("target"),
        "swap": record.get("swap"),
        "model": {"sha256": model.get("sha256"), "step": model.get("step"), "path": model.get("path")},
        "provenance": {"record": record_path, "sha256": record_sha256, "created": record.get("created"),
                       "params_sha256": record.get("params_sha256")},
        "watermark": record.get("watermark"),
        "mark_id": (record.get("watermark") or {}).get("mark_id"),
        "label": False,
        "label_reason": LABEL_NOTE,
        "consent": record.get("consent"),
        "sources": record.get("sources"),
        "width": width, "height": height,
        "fps": float(rate), "fps_fraction": f"{rate.numerator}/{rate.denominator}",
        "frames": stats.frames, "every": cfg.every, "exported": stats.exported,
        "swapped_frames": stats.swapped,
        "patches": stats.patches if cfg.patches else None,
        "rejected": stats.rejected,
        "paths": {**rel, **({"transforms": f"{rel['patches']}/transforms.json"} if cfg.patches else {})},
    }


def frame_size_and_rate(frames: str | os.PathLike[str]) -> tuple[int, int, Fraction]:
    """The intermediate's frame size and exact rate (for the index): convert writes it at the
    target's average rate, which the stream's average_rate holds exactly (e.g. 30000/1001)."""
    import av

    try:
        with av.open(os.fspath(frames)) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            width, height = stream.codec_context.width, stream.codec_context.height
    except (av.FFmpegError, IndexError) as exc:
        raise Rejected("undecodable", f"{frames}: {exc}") from None
    if not rate or not width or not height:
        raise Rejected("undecodable", f"{frames} has no frame size or rate")
    return width, height, Fraction(rate).limit_denominator(100000)


def index_document(videos: dict[str, Any]) -> dict[str, Any]:
    """index.json: the layout, then one entry per video."""
    return {
        "format": FORMAT, "enabled": True,
        "layout": "FaceForensics++-style (ondyari/FaceForensics): original_sequences/<dataset>/raw/images/<video>/"
                  "NNNN.png, manipulated_sequences/<dataset>/{raw/images,masks/images,patches}/<video>/NNNN.png",
        "dataset": DATASET,
        "mask": "8-bit grey, full frame: convert's blend alpha (0 = pixel untouched, 255 = face pasted opaque)",
        "videos": videos,
    }  # fmt: skip


def off_record() -> dict[str, Any]:
    """index.json when `export.enabled` is false: the stage ran and wrote nothing else."""
    return {"format": FORMAT, "enabled": False, "reason": "export.enabled is false in params.yaml", "videos": {}}
