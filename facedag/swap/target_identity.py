"""Who convert replaces in the target (`convert.policy: identity`): the person of
`target.reference`, else the target's identity group with most faces.

Two steps, so that convert still streams the target once and decides each face as it comes:
1. `find_target_person` samples the target at `fps` (every face tracked, a few faces per
   track embedded: facedag.faces.identity_groups.TrackSampler), groups the tracks by identity
   and picks the person (facedag.faces.reference.pick_person: the reference's images or clip
   frames, `group:N`, or the largest group). Its report is convert's identity.json and its
   contact sheet identity.png; the person's centre is the reference's mean embedding, or the
   chosen group's.
2. While convert streams (every face tracked, policy `all`), `TargetPerson.filter` embeds the
   first face of each new track (one SFace call per track, not per frame) and keeps the track
   when its cosine to the centre reaches `convert.identity_threshold`. The decisions are
   carried across convert's chunks (`state`/`load`), so a resumed run decides as an
   uninterrupted one did.

A track is decided on its first face: a first face seen from the side can be refused while
the rest of the track would match (the track then stays untouched: a visible miss, never
someone else's face painted over).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from facedag.faces.detect import Detection, FaceDetector, FaceFollower, follow_faces
from facedag.faces.identity import Embedder, cosine
from facedag.faces.identity_groups import TrackSampler, group_sheet
from facedag.faces.reference import pick_person
from facedag.params import Convert
from facedag.sources.media import iter_frames

SCAN_FPS = 2.0


def follower_policy(policy: str) -> str:
    """The FaceFollower policy behind a params policy: `identity` tracks every face."""
    return "all" if policy == "identity" else policy


class TargetPerson:
    """Keeps the faces of the tracks that are the person (module doc, step 2)."""

    def __init__(self, centre: np.ndarray, threshold: float, embedder: Embedder) -> None:
        self.centre = np.asarray(centre, np.float32)
        self.threshold = float(threshold)
        self.embedder = embedder
        self.decided: dict[int, float] = {}  # track -> cosine of its first face to the centre

    def is_person(self, image: np.ndarray, det: Detection, track: int) -> bool:
        if track not in self.decided:
            try:
                v = self.embedder.embed_at(image, [det.landmarks])[0]
                self.decided[track] = float(cosine(v, self.centre))
            except ValueError:  # degenerate landmarks: decide on the track's next face
                return False
        return self.decided[track] >= self.threshold

    def filter(self, found: Iterable[tuple[Any, list[tuple[Detection, int]]]]) -> Iterator[tuple[Any, list]]:
        for frame, chosen in found:
            yield frame, [(d, t) for d, t in chosen if self.is_person(frame.image, d, t)]

    def state(self) -> dict[str, Any]:
        return {"decided": [[t, s] for t, s in sorted(self.decided.items())]}

    def load(self, state: dict[str, Any] | None) -> None:
        self.decided = {int(t): float(s) for t, s in (state or {}).get("decided", [])}


def find_target_person(path: str | os.PathLike[str], cfg: Convert, reference: Any, embedder: Embedder,
                       fps: float = SCAN_FPS) -> tuple[TargetPerson, dict[str, Any], np.ndarray]:  # fmt: skip
    """(the person, identity.json's report, the groups' contact sheet) of the target (module doc, step 1).

    Raises facedag.faces.reference.ReferenceError for an unusable reference, and facedag.records.
    Rejected when the target does not decode.
    """
    detector = FaceDetector(cfg.score_threshold, cfg.min_size, cfg.detect_max_side, max_batch=8)
    follower = FaceFollower("all", cfg.iou_threshold, cfg.track_max_gap)
    sampler = TrackSampler(interval=1.0, per_track=5)
    for frame, chosen in follow_faces(iter_frames(path, fps=fps), detector, follower, 8):
        for det, track in chosen:
            sampler.add(track, frame.time, frame.image, det.landmarks, det.size)
    tracks = {int(t): rec for t, rec in sampler.finish(embedder).items()}
    choice = pick_person(tracks, cfg.identity_threshold, reference, embedder)
    # nobody embedded in the sampled frames: a centre no face matches (convert then says it found nobody)
    centre = choice.centre if choice.centre is not None else np.zeros(128, np.float32)
    return TargetPerson(centre, cfg.identity_threshold, embedder), choice.report, group_sheet(choice.report, tracks)


def person_for(target: str | os.PathLike[str], cfg: Convert, reference: Any,
               embedder: Embedder | None = None) -> tuple[TargetPerson, dict[str, Any], np.ndarray] | None:  # fmt: skip
    """find_target_person when `cfg.policy` is identity, else None (convert and profile share it)."""
    if cfg.policy != "identity":
        return None
    return find_target_person(target, cfg, reference, embedder or Embedder())
