"""Builders of bad (and awkward) video inputs for tests, made with the real ffmpeg.

Each builder takes a folder, writes one small file there (1-2 s, small frames) and returns
its path. `ALL` maps a short name to (builder, expected) where `expected` is the reason code
the download stage must reject it with, or None when it must come through normalised.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from facedag.sources.media import ffmpeg_exe
from tests.conftest import SAMPLES


def ffmpeg(*args: str | os.PathLike[str]) -> None:
    """Run ffmpeg quietly; fail the test with its stderr if it fails."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *map(os.fspath, args)]
    proc = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {' '.join(map(str, cmd))}\n{proc.stderr.decode(errors='replace')}")


def _out(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def _file(path: Path) -> str:
    return "file:" + os.path.abspath(path)


def _testsrc(size: str = "160x120", rate: int = 25, dur: float = 1.0, src: str = "testsrc") -> list[str]:
    return ["-f", "lavfi", "-i", f"{src}=size={size}:rate={rate}:duration={dur}"]


def _sine(dur: float = 1.0, freq: int = 440) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate=22050:duration={dur}"]


X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]


def good(folder: Path, name: str = "good.mp4", dur: float = 1.0, size: str = "160x120", rate: int = 25) -> Path:
    """A well-formed H.264 + AAC mp4 (testsrc has no face; that is trim's business, not download's)."""
    out = _out(folder, name)
    ffmpeg(*_testsrc(size, rate, dur), *_sine(dur), *X264, "-c:a", "aac", "-shortest", _file(out))
    return out


def empty_file(folder: Path) -> Path:
    out = _out(folder, "empty.mp4")
    out.write_bytes(b"")
    return out


