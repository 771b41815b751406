"""profile@ID: the pose and lighting of the face to replace in the target, for curating ID toward it.

    python -m stages.profile ID [--params params.yaml]

Only `convert.swap_to` (the identity whose face convert paints into the target) is curated
toward the target: its profile samples the target; every other identity gets a profile that
says it does not apply, without reading the target. That file never changes with the target,
so a new target reruns trim and dedupe of swap_to only (DVC compares the file's hash), while
a foreach stage must list the target as a dep for every ID.

Why a stage of its own (and not inside trim and dedupe): the target is decoded and its faces
detected once, not once per consuming stage; the result is cached and pushed like any output;
and a target change reruns this cheap stage, and the data half only where the profile changed.

Reads  target.uri (ID = convert.swap_to only); params base.face_size, profile.fps,
       profile.max_samples, and convert's detector and follower (swap_to, score_threshold,
       min_size, policy, iou_threshold, track_max_gap, detect_max_side, identity_threshold) and
       target.reference: the face is found as convert will find it (with policy identity, the
       person of target.reference or the target's largest identity group,
       facedag.swap.target_identity)
Writes data/profile/ID/
         target.json     facedag.curation.target_profile.TargetProfile.to_dict: version, identity,
                         applies, note, target, policy, fps (sampled), duration, frames_sampled,
                         faces, complete, stopped, samples (per face found: time, yaw, pitch, roll,
                         mouth_open, eyes_open, luminance, asymmetry), histogram (on the default
                         pose x lighting grid: axes, occupied cells with count/share/label,
                         per-axis marginals with edges/counts/shares; null without faces)
         metrics.json    applies, frames_sampled, faces, complete
         rejected.jsonl  the target, when it cannot be read or its decode stopped early
                         (facedag.sources.media's reason codes: not_found, not_a_video, undecodable,
                         timeout, ...), or `bad_reference` when target.reference cannot be used

The profile is advice for curation, so a target that cannot be read, or shows no face, does
not stop the data half: the profile then has no faces, trim and dedupe curate unweighted and
say so, and convert is where a bad target fails.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from facedag.curation.target_profile import TargetProfile, not_applicable
from facedag.curation.target_scan import profile_target
from facedag.faces.reference import ReferenceError
from facedag.params import Params
from facedag.records import Rejected, Rejections, atomic_write_json, write_metrics
from facedag.stagekit import fresh_dir, identity_main
from facedag.swap.target_identity import person_for

STAGE = "profile"
OUT = Path("data") / STAGE
# until params.Params has a `profile` section: sampled frames per second, and at most this many
DEFAULT_FPS = 4.0
DEFAULT_MAX_SAMPLES = 2000


def run(params: Params, identity: str) -> None:
    section = getattr(params, "profile", None)
    fps = float(getattr(section, "fps", DEFAULT_FPS))
    max_samples = int(getattr(section, "max_samples", DEFAULT_MAX_SAMPLES))
    cv = params.convert
    out = fresh_dir(OUT / identity)
    rejected = Rejections(out, STAGE)
    target = params.target.uri
    start = time.monotonic()
    if identity != cv.swap_to:
        profile = not_applicable(identity, cv.swap_to)
    else:
        try:
            found = person_for(target, cv, params.target.reference)
            profile = profile_target(target, identity, cv, face_size=params.base.face_size,
                                     landmarker=params.align.landmarker, fps=fps, max_samples=max_samples,
                                     person=found[0] if found else None)
        except ReferenceError as exc:  # convert fails on it; the profile only says so
            profile = TargetProfile(identity=identity, applies=True, target=target, policy=cv.policy, complete=False,
                                    stopped="bad_reference", note=f"target.reference: {exc}")
        except Rejected as exc:
            profile = TargetProfile(identity=identity, applies=True, target=target, policy=cv.policy, complete=False,
                                    stopped=exc.reason, note=f"the target cannot be read: {exc.message}")
        if profile.stopped:
            rejected.add(target, profile.stopped, profile.note)
    atomic_write_json(out / "target.json", profile.to_dict())
    write_metrics(out, {"applies": profile.applies, "frames_sampled": profile.frames_sampled, "faces": profile.faces,
                        "complete": profile.complete})
    rejected.close()
    if not profile.applies:
        print(f"{STAGE}@{identity}: {profile.note}", flush=True)
        return
    print(f"{STAGE}@{identity}: {profile.faces} faces to replace in {profile.frames_sampled} frames of {target} "
          f"sampled at {profile.fps:.3g} fps ({time.monotonic() - start:.1f} s)", flush=True)
    if not profile.active or not profile.complete:
        print(f"{STAGE}@{identity}: warning: {profile.note}: trim@{identity} and dedupe@{identity} "
              f"{'curate unweighted' if not profile.active else 'see only the sampled part'}",
              file=sys.stderr, flush=True)


if __name__ == "__main__":
    identity_main(STAGE, run)
