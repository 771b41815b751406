"""Convert: swap the followed face in every frame of the target video, streamed.

    frames (PyAV, facedag.sources.media.iter_frames)
      -> detect + follow the face (facedag.faces.detect.follow_faces: the SAME code extract uses,
         so the dst face is found in the target exactly as it was in the training data)
      -> landmark it on its loose crop (`align.landmarker`, facedag.faces.landmarkers: the mesh,
         or five points where it finds none), as align did for the training faces
      -> smooth the alignment over time (facedag.faces.smoothing, One Euro per track, on the five
         template points the landmarks' similarity places in the frame)
      -> align (facedag.faces.align.aligned_matrix on the smoothed points, align_face)
      -> swap, in batches of `convert.batch` aligned faces (any `swap(faces) -> faces`
         callable, or `swap(faces) -> (faces, masks)` for the `learned` mask; the stage passes
         facedag.training.model.Swapper, or its `swap` method)
      -> mask (`convert.mask`, from the face's own mesh in aligned px, and for `learned` the
         model's mask within it), colour match and paste
         back with the inverse matrix (facedag.swap.blend)
      -> ffmpeg rawvideo pipe -> lossless intermediate (FFV1 in .mkv, RGB planes, so the
         frames are bit-exact where nothing was swapped)

Only a batch of frames is ever held (those whose faces wait for the next model call), so
memory is flat in clip length. Frames with no face (or whose face cannot be aligned) pass
through untouched, in order. Every decoded frame is written: the intermediate has the
target's frame count, at the target's frame rate (a variable-rate target is written at its
average rate).

`convert_video` writes, besides the video, one row per frame to a parquet table
(facedag.swap.frames.CONVERT_SCHEMA): frame, time, swapped, faces, score, mask_area (frame px with a non-zero
mask), bbox and track (of the best-scored swapped face; null when none), the blend mask
itself (the union of the pasted masks, as an 8-bit PNG of its bounding box `mask_box`), so that
evaluate_video measures seams, flicker and colour where the blend actually happened, and per
pasted face its track and aligned->frame matrix (`face_tracks`, `face_matrices`: the export
stage's compositing transforms).

Chunks, and resuming after a kill. The target is converted in chunks of `CHUNK_FRAMES` frames
(rounded up to a multiple of the detector batch). Each chunk is its own lossless segment
(`chunk-<n>.mkv`) and table part (`chunk-<n>.parquet`), then a JSON record (`chunk-<n>.json`,
written last: the chunk's commit) of the state the next chunk starts from. At the end the
segments are joined into `out_video` without re-encoding (a PyAV remux: each segment starts
with a keyframe, and neither codec reorders frames: FFV1 is all-intra, x264rgb's ultrafast
preset has no B-frames) with each frame's timestamp set from its index, as one encode would
(ffmpeg's concat demuxer would add up the segments' rounded durations, drifting by a
millisecond a segment at 30000/1001 fps), and the parts into `table`. Given a
facedag.resume.ResumeDir, the chunks live there, so a run killed at any moment resumes after
the last committed chunk instead of starting over; without one they live in a temp folder
beside `out_video`. Both paths write the same bytes. While the segments are joined, the
intermediate takes twice its size on disk.

Chunk boundaries do not change the result: a resumed run equals an uninterrupted one frame by
frame and byte for byte. Three things cross a boundary, and each is carried exactly:
- tracking and smoothing state (FaceFollower: live tracks with their last box and time, the
  followed track, the next track id; LandmarkSmoother: each track's One Euro state). It is
  saved in the chunk's record as JSON (floats round-trip exactly) and put back. Restarting a
  chunk a few frames early to warm up instead would not be exact: the One Euro filter is
  recursive (its state depends on every frame since the track began) and track ids count
  from the start of the video.
- batching: detection runs on groups of `min(batch, 16)` frames counted from frame 0, and a
  chunk is a whole number of groups, so a resumed run detects the same groups. Faces wait for
  the model in batches; every chunk ends with a flush (resumed or not), so the model sees the
  same batches too.
- frames: a resumed run seeks to the last frame of the last chunk (its time is in the
  record) and checks it decodes to the same pixels (sha256 in the record) before going on;
  if it does not (an inexact seek), it decodes from the start and skips.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from facedag.faces.align import align_face, aligned_matrix, invert_affine, loose_crop, template, transform_points
from facedag.faces.detect import FaceDetector, FaceFollower, follow_faces
from facedag.faces.landmarkers import LANDMARKERS, FaceLandmarks, Landmarker
from facedag.faces.smoothing import LandmarkSmoother, OneEuroFilter
from facedag.params import Convert
from facedag.progress import progress
from facedag.records import Rejected
from facedag.resume import ResumeDir, fault_point, space_guard
from facedag.sources.media import EncoderPipe, Frame, ffmpeg_input, iter_frames, probe
from facedag.swap.blend import face_mask, match_colour, paste
from facedag.swap.frames import CONVERT_SCHEMA, encode_mask
from facedag.swap.target_identity import TargetPerson, follower_policy, person_for
from facedag.tables import TableWriter

# faces -> swapped faces, or (swapped faces, the model's float32 (N, S, S) masks) for convert.mask `learned`
Swap = Callable[[np.ndarray], "np.ndarray | tuple[np.ndarray, np.ndarray]"]

# frames per resumable chunk: what a kill can cost (about 10 s of video at 25 fps), against a
# segment, a table part and a small record per chunk
CHUNK_FRAMES = 240

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
    """Frames (RGB uint8, all one size) piped as rawvideo into ffmpeg, encoded as they come
    (facedag.sources.media.EncoderPipe: a time limit on the whole encode, ffmpeg's last error line
    raised as Rejected("ffmpeg_failed"), Rejected("timeout") past the limit)."""

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
        args = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width}x{self.height}",
                "-framerate", f"{rate.numerator}/{rate.denominator}", "-i", "pipe:0",
                *CODECS[codec], "-an", ffmpeg_input(path)]  # fmt: skip
        self._pipe = EncoderPipe(args, timeout=timeout, what="encoding the intermediate")

    @property
    def frames(self) -> int:
        return self._pipe.frames

    def write(self, image: np.ndarray) -> None:
        if image.shape != (self.height, self.width, 3) or image.dtype != np.uint8:
            raise ValueError(f"frame {image.shape} {image.dtype} is not ({self.height}, {self.width}, 3) uint8")
        self._pipe.write(np.ascontiguousarray(image).data)

    def close(self) -> None:
        """Finish the file; raise Rejected when ffmpeg failed or ran past the time limit."""
        self._pipe.close()

    def abort(self) -> None:
        """Kill ffmpeg (on an error upstream): the partial file is the caller's to discard."""
        self._pipe.abort()


