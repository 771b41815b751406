"""Convert: swap the followed face in every frame of the target video, streamed.

    frames (PyAV, facedag.media.iter_frames)
      -> detect + follow the face (facedag.detect.follow_faces: the SAME code extract uses,
         so the dst face is found in the target exactly as it was in the training data)
      -> smooth its landmarks over time (facedag.smoothing, One Euro per track)
      -> align (facedag.align.aligned_matrix on the smoothed landmarks, align_face)
      -> swap, in batches of `convert.batch` aligned faces (any `swap(faces) -> faces`
         callable; the stage passes facedag.model.Swapper)
      -> mask, colour match and paste back with the inverse matrix (facedag.blend)
      -> ffmpeg rawvideo pipe -> lossless intermediate (FFV1 in .mkv, RGB planes, so the
         frames are bit-exact where nothing was swapped)

Only a batch of frames is ever held (those whose faces wait for the next model call), so
memory is flat in clip length. Frames with no face (or whose face cannot be aligned) pass
through untouched, in order. Every decoded frame is written: the intermediate has the
target's frame count, at the target's frame rate (a variable-rate target is written at its
average rate).

`convert_video` writes, besides the video, one row per frame to a parquet table
(`CONVERT_SCHEMA`): frame, time, swapped, faces, score, mask_area (frame px with a non-zero
mask), bbox and track (of the best-scored swapped face; null when none).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import IO

import av
import numpy as np
import pyarrow as pa

from facedag.align import align_face, aligned_matrix, transform_points
from facedag.blend import face_mask, match_colour, paste
from facedag.detect import FaceDetector, FaceFollower, follow_faces
from facedag.media import Frame, ffmpeg_exe, ffmpeg_input, iter_frames, probe
from facedag.params import Convert
from facedag.progress import progress
from facedag.records import Rejected
from facedag.smoothing import LandmarkSmoother
from facedag.tables import TableWriter

Swap = Callable[[np.ndarray], np.ndarray]

CONVERT_SCHEMA = pa.schema([
    ("frame", pa.int32()),
    ("time", pa.float64()),
    ("swapped", pa.bool_()),
    ("faces", pa.int32()),  # faces pasted into this frame
    ("score", pa.float32()),  # detector confidence of the best swapped face (null: none)
    ("mask_area", pa.int64()),  # frame px under a non-zero mask (summed over faces)
    ("bbox", pa.list_(pa.float32(), 4)),  # x0, y0, x1, y1 of the best swapped face (null: none)
    ("track", pa.int32()),
])  # fmt: skip

# ffmpeg codec arguments of the intermediate: RGB kept as RGB planes, so it is lossless
CODECS: dict[str, list[str]] = {
    "ffv1": ["-c:v", "ffv1", "-level", "3", "-g", "1", "-slices", "4", "-slicecrc", "1", "-pix_fmt", "gbrp"],
    "x264rgb": ["-c:v", "libx264rgb", "-qp", "0", "-preset", "ultrafast", "-pix_fmt", "rgb24"],
}


def frame_rate(path: str | os.PathLike[str]) -> Fraction:
    """The video stream's average frame rate as an exact fraction (e.g. 30000/1001)."""
    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
            if rate and 0 < float(rate) < 1000:
                return Fraction(rate).limit_denominator(100000)
    return Fraction(probe(path).fps).limit_denominator(1001)


class VideoWriter:
    """Frames (RGB uint8, all one size) piped as rawvideo into ffmpeg, encoded as they come.

    `timeout` bounds the whole encode (checked at every frame and when closing); the process
    is killed and Rejected("timeout") raised past it. ffmpeg's errors go to a temp file (a
    pipe could fill and stall it) and its last line is raised as Rejected("ffmpeg_failed").
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        width: int,
        height: int,
        rate: Fraction,
        codec: str = "ffv1",
        timeout: float = 3600.0,
    ) -> None:
        if codec not in CODECS:
            raise ValueError(f"unknown intermediate codec {codec!r} (use one of {', '.join(CODECS)})")
        self.width, self.height = int(width), int(height)
        self.frames = 0
        self._deadline = time.monotonic() + timeout
        self._timeout = timeout
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()/abort()
        cmd = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width}x{self.height}",
            "-framerate", f"{rate.numerator}/{rate.denominator}", "-i", "pipe:0",
            *CODECS[codec], "-an", ffmpeg_input(path),
        ]  # fmt: skip
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log)

    def _error(self) -> Rejected:
        self._log.seek(0)
        lines = [ln for ln in self._log.read().decode(errors="replace").splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else f"exit status {self._proc.returncode}"
        return Rejected("ffmpeg_failed", f"encoding the intermediate failed: {last[:300]}")

    def write(self, image: np.ndarray) -> None:
        if image.shape != (self.height, self.width, 3) or image.dtype != np.uint8:
            raise ValueError(f"frame {image.shape} {image.dtype} is not ({self.height}, {self.width}, 3) uint8")
        if time.monotonic() > self._deadline:
            self.abort()
            raise Rejected("timeout", f"encoding ran longer than {self._timeout:g} s")
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(np.ascontiguousarray(image).data)
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
            raise Rejected("timeout", f"encoding ran longer than {self._timeout:g} s") from None
        if code != 0:
            raise self._error()
        self._log.close()

    def abort(self) -> None:
        """Kill ffmpeg (on an error upstream): the partial file is the caller's to discard."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=30)
        self._log.close()


