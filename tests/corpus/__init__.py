"""The bad-input corpus: every kind of awkward or broken video input, built on demand, each with
the outcome the pipeline owes it.

Nothing here is committed as a video: `build(out)` makes every item with the real ffmpeg
(lavfi sources and transforms of real pictures, tests.badinputs), small and short, into
`out/<item>/<file>`. `python -m tests.corpus OUT_DIR` does the same from the command line and
writes `OUT_DIR/corpus.json` (name, path, expected outcome per item).

An item's expected outcome is one of:
- rejected at `stage` with `reason` (a stable code: facedag.sources.fetch for download, stages/trim.py
  for trim), the first stage that can tell;
- accepted by download (normalised: H.264 yuv420p, even size, constant rate, upright, at `size`,
  with `audio`), and, for items with faces (`faces` > 0), found by extract's detection path with
  at least `faces` faces in one frame (extract.policy `all`).

Faces are real: the public-domain portraits that ship in scikit-image and matplotlib
(facedag.sources.demo) and, when ../shared/samples is there, the CC BY 2.0 sample picture and footage
(items with `needs_samples`; skipped when it is absent).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests import badinputs as bad

CONTAINER_ARGS = {
    "avi": ("-c:v", "mpeg4", "-q:v", "4", "-c:a", "libmp3lame"),
    "mkv": ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "libopus"),
    "webm": ("-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "500k", "-c:a", "libvorbis"),
    "mov": ("-c:v", "prores_ks", "-profile:v", "0", "-c:a", "pcm_s16le"),
}

# File names a shell, an option parser or a filter string would misread; and one near the
# 255-byte limit of most file systems. `$(touch PWNED)` is the canary: if any of them were ever
# given to a shell, a file named PWNED would appear in the working folder (and `;rm -rf x;` would
# remove a folder `x` there, which the tests keep beside the corpus).
HOSTILE_NAMES = {
    "spaces": "with  some spaces .mp4",
    "quotes": 'it\'s a "quoted" name.mp4',
    "subshell": "$(touch PWNED).mp4",
    "semicolon": ";rm -rf x;.mp4",
    "leading_dash": "-i.mp4",
    "non_ascii": "Zoë_日本.mp4",
    "very_long": "long_" + "a" * 231 + ".mp4",  # 240 bytes
}
CANARY = "PWNED"


@dataclass(frozen=True)
class Item:
    """One corpus input and the outcome the pipeline owes it (see the module docstring)."""

    name: str
    build: Callable[[Path], Path]
    stage: str = "download"  # where it is rejected, or (reason None) the last stage its test follows it to
    reason: str | None = None
    faces: int = 0
    size: tuple[int, int] | None = None  # (width, height) of the normalised clip
    audio: bool | None = None
    needs_samples: bool = False

    def __post_init__(self) -> None:
        if self.downloads and (self.size is None or self.audio is None):
            raise ValueError(f"corpus item {self.name}: download accepts it, so say its size and audio")
        if self.faces and (self.stage, self.reason) != ("extract", None):
            raise ValueError(f"corpus item {self.name}: faces are counted at extract, for an accepted item")

    @property
    def downloads(self) -> bool:
        """Whether download must accept it (it is rejected later, or not at all)."""
        return not (self.stage == "download" and self.reason)


FACE = (320, 240)


def gray_face(folder: Path) -> Path:
    return bad.face_video(folder, "gray.mkv", audio=False, args=("-c:v", "ffv1", "-pix_fmt", "gray"))


def ten_bit_face(folder: Path) -> Path:
    args = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le", "-c:a", "aac")
    return bad.face_video(folder, "tenbit.mp4", args=args)


def odd_size_face(folder: Path) -> Path:
    """321x241 (odd width and height), lossless yuv444p + FLAC in mkv."""
    args = ("-c:v", "ffv1", "-pix_fmt", "yuv444p", "-c:a", "flac")
    return bad.face_video(folder, "odd.mkv", size=(321, 241), args=args)


def tiny_face(folder: Path) -> Path:
    """96x72 with a face filling it (about 48 px, above the detector's 40 px minimum)."""
    return bad.face_video(folder, "tiny.mp4", tiles=[bad.face_tile("grace_hopper", 1.3)], size=(96, 72))


def silent_face(folder: Path) -> Path:
    return bad.face_video(folder, "silent.mp4", audio=False)


def container_face(folder: Path, ext: str) -> Path:
    return bad.face_video(folder, f"face.{ext}", args=CONTAINER_ARGS[ext])


def person_face(folder: Path) -> Path:
    """The CC BY sample photo of a person (../shared/samples) as a short clip."""
    return bad.face_video(folder, "person.mp4", tiles=[bad.face_tile("person", 2.4)])


def _rotated(degrees: int) -> Item:
    build = functools.partial(bad.face_rotated, degrees=degrees)
    return Item(f"rotation_{degrees}", build, "extract", faces=1, size=FACE, audio=True)


def _container(ext: str) -> Item:
    build = functools.partial(container_face, ext=ext)
    return Item(f"container_{ext}", build, "extract", faces=1, size=FACE, audio=True)


def _named(key: str) -> Item:
    return Item(f"name_{key}", functools.partial(bad.odd_name, name=HOSTILE_NAMES[key]), size=(160, 120), audio=True)


ITEMS: tuple[Item, ...] = (
    # not a video at all
    Item("empty", bad.empty_file, reason="empty_file"),
    Item("random_bytes", bad.random_bytes, reason="not_a_video"),
    Item("picture_as_mp4", bad.picture_as_mp4, reason="not_a_video"),
    Item("text_as_mov", bad.text_as_mov, reason="not_a_video"),
    Item("audio_only", bad.audio_only, reason="no_video_stream"),
    # damaged
    Item("truncated", bad.truncated, reason="undecodable"),
    Item("truncated_header", bad.truncated_header, reason="undecodable"),
    Item("corrupt_header", bad.corrupt_header, reason="undecodable"),
    Item("corrupt_middle", bad.corrupt_middle, size=(160, 120), audio=True),
    Item("truncated_faststart", bad.truncated_faststart, size=(160, 120), audio=False),
    # faces, and what cameras and editors do to them
    Item("face", bad.face_video, "extract", faces=1, size=FACE, audio=True),
    Item("vfr", bad.face_vfr, "extract", faces=1, size=FACE, audio=False),
    *(_rotated(d) for d in (90, 180, 270)),
    Item("grayscale", gray_face, "extract", faces=1, size=FACE, audio=False),
    Item("ten_bit", ten_bit_face, "extract", faces=1, size=FACE, audio=True),
    Item("odd_size", odd_size_face, "extract", faces=1, size=(320, 240), audio=True),
    Item("8k", bad.face_8k, "extract", faces=1, size=(1920, 1080), audio=False),
    Item("tiny", tiny_face, "extract", faces=1, size=(96, 72), audio=True),
    Item("upside_down", bad.face_upside_down, "trim", reason="no_face", size=FACE, audio=True),
    Item("no_faces", bad.no_faces, "trim", reason="no_face", size=(160, 120), audio=True),
    Item("many_faces", bad.faces_grid, "extract", faces=6, size=(640, 360), audio=True),
    Item("no_audio", silent_face, "extract", faces=1, size=FACE, audio=False),
    Item("several_audio", bad.several_audio, size=(160, 120), audio=True),
    *(_container(ext) for ext in CONTAINER_ARGS),
    # hostile file names (content: a short test pattern)
    *(_named(key) for key in HOSTILE_NAMES),
    # real footage and a real photo (../shared/samples)
    Item("sample_video_01", bad.sample_cut, "extract", faces=2, size=(640, 480), audio=True, needs_samples=True),
    Item("sample_person", person_face, "extract", faces=1, size=FACE, audio=True, needs_samples=True),
)
BY_NAME = {item.name: item for item in ITEMS}


def samples_present() -> bool:
    return bad.PERSON.exists() and (bad.SAMPLES / "video_01.mp4").exists()


def available(items: tuple[Item, ...] = ITEMS) -> tuple[Item, ...]:
    """The items that can be built here (those that need ../shared/samples only when it is there)."""
    return tuple(i for i in items if not i.needs_samples or samples_present())


def build(out: Path, items: tuple[Item, ...] = ITEMS) -> dict[str, Path]:
    """Build every available item into `out/<name>/`; returns name -> file."""
    return {item.name: item.build(Path(out) / item.name) for item in available(items)}