@dataclass
class _Job:
    """One face waiting for the model."""

    score: float
    bbox: tuple[float, float, float, float]
    track: int
    matrix: np.ndarray
    landmarks: np.ndarray  # aligned px (smoothed): the mesh's 478, or five where the landmarker fell back
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
    mask_box: tuple[int, int, int, int] | None = None
    mask_png: bytes | None = field(default=None, repr=False)
    alpha: np.ndarray | None = field(default=None, repr=False)
    # per pasted face, in paste order: its track and its aligned px -> frame px matrix (2x3),
    # what the export stage's compositing patches give back to the plate
    placements: list[tuple[int, np.ndarray]] = field(default_factory=list, repr=False)

    @property
    def swapped(self) -> bool:
        return self.faces > 0


@dataclass
class ConvertStats:
    frames: int = 0
    frames_swapped: int = 0
    faces_swapped: int = 0
    faces_unaligned: int = 0
    faces_mesh: int = 0  # swapped faces aligned and masked by the mesh (the rest: five points)
    faces_empty_mask: int = 0  # faces found and swapped whose mask pasted nothing (a learned mask saying "not face")
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
            "faces_mesh": self.faces_mesh,
            "faces_empty_mask": self.faces_empty_mask,
            "tracks": len(self.tracks),
            "mean_mask_area": round(self.mask_area_total / self.frames_swapped, 1) if self.frames_swapped else 0.0,
            "fps": round(self.frames / self.seconds, 3) if self.seconds > 0 else 0.0,
            "swap_seconds": round(self.swap_seconds, 3),
            "seconds": round(self.seconds, 3),
        }


