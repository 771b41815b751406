"""render: the labelled, tagged H.264 video and its provenance record.

    python -m stages.render [--params params.yaml]

Reads `data/convert/frames.mkv`, the target (`target.uri`, for its audio and its sha256),
`models/model.safetensors` and `models/model.json` (their hash and config), and
`data/download/<ID>/manifest.parquet` (the source clips' sha256). Writes, under
`data/render/` (each atomically):

- `output.mp4`: H.264 (render.crf, render.preset), the target's audio, the invisible
  watermark in every frame (its mark id is new for every render), the visible label unless
  `render.label: false`, and container tags saying it is synthetic and naming output.json
  (facedag.swap.render); signed with a C2PA manifest as the very last step when `render.c2pa.cert`
  and `render.c2pa.key` are set and match their sha256 pins (`render.c2pa.cert_sha256`,
  `key_sha256`: the pins make the credential a dep, see `check_pins`), streamed from the encoded
  file to a temp file beside it and renamed over it (facedag.provenance.c2pa_sign; re-encoding
  would drop the manifest);
- `output.json`: the provenance record (facedag.provenance.record), with the mark id and whether
  and by whom the video was signed;
- `metrics.json`: frames, label (0/1), audio (0/1), bytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from facedag.params import Params
from facedag.provenance.record import build_record, params_sha256, source_clips
from facedag.records import Rejected, StageFailed, atomic_path, atomic_write_json, sha256_file, write_metrics
from facedag.stagekit import fresh_dir, stage_main
from facedag.swap.render import render_video
from facedag.training.files import WEIGHTS

STAGE = "render"
FRAMES = Path("data") / "convert" / "frames.mkv"
MODELS = Path("models")
DOWNLOAD = Path("data") / "download"
OUT = Path("data") / STAGE


def model_path(params: Params) -> Path:
    """The weights convert painted with (`convert.model`), which the record names by sha256."""
    return MODELS / f"{WEIGHTS[params.convert.model]}.safetensors"


def check_pins(path: str, pinned: str | None, what: str) -> None:
    """Refuse a credential file whose sha256 is not the one pinned in params (render.c2pa.<what>_sha256).

    DVC hashes params.yaml, not the files it names: the pin is what makes a new certificate or
    key a changed dep of render (so the video is re-signed), and a file swapped behind DVC's
    back is caught here instead of signing silently with it. The message gives the value to pin.
    """
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise StageFailed(f"render.c2pa.{what} {path} cannot be read: {exc.strerror or exc}") from None
    if pinned is None:
        raise StageFailed(f"render.c2pa.{what}_sha256 is not set: pin {path} with render.c2pa.{what}_sha256: {actual}")
    if pinned != actual:
        raise StageFailed(f"render.c2pa.{what} {path} changed since it was pinned (sha256 {actual}, pinned "
                          f"{pinned}): set render.c2pa.{what}_sha256: {actual} to sign with it")  # fmt: skip


def sign(params: Params, video: Path, mark_id: str) -> dict[str, Any]:
    """Sign `video` in place with a C2PA manifest when a cert and key are set; say why not otherwise.

    The manifest names the target and every source clip as ingredients (by sha256), so a
    reader of the file alone can trace it to its inputs; it carries the mark id, which ties it
    to the invisible watermark and to output.json.
    """
    c2pa = params.render.c2pa
    model = model_path(params)
    if c2pa.cert is None or c2pa.key is None:
        return {"signed": False, "reason": "render.c2pa.cert and render.c2pa.key are not set"}
    from facedag.provenance.c2pa_sign import SigningConfig, sign_video

    ingredients = [{"title": Path(params.target.uri).name, "sha256": sha256_file(params.target.uri),
                    "role": "target", "uri": params.target.uri}]  # fmt: skip
    for ident, clips in source_clips(params, DOWNLOAD).items():
        ingredients += [{"title": f"{ident}: {Path(str(c['path'] or c['uri'])).name}", "sha256": c["sha256"],
                         "role": "source", "uri": c["uri"]} for c in clips if c.get("sha256")]  # fmt: skip
    # the parts of the provenance record known before signing (its output sha256 is not)
    summary = {"description": f"AI-generated face swap (facedag): {params.convert.swap_to!r} in place of "
                              f"{params.convert.replace!r}", "watermark": {"mark_id": mark_id},
               "params_sha256": params_sha256(params),
               "model": {"sha256": sha256_file(model) if model.is_file() else None}}  # fmt: skip
    signed = video.with_name(f"{video.stem}.signed{video.suffix}")
    try:
        result = sign_video(video, signed, SigningConfig(cert=Path(c2pa.cert), key=Path(c2pa.key), alg=c2pa.alg,
                                                         tsa_url=c2pa.tsa_url),
                            title="output.mp4", ingredients=ingredients, record=summary)  # fmt: skip
        os.replace(signed, video)
    except ValueError as exc:
        raise StageFailed(f"render.c2pa: {exc}") from None
    finally:
        signed.unlink(missing_ok=True)
    return {"signed": True, **result}


def run(params: Params) -> None:
    if not FRAMES.exists():
        raise StageFailed(f"{FRAMES} not found: run convert first")
    if not Path(params.target.uri).is_file():
        raise StageFailed(f"target {params.target.uri} not found")
    c2pa = params.render.c2pa
    if c2pa.cert is not None and c2pa.key is not None:  # before rendering: a wrong pin fails fast
        check_pins(c2pa.cert, c2pa.cert_sha256, "cert")
        check_pins(c2pa.key, c2pa.key_sha256, "key")
    out = fresh_dir(OUT)
    video = out / "output.mp4"
    try:
        with atomic_path(video) as tmp:
            info = render_video(FRAMES, params.target.uri, tmp, params.render, record_name="output.json")
            info["c2pa"] = sign(params, tmp, info["watermark"]["mark_id"])
    except Rejected as exc:
        raise StageFailed(f"{exc.reason}: {exc.message}") from None
    try:
        record = build_record(params, output=video, target=params.target.uri, model=model_path(params),
                              render_info=info)  # fmt: skip
    except ValueError as exc:
        raise StageFailed(str(exc)) from None
    atomic_write_json(out / "output.json", record)
    write_metrics(out, {"frames": info["frames"], "label": int(info["label"]), "audio": int(info["audio"] is not None),
                        "signed": int(info["c2pa"]["signed"]), "bytes": video.stat().st_size})  # fmt: skip
    label = "labelled" if info["label"] else "NOT labelled (render.label: false, recorded in output.json)"
    signed = "C2PA-signed" if info["c2pa"]["signed"] else "not C2PA-signed (render.c2pa not set)"
    print(f"[{STAGE}] {video} ({info['frames']} frames, {label}, watermark {info['watermark']['mark_id']}, {signed}); "
          f"provenance: {out / 'output.json'}", flush=True)


if __name__ == "__main__":
    stage_main(STAGE, run)
