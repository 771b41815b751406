"""evaluate_video: how good the converted video is, in numbers.

    python -m stages.evaluate_video [--params params.yaml]

Decodes the untouched target (`target.uri`) and convert's intermediate
(`data/convert/frames.mkv`) side by side, one frame at a time, with the blend mask convert
stored for each frame (`data/convert/frames.parquet`), and measures (facedag.quality.evaluate_video,
facedag.quality.metrics): the flicker ratio inside the mask against the target's own change, the
seam at the mask's edge against the skin gradient just outside, the LAB colour gap between
the swapped face and the skin ring around it, the landmark error of the output against the
target (RetinaFace on both, convert's thresholds), the share of swapped frames in which
RetinaFace still finds a face, and the pose and expression error of the output against the
target (MediaPipe's head pose and blendshapes on both, facedag.quality.fidelity).
Writes, under `data/evaluate/video/` (each atomically):

- `metrics.json`: the summary, with each goal (flicker <= 1.1, seam <= 0.10, colour gap
  <= 2.3) and whether it is met;
- `frames.parquet`: one row per frame (for the report and for finding bad stretches);
- `plots/quality.json`: per-frame flicker and colour gap, for `dvc plots`;
- `plots/fidelity.json`: per-frame pose and expression error.
- identity (facedag.quality.identity): `id_retrieval` (share of swapped frames whose output face
  is nearer to `convert.swap_to`'s mean SFace embedding than to every other identity's, the
  means taken over each identity's data/dedupe/<ID>/dataset.parquet) and `id_margin` (mean
  cosine to swap_to minus cosine to `convert.replace`) in metrics.json, per frame in
  frames.parquet and `plots/identity.json`.

Fails with one line when convert's outputs are missing or do not match the target.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from facedag.faces.detect import FaceDetector
from facedag.faces.identity import Embedder
from facedag.faces.landmarkers import LANDMARKERS
from facedag.params import Params
from facedag.quality.evaluate_video import evaluate_video
from facedag.quality.identity import IdentityScorer, identity_centres
from facedag.records import Rejected, StageFailed, atomic_path, atomic_write_json, write_metrics
from facedag.sources.media import iter_frames, probe
from facedag.stagekit import fresh_dir, stage_main
from facedag.swap.frames import decode_mask

STAGE = "evaluate_video"
CONVERT = Path("data") / "convert"
OUT = Path("data") / "evaluate" / "video"
DEDUPE = Path("data") / "dedupe"
PLOTTED = ("flicker_output", "flicker_target", "colour_gap", "seam", "landmark_error")
FIDELITY = ("pose_error", "expression_error")
IDENTITY_PLOTTED = ("id_src", "id_dst", "id_retrieved")


def _masks(table: Path, height: int, width: int):
    """Each frame's blend mask from convert's table, streamed in row groups."""
    reader = pq.ParquetFile(table)
    for batch in reader.iter_batches(columns=["mask_box", "mask"], batch_size=256):
        for box, data in zip(batch.column("mask_box").to_pylist(), batch.column("mask").to_pylist(), strict=True):
            yield decode_mask(box, data, height, width)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def identity_scorer(params: Params) -> IdentityScorer:
    """SFace against each identity's mean face from its dedupe dataset (facedag.quality.identity)."""
    embedder = Embedder()
    centres = identity_centres(DEDUPE, list(params.identities), embedder)
    try:
        return IdentityScorer(centres, params.convert.swap_to, params.convert.replace, embedder)
    except ValueError as exc:
        raise StageFailed(f"{exc}: run dedupe@{params.convert.swap_to} first") from None


def run(params: Params) -> None:
    frames, table = CONVERT / "frames.mkv", CONVERT / "frames.parquet"
    for path in (frames, table):
        if not path.is_file():
            raise StageFailed(f"{path} not found: run convert first")
    if "mask" not in pq.read_schema(table).names:
        raise StageFailed(f"{table} has no blend masks (written by an older convert): rerun convert")
    try:
        info = probe(frames)
    except Rejected as exc:
        raise StageFailed(f"{frames}: {exc.reason}: {exc.message}") from None
    cv = params.convert
    detector = FaceDetector(score_threshold=cv.score_threshold, min_size=cv.min_size, max_side=cv.detect_max_side)
    timeout = 600.0 + 2.0 * info.frames
    scorer = identity_scorer(params)
    try:
        with LANDMARKERS.get("mediapipe")() as landmarker:
            summary, rows = evaluate_video(
                (f.image for f in iter_frames(params.target.uri, timeout=timeout)),
                (f.image for f in iter_frames(frames, timeout=timeout)),
                _masks(table, info.height, info.width), detector, batch=params.evaluate.batch, identity=scorer,
                landmarker=landmarker,
            )  # fmt: skip
    except ValueError as exc:  # zip(strict=True): the three do not have the same frame count
        raise StageFailed(f"{frames} does not match {params.target.uri} frame for frame: {exc}"[:300]) from None
    except Rejected as exc:
        raise StageFailed(f"{exc.reason}: {exc.message}") from None
    out = fresh_dir(OUT)
    with atomic_path(out / "frames.parquet") as tmp:
        pd.DataFrame(rows).to_parquet(tmp, index=False)
    atomic_write_json(out / "plots" / "quality.json",
                      [{"frame": r["frame"], **{k: r.get(k) for k in PLOTTED}} for r in rows])  # fmt: skip
    atomic_write_json(out / "plots" / "fidelity.json",
                      [{"frame": r["frame"], **{k: r.get(k) for k in FIDELITY}} for r in rows if r["swapped"]])
    atomic_write_json(out / "plots" / "identity.json",
                      [{"frame": r["frame"], **{k: r.get(k) for k in IDENTITY_PLOTTED}} for r in rows])  # fmt: skip
    write_metrics(out, summary)
    goals = ", ".join(f"{k} {_fmt(summary.get(k))} ({'met' if g['met'] else 'not met'}: {g['goal']})"
                      for k, g in summary["goals"].items())  # fmt: skip
    print(f"[{STAGE}] identity: id_retrieval {_fmt(summary.get('id_retrieval'))} ({summary.get('id_frames')} "
          f"frames), id_margin {_fmt(summary.get('id_margin'))}", flush=True)  # fmt: skip
    print(f"[{STAGE}] {summary['frames_swapped']} of {summary['frames']} frames swapped; {goals}; "
          f"detect rate {_fmt(summary.get('detect_rate'))}, landmark error {_fmt(summary.get('landmark_error'))}, "
          f"pose error {_fmt(summary.get('pose_error'))} deg, expression error {_fmt(summary.get('expression_error'))}",
          flush=True)


if __name__ == "__main__":
    stage_main(STAGE, run)
