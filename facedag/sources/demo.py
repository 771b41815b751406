"""Demo sources, built offline and deterministically from public-domain portraits.

`python -m facedag.sources.demo [OUTDIR]` (default `data/demo`) writes:

- `src.mp4`: Eileen Collins, NASA portrait (`skimage.data.astronaut()`), public domain.
- `dst.mp4`: Grace Hopper, US Navy portrait (matplotlib's `grace_hopper.jpg`), public domain.
- `target.mp4`: Grace Hopper again with another motion seed: the video the later model half
  swaps the src face into.
- `licence-astronaut.txt`, `licence-grace_hopper.txt`: the licence statement of each portrait,
  the evidence that params.yaml's consent records name (with its sha256, which the fixed text
  keeps the same on every machine).

Each clip is 640x480, 25 fps, 6 s: three "shots" with hard cuts between different framings
(close, medium, wide), synthetic head motion inside each shot (smooth shift, zoom, roll, and a
perspective yaw about the face), lighting changes (gain ramp, a left/right gradient, a slight
colour cast), and a sine tone (a different pitch per clip). H.264 yuv420p + AAC in mp4.

Frames are made with numpy/cv2 one at a time and piped to ffmpeg as rawvideo, so no clip is
ever whole in memory; the file is written atomically. Beside each clip, `<name>.json` holds
the recipe and its hash: a clip whose recipe is unchanged is not rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from facedag.records import atomic_path, atomic_write_json, sha256_file
from facedag.sources.media import ffmpeg_exe, ffmpeg_input

RECIPE_VERSION = 1  # bump when the rendering code changes what a recipe produces
WIDTH, HEIGHT, FPS = 640, 480, 25


@dataclass(frozen=True)
class Portrait:
    """A still portrait and where its face is (centre and height, in its pixels)."""

    name: str
    credit: str
    face_center: tuple[float, float]
    face_height: float


PORTRAITS = {
    "astronaut": Portrait(
        "astronaut", "Eileen Collins, NASA, public domain (scikit-image skimage.data.astronaut)", (224.0, 116.0), 120.0
    ),
    "grace_hopper": Portrait(
        "grace_hopper",
        "Grace Hopper, US Navy, public domain (matplotlib sample data grace_hopper.jpg)",
        (265.0, 216.0),
        221.0,
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Recipe:
    name: str
    portrait: str
    seed: int
    tone_hz: int
    seconds: float = 6.0
    shots: int = 3
    face_heights: tuple[float, ...] = (270.0, 215.0, 170.0)
    width: int = WIDTH
    height: int = HEIGHT
    fps: int = FPS
    version: int = field(default=RECIPE_VERSION)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


RECIPES = (
    Recipe("src", "astronaut", seed=11, tone_hz=440),
    Recipe("dst", "grace_hopper", seed=22, tone_hz=554),
    Recipe("target", "grace_hopper", seed=33, tone_hz=659),
)


def load_portrait(name: str) -> np.ndarray:
    """The portrait as RGB uint8, from the package that ships it (no download)."""
    if name == "astronaut":
        import skimage.data

        return np.ascontiguousarray(skimage.data.astronaut()[:, :, :3])
    if name == "grace_hopper":
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
            data = np.frombuffer(fh.read(), np.uint8)
        return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1])
    raise ValueError(f"unknown portrait {name!r}")


@dataclass(frozen=True)
class Shot:
    frames: int
    face_height: float
    anchor: tuple[float, float]  # where the face centre sits on the canvas
    motion: dict[str, float]
    light: dict[str, float]
    cast: tuple[float, float, float]


def plan_shots(recipe: Recipe) -> list[Shot]:
    """Split the clip into shots and draw each one's framing, motion and lighting from the seed."""
    rng = np.random.default_rng(recipe.seed)
    total = round(recipe.seconds * recipe.fps)
    cuts = np.linspace(0, total, recipe.shots + 1).round().astype(int)
    heights = list(recipe.face_heights)
    rng.shuffle(heights)
    shots = []
    for i in range(recipe.shots):
        u = rng.uniform
        face_h = float(heights[i % len(heights)])
        # keep the whole face (plus motion) inside the frame
        room_x = max(0.0, recipe.width / 2 - 0.45 * face_h - 40)
        room_y = max(0.0, recipe.height / 2 - 0.6 * face_h - 25)
        shots.append(
            Shot(
                frames=int(cuts[i + 1] - cuts[i]),
                face_height=face_h,
                anchor=(recipe.width / 2 + u(-1, 1) * min(80, room_x), recipe.height / 2 + u(-1, 1) * min(30, room_y)),
                motion={
                    "dx": u(15, 35), "dy": u(8, 20), "fx": u(0.3, 0.8), "fy": u(0.3, 0.8),
                    "px": u(0, 2 * math.pi), "py": u(0, 2 * math.pi),
                    "zoom": u(0.04, 0.10), "fz": u(0.2, 0.5),
                    "roll0": u(-6, 6), "roll": u(3, 8), "fr": u(0.3, 0.7),
                    "yaw0": u(-10, 10), "yaw": u(8, 18), "fyaw": u(0.25, 0.5),
                    "pitch": u(4, 10), "fp": u(0.3, 0.6),
                },
                light={
                    "gain0": u(0.65, 1.2), "gain1": u(0.65, 1.2),
                    "grad0": u(-0.6, 0.6), "grad1": u(-0.6, 0.6),
                },
                cast=(u(0.92, 1.08), u(0.95, 1.05), u(0.92, 1.08)),
            )
        )  # fmt: skip
    return shots