class _Converter:
    """The batching core: holds frames until their faces are swapped, then pastes and emits them."""

    def __init__(self, swap: Swap, face_size: int, cfg: Convert, emit: Callable[[Frame, FrameResult], None],
                 keep_alpha: bool, stats: ConvertStats, landmarker: Landmarker) -> None:  # fmt: skip
        self.swap = swap
        self.landmarker = landmarker
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
            try:
                found = self._landmarks(frame.image, det.landmarks)
                # the dense fit is smoothed through the five template points it places in the
                # frame: one filter per track whichever landmarks a frame got
                placed = transform_points(template(self.size), invert_affine(found.matrix(self.size)))
                m = aligned_matrix(self.smoother(track, frame.time, placed), self.size)
                aligned = align_face(frame.image, m, self.size)
            except (ValueError, cv2.error, np.linalg.LinAlgError):
                self.stats.faces_unaligned += 1
                continue
            self.stats.faces_mesh += found.dense
            jobs.append(_Job(det.score, det.bbox, track, m, transform_points(found.points, m), aligned))
        self.pending.append((frame, jobs))
        self.waiting += len(jobs)
        # a full batch of faces, or many frames held (long stretches without a face): flush
        if self.waiting >= self.cfg.batch or len(self.pending) >= 2 * self.cfg.batch:
            self.flush()

    def _landmarks(self, image: np.ndarray, points: np.ndarray) -> FaceLandmarks:
        crop, cm = loose_crop(image, points, self.size)
        return self.landmarker(crop, cm, points)

    def flush(self) -> None:
        jobs = [job for _, js in self.pending for job in js]
        swapped: np.ndarray | None = None
        predicted: np.ndarray | None = None
        if jobs:
            faces = np.stack([job.aligned for job in jobs])
            t = time.perf_counter()
            out = self.swap(faces)
            swapped, predicted = (np.asarray(out[0]), out[1]) if isinstance(out, tuple) else (np.asarray(out), None)
            self.stats.swap_seconds += time.perf_counter() - t
            if self.cfg.mask == "learned" and predicted is None:
                raise ValueError("convert.mask learned needs a swap that returns (faces, masks): Swapper.swap")
            if swapped.shape != faces.shape or swapped.dtype != np.uint8:
                raise ValueError(f"swap returned {swapped.shape} {swapped.dtype}, expected {faces.shape} uint8")
        k = 0
        for frame, frame_jobs in self.pending:
            result = FrameResult(frame.index, frame.time)
            image = frame.image if frame.image.flags.writeable else frame.image.copy()
            alpha_full = np.zeros(image.shape[:2], np.float32)
            best = -1.0
            for job in frame_jobs:
                assert swapped is not None
                face = swapped[k]
                mask = face_mask(self.size, job.landmarks, self.cfg.mask_erode, self.cfg.mask_feather, self.cfg.mask,
                                 predicted=None if predicted is None else predicted[k])
                k += 1
                face = match_colour(face, job.aligned, mask, self.cfg.colour)
                pasted = paste(image, face, mask, job.matrix)
                if pasted is None or pasted[0] == 0:
                    self.stats.faces_empty_mask += 1
                    continue
                area, (x0, y0, x1, y1), alpha = pasted
                result.faces += 1
                result.mask_area += area
                result.placements.append((job.track, invert_affine(job.matrix)))
                self.stats.tracks.add(job.track)
                np.maximum(alpha_full[y0:y1, x0:x1], alpha, out=alpha_full[y0:y1, x0:x1])
                box = (x0, y0, x1, y1) if result.mask_box is None else (
                    min(x0, result.mask_box[0]), min(y0, result.mask_box[1]),
                    max(x1, result.mask_box[2]), max(y1, result.mask_box[3]))  # fmt: skip
                result.mask_box = box
                if job.score > best:
                    best = job.score
                    result.score, result.bbox, result.track = job.score, job.bbox, job.track
            if result.mask_box is not None:
                x0, y0, x1, y1 = result.mask_box
                result.mask_png = encode_mask(alpha_full[y0:y1, x0:x1])
            result.alpha = alpha_full if self.keep_alpha else None
            self.stats.frames += 1
            self.stats.faces_swapped += result.faces
            self.stats.frames_swapped += result.swapped
            self.stats.mask_area_total += result.mask_area
            self.emit(frame._replace(image=image), result)
        self.pending.clear()
        self.waiting = 0


# -- the state that crosses a chunk boundary (see the module doc) ------------------------------
# FaceFollower, IoUTracker, LandmarkSmoother and OneEuroFilter keep it in private fields;
# these four functions are the only code that reads or writes them from outside.


