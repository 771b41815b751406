"""Shots: find them, cut them into segments, and pick the ones that add the most coverage.

Trim's job is that an hour of one speech adds little over five minutes of it, so it keeps
the shots that add new conditions (pose, expression, lighting cells of facedag.curation.coverage),
not the longest ones.

One decoding pass per clip (`scan_clip`): every frame goes, downscaled, through
PySceneDetect's `ContentDetector` (fed directly, without its own video reader, so the clip
is decoded once), and the frames on the `sample_fps` grid go to a caller's `analyze`
callback in small batches (face detection and features). Only the callback's small per
sample records are kept, so memory is flat in clip length.

Selection (`select_shots`) is the cost-benefit greedy for budgeted coverage:

    gain(shot)  = new_cells + repeat_weight * faces
    score(shot) = gain / duration                      (per second of budget spent)

`new_cells` counts the cells the shot's sampled faces occupy that no kept shot covers yet
(with cell weights, e.g. toward the target's poses, facedag.curation.target_profile.cell_weights, each
new cell counts its weight instead of 1);
`faces` counts its samples with a usable face, so `repeat_weight * faces / duration` is a
small faces-per-second term: once every condition is covered, shots where the face is
visible most of the time win over shots where it is mostly away. The best shot that still
fits the remaining budget is kept, the others' new cells are recounted, and so on until
nothing with a positive gain fits. Coverage is submodular (a cell is new only once), so a
shot's score can only fall as others are kept; a lazy heap re-scores only the top one.
A long repetitive shot scores low (few new cells over many seconds); a short varied one high.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from facedag.faces.align import loose_crop
from facedag.faces.detect import FaceDetector, pick_faces
from facedag.faces.landmarkers import LANDMARKERS
from facedag.faces.measure import measure_face
from facedag.records import Rejected
from facedag.sources.media import SampleGrid, ScanFrame
from facedag.tables import FEATURES

DETECT_WIDTH = 256  # frames are downscaled to this width for the shot detector (as SceneManager does)


@dataclass(frozen=True)
class Shot:
    """A span [start, end) of seconds of one clip."""

    clip: str
    index: int
    start: float
    end: float
    scene: int = -1  # index of the detected shot a segment was cut from (-1: it is one)

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def id(self) -> str:
        return f"{self.clip}#{self.index:04d}"


@dataclass
class ScanResult:
    """What one pass over a clip found: cut times, the clip's duration and per-sample records.

    `ends[cut]`, when present, is where the shot before `cut` really ends: the scan did not
    decode the frames between the last frame it saw of that shot and the first of the next
    (scan_frames' reference_only), so those few frames are left out of both shots rather
    than risk a frame of the wrong shot in either."""

    cuts: list[float]
    duration: float
    frames: int
    samples: list[tuple[float, Any]] = field(default_factory=list)
    ends: dict[float, float] = field(default_factory=dict)


def _as_scan_frames(frames: Iterable[Any], rate: float, sample_fps: float) -> Iterator[ScanFrame]:
    """ScanFrames as they come, or (index, time, RGB image) frames made into ScanFrames:
    downscaled for the detector, full-size on the sample grid."""
    grid = SampleGrid(sample_fps, rate)
    for frame in frames:
        if isinstance(frame, ScanFrame):
            yield frame
            continue
        index, t, image = frame
        h, w = image.shape[:2]
        small = image
        if w > DETECT_WIDTH:
            small = cv2.resize(image, (DETECT_WIDTH, max(1, round(h * DETECT_WIDTH / w))), interpolation=cv2.INTER_AREA)
        small = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR if small.ndim == 2 else cv2.COLOR_RGB2BGR)
        yield ScanFrame(int(index), float(t), small, image if grid.take(float(t)) else None)


def scan_clip(
    frames: Iterable[Any],
    fps: float,
    threshold: float = 27.0,
    min_scene_seconds: float = 0.5,
    sample_fps: float = 2.0,
    analyze: Callable[[list[tuple[float, np.ndarray]]], Sequence[Any]] | None = None,
    batch: int = 8,
) -> ScanResult:
    """Detect cuts and sample frames in one pass over `frames`: ScanFrames (facedag.sources.media.
    scan_frames: small images for the detector, full ones on the sample grid), or (index, time,
    RGB image) tuples of every frame.

    `fps` is the clip's frame rate (the detector counts frames; a ScanFrame brings its frame
    number, so frames the decoder skipped count too); cuts are returned as the time of the
    first frame seen of each new shot. `analyze` gets batches of (time, image) of the sampled
    frames and returns one record per frame (e.g. face features or None); the records are
    returned in `samples` with their times.
    """
    from scenedetect import ContentDetector, FrameTimecode

    rate = fps if fps and fps > 0 else 25.0
    min_len = max(1, round(min_scene_seconds * rate))
    detector = ContentDetector(threshold=threshold, min_scene_len=min_len)
    times: dict[int, float] = {}  # frame number -> time, of the frames seen
    previous: dict[int, int] = {}  # frame number -> number of the frame seen before it
    cut_frames: list[int] = []
    samples: list[tuple[float, Any]] = []
    pending: list[tuple[float, np.ndarray]] = []

    def flush() -> None:
        if pending and analyze is not None:
            records = analyze(pending)
            samples.extend((t, r) for (t, _), r in zip(pending, records, strict=True))
        pending.clear()

    last_t, last_number, seen = 0.0, -1, 0
    for frame in _as_scan_frames(frames, rate, sample_fps):
        number = max(frame.number, last_number + 1)  # strictly increasing, as the detector needs
        times[number], previous[number] = frame.time, last_number
        last_t, last_number, seen = frame.time, number, seen + 1
        for tc in detector.process_frame(FrameTimecode(number, rate), frame.small):
            cut_frames.append(int(tc.frame_num))
        if frame.full is not None:
            pending.append((frame.time, frame.full))
            if len(pending) >= batch:
                flush()
    if seen:
        for tc in detector.post_process(FrameTimecode(last_number, rate)):
            cut_frames.append(int(tc.frame_num))
    flush()
    cuts, ends = [], {}
    for number in sorted(set(cut_frames)):
        if number not in times or previous[number] < 0:
            continue
        cut, before = times[number], previous[number]
        cuts.append(cut)
        if number - before > 1:  # frames between were not decoded: end the shot after the last one seen
            ends[cut] = round(times[before] + 1.0 / rate, 6)
    duration = last_t + 1.0 / rate if seen else 0.0
    return ScanResult(cuts=cuts, duration=duration, frames=seen, samples=samples, ends=ends)


def shots_from_cuts(clip: str, cuts: Sequence[float], duration: float,
                    ends: Mapping[float, float] | None = None) -> list[Shot]:  # fmt: skip
    """The shots between consecutive cuts (and the clip's start and end); a shot before a cut
    listed in `ends` ends there instead (ScanResult.ends)."""
    bounds = [0.0, *sorted(c for c in cuts if 0.0 < c < duration), duration]
    ends = ends or {}
    shots = []
    for k, (a, b) in enumerate(itertools.pairwise(bounds)):
        b_end = min(b, ends.get(b, b))
        if b_end > a:
            shots.append(Shot(clip, k, a, b_end))
    return shots


def segment(shots: Iterable[Shot], max_seconds: float, min_seconds: float) -> tuple[list[Shot], list[Shot]]:
    """Split shots longer than `max_seconds` into equal parts, drop those shorter than `min_seconds`.

    Equal parts (ceil(duration / max) of them) rather than max-long pieces plus a remainder,
    so that no tiny tail is dropped. Returns (segments kept, shots dropped as too short);
    segments are renumbered per clip in time order.
    """
    kept: list[Shot] = []
    short: list[Shot] = []
    counter: dict[str, int] = {}
    for shot in shots:
        if shot.duration < min_seconds:
            short.append(shot)
            continue
        n = max(1, math.ceil(shot.duration / max_seconds - 1e-9))
        width = shot.duration / n
        for k in range(n):
            a = shot.start + k * width
            b = shot.end if k == n - 1 else shot.start + (k + 1) * width
            idx = counter.get(shot.clip, 0)
            counter[shot.clip] = idx + 1
            kept.append(Shot(shot.clip, idx, round(a, 6), round(b, 6), shot.index))
    return kept, short


@dataclass
class Candidate:
    """A shot with the coverage cells of its sampled faces (one cell id per face)."""

    key: Any
    duration: float
    cells: np.ndarray
    samples: int = 0

    @property
    def faces(self) -> int:
        return len(self.cells)


@dataclass
class Pick:
    """The outcome for one candidate: kept or not, its rank and score, and why not."""

    kept: bool
    rank: int  # 1-based order of picking; 0 when not kept
    score: float  # gain per second when picked, or the last computed one
    gain: float
    new_cells: int
    reason: str  # "" when kept; "no_face", "over_budget" otherwise


def gain(cells: np.ndarray, covered: set[int], repeat_weight: float,
         weights: np.ndarray | None = None) -> tuple[float, int]:
    """(gain, new_cells) of a shot's faces given the cells already covered; a new cell counts
    its weight (one per cell id) when `weights` is given, else 1."""
    new = set(np.asarray(cells).tolist()) - covered
    value = float(np.sum(weights[sorted(new)])) if weights is not None else float(len(new))
    return value + repeat_weight * len(cells), len(new)


def select_shots(
    candidates: Sequence[Candidate],
    budget_seconds: float,
    repeat_weight: float = 0.05,
    weights: np.ndarray | None = None,
) -> list[Pick]:
    """Greedy budgeted coverage (see the module docstring); one Pick per candidate, same order.

    `weights`: one per cell id (>= 0), what a newly covered cell is worth; None = 1 each.
    Weighted coverage is still submodular, so the lazy re-scoring stays exact.
    """
    covered: set[int] = set()
    picks: list[Pick | None] = [None] * len(candidates)
    heap: list[tuple[float, int, int]] = []  # (-score, index, version)
    last: dict[int, tuple[float, float, int]] = {}
    for i, c in enumerate(candidates):
        if c.faces == 0 or c.duration <= 0:
            picks[i] = Pick(False, 0, 0.0, 0.0, 0, "no_face")
            continue
        g, new = gain(c.cells, covered, repeat_weight, weights)
        last[i] = (g / c.duration, g, new)
        heapq.heappush(heap, (-g / c.duration, i, 0))
    remaining = float(budget_seconds)
    version = 0  # number of picks so far: a heap entry scored before the last pick is stale
    rank = 0
    while heap:
        neg, i, ver = heapq.heappop(heap)
        c = candidates[i]
        if c.duration > remaining + 1e-9:
            picks[i] = Pick(False, 0, -neg, last[i][1], last[i][2], "over_budget")
            continue
        if ver != version:
            g, new = gain(c.cells, covered, repeat_weight, weights)
            last[i] = (g / c.duration, g, new)
            heapq.heappush(heap, (-g / c.duration, i, version))
            continue
        score, g, new = last[i]
        rank += 1
        picks[i] = Pick(True, rank, score, g, new, "")
        covered.update(np.asarray(c.cells).tolist())
        remaining -= c.duration
        version += 1
    return [p if p is not None else Pick(False, 0, 0.0, 0.0, 0, "over_budget") for p in picks]


# -- faces of the sampled frames -------------------------------------------------------------

FACE_COLUMNS = ("yaw", "pitch", "roll", "mouth_open", "eyes_open", "luminance", "asymmetry", "sharpness")


class FaceSampler:
    """The `analyze` callback of `scan_clip`: the largest face of each sampled frame, aligned
    and measured as align measures it (facedag.faces.measure: pose and expression from the
    `landmarker`, lighting and sharpness from the aligned face), so that trim and profile see
    the same pose and expression that align and dedupe later bin by.

    Returns per frame a dict of FACE_COLUMNS plus `score` and `size` (px), or None when no
    face passes the detector's thresholds or its landmarks cannot be aligned. Use it as a
    context manager (it holds the landmarker's model).
    """

    def __init__(self, face_size: int = 128, score_threshold: float = 0.8, min_size: float = 40.0,
                 max_side: int = 640, landmarker: str = "retinaface") -> None:  # fmt: skip
        self.face_size = int(face_size)
        self.detector = FaceDetector(score_threshold=score_threshold, min_size=min_size, max_side=max_side)
        self.landmarker = LANDMARKERS.get(landmarker)()

    def __enter__(self) -> FaceSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.landmarker.__exit__(None, None, None)

    def __call__(self, batch: Sequence[tuple[float, np.ndarray]]) -> list[dict[str, float] | None]:
        frames = [image for _, image in batch]
        out: list[dict[str, float] | None] = []
        for image, dets in zip(frames, self.detector.detect_batch(frames), strict=True):
            pick = pick_faces(dets, image.shape, "largest")
            out.append(self.describe(image, pick[0]) if pick else None)
        return out

    def describe(self, image: np.ndarray, det: Any) -> dict[str, float] | None:
        try:
            crop, cm = loose_crop(image, det.landmarks, self.face_size)
            face = measure_face(crop, cm, det.landmarks, image.shape, self.face_size, self.landmarker)
        except (ValueError, Rejected):
            return None
        rec = {name: float(face.features[name]) for name in FEATURES}
        rec.update(score=float(det.score), size=float(det.size))
        return rec