def _homography(portrait: Portrait, shot: Shot, t: float) -> np.ndarray:
    """Portrait -> canvas: scale/roll/shift about the face, then a perspective yaw and pitch."""
    m = shot.motion
    zoom = 1.0 + m["zoom"] * math.sin(2 * math.pi * m["fz"] * t)
    scale = shot.face_height / portrait.face_height * zoom
    roll = math.radians(m["roll0"] + m["roll"] * math.sin(2 * math.pi * m["fr"] * t))
    cx = shot.anchor[0] + m["dx"] * math.sin(2 * math.pi * m["fx"] * t + m["px"])
    cy = shot.anchor[1] + m["dy"] * math.sin(2 * math.pi * m["fy"] * t + m["py"])
    fx, fy = portrait.face_center
    c, s = math.cos(roll) * scale, math.sin(roll) * scale
    affine = np.array([[c, -s, cx - c * fx + s * fy], [s, c, cy - s * fx - c * fy], [0, 0, 1]])
    yaw = math.radians(m["yaw0"] + m["yaw"] * math.sin(2 * math.pi * m["fyaw"] * t))
    pitch = math.radians(m["pitch"] * math.sin(2 * math.pi * m["fp"] * t))
    focal = 2.0 * shot.face_height
    k = np.array([[focal, 0, cx], [0, focal, cy], [0, 0, 1]])
    ry = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
    rx = np.array([[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]])
    return k @ ry @ rx @ np.linalg.inv(k) @ affine