def _follower_state(follower: FaceFollower) -> dict[str, Any]:
    tracker = follower.tracker
    return {
        "next_id": tracker._next_id,
        "t": tracker._t,
        "tracks": [[tid, list(box), last] for tid, (box, last) in tracker._tracks.items()],
        "followed": follower.followed,
        "kept": sorted(follower.kept_tracks),
    }


def _load_follower(follower: FaceFollower, state: dict[str, Any]) -> None:
    tracker = follower.tracker
    tracker._next_id = state["next_id"]
    tracker._t = state["t"]
    tracker._tracks = {tid: (tuple(box), last) for tid, box, last in state["tracks"]}
    follower.followed = state["followed"]
    follower.kept_tracks = set(state["kept"])


def _smoother_state(smoother: LandmarkSmoother) -> dict[str, Any]:
    def arr(a: np.ndarray | None) -> list | None:
        return None if a is None else a.tolist()

    return {
        "filters": [[tid, arr(f._x), arr(f._dx), f._t] for tid, f in smoother._filters.items()],
        "last": [[tid, t] for tid, t in smoother._last.items()],
    }


def _load_smoother(smoother: LandmarkSmoother, state: dict[str, Any]) -> None:
    smoother.reset()
    for tid, x, dx, t in state["filters"]:
        f = OneEuroFilter(smoother.min_cutoff, smoother.beta)
        f._x = None if x is None else np.asarray(x, dtype=np.float64)
        f._dx = None if dx is None else np.asarray(dx, dtype=np.float64)
        f._t = t
        smoother._filters[tid] = f
    smoother._last = {tid: t for tid, t in state["last"]}


def _stats_state(stats: ConvertStats) -> dict[str, Any]:
    return {**asdict(stats), "tracks": sorted(stats.tracks)}


def _load_stats(state: dict[str, Any]) -> ConvertStats:
    return ConvertStats(**{**state, "tracks": set(state["tracks"])})


class _ResumedFollower(FaceFollower):
    """A FaceFollower that, when follow_faces resets it at the start of the stream, takes the
    state saved at the end of the last committed chunk instead of the empty one; extract and
    convert then still find and follow faces through the same follow_faces."""

    def __init__(self, cfg: Convert, state: dict[str, Any] | None) -> None:
        super().__init__(follower_policy(cfg.policy), cfg.iou_threshold, cfg.track_max_gap)
        self._saved = state

    def reset(self) -> None:
        super().reset()
        if self._saved is not None:
            _load_follower(self, self._saved)


def _pixels_digest(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).data).hexdigest()


def _frames_from(target: str | os.PathLike[str], start: int, state: dict[str, Any] | None) -> Iterator[Frame]:
    """The target's frames from index `start` on, with their indices in the whole video.

    After a committed chunk, seek to its last frame (by time) and check it is the same frame
    (same pixels) before going on; otherwise decode from the start and skip.
    """
    if start == 0 or state is None:
        yield from iter_frames(target)
        return
    frames = iter_frames(target, start=state["last_time"])
    first = next(frames, None)
    if first is not None and abs(first.time - state["last_time"]) < 1e-6 and (
        _pixels_digest(first.image) == state["last_sha256"]
    ):
        for frame in frames:
            yield frame._replace(index=start + frame.index - 1)
        return
    frames.close()
    print(f"[convert] seeking to frame {start} was not exact: decoding from the start", flush=True)
    for frame in iter_frames(target):
        if frame.index >= start:
            yield frame


def _committed(work: ResumeDir) -> list[str]:
    """Names (`chunk-<n>`) of the committed chunks: 0, 1, ... without a gap."""
    names = []
    for n, record in enumerate(work.parts("chunk-*.json")):
        name = f"chunk-{n:06d}"
        if record != f"{name}.json":
            break
        names.append(name)
    return names