@dataclass
class _Job:
    """One face waiting for the model."""

    score: float
    bbox: tuple[float, float, float, float]
    track: int
    matrix: np.ndarray
    landmarks: np.ndarray  # aligned px (smoothed)
    aligned: np.ndarray  # the target's aligned face (RGB uint8)


@dataclass
class FrameResult:
    """What convert did to one frame. `alpha` (frame-sized float32, the union of the pasted
    masks) is filled only when `convert_video(..., keep_alpha=True)` (tests, diagnostics)."""

    index: int
    time: float
    faces: int = 0
    score: float | None = None
    bbox: tuple[float, float, float, float] | None = None
    track: int | None = None
    mask_area: int = 0
    alpha: np.ndarray | None = field(default=None, repr=False)

    @property
    def swapped(self) -> bool:
        return self.faces > 0


@dataclass
class ConvertStats:
    frames: int = 0
    frames_swapped: int = 0
    faces_swapped: int = 0
    faces_unaligned: int = 0
    mask_area_total: int = 0
    seconds: float = 0.0
    swap_seconds: float = 0.0
    tracks: set[int] = field(default_factory=set)

    def metrics(self) -> dict[str, float | int]:
        return {
            "frames": self.frames,
            "frames_swapped": self.frames_swapped,
            "faces_swapped": self.faces_swapped,
            "faces_unaligned": self.faces_unaligned,
            "tracks": len(self.tracks),
            "mean_mask_area": round(self.mask_area_total / self.frames_swapped, 1) if self.frames_swapped else 0.0,
            "fps": round(self.frames / self.seconds, 3) if self.seconds > 0 else 0.0,
            "swap_seconds": round(self.swap_seconds, 3),
            "seconds": round(self.seconds, 3),
        }


class _Converter:
    """The batching core: holds frames until their faces are swapped, then pastes and emits them."""

    def __init__(self, swap: Swap, face_size: int, cfg: Convert, emit: Callable[[Frame, FrameResult], None],
                 keep_alpha: bool, stats: ConvertStats) -> None:  # fmt: skip
        self.swap = swap
        self.size = int(face_size)
        self.cfg = cfg
        self.emit = emit
        self.keep_alpha = keep_alpha
        self.stats = stats
        self.smoother = LandmarkSmoother(cfg.smooth_min_cutoff, cfg.smooth_beta, max_gap=max(cfg.track_max_gap, 0.2))
        self.pending: list[tuple[Frame, list[_Job]]] = []
        self.waiting = 0

    def add(self, frame: Frame, chosen: list) -> None:
        jobs: list[_Job] = []
        for det, track in chosen:
            lm = self.smoother(track, frame.time, det.landmarks)
            try:
                m = aligned_matrix(lm, self.size)
                aligned = align_face(frame.image, m, self.size)
            except ValueError:
                self.stats.faces_unaligned += 1
                continue
            jobs.append(_Job(det.score, det.bbox, track, m, transform_points(lm, m), aligned))
        self.pending.append((frame, jobs))
        self.waiting += len(jobs)
        # a full batch of faces, or many frames held (long stretches without a face): flush
        if self.waiting >= self.cfg.batch or len(self.pending) >= 2 * self.cfg.batch:
            self.flush()

    def flush(self) -> None:
        jobs = [job for _, js in self.pending for job in js]
        swapped: np.ndarray | None = None
        if jobs:
            faces = np.stack([job.aligned for job in jobs])
            t = time.perf_counter()
            swapped = np.asarray(self.swap(faces))
            self.stats.swap_seconds += time.perf_counter() - t
            if swapped.shape != faces.shape or swapped.dtype != np.uint8:
                raise ValueError(f"swap returned {swapped.shape} {swapped.dtype}, expected {faces.shape} uint8")
        k = 0
        for frame, frame_jobs in self.pending:
            result = FrameResult(frame.index, frame.time)
            image = frame.image if frame.image.flags.writeable else frame.image.copy()
            alpha_full = np.zeros(image.shape[:2], np.float32) if self.keep_alpha else None
            best = -1.0
            for job in frame_jobs:
                assert swapped is not None
                face = swapped[k]
                k += 1
                mask = face_mask(self.size, job.landmarks, self.cfg.mask_erode, self.cfg.mask_feather)
                face = match_colour(face, job.aligned, mask, self.cfg.colour)
                pasted = paste(image, face, mask, job.matrix)
                if pasted is None or pasted[0] == 0:
                    continue
                area, (x0, y0, x1, y1), alpha = pasted
                result.faces += 1
                result.mask_area += area
                self.stats.tracks.add(job.track)
                if alpha_full is not None:
                    np.maximum(alpha_full[y0:y1, x0:x1], alpha, out=alpha_full[y0:y1, x0:x1])
                if job.score > best:
                    best = job.score
                    result.score, result.bbox, result.track = job.score, job.bbox, job.track
            result.alpha = alpha_full
            self.stats.frames += 1
            self.stats.faces_swapped += result.faces
            self.stats.frames_swapped += result.swapped
            self.stats.mask_area_total += result.mask_area
            self.emit(frame._replace(image=image), result)
        self.pending.clear()
        self.waiting = 0