def render_frames(recipe: Recipe) -> Iterator[np.ndarray]:
    """Yield the clip's RGB uint8 frames one by one."""
    portrait = PORTRAITS[recipe.portrait]
    image = load_portrait(recipe.portrait).astype(np.float32)
    ones = np.ones(image.shape[:2], np.float32)
    xs = np.linspace(-0.5, 0.5, recipe.width, dtype=np.float32)[None, :, None]
    for shot in plan_shots(recipe):
        cast = np.array(shot.cast, np.float32)[None, None, :]
        for i in range(shot.frames):
            t = i / recipe.fps
            a = i / max(1, shot.frames - 1)
            h = _homography(portrait, shot, t)
            frame = cv2.warpPerspective(
                image, h, (recipe.width, recipe.height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
            # Outside the portrait: a soft blur of its edges (a mirrored border would add
            # mirrored copies of the face), blended in over a feathered mask.
            mask = cv2.warpPerspective(ones, h, (recipe.width, recipe.height), flags=cv2.INTER_LINEAR)
            if float(mask.min()) < 1.0:
                small = cv2.resize(frame, (recipe.width // 16, recipe.height // 16), interpolation=cv2.INTER_AREA)
                backdrop = cv2.resize(cv2.GaussianBlur(small, (0, 0), 3), (recipe.width, recipe.height))
                mask = cv2.GaussianBlur(mask, (0, 0), 4)[:, :, None]
                frame = frame * mask + backdrop * (1.0 - mask)
            gain = shot.light["gain0"] + (shot.light["gain1"] - shot.light["gain0"]) * a
            grad = shot.light["grad0"] + (shot.light["grad1"] - shot.light["grad0"]) * a
            frame *= (gain * (1.0 + grad * xs)) * cast
            yield np.clip(frame, 0, 255).astype(np.uint8)


def encode(recipe: Recipe, out: Path, timeout: float = 300.0) -> None:
    """Render `recipe` and pipe it to ffmpeg (H.264 yuv420p + AAC sine tone) into `out`."""
    cmd = [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{recipe.width}x{recipe.height}", "-r", str(recipe.fps),
        "-i", "pipe:0",
        "-f", "lavfi", "-i", f"sine=frequency={recipe.tone_hz}:sample_rate=44100:duration={recipe.seconds}",
        "-map", "0:v", "-map", "1:a", "-map_metadata", "-1", "-fflags", "+bitexact",
        "-c:v", "libx264", "-preset", "fast", "-crf", "18", "-pix_fmt", "yuv420p", "-flags:v", "+bitexact",
        "-c:a", "aac", "-b:a", "96k", "-flags:a", "+bitexact",
        "-t", f"{recipe.seconds}", "-movflags", "+faststart", ffmpeg_input(out),
    ]  # fmt: skip
    with tempfile.TemporaryFile() as errlog:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errlog)
        assert proc.stdin is not None
        try:
            for frame in render_frames(recipe):
                proc.stdin.write(frame.tobytes())
            proc.stdin.close()
            proc.wait(timeout=timeout)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if proc.returncode != 0:
            errlog.seek(0)
            err = errlog.read().decode(errors="replace").strip()[-300:]
            raise RuntimeError(f"ffmpeg failed on demo clip {recipe.name}: {err}")


def build(recipe: Recipe, out_dir: str | Path = "data/demo", force: bool = False) -> tuple[Path, bool]:
    """Build one clip unless an identical recipe is already built. Returns (path, rebuilt)."""
    out_dir = Path(out_dir)
    clip, note = out_dir / f"{recipe.name}.mp4", out_dir / f"{recipe.name}.json"
    digest = recipe.digest()
    if not force and clip.exists() and note.exists():
        try:
            old = json.loads(note.read_text())
            if old.get("recipe_hash") == digest and old.get("sha256") == sha256_file(clip):
                return clip, False
        except (OSError, ValueError):
            pass
    with atomic_path(clip) as tmp:
        encode(recipe, tmp)
    atomic_write_json(
        note,
        {
            "recipe": asdict(recipe),
            "recipe_hash": digest,
            "sha256": sha256_file(clip),
            "portrait": PORTRAITS[recipe.portrait].credit,
            "licence": "public domain",
            "generator": "facedag.sources.demo",
        },
    )
    return clip, True


def licence_text(portrait: Portrait) -> str:
    """The licence statement of a portrait: the demo's consent evidence (basis `licence`)."""
    return (f"{portrait.credit}.\n"
            "A work of the US government, in the public domain in the United States; shipped in the\n"
            "named Python package's data. Used by facedag's offline demo and tests.\n")  # fmt: skip


def write_evidence(out_dir: str | Path = "data/demo") -> list[Path]:
    """Write each portrait's licence statement beside the clips (unchanged files are left alone)."""
    paths = []
    for portrait in PORTRAITS.values():
        path = Path(out_dir) / f"licence-{portrait.name}.txt"
        text = licence_text(portrait)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            with atomic_path(path) as tmp:
                tmp.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def build_all(out_dir: str | Path = "data/demo", force: bool = False) -> dict[str, Path]:
    """Build every demo clip (src, dst, target) and the licence evidence into `out_dir`; returns name -> path."""
    write_evidence(out_dir)
    return {r.name: build(r, out_dir, force)[0] for r in RECIPES}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m facedag.sources.demo", description=__doc__.splitlines()[0])
    parser.add_argument("outdir", nargs="?", default="data/demo")
    parser.add_argument("--force", action="store_true", help="rebuild even when the recipe is unchanged")
    args = parser.parse_args(argv)
    for path in write_evidence(args.outdir):
        print(f"demo: {path} written", flush=True)
    for recipe in RECIPES:
        path, rebuilt = build(recipe, args.outdir, args.force)
        print(f"demo: {path} {'built' if rebuilt else 'up to date'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