def _join_segments(work: ResumeDir, names: list[str], frames: list[int], dst: str | os.PathLike[str],
                   rate: Fraction) -> None:  # fmt: skip
    """Remux the chunks' segments into `dst`, frame i at time i / rate (as one encode stamps it).

    `+bitexact` keeps the muxer from writing random ids or its version, so the same frames give
    the same bytes, whatever run wrote which chunk.
    """
    index = 0
    with av.open(os.fspath(dst), "w", format="matroska", options={"fflags": "+bitexact"}) as out:
        ostream = None
        for name, expected in zip(names, frames, strict=True):
            got = 0
            with av.open(os.fspath(work.file(f"{name}.mkv"))) as seg:
                istream = seg.streams.video[0]
                if ostream is None:
                    ostream = out.add_stream_from_template(istream)
                    ostream.time_base = 1 / rate
                for packet in seg.demux(istream):
                    if packet.size == 0:  # the demuxer's end-of-stream marker
                        continue
                    packet.stream = ostream
                    packet.time_base = 1 / rate
                    packet.pts = packet.dts = index
                    packet.duration = 1
                    out.mux(packet)
                    index += 1
                    got += 1
            if got != expected:
                raise Rejected("ffmpeg_failed", f"segment {name}.mkv holds {got} frames, its record says {expected}")


def _join_tables(work: ResumeDir, names: list[str], dst: str | os.PathLike[str]) -> None:
    """The chunks' table parts as one table (one writer: the same row groups however it was run)."""
    import pyarrow.parquet as pq

    with TableWriter(dst, CONVERT_SCHEMA) as rows:
        for name in names:
            for batch in pq.ParquetFile(work.file(f"{name}.parquet")).iter_batches(batch_size=1024):
                for row in batch.to_pylist():
                    rows.add(**row)


