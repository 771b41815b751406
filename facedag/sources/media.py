"""Video I/O: the ffmpeg binary, probing, streamed frame decoding and exact cuts.

- `ffmpeg_exe()`: the static ffmpeg from imageio-ffmpeg (there is no ffprobe; probe with PyAV).
- `probe(path)`: open with PyAV, check there is a real video stream, decode its first frame, and
  return a `VideoInfo`; unusable files raise `Rejected` with a stable reason code:

  ================== ==============================================================
  ``not_found``      the path does not exist (or is not a regular file)
  ``empty_file``     zero bytes
  ``not_a_video``    no container can read it: random bytes, text, a still picture
  ``no_video_stream`` a container without a (non cover-art) video stream, e.g. audio only
  ``undecodable``    a video container whose frames do not decode (truncated, corrupt)
  ``too_short``      shorter than the caller's `min_duration`
  ================== ==============================================================

- `iter_frames(path, fps=0, start=None, end=None)`: a generator of `Frame(index, time, image)`
  with `image` an upright (rotation metadata applied) RGB uint8 array, decoded as a stream by
  PyAV with decoder threads on, so memory is flat in clip length. `fps > 0` samples by
  presentation time (robust to variable frame rate); `start`/`end` seek, then skip.
- `scan_frames(path, width, sample_fps)`: what a shot scan needs, cheaply: reference frames
  only where the codec has others, each scaled down as it is converted, full-size frames only
  on the sample grid, read past damaged packets.
- `cut_clip(src, dst, start, end, fps=...)`: a frame-accurate cut, re-encoded (H.264 yuv420p +
  AAC), at a constant rate when asked.
- `run_ffmpeg(args, timeout)`: ffmpeg with an argument list (never a shell) and a time limit.
- `EncoderPipe`: raw frames written into ffmpeg's stdin as they are made, under a time limit.

Times are seconds from the start of the file (the video stream's first timestamp is 0),
the same convention as ffmpeg's `-ss`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import av
import numpy as np

from facedag.records import Rejected

# Demuxers that open still pictures or text as a one-frame "video": not a video for us.
_STILL_FORMATS = {"image2", "tty", "lavfi", "bin", "txt", "ico", "svg"}
# Leading bytes of containers that hold video, to tell a truncated/corrupt video
# (`undecodable`) from something that never was one (`not_a_video`).
_VIDEO_MAGIC = (
    (4, b"ftyp"),  # mp4 / mov / 3gp / m4v
    (4, b"moov"),
    (4, b"mdat"),
    (4, b"free"),
    (4, b"wide"),
    (0, b"\x1a\x45\xdf\xa3"),  # matroska / webm
    (0, b"RIFF"),  # avi
    (0, b"FLV"),
    (0, b"\x00\x00\x01\xba"),  # mpeg-ps
    (0, b"OggS"),
    (0, b"\x30\x26\xb2\x75"),  # asf / wmv
)
_PROBE_MAX_PACKETS = 600  # packets demuxed while looking for the first decodable frame


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary (imageio-ffmpeg's static build, or $IMAGEIO_FFMPEG_EXE)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(
    args: Sequence[str | os.PathLike[str]],
    timeout: float = 600.0,
    what: str = "ffmpeg",
    cwd: str | os.PathLike[str] | None = None,
) -> None:
    """Run ffmpeg with `args` (no shell), quiet, with a time limit, in `cwd` when given.

    Raises Rejected `timeout` when it runs past `timeout` seconds (the process is killed) and
    `ffmpeg_failed` with ffmpeg's last error line when it exits non-zero.
    """
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *map(os.fspath, args)]
    try:
        proc = subprocess.run(cmd, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                              check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise Rejected("timeout", f"{what} ran longer than {timeout:g} s") from None
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else f"exit status {proc.returncode}"
        raise Rejected("ffmpeg_failed", f"{what} failed: {last[:300]}")


class EncoderPipe:
    """An ffmpeg process that reads raw frames from its stdin (`-i pipe:0` in `args`).

    For frames made in Python one at a time (marked, swapped), so no clip is ever whole in
    memory. `timeout` bounds the whole encode: it is checked at every write and when closing,
    and past it ffmpeg is killed and Rejected("timeout") raised. ffmpeg's messages go to a temp
    file (a pipe could fill up and stall it); its last line is raised as Rejected("ffmpeg_failed").
    """

    def __init__(self, args: Sequence[str | os.PathLike[str]], timeout: float = 3600.0, what: str = "encoding",
                 cwd: str | os.PathLike[str] | None = None) -> None:  # fmt: skip
        self.what, self.frames, self._timeout = what, 0, timeout
        self._deadline = time.monotonic() + timeout
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()/abort()
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *map(os.fspath, args)]
        self._proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=self._log)  # fmt: skip

    def _error(self) -> Rejected:
        self._log.seek(0)
        lines = [ln for ln in self._log.read().decode(errors="replace").splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else f"exit status {self._proc.returncode}"
        return Rejected("ffmpeg_failed", f"{self.what} failed: {last[:300]}")

    def write(self, data: bytes | memoryview) -> None:
        """Send one frame's bytes."""
        if time.monotonic() > self._deadline:
            self.abort()
            raise Rejected("timeout", f"{self.what} ran longer than {self._timeout:g} s")
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(data)
        except (BrokenPipeError, OSError):
            self._proc.wait(timeout=30)
            raise self._error() from None
        self.frames += 1

    def close(self) -> None:
        """Finish the file; raise Rejected when ffmpeg failed or ran past the time limit."""
        assert self._proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            self._proc.stdin.close()
        try:
            code = self._proc.wait(timeout=max(1.0, self._deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.abort()
            raise Rejected("timeout", f"{self.what} ran longer than {self._timeout:g} s") from None
        if code != 0:
            raise self._error()
        self._log.close()

    def abort(self) -> None:
        """Kill ffmpeg (on an error upstream): the partial file is the caller's to discard."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=30)
        self._log.close()


def ffmpeg_input(path: str | os.PathLike[str]) -> str:
    """An ffmpeg input/output argument that cannot be read as an option or a protocol.

    `file:` plus the absolute path: a name with a leading dash, a colon or odd characters
    stays a plain local file.
    """
    return "file:" + os.path.abspath(os.fspath(path))


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` learned about a video file. `width`/`height` are as displayed (rotation applied)."""

    path: str
    size_bytes: int
    container: str
    duration: float
    fps: float
    frames: int
    width: int
    height: int
    rotation: int
    codec: str
    pix_fmt: str
    has_audio: bool
    audio_codec: str | None

    @property
    def coded_size(self) -> tuple[int, int]:
        """(width, height) as stored, before rotation."""
        return (self.height, self.width) if self.rotation in (90, 270) else (self.width, self.height)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Frame(NamedTuple):
    """One decoded frame: `index` counts the frames yielded (0, 1, ...), `time` is in seconds
    from the start of the file, `image` is HxWx3 RGB uint8, upright."""

    index: int
    time: float
    image: np.ndarray


def _has_video_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(192)
    except OSError:
        return False
    if len(head) > 188 and head[0] == head[188] == 0x47:  # mpeg-ts sync bytes
        return True
    return any(head[off : off + len(magic)] == magic for off, magic in _VIDEO_MAGIC)


def _open(path: Path) -> av.container.InputContainer:
    if not path.exists() or not path.is_file():
        raise Rejected("not_found", f"no such file: {path}")
    if path.stat().st_size == 0:
        raise Rejected("empty_file", "the file is empty (0 bytes)")
    try:
        return av.open(os.fspath(path), mode="r", metadata_errors="replace")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        if _has_video_magic(path):
            raise Rejected("undecodable", f"a video container that cannot be read (truncated?): {why}") from None
        raise Rejected("not_a_video", f"not a video file: {why}") from None


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    fmt = container.format.name
    names = set(fmt.split(","))
    if names & _STILL_FORMATS or any(n.endswith("_pipe") for n in names):
        raise Rejected("not_a_video", f"a still picture or text, not a video (format {fmt})")
    for stream in container.streams.video:
        if stream.disposition & av.stream.Disposition.attached_pic:
            continue  # cover art in an audio file
        if stream.codec_context is None:
            continue
        return stream
    kinds = sorted({s.type for s in container.streams})
    if not kinds:  # a container with no streams at all has a damaged index (e.g. a corrupt moov)
        raise Rejected("undecodable", "a video container whose index lists no streams (corrupt header?)")
    raise Rejected("no_video_stream", f"no video stream ({', '.join(kinds)})")


def _setup_decoder(stream: av.video.stream.VideoStream) -> None:
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = 0  # one per core


def _rotation(frame: av.VideoFrame) -> int:
    """Counter-clockwise rotation to apply for display, one of 0, 90, 180, 270."""
    try:
        rot = frame.rotation
    except (AttributeError, av.FFmpegError):
        return 0
    if rot is None or (isinstance(rot, float) and math.isnan(rot)):
        return 0
    return round(rot / 90.0) % 4 * 90


def _upright(frame: av.VideoFrame, rotation: int) -> np.ndarray:
    rgb = frame.to_ndarray(format="rgb24")
    if rotation:
        rgb = np.ascontiguousarray(np.rot90(rgb, rotation // 90))
    return rgb


def _stream_start(stream: av.video.stream.VideoStream) -> float:
    if stream.start_time is not None and stream.time_base is not None:
        return float(stream.start_time * stream.time_base)
    return 0.0


def _stream_fps(stream: av.video.stream.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 0 < float(rate) < 1000:
            return float(rate)
    return 0.0


def _first_frame(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> av.VideoFrame:
    """Decode the first frame, demuxing at most _PROBE_MAX_PACKETS packets."""
    n = 0
    try:
        for packet in container.demux(stream):
            n += 1
            try:
                frames = packet.decode()
            except av.FFmpegError:
                frames = []
            if frames:
                return frames[0]
            if n >= _PROBE_MAX_PACKETS:
                break
    except (av.FFmpegError, EOFError, ValueError):
        pass
    raise Rejected("undecodable", "no video frame decodes")


def _scan_duration(path: Path, index: int) -> float:
    """Duration from the packets' timestamps, for containers that do not state it."""
    last = 0.0
    with av.open(os.fspath(path)) as container:
        stream = container.streams[index]
        start = _stream_start(stream)
        for packet in container.demux(stream):
            if packet.pts is None or packet.time_base is None:
                continue
            end = float((packet.pts + (packet.duration or 0)) * packet.time_base) - start
            last = max(last, end)
    return last


def probe(path: str | os.PathLike[str], min_duration: float = 0.0) -> VideoInfo:
    """Open `path`, decode its first video frame and describe it, or raise `Rejected`."""
    p = Path(path)
    container = _open(p)
    try:
        stream = _video_stream(container)
        _setup_decoder(stream)
        first = _first_frame(container, stream)
        rotation = _rotation(first)
        fps = _stream_fps(stream)
        duration = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        if duration <= 0 and container.duration is not None:
            duration = container.duration / av.time_base
        audio = [s for s in container.streams.audio if s.codec_context is not None]
        cc = stream.codec_context
        coded_w, coded_h = first.width or cc.width, first.height or cc.height
        pix_fmt = first.format.name if first.format is not None else (cc.pix_fmt or "")
        info = dict(
            path=os.fspath(p),
            size_bytes=p.stat().st_size,
            container=container.format.name,
            codec=cc.name,
            pix_fmt=pix_fmt,
            has_audio=bool(audio),
            audio_codec=audio[0].codec_context.name if audio else None,
            index=stream.index,
        )
    finally:
        container.close()
    if duration <= 0:
        duration = _scan_duration(p, info.pop("index"))
    else:
        info.pop("index")
    if duration <= 0 and fps > 0:
        duration = 1.0 / fps
    if fps <= 0:
        raise Rejected("undecodable", "the video stream has no frame rate or timestamps")
    w, h = (coded_h, coded_w) if rotation in (90, 270) else (coded_w, coded_h)
    if duration < min_duration:
        raise Rejected("too_short", f"{duration:.3f} s is shorter than the minimum {min_duration:g} s")
    return VideoInfo(
        duration=round(duration, 6),
        fps=round(fps, 6),
        frames=max(1, round(duration * fps)),
        width=int(w),
        height=int(h),
        rotation=rotation,
        **info,
    )


def iter_frames(
    path: str | os.PathLike[str],
    fps: float = 0.0,
    start: float | None = None,
    end: float | None = None,
    timeout: float | None = None,
) -> Iterator[Frame]:
    """Decode `path` as a stream and yield upright RGB frames.

    fps: 0 = every frame; > 0 = at most `fps` frames per second, chosen by timestamp on the
        grid start, start + 1/fps, ... (the first frame at or after each grid point), so it
        holds for variable frame rate too.
    start, end: seconds from the start of the file; frames with start <= time < end. Seeks to
        the keyframe before `start`, then decodes and skips.
    timeout: seconds the whole decode may take (the time the caller spends between frames
        counts too), then Rejected("timeout"); None = no limit.
    Raises Rejected (see `probe`) when the file cannot be opened as a video. A decode error
    in the middle ends the stream at the last good frame (a truncated file yields what it has).
    """
    deadline = time.monotonic() + timeout if timeout is not None else math.inf
    p = Path(path)
    container = _open(p)
    try:
        stream = _video_stream(container)
        _setup_decoder(stream)
        t0 = _stream_start(stream)
        tb = stream.time_base or Fraction(1, 90000)
        native = _stream_fps(stream) or 25.0
        begin = max(0.0, float(start or 0.0))
        if begin > 0:
            try:
                container.seek(int((begin + t0) / tb), stream=stream, backward=True, any_frame=False)
            except av.FFmpegError:
                container.seek(0, stream=stream)
        step = 1.0 / fps if fps and fps > 0 else 0.0
        eps = min(1e-3, 0.25 / native)
        next_t: float | None = None
        last_t = -math.inf
        index = 0
        try:
            for frame in container.decode(stream):
                if time.monotonic() > deadline:
                    raise Rejected("timeout", f"decoding ran longer than {timeout:g} s")
                if frame.pts is not None:
                    t = float(frame.pts * tb) - t0
                else:
                    t = last_t + 1.0 / native if last_t > -math.inf else 0.0
                last_t = t
                if t < begin - eps:
                    continue
                if end is not None and t >= end - eps:
                    break
                if step:
                    if next_t is None:
                        next_t = begin if start is not None else t
                    if t < next_t - eps:
                        continue
                    k = math.floor((t - next_t) / step + eps) + 1
                    next_t += k * step
                yield Frame(index, round(t, 6), _upright(frame, _rotation(frame)))
                index += 1
        except av.FFmpegError:
            if index == 0:
                raise Rejected("undecodable", "no video frame decodes") from None
    finally:
        container.close()


class SampleGrid:
    """Which frames fall on a `fps` grid: the first frame at or after each grid point, by
    timestamp (so it holds for variable frame rate and for frames the decoder skipped)."""

    def __init__(self, fps: float, native: float = 25.0) -> None:
        self.step = 1.0 / fps if fps > 0 else math.inf
        self.eps = min(1e-3, 0.25 / (native or 25.0))
        self.next: float | None = None

    def take(self, t: float) -> bool:
        """Whether the frame at `t` (seconds, increasing) is a sample."""
        if self.next is None:
            self.next = t
        if t < self.next - self.eps:
            return False
        self.next += (math.floor((t - self.next) / self.step + self.eps) + 1) * self.step
        return True


class ScanFrame(NamedTuple):
    """A frame as a shot scan reads it: `number` is its frame number in the clip (time x rate,
    so frames the decoder skipped still count), `small` an upright BGR image `width` pixels
    wide for the shot detector, `full` the upright RGB frame at full size, only on the
    sample grid (None elsewhere)."""

    number: int
    time: float
    small: np.ndarray
    full: np.ndarray | None


def scan_frames(
    path: str | os.PathLike[str],
    width: int = 256,
    sample_fps: float = 2.0,
    reference_only: bool = True,
    timeout: float | None = None,
) -> Iterator[ScanFrame]:
    """Read a clip the way a shot scan needs it, doing as little as the codec allows.

    - `reference_only`: the decoder skips frames no other frame refers to (skip_frame
      NONREF: the B-frames of H.264/HEVC, about half of a typical camera or web file), which
      saves their decoding entirely; codecs without such frames decode everything.
    - Each frame is scaled to `width` by libswscale while it converts it (one pass, never a
      full-size RGB copy); only frames on the `sample_fps` grid are converted at full size.
    - A packet that fails to decode is skipped, not the end of the clip: a file damaged in
      the middle is read past the damage (the stored clip was never decoded just to check it).

    Raises Rejected like `probe` when the file cannot be opened; Rejected("timeout") past
    `timeout` seconds; Rejected("undecodable") when no frame decodes at all.
    """
    deadline = time.monotonic() + timeout if timeout is not None else math.inf
    container = _open(Path(path))
    try:
        stream = _video_stream(container)
        _setup_decoder(stream)
        if reference_only:
            stream.codec_context.skip_frame = "NONREF"
        t0 = _stream_start(stream)
        tb = stream.time_base or Fraction(1, 90000)
        native = _stream_fps(stream) or 25.0
        grid = SampleGrid(sample_fps, native)
        last_t, yielded, errors = -math.inf, 0, 0
        for packet in container.demux(stream):
            if time.monotonic() > deadline:
                raise Rejected("timeout", f"decoding ran longer than {timeout:g} s")
            try:
                frames = packet.decode()
            except av.FFmpegError:
                errors += 1
                continue
            for frame in frames:
                if frame.pts is not None:
                    t = float(frame.pts * tb) - t0
                else:
                    t = last_t + 1.0 / native if last_t > -math.inf else 0.0
                if t <= last_t:
                    continue  # a repeated or out-of-order timestamp (damage): keep time moving forward
                last_t = t
                rotation = _rotation(frame)
                turned = rotation in (90, 270)
                upright_w, upright_h = (frame.height, frame.width) if turned else (frame.width, frame.height)
                small_w = min(width, upright_w)
                small_h = max(2, round(upright_h * small_w / upright_w))
                coded = (small_h, small_w) if turned else (small_w, small_h)
                small = frame.reformat(width=coded[0], height=coded[1], format="bgr24").to_ndarray()
                if rotation:
                    small = np.ascontiguousarray(np.rot90(small, rotation // 90))
                full = _upright(frame, rotation) if grid.take(t) else None
                yield ScanFrame(round(t * native), round(t, 6), small, full)
                yielded += 1
    except (av.FFmpegError, EOFError) as exc:  # the container itself stops: what was read stands
        if yielded == 0:
            raise Rejected("undecodable", f"no video frame decodes: {exc}") from None
    finally:
        container.close()
    if yielded == 0:
        raise Rejected("undecodable", f"no video frame decodes ({errors} damaged packets)")


def work_timeout(duration: float) -> float:
    """A time limit for decoding and working on a clip of `duration` seconds: ten minutes plus a
    minute per second of video, far beyond what any stage needs per frame on a CPU, so it only
    stops a decode that hangs."""
    return 600.0 + 60.0 * max(0.0, float(duration))


_COMMON_RATES = [Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30),
                 Fraction(48), Fraction(50), Fraction(60000, 1001), Fraction(60)]  # fmt: skip


def constant_rate(native: float) -> Fraction:
    """The constant frame rate for a clip whose (average) rate is `native`: snapped to a common
    rate when within 1%, so a phone's 29.87 average becomes 30000/1001."""
    if native <= 0:
        native = 25.0
    nearest = min(_COMMON_RATES, key=lambda r: abs(float(r) - native))
    return nearest if abs(float(nearest) - native) <= 0.01 * native else Fraction(native).limit_denominator(1001)


def cut_clip(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    start: float = 0.0,
    end: float | None = None,
    *,
    crf: int = 18,
    preset: str = "veryfast",
    timeout: float = 600.0,
    fps: Fraction | None = None,
) -> None:
    """Write the part `start <= t < end` of `src` to `dst`, frame-accurate (re-encoded).

    Output: H.264 yuv420p (even size) in mp4 with +faststart, AAC audio when `src` has audio,
    rotation applied; with `fps`, at that constant frame rate (frames repeated or dropped by
    timestamp), so a clip stored as fetched with a variable rate gives constant-rate cuts.
    The caller writes atomically (e.g. `records.atomic_path`); `dst`'s
    extension picks the container.
    """
    if end is not None and end <= start:
        raise Rejected("empty_cut", f"end {end:g} s is not after start {start:g} s")
    args: list[str] = []
    if start > 0:
        args += ["-ss", f"{start:.6f}"]
    args += ["-i", ffmpeg_input(src)]
    if end is not None:
        args += ["-t", f"{end - start:.6f}"]
    rate = [f"fps={fps.numerator}/{fps.denominator}"] if fps is not None else []
    args += [
        "-map", "0:v:0", "-map", "0:a:0?", "-sn", "-dn", "-map_metadata", "-1",
        "-vf", ",".join([*rate, "scale=trunc(iw/2)*2:trunc(ih/2)*2", "format=yuv420p"]),
        *(["-fps_mode", "cfr"] if fps is not None else []),
        "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "160k",
        "-avoid_negative_ts", "make_zero", "-movflags", "+faststart",
        ffmpeg_input(dst),
    ]  # fmt: skip
    run_ffmpeg(args, timeout=timeout, what="cut")
