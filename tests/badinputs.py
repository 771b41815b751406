"""Builders of bad (and awkward) video inputs for tests, made with the real ffmpeg.

Each builder takes a folder, writes one small file there (1-2 s, small frames) and returns
its path. `ALL` maps a short name to (builder, expected) where `expected` is the reason code
the download stage must reject it with, or None when it must come through normalised.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np

from facedag.media import ffmpeg_exe


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