@contextlib.contextmanager
def _work_dir(resume: ResumeDir | None, out_video: str | os.PathLike[str]) -> Iterator[ResumeDir]:
    """The resume folder, or a temp folder beside `out_video` (same disk) removed afterwards."""
    if resume is not None:
        yield resume
        return
    with tempfile.TemporaryDirectory(prefix=".convert-chunks.", dir=Path(out_video).parent) as tmp:
        yield ResumeDir(tmp, key="")


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
    resume: ResumeDir | None = None,
    chunk_frames: int = CHUNK_FRAMES,
    landmarker: str = "retinaface",
    person: TargetPerson | None = None,
) -> ConvertStats:
    """Swap the followed face in every frame of `target`; write `out_video` (and `table`).

    swap: called on uint8 (N, face_size, face_size, 3) RGB aligned faces (N <= cfg.batch,
        aligned with facedag.faces.align.template(face_size)); returns the same shape and dtype.
    table: the per-frame parquet (CONVERT_SCHEMA), when given.
    on_frame: called with each frame's FrameResult, in order (alpha set when keep_alpha), for the
        frames this call converts (not those of chunks a killed run had committed).
    timeout: a limit on the whole encode, seconds (default: 120 s + 2 s per target frame).
    resume: where the chunks live, so that a killed run resumes (module doc); its key must cover
        everything that decides the result. Without it a temp folder is used.
    chunk_frames: frames per chunk (rounded up to a multiple of the detector batch).
    landmarker: the kind that places each target face's landmarks (align's `align.landmarker`).
    person: with `cfg.policy` identity, which tracks are the replaced person
        (facedag.swap.target_identity; default: the target's largest identity group); its
        decisions are carried across chunks.
    The caller writes atomically (out paths are temp paths from facedag.records.atomic_path)
    and clears `resume` once they are in place. Raises Rejected from facedag.sources.media when the
    target cannot be read, and StageFailed ("no space left on device while writing <path>")
    when the disk is full (the committed chunks stay).
    """
    cfg = cfg or Convert()
    info = probe(target)
    rate = frame_rate(target)
    group = min(cfg.batch, 16)  # frames per detector call
    chunk = group * max(1, -(-int(chunk_frames) // group))
    deadline = time.monotonic() + (timeout if timeout is not None else 120.0 + 2.0 * info.frames)
    if person is None and cfg.policy == "identity":
        person = person_for(target, cfg, None)[0]  # type: ignore[index]
    with _work_dir(resume, out_video) as work:
        names = _committed(work)
        state = work.get_json(f"{names[-1]}.json") if names else None
        stats = _load_stats(state["stats"]) if state is not None else ConvertStats()
        if state is not None:
            print(f"[convert] resuming: {len(names)} of ~{-(-info.frames // chunk)} chunks done "
                  f"(frames 0-{state['next_frame'] - 1})", flush=True)  # fmt: skip
        if state is None or not state["end"]:
            detector = detector or FaceDetector(
                cfg.score_threshold, cfg.min_size, cfg.detect_max_side, max_batch=min(cfg.batch, 64)
            )
            with space_guard(work.path), LANDMARKERS.get(landmarker)() as marks:
                _convert_chunks(target, work, state, stats, swap, face_size, cfg, detector, chunk, info.frames,
                                rate, (info.width, info.height), deadline, on_frame, keep_alpha, marks,
                                person)  # fmt: skip
            names = _committed(work)
        if stats.frames == 0:
            raise Rejected("undecodable", "no video frame decodes")
        counts = [work.get_json(f"{name}.json")["frames"] for name in names]
        with space_guard(out_video):
            _join_segments(work, names, counts, out_video, rate)
        if table is not None:
            with space_guard(table):
                _join_tables(work, names, table)
    return stats


def _convert_chunks(target: str | os.PathLike[str], work: ResumeDir, state: dict[str, Any] | None,
                    stats: ConvertStats, swap: Swap, face_size: int, cfg: Convert, detector: FaceDetector,
                    chunk: int, total: int, rate: Fraction, size: tuple[int, int], deadline: float,
                    on_frame: Callable[[FrameResult], None] | None, keep_alpha: bool,
                    landmarker: Landmarker, person: TargetPerson | None = None) -> None:  # fmt: skip
    """Convert the frames after the last committed chunk, committing a chunk every `chunk` frames."""
    start = state["next_frame"] if state is not None else 0
    seconds_before = stats.seconds
    started = time.perf_counter()
    sink: dict[str, Any] = {}

    def emit(frame: Frame, result: FrameResult) -> None:
        sink["video"].write(frame.image)
        sink["rows"].add(
            frame=result.index, time=result.time, swapped=result.swapped, faces=result.faces,
            score=result.score, mask_area=result.mask_area,
            bbox=list(result.bbox) if result.bbox is not None else None, track=result.track,
            mask_box=list(result.mask_box) if result.mask_box is not None else None, mask=result.mask_png,
            face_tracks=[track for track, _ in result.placements],
            face_matrices=[m.ravel().tolist() for _, m in result.placements],
        )  # fmt: skip
        fault_point("convert", "frame")
        if on_frame is not None:
            on_frame(result)

    core = _Converter(swap, face_size, cfg, emit, keep_alpha, stats, landmarker)
    if state is not None:
        _load_smoother(core.smoother, state["smoother"])
    follower = _ResumedFollower(cfg, state["follower"] if state is not None else None)
    found = follow_faces(_frames_from(target, start, state), detector, follower, min(cfg.batch, 16))
    if person is not None:
        person.load(state.get("person") if state is not None else None)
        found = person.filter(found)
    items = iter(progress(found, total=max(total - start, 1), desc="convert", unit="frame"))
    for first, chosen in items:  # the first frame of a chunk
        name = f"chunk-{first.index // chunk:06d}"
        with work.writing(f"{name}.mkv") as seg, work.writing(f"{name}.parquet") as part:
            sink["rows"] = TableWriter(part, CONVERT_SCHEMA)
            sink["video"] = VideoWriter(seg, size[0], size[1], rate, cfg.codec,
                                        timeout=max(1.0, deadline - time.monotonic()))  # fmt: skip
            ok = False
            try:
                frame, end, last_sha = first, False, None
                while True:
                    if (frame.index + 1) % chunk == 0:  # the chunk's last frame: keep its pixels' hash
                        last_sha = _pixels_digest(frame.image)  # before the paste changes them
                    core.add(frame, chosen)
                    if last_sha is not None:
                        break
                    nxt = next(items, None)
                    if nxt is None:
                        end = True
                        break
                    frame, chosen = nxt
                core.flush()  # every chunk ends with the model's batch: the same batches when resumed
                sink["video"].close()
                ok = True
            finally:
                if not ok:
                    sink["video"].abort()
                sink["rows"].close()
        stats.seconds = seconds_before + time.perf_counter() - started
        work.put_json(f"{name}.json", {
            "chunk": first.index // chunk, "first_frame": first.index, "frames": frame.index - first.index + 1,
            "next_frame": frame.index + 1, "last_time": frame.time, "last_sha256": last_sha, "end": end,
            "follower": _follower_state(follower), "smoother": _smoother_state(core.smoother),
            "stats": _stats_state(stats), "person": person.state() if person is not None else None,
        })  # fmt: skip
        fault_point("convert", "chunk_done")
