"""Measuring the target: sample its frames, find the face convert will replace, and describe it
(profile@ID). The profile it makes, and what trim and dedupe do with it, are
facedag.curation.target_profile's; this module is apart because it decodes video and runs the
detector, which trim's and dedupe's use of a finished profile does not need.
"""

from __future__ import annotations

import os

import pandas as pd

from facedag.curation.shots import FaceSampler
from facedag.curation.target_profile import SAMPLE_COLUMNS, TargetProfile
from facedag.faces.detect import FaceFollower, follow_faces
from facedag.params import Convert
from facedag.records import Rejected
from facedag.sources.media import iter_frames, probe
from facedag.swap.target_identity import TargetPerson, follower_policy, person_for

# decode + detection of a sampled target: a generous limit that still stops a hung decoder
TIMEOUT_BASE_S = 300.0
TIMEOUT_PER_SECOND = 2.0


def sampling_fps(duration: float, fps: float, max_samples: int) -> float:
    """Frames per second to sample: `fps`, lowered so that a long target gives <= max_samples."""
    if duration <= 0:
        return fps
    return min(fps, max_samples / duration)


def profile_target(
    path: str | os.PathLike[str],
    identity: str,
    cfg: Convert | None = None,
    *,
    face_size: int = 128,
    landmarker: str = "retinaface",
    fps: float = 4.0,
    max_samples: int = 2000,
    timeout: float | None = None,
    person: TargetPerson | None = None,
) -> TargetProfile:
    """Sample `path`, find the face convert would replace (cfg: convert's section) and measure it
    (with `landmarker`, align's, so that the profile's poses are the ones the datasets bin by).

    Raises Rejected (facedag.sources.media's codes) when the target does not open or no frame decodes;
    a decode that stops later (time limit, damage) returns what it sampled, `complete` False
    and the reason in `note`. timeout: seconds for the whole pass (default: 300 s + 2 s per
    second of target). person: with convert.policy identity, the replaced person
    (facedag.swap.target_identity), so that only their faces are measured.
    """
    cfg = cfg or Convert()
    info = probe(path)
    rate = sampling_fps(info.duration, fps, max_samples)
    limit = timeout if timeout is not None else TIMEOUT_BASE_S + TIMEOUT_PER_SECOND * info.duration
    sampler = FaceSampler(face_size, cfg.score_threshold, cfg.min_size, cfg.detect_max_side, landmarker)
    follower = FaceFollower(follower_policy(cfg.policy), cfg.iou_threshold, cfg.track_max_gap)
    if person is None and cfg.policy == "identity":
        person = person_for(path, cfg, None)[0]  # type: ignore[index]
    rows: list[dict[str, float]] = []
    frames = 0
    stopped, note = "", ""
    with sampler:
        try:
            found = follow_faces(iter_frames(path, fps=rate, timeout=limit), sampler.detector, follower, batch=8)
            for frame, chosen in person.filter(found) if person is not None else found:
                frames += 1
                for det, _ in chosen:
                    rec = sampler.describe(frame.image, det)
                    if rec is not None:
                        rows.append({"time": frame.time, **{c: rec[c] for c in SAMPLE_COLUMNS if c != "time"}})
        except Rejected as exc:
            if frames == 0:
                raise
            stopped, note = exc.reason, f"stopped after {frames} sampled frames: {exc.reason}: {exc.message}"
    samples = pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS)).astype("float64")
    if not rows:
        note = note or f"no face to replace found in {frames} sampled frames"
    return TargetProfile(identity=identity, applies=True, target=os.fspath(path), policy=cfg.policy, fps=rate,
                         duration=info.duration, frames_sampled=frames, complete=not stopped, stopped=stopped,
                         note=note, samples=samples)
