"""convert on a real clip: RetinaFace, the real warp and blend, FFV1 through ffmpeg, PyAV reads.

The swap is a deterministic function (the colour-inverted face): it is not a model mock, it
makes every pasted pixel change, so that the compositing can be checked exactly.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from facedag.params import Convert
from facedag.sources.media import cut_clip, ffmpeg_exe, ffmpeg_input, iter_frames, probe
from facedag.swap.convert import convert_video, frame_rate
from facedag.swap.frames import decode_mask

FACE_FRAMES = 25  # 1 s of the demo target, with a face
BLANK_FRAMES = 10  # then a stretch with no face


def invert(faces: np.ndarray) -> np.ndarray:
    return 255 - faces


def make_target(demo: Path, out: Path, audio: bool = True) -> Path:
    """1 s of the demo target, then BLANK_FRAMES frames without a face, as H.264 (+ AAC)."""
    face_clip = out.with_name(out.stem + ".face.mp4")
    cut_clip(demo / "target.mp4", face_clip, 0.0, FACE_FRAMES / 25)
    frames = [f.image for f in iter_frames(face_clip)][:FACE_FRAMES]
    h, w = frames[0].shape[:2]
    ramp = np.linspace(40, 200, w, dtype=np.float32)[None, :, None]
    blank = np.broadcast_to(ramp, (h, w, 3)).astype(np.uint8)
    raw = b"".join(f.tobytes() for f in frames) + blank.tobytes() * BLANK_FRAMES
    seconds = (FACE_FRAMES + BLANK_FRAMES) / 25
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-framerate", "25", "-i", "pipe:0"]  # fmt: skip
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", "aac"]
    cmd += ["-c:v", "libx264", "-crf", "12", "-pix_fmt", "yuv420p", "-g", "10", ffmpeg_input(out)]
    subprocess.run(cmd, input=raw, check=True, timeout=120)
    return out


@pytest.fixture(scope="module")
def target(demo_sources: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_target(demo_sources, tmp_path_factory.mktemp("convert") / "target.mp4")


def test_convert_swaps_inside_the_mask_only_and_passes_faceless_frames(target, tmp_path):
    results = []
    stats = convert_video(target, tmp_path / "frames.mkv", invert, 64, Convert(batch=4),
                          table=tmp_path / "frames.parquet", on_frame=results.append, keep_alpha=True)  # fmt: skip
    n = FACE_FRAMES + BLANK_FRAMES
    info = probe(tmp_path / "frames.mkv")
    assert info.codec == "ffv1" and (info.width, info.height) == (640, 480)
    assert frame_rate(tmp_path / "frames.mkv") == frame_rate(target) == 25
    out = [f.image for f in iter_frames(tmp_path / "frames.mkv")]
    src = [f.image for f in iter_frames(target)]
    assert len(out) == len(src) == n == stats.frames == len(results)
    assert [r.index for r in results] == list(range(n))
    assert stats.frames_swapped >= FACE_FRAMES - 2  # the face is found in (nearly) every face frame
    changed_inside = []
    for a, b, r in zip(src, out, results, strict=True):
        outside = r.alpha == 0
        assert np.array_equal(a[outside], b[outside])  # lossless and untouched, bit for bit
        if r.swapped:
            inside = r.alpha > 0.9
            assert inside.sum() > 1000
            changed_inside.append(np.abs(a[inside].astype(int) - b[inside].astype(int)).mean())
    assert min(changed_inside) > 40  # inverted: every masked pixel moved a lot
    for r in results[FACE_FRAMES:]:
        assert not r.swapped and r.mask_area == 0
    table = pd.read_parquet(tmp_path / "frames.parquet")
    assert list(table["frame"]) == list(range(n))
    assert list(table["swapped"]) == [r.swapped for r in results]
    assert list(table["mask_area"]) == [r.mask_area for r in results]
    swapped = table[table["swapped"]]
    assert swapped["score"].min() > 0.8 and swapped["bbox"].notna().all()
    assert table[~table["swapped"]]["score"].isna().all()
    # the stored blend mask is the alpha that was pasted (8 bits), and none where nothing was
    for row, r in zip(table.itertuples(), results, strict=True):
        mask = decode_mask(None if row.mask_box is None else list(row.mask_box), row.mask, 480, 640)
        if not r.swapped:
            assert mask is None
            continue
        assert np.abs(mask.astype(np.float32) / 255.0 - r.alpha).max() <= 0.5 / 255 + 1e-6
        assert int((mask > 0).sum()) <= r.mask_area
    assert stats.metrics()["frames_swapped"] == int(table["swapped"].sum())


def test_colour_modes_and_x264rgb_run_and_stay_lossless_outside(target, tmp_path):
    for mode, codec in (("avg", "x264rgb"), ("hist", "ffv1"), ("none", "ffv1")):
        results = []
        path = tmp_path / f"{mode}.mkv"
        convert_video(target, path, invert, 64, Convert(colour=mode, codec=codec, batch=16),
                      on_frame=results.append, keep_alpha=True)  # fmt: skip
        out = [f.image for f in iter_frames(path)]
        src = [f.image for f in iter_frames(target)]
        assert len(out) == len(src)
        k = next(i for i, r in enumerate(results) if r.swapped)
        assert np.array_equal(src[k][results[k].alpha == 0], out[k][results[k].alpha == 0])


def test_a_bad_swap_output_is_refused(target, tmp_path):
    with pytest.raises(ValueError, match="swap returned"):
        convert_video(target, tmp_path / "x.mkv", lambda f: f[:, :10], 64, Convert(batch=2))


def test_mesh_landmarker_aligns_and_masks_every_face_by_its_mesh(target, tmp_path):
    """With the mesh landmarker, each target face is aligned and masked by its own mesh: the
    mask follows the oval (larger than the five-point hull), and pixels
    outside it stay bit-exact."""
    areas = {}
    for kind, landmarker in (("hull", "retinaface"), ("mesh", "mediapipe")):
        results = []
        stats = convert_video(target, tmp_path / f"{kind}.mkv", invert, 64, Convert(batch=4, mask=kind),
                              on_frame=results.append, keep_alpha=True, landmarker=landmarker)  # fmt: skip
        areas[kind] = np.mean([r.mask_area for r in results if r.swapped])
        if landmarker == "mediapipe":
            assert stats.faces_mesh == stats.faces_swapped >= FACE_FRAMES - 2
            out = [f.image for f in iter_frames(tmp_path / f"{kind}.mkv")]
            src = [f.image for f in iter_frames(target)]
            for a, b, r in zip(src, out, results, strict=True):
                assert np.array_equal(a[r.alpha == 0], b[r.alpha == 0])
        else:
            assert stats.faces_mesh == 0
    assert areas["mesh"] > areas["hull"]