def convert_video(
    target: str | os.PathLike[str],
    out_video: str | os.PathLike[str],
    swap: Swap,
    face_size: int,
    cfg: Convert | None = None,
    table: str | os.PathLike[str] | None = None,
    on_frame: Callable[[FrameResult], None] | None = None,
    keep_alpha: bool = False,
    detector: FaceDetector | None = None,
    timeout: float | None = None,
) -> ConvertStats:
    """Swap the followed face in every frame of `target`; write `out_video` (and `table`).

    swap: called on uint8 (N, face_size, face_size, 3) RGB aligned faces (N <= cfg.batch,
        aligned with facedag.align.template(face_size)); returns the same shape and dtype.
    table: the per-frame parquet (CONVERT_SCHEMA), when given.
    on_frame: called with each frame's FrameResult, in order (alpha set when keep_alpha).
    timeout: a limit on the whole encode, seconds (default: 120 s + 2 s per target frame).
    The caller writes atomically (out paths are temp paths from facedag.records.atomic_path).
    Raises Rejected from facedag.media when the target cannot be read.
    """
    cfg = cfg or Convert()
    info = probe(target)
    rate = frame_rate(target)
    stats = ConvertStats()
    detector = detector or FaceDetector(
        cfg.score_threshold, cfg.min_size, cfg.detect_max_side, max_batch=min(cfg.batch, 64)
    )
    follower = FaceFollower(cfg.policy, cfg.iou_threshold, cfg.track_max_gap)
    writer = VideoWriter(out_video, info.width, info.height, rate, cfg.codec,
                         timeout=timeout if timeout is not None else 120.0 + 2.0 * info.frames)  # fmt: skip
    rows = TableWriter(table, CONVERT_SCHEMA) if table is not None else None

    def emit(frame: Frame, result: FrameResult) -> None:
        writer.write(frame.image)
        if rows is not None:
            rows.add(
                frame=result.index, time=result.time, swapped=result.swapped, faces=result.faces,
                score=result.score, mask_area=result.mask_area,
                bbox=list(result.bbox) if result.bbox is not None else None, track=result.track,
            )  # fmt: skip
        if on_frame is not None:
            on_frame(result)

    core = _Converter(swap, face_size, cfg, emit, keep_alpha, stats)
    started = time.perf_counter()
    ok = False
    try:
        found = follow_faces(iter_frames(target), detector, follower, min(cfg.batch, 16))
        for frame, chosen in progress(found, total=info.frames, desc="convert", unit="frame"):
            core.add(frame, chosen)
        core.flush()
        writer.close()
        ok = True
    finally:
        if not ok:
            writer.abort()
        if rows is not None:
            rows.close()
    stats.seconds = time.perf_counter() - started
    if stats.frames == 0:
        raise Rejected("undecodable", "no video frame decodes")
    return stats