def random_bytes(folder: Path) -> Path:
    out = _out(folder, "random.mp4")
    out.write_bytes(np.random.default_rng(7).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    return out


def text_file(folder: Path) -> Path:
    out = _out(folder, "notes.mp4")
    out.write_text("This is not a video.\n" * 200)
    return out


def picture_as_mp4(folder: Path) -> Path:
    """A PNG still picture named .mp4."""
    out = _out(folder, "picture.mp4")
    png = _out(folder, "picture_tmp.png")
    ffmpeg(*_testsrc("160x120", 1, 1.0), "-frames:v", "1", _file(png))
    png.rename(out)
    return out


def audio_only(folder: Path) -> Path:
    out = _out(folder, "audio_only.mp4")
    ffmpeg(*_sine(1.0), "-c:a", "aac", _file(out))
    return out


def no_faces(folder: Path) -> Path:
    """A valid video with no face in it: download lets it through (trim rejects it later)."""
    return good(folder, "no_faces.mp4")


def truncated(folder: Path) -> Path:
    """An mp4 cut to its first 40% (moov atom at the end, so the index is lost)."""
    src = good(folder, "truncated_src.mp4", dur=2.0)
    data = src.read_bytes()
    src.unlink()
    out = _out(folder, "truncated.mp4")
    out.write_bytes(data[: int(len(data) * 0.4)])
    return out


def truncated_header(folder: Path) -> Path:
    """An mp4 cut inside its header (a few hundred bytes): nothing at all decodes."""
    src = good(folder, "trunchead_src.mp4")
    data = src.read_bytes()
    src.unlink()
    out = _out(folder, "truncated_header.mp4")
    out.write_bytes(data[:300])
    return out


def rotated(folder: Path) -> Path:
    """A 160x120 video with rotation metadata of 90 degrees (displayed 120x160)."""
    plain = good(folder, "rot_src.mp4")
    out = _out(folder, "rotated.mp4")
    ffmpeg("-display_rotation", "90", "-i", _file(plain), "-c", "copy", _file(out))
    plain.unlink()
    return out


def vfr(folder: Path) -> Path:
    """Variable frame rate: frames at irregular times (10 fps, then 30 fps), mkv timestamps."""
    out = _out(folder, "vfr.mkv")
    ffmpeg(
        *_testsrc("160x120", 10, 0.7, "testsrc2"), *_testsrc("160x120", 30, 0.9, "testsrc"),
        "-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]",
        "-fps_mode", "vfr", *X264, _file(out),
    )  # fmt: skip
    return out


def grayscale(folder: Path) -> Path:
    out = _out(folder, "gray.mkv")
    ffmpeg(*_testsrc(), "-c:v", "ffv1", "-pix_fmt", "gray", _file(out))
    return out


def ten_bit(folder: Path) -> Path:
    """10-bit 4:2:0 H.264 (High 10)."""
    out = _out(folder, "tenbit.mp4")
    ffmpeg(*_testsrc(), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le", _file(out))
    return out


def odd_size(folder: Path) -> Path:
    """321x241 (odd width and height) in a codec that allows it."""
    out = _out(folder, "odd.mkv")
    ffmpeg(*_testsrc("321x241"), "-c:v", "ffv1", "-pix_fmt", "yuv444p", _file(out))
    return out


def no_audio(folder: Path) -> Path:
    out = _out(folder, "silent.mp4")
    ffmpeg(*_testsrc(), *X264, _file(out))
    return out


def odd_name(folder: Path, name: str) -> Path:
    """A good clip under an awkward name; its content differs per name (no dedupe between them)."""
    return good(folder, name, dur=1.0 + 0.04 * (sum(map(ord, name)) % 10))


def truncated_faststart(folder: Path) -> Path:
    """An mp4 with its index first (+faststart) cut at 60%: the first part still decodes."""
    src = _out(folder, "tfs_src.mp4")
    ffmpeg(*_testsrc("160x120", 25, 2.0), *X264, "-movflags", "+faststart", _file(src))
    data = src.read_bytes()
    src.unlink()
    out = _out(folder, "truncated_faststart.mp4")
    out.write_bytes(data[: int(len(data) * 0.6)])
    return out


ODD_NAMES = {
    "spaces": "with some spaces.mp4",
    "quotes": 'it\'s a "quoted" name.mp4',
    "non_ascii": "видео_ñ_東京.mp4",
    "leading_dash": "-i evil.mp4",
}

ALL: dict[str, tuple[Callable[[Path], Path], str | None]] = {
    "empty_file": (empty_file, "empty_file"),
    "random_bytes": (random_bytes, "not_a_video"),
    "text_file": (text_file, "not_a_video"),
    "picture_as_mp4": (picture_as_mp4, "not_a_video"),
    "audio_only": (audio_only, "no_video_stream"),
    "truncated_header": (truncated_header, "undecodable"),
    "truncated": (truncated, "undecodable"),
    "truncated_faststart": (truncated_faststart, None),
    "no_faces": (no_faces, None),
    "rotated": (rotated, None),
    "vfr": (vfr, None),
    "grayscale": (grayscale, None),
    "ten_bit": (ten_bit, None),
    "odd_size": (odd_size, None),
    "no_audio": (no_audio, None),
}
for _key, _name in ODD_NAMES.items():
    ALL[f"name_{_key}"] = ((lambda folder, _n=_name: odd_name(folder, _n)), None)


# --- more containers and damage (tests/corpus) ------------------------------------------


def text_as_mov(folder: Path) -> Path:
    """Plain text named .mov."""
    out = _out(folder, "notes.mov")
    out.write_text("Not a movie either.\n" * 200)
    return out


def _overwrite(path: Path, start: int, length: int, seed: int) -> None:
    """Overwrite `length` bytes of `path` from `start` with seeded random bytes (the file keeps its size)."""
    data = bytearray(path.read_bytes())
    end = min(len(data), start + length)
    data[start:end] = np.random.default_rng(seed).integers(0, 256, end - start, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def corrupt_header(folder: Path) -> Path:
    """A +faststart mp4 whose index (the moov atom, right after ftyp) is overwritten with noise;
    the ftyp box and every frame's bytes are intact."""
    out = _out(folder, "corrupt_header.mp4")
    ffmpeg(*_testsrc("160x120", 25, 1.0), *X264, "-movflags", "+faststart", _file(out))
    _overwrite(out, 40, 400, seed=11)
    return out


def corrupt_middle(folder: Path) -> Path:
    """A 2 s mp4 (index first) with 8% of its bytes in the middle of the frame data overwritten
    with noise: the frames before and after the hole are intact, those in it damaged."""
    out = _out(folder, "corrupt_middle.mp4")
    ffmpeg(*_testsrc("160x120", 25, 2.0), *_sine(2.0), *X264, "-g", "10", "-c:a", "aac", "-movflags", "+faststart",
           _file(out))  # fmt: skip
    size = out.stat().st_size
    _overwrite(out, size // 2, size // 12, seed=12)
    return out


def several_audio(folder: Path) -> Path:
    """One video stream and two audio streams (two languages, say) in an mp4."""
    out = _out(folder, "two_audio.mp4")
    ffmpeg(*_testsrc(), *_sine(1.0, 440), *_sine(1.0, 880), "-map", "0:v", "-map", "1:a", "-map", "2:a",
           *X264, "-c:a", "aac", _file(out))  # fmt: skip
    return out


# --- faces from real pictures (tests/corpus) ----------------------------------------------
# Public-domain portraits that ship in scikit-image and matplotlib (facedag.sources.demo), and the
# CC BY 2.0 sample picture in ../shared/samples when it is there.

PERSON = SAMPLES / "person_cropped_2.png"
PERSON_FACE = ((198.0, 134.0), 54.0)  # face centre and height in person_cropped_2.png (px)


def _square_around(image: np.ndarray, center: tuple[float, float], face_height: float, scale: float) -> np.ndarray:
    half = max(1, round(face_height * scale / 2))
    padded = cv2.copyMakeBorder(image, half, half, half, half, cv2.BORDER_REPLICATE)
    x, y = round(center[0]), round(center[1])
    return np.ascontiguousarray(padded[y : y + 2 * half, x : x + 2 * half])


def face_tile(portrait: str = "grace_hopper", scale: float = 2.0) -> np.ndarray:
    """A square RGB crop around the face of a portrait, its side `scale` x the face height.

    `portrait`: a facedag.sources.demo portrait (astronaut, grace_hopper) or "person" (the sample
    picture, composited onto white; the caller skips when SAMPLES is absent).
    """
    if portrait == "person":
        rgba = cv2.imread(os.fspath(PERSON), cv2.IMREAD_UNCHANGED)
        if rgba is None:
            raise FileNotFoundError(PERSON)
        alpha = rgba[:, :, 3:4].astype(np.float32) / 255.0
        image = (rgba[:, :, 2::-1] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
        center, height = PERSON_FACE
    else:
        from facedag.sources.demo import PORTRAITS, load_portrait

        image = load_portrait(portrait)
        center, height = PORTRAITS[portrait].face_center, PORTRAITS[portrait].face_height
    return _square_around(image, center, height, scale)


def face_canvas(tiles: Sequence[np.ndarray], size: tuple[int, int], cols: int = 0) -> np.ndarray:
    """The tiles in a grid (`cols` per row; 0 = all in one row) on a grey backdrop of `size` (w, h),
    each scaled to fill its cell's shorter side at 90%."""
    width, height = size
    cols = cols or len(tiles)
    rows = -(-len(tiles) // cols)
    cell_w, cell_h = width // cols, height // rows
    side = max(2, int(0.9 * min(cell_w, cell_h)))
    canvas = np.full((height, width, 3), 110, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        y0, x0 = r * cell_h + (cell_h - side) // 2, c * cell_w + (cell_w - side) // 2
        canvas[y0 : y0 + side, x0 : x0 + side] = cv2.resize(tile, (side, side), interpolation=cv2.INTER_AREA)
    return canvas


def face_video(
    folder: Path,
    name: str = "face.mp4",
    *,
    tiles: Sequence[np.ndarray] | None = None,
    size: tuple[int, int] = (320, 240),
    cols: int = 0,
    seconds: float = 1.0,
    fps: float = 10.0,
    rotate: int = 0,
    audio: bool = True,
    args: Sequence[str] = (*X264, "-c:a", "aac"),
) -> Path:
    """A short video of real faces (default: Grace Hopper) drifting 1 px a frame, encoded with `args`.

    rotate: the pixels are turned clockwise by this many degrees (90, 180, 270) after drawing,
    i.e. stored as a camera held sideways or upside down would store them, with no metadata.
    """
    out = _out(folder, name)
    canvas = face_canvas(tiles if tiles is not None else [face_tile()], size, cols)
    n = max(1, round(seconds * fps))
    frames = []
    for i in range(n):
        shift = np.float32([[1, 0, i - n / 2], [0, 1, 0]])
        frame = cv2.warpAffine(canvas, shift, size, borderMode=cv2.BORDER_REPLICATE)
        frames.append(np.ascontiguousarray(np.rot90(frame, -(rotate // 90) % 4)))
    h, w = frames[0].shape[:2]
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{fps:g}", "-i", "pipe:0"]  # fmt: skip
    if audio:
        cmd += [*_sine(seconds), "-map", "0:v", "-map", "1:a"]
    cmd += [*args, "-t", f"{seconds:g}", _file(out)]
    proc = subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), capture_output=True, timeout=120,
                          check=False)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {' '.join(cmd)}\n{proc.stderr.decode(errors='replace')}")
    return out


def face_rotated(folder: Path, degrees: int) -> Path:
    """Faces stored turned clockwise by `degrees`, with display rotation metadata that turns them
    upright again (a phone video): only a reader that applies the metadata sees upright faces."""
    plain = face_video(folder, f"rot{degrees}_src.mp4", rotate=degrees)
    out = _out(folder, f"rot{degrees}.mp4")
    ffmpeg("-display_rotation", str(degrees), "-i", _file(plain), "-c", "copy", _file(out))
    plain.unlink()
    return out


def face_upside_down(folder: Path) -> Path:
    """The face video turned 180 degrees in its pixels (no metadata says so)."""
    return face_video(folder, "upside_down.mp4", rotate=180)


def face_vfr(folder: Path) -> Path:
    """Faces at variable frame rate: 10 fps for 0.5 s, then 30 fps (mkv timestamps)."""
    master = face_video(folder, "vfr_master.mkv", fps=30, audio=False, args=("-c:v", "ffv1"))
    out = _out(folder, "face_vfr.mkv")
    ffmpeg("-i", _file(master), "-vf", "select='lt(n,15)*not(mod(n,3))+gte(n,15)'", "-fps_mode", "vfr", *X264,
           _file(out))  # fmt: skip
    master.unlink()
    return out


def face_8k(folder: Path) -> Path:
    """7680x4320 H.264 with a face, two frames (0.4 s at 5 fps): size without the decode time."""
    master = face_video(folder, "8k_master.mkv", size=(640, 360), seconds=0.4, fps=5, audio=False,
                        args=("-c:v", "ffv1"))  # fmt: skip
    out = _out(folder, "face_8k.mp4")
    ffmpeg("-i", _file(master), "-vf", "scale=7680:4320:flags=bicubic", *X264, _file(out))
    master.unlink()
    return out


def faces_grid(folder: Path) -> Path:
    """Six faces in one 640x360 frame: both portraits, mirrored, and at two crop scales."""
    astronaut, grace = face_tile("astronaut"), face_tile("grace_hopper")
    wide = [face_tile("astronaut", 2.6), face_tile("grace_hopper", 2.6)]
    tiles = [np.ascontiguousarray(t) for t in (astronaut, grace, astronaut[:, ::-1], grace[:, ::-1], *wide)]
    return face_video(folder, "faces_grid.mp4", tiles=tiles, size=(640, 360), cols=3)


def sample_cut(folder: Path, name: str = "video_01.mp4", seconds: float = 1.5) -> Path:
    """The first `seconds` of a real sample video (../shared/samples), re-encoded small."""
    out = _out(folder, f"sample_{Path(name).stem}.mp4")
    ffmpeg("-t", f"{seconds:g}", "-i", _file(SAMPLES / name), *X264, "-c:a", "aac", _file(out))
    return out
