"""The planted occluder: how much of a shape held in front of the target's face survives convert,
with the learned mask against the landmark masks.

A clip is made from the demo target (Grace Hopper, facedag.sources.demo): a textured bar moves
across the mouth and chin, over the region the five-point hull pastes (found by a first convert
pass), in a texture that training never saw (diagonal stripes, not one of
facedag.training.occluders' textures). A small model (demo widths, 64 px) trains on the demo
portraits with synthetic occluders (facedag.training.occluders), then convert runs on the clip
with `learned`, `mesh` and `hull`. Kept: the share of the bar's pixels that come out within
`TOL` grey levels (every channel) of the target frame.

Figures (see benchmarks/common.py):
- `occluder_kept_learned`: % kept with convert.mask learned; baseline, same run: `hull` (the
  mesh's `mesh` in `extra`).
The before/after picture: docs/occluder.png (target frame, hull, learned).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from benchmarks.common import figure

REPO = Path(__file__).resolve().parents[1]
FACE = 64
FRAMES = 20  # the first 0.8 s of the demo target
TOL = 8  # grey levels: an occluder pixel within this of the target frame is kept
STEPS = 400  # training steps of the bench's model
PICTURE = REPO / "docs" / "occluder.png"


def stripes(h: int, w: int, phase: int) -> np.ndarray:
    """uint8 (h, w, 3): diagonal dark-blue and yellow stripes, 20 px wide (6 px of the 64 px
    aligned face: finer ones blur into one green there), with a little noise."""
    yy, xx = np.mgrid[0:h, 0:w]
    band = ((xx + yy + 2 * phase) // 20) % 2
    out = np.where(band[..., None] == 1, np.array([230, 200, 40]), np.array([30, 40, 120])).astype(np.int16)
    out += np.random.default_rng(phase).integers(-12, 13, out.shape, dtype=np.int16)
    return np.clip(out, 0, 255).astype(np.uint8)


def planted_clip(demo: Path, out_dir: Path, frames: int = FRAMES) -> tuple[Path, list[np.ndarray], list[np.ndarray]]:
    """(an FFV1 clip of the demo target's first `frames` frames with the bar planted, the bar's
    bool (H, W) mask per frame, the face's: where the hull pastes opaquely; both empty where no
    face was found)."""
    from facedag.params import Convert
    from facedag.sources.media import cut_clip, ffmpeg_exe, ffmpeg_input, iter_frames
    from facedag.swap.convert import convert_video

    cut = out_dir / "target.mp4"
    cut_clip(demo / "target.mp4", cut, 0.0, frames / 25)
    images = [f.image.copy() for f in iter_frames(cut)][:frames]
    found: list[Any] = []
    convert_video(cut, out_dir / "probe.mkv", lambda f: 255 - f, FACE, Convert(batch=8, mask="hull"),
                  on_frame=found.append, keep_alpha=True)  # fmt: skip
    masks, faces = [], []
    for k, (img, r) in enumerate(zip(images, found, strict=True)):
        bar = np.zeros(img.shape[:2], bool)
        inner = bar.copy()
        if r.swapped:
            inner = r.alpha >= 0.99
            ys, xs = np.nonzero(inner)
            y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
            h, w = y1 - y0, x1 - x0
            cy = y0 + 0.9 * h
            cx = x0 + (0.4 + 0.2 * k / max(frames - 1, 1)) * w  # moves left to right
            half_w, half_h = 0.36 * w, 0.2 * h
            yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
            # a capsule over the mouth and chin, as a hand or a microphone held there
            dx = np.clip(np.abs(xx - cx) - (half_w - half_h), 0, None)
            shape = np.hypot(dx, yy - cy) <= half_h
            img[shape] = stripes(*img.shape[:2], phase=k)[shape]
            bar = shape & inner  # measured where every mask kind would paste opaquely
        masks.append(bar)
        faces.append(inner)
    h, w = images[0].shape[:2]
    clip = out_dir / "planted.mkv"
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{w}x{h}", "-framerate", "25", "-i", "pipe:0", "-c:v", "ffv1", "-pix_fmt", "bgr0",
           ffmpeg_input(clip)]  # fmt: skip
    subprocess.run(cmd, input=b"".join(i.tobytes() for i in images), check=True, timeout=120)
    return clip, masks, faces


def train_model(root: Path, steps: int = STEPS, log: Any = None, layout: str = "df") -> Path:
    """models/ of a demo-width 64 px model of `layout` trained `steps` steps on the demo
    portraits, with synthetic occluders on half the faces (params.yaml's train section otherwise)."""
    from facedag.params import Params
    from facedag.training.dataset import dataset_path, holdout_path
    from facedag.training.loop import train
    from facedag.training.portrait_set import write_portrait_dataset

    for name, portrait in (("src", "astronaut"), ("dst", "grace_hopper")):
        write_portrait_dataset(dataset_path(root, name), portrait, FACE, tracks=4, per_track=8, seed=1)
        write_portrait_dataset(holdout_path(root, name), portrait, FACE, tracks=1, per_track=4, seed=2, first_track=4)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["base"] = {**raw["base"], "face_size": FACE}
    raw["train"] = {**raw["train"], "max_steps": steps, "max_minutes": 60, "eval_every": steps,
                    "checkpoint_every": steps, "preview_every": steps, "occluder_prob": 0.5, "deterministic": True,
                    "layout": layout}
    train(Params.model_validate(raw), root, log or (lambda _: None))
    return root / "models"


def kept_share(clip: Path, bars: list[np.ndarray], faces: list[np.ndarray], models: Path, kind: str, out: Path,
               ) -> tuple[float, float, int, list[np.ndarray]]:  # fmt: skip
    """With convert.mask `kind`: (share of the bar's pixels kept, share of the face's other pixels
    changed (a mask that pastes nothing keeps every bar and changes no face), frames swapped,
    the converted frames)."""
    from facedag.params import Convert
    from facedag.sources.media import iter_frames
    from facedag.swap.convert import convert_video
    from facedag.training.model import Swapper

    swapper = Swapper(models, "src", name="model", mask_from="dst")  # as convert: the replaced face's mask
    swap = swapper.swap if kind == "learned" else swapper
    stats = convert_video(clip, out, swap, FACE, Convert(batch=8, mask=kind), landmarker="mediapipe")
    src = [f.image for f in iter_frames(clip)]
    dst = [f.image for f in iter_frames(out)]
    kept = total = changed = face_total = 0
    for a, b, bar, face in zip(src, dst, bars, faces, strict=True):
        same = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(2) <= TOL
        kept += int((same & bar).sum())
        total += int(bar.sum())
        # the face away from the bar (a margin of the feather's width left out)
        rest = face & ~cv2.dilate(bar.view(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
        changed += int((~same & rest).sum())
        face_total += int(rest.sum())
    return kept / max(total, 1), changed / max(face_total, 1), stats.frames_swapped, dst


def picture(target: np.ndarray, hull: np.ndarray, learned: np.ndarray, face: np.ndarray, path: Path) -> None:
    """A small PNG: the face of the target frame, the hull's convert and the learned one, side by side."""
    ys, xs = np.nonzero(face)
    cy, cx = int(ys.mean()), int(xs.mean())
    half = int(0.8 * max(ys.max() - ys.min(), xs.max() - xs.min()))
    y0, x0 = max(cy - half, 0), max(cx - half, 0)
    side = 200
    tiles = []
    for img, label in zip((target, hull, learned), ("target", "mask hull", "mask learned"), strict=True):
        tile = cv2.resize(img[y0 : y0 + 2 * half, x0 : x0 + 2 * half], (side, side), interpolation=cv2.INTER_AREA)
        cv2.putText(tile, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 2)
        tiles.append(tile)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(tiles, 1), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])


def run() -> dict[str, dict]:
    from facedag.sources.demo import build_all
    from facedag.sources.media import iter_frames

    with tempfile.TemporaryDirectory(prefix="bench-occluder-") as tmp:
        work = Path(tmp)
        build_all(work / "demo")
        clip, bars, faces = planted_clip(work / "demo", work)
        t = time.perf_counter()
        models = train_model(work / "train")
        train_s = time.perf_counter() - t
        results = {kind: kept_share(clip, bars, faces, models, kind, work / f"{kind}.mkv")
                   for kind in ("learned", "mesh", "hull")}
        k = max(range(len(bars)), key=lambda i: int(bars[i].sum()))
        target = [f.image for f in iter_frames(clip)][k]
        picture(target, results["hull"][3][k], results["learned"][3][k], faces[k], PICTURE)
    share = {kind: 100.0 * r[0] for kind, r in results.items()}
    changed = {kind: 100.0 * r[1] for kind, r in results.items()}
    print(f"kept: learned {share['learned']:.1f} %, mesh {share['mesh']:.1f} %, hull {share['hull']:.1f} % "
          f"({STEPS} steps, {train_s:.0f} s of training)", file=sys.stderr)
    return {"occluder_kept_learned": figure(share["learned"], "%", "convert.mask hull", share["hull"],
                                            mesh_kept=round(share["mesh"], 1), steps=STEPS,
                                            face_changed={k: round(v, 1) for k, v in changed.items()},
                                            train_seconds=round(train_s, 1))}  # fmt: skip
