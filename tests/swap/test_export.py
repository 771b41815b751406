"""export on a real conversion: RetinaFace, the real warp and blend, FFV1 through ffmpeg, PyAV
reads, PNGs read back from disk, the real watermark detector.

The swap is the colour-inverted face (tests/swap/test_convert.py): every pasted pixel changes,
so the masks can be checked against the pixels that changed, both ways.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from facedag.params import Convert, Export
from facedag.provenance.watermark import METHOD, detect_frames, new_mark_id
from facedag.records import Rejected, Rejections, sha256_file
from facedag.sources.media import ffmpeg_exe, ffmpeg_input, iter_frames
from facedag.swap.convert import convert_video
from facedag.swap.export import composite, export_video, folders, read_png, unblend
from tests.swap.test_convert import BLANK_FRAMES, FACE_FRAMES, invert, make_target

N = FACE_FRAMES + BLANK_FRAMES


def _record(target: Path) -> dict:
    """The parts of render's output.json export reads."""
    return {"watermark": {"mark_id": new_mark_id(), "method": METHOD},
            "target": {"uri": str(target), "sha256": sha256_file(target), "licence": "public-domain"},
            "swap": {"swap_to": "src", "replace": "dst"}, "model": {"sha256": "0" * 64, "step": 12},
            "consent": {"target": {"basis": "licence"}}}  # fmt: skip


@pytest.fixture(scope="module")
def conversion(demo_sources: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("export")
    target = make_target(demo_sources, d / "target.mp4")
    convert_video(target, d / "frames.mkv", invert, 64, Convert(batch=4), table=d / "frames.parquet")
    return {"dir": d, "target": target, "frames": d / "frames.mkv", "table": d / "frames.parquet",
            "record": _record(target)}  # fmt: skip


@pytest.fixture(scope="module")
def exported(conversion: dict) -> dict:
    out = conversion["dir"] / "out"
    rejections = Rejections(out, "export")
    stats = export_video(conversion["target"], conversion["frames"], conversion["table"], conversion["record"], out,
                         Export(enabled=True), "clip", rejections)  # fmt: skip
    rejections.close()
    dirs = folders(out, "clip")
    names = [f"{i:04d}.png" for i in range(N)]
    return {"out": out, "stats": stats, "dirs": dirs,
            "real": [read_png(dirs["original"] / n) for n in names],
            "fake": [read_png(dirs["manipulated"] / n) for n in names],
            "mask": [read_png(dirs["masks"] / n) for n in names]}  # fmt: skip


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2)


def test_layout_and_counts(exported):
    stats, dirs = exported["stats"], exported["dirs"]
    assert stats.frames == stats.exported == N and stats.rejected == 0
    assert FACE_FRAMES - 2 <= len(stats.swapped) <= FACE_FRAMES and stats.patches == len(stats.swapped)
    out = exported["out"]
    assert dirs["original"] == out / "original_sequences/facedag/raw/images/clip"
    assert dirs["masks"] == out / "manipulated_sequences/facedag/masks/images/clip"
    assert sorted(p.name for p in dirs["manipulated"].iterdir()) == [f"{i:04d}.png" for i in range(N)]
    assert all(m.ndim == 2 and m.dtype == np.uint8 for m in exported["mask"])
    assert (exported["out"] / "rejected.jsonl").read_text() == ""


@pytest.fixture(scope="module")
def lossless(conversion: dict) -> list[np.ndarray]:
    return [f.image for f in iter_frames(conversion["frames"])]


@pytest.fixture(scope="module")
def noise(exported: dict, lossless: list[np.ndarray]) -> int:
    """The noise is the mark: the exported swapped frames against convert's lossless ones, measured
    (3 levels on the demo target; the mark is 1 level on flat areas, up to 3 on texture)."""
    value = max(int(_diff(a, b).max()) for a, b in zip(exported["fake"], lossless, strict=True))
    assert 1 <= value <= 12  # the mark is there, and small
    return value


def _uncovered(d: np.ndarray, m: np.ndarray, noise: int) -> bool:
    """Whether some pixel differs beyond the noise outside the mask."""
    return bool(((d > noise) & (m == 0)).any())


def test_masks_cover_exactly_the_changed_pixels(exported, lossless, noise):
    """Every pixel where the swapped frame differs from the real one by more than the mark's noise
    is under the mask, and under the mask's opaque part (alpha > 0.5) the face changed (inverted)
    nearly everywhere."""
    real, fake, masks, swapped = exported["real"], exported["fake"], exported["mask"], exported["stats"].swapped
    unswapped = [i for i in range(N) if i not in swapped]
    assert len(unswapped) >= BLANK_FRAMES and all(not masks[i].any() for i in unswapped)
    for i in unswapped:
        assert _diff(real[i], fake[i]).max() <= noise
    for i in swapped:
        d, m = _diff(real[i], fake[i]), masks[i]
        assert m.sum() > 255 * 1000
        assert not _uncovered(d, m, noise), f"frame {i}: changed pixels outside the mask"
        assert np.array_equal(real[i][m == 0], lossless[i][m == 0])  # before the mark: bit-exact outside
        opaque = m > 127
        assert (d[opaque] > noise).mean() > 0.97, f"frame {i}: the mask claims pixels that did not change"


def test_a_shifted_mask_fails_the_same_check(exported, noise):
    """The check above can fail: the same masks moved by 12 px (or cut to their opaque part) leave
    changed pixels outside."""
    for i in exported["stats"].swapped:
        d, m = _diff(exported["real"][i], exported["fake"][i]), exported["mask"][i]
        assert _uncovered(d, np.roll(m, 12, axis=1), noise)
        assert _uncovered(d, np.where(m > 127, m, 0), noise)


def test_the_mark_reads_back_from_the_exported_frames(exported, conversion):
    found = detect_frames(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in exported["fake"])
    assert found.found and found.mark_id == conversion["record"]["watermark"]["mark_id"]
    assert not detect_frames(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in exported["real"]).found


def test_patches_composite_back_into_the_swapped_frame(exported, noise):
    dirs = exported["dirs"]
    transforms = json.loads((dirs["patches"] / "transforms.json").read_text())
    assert transforms["space"] == "frame" and [p["frame"] for p in transforms["patches"]] == exported["stats"].swapped
    for entry in transforms["patches"]:
        i = entry["frame"]
        patch = read_png(dirs["patches"] / entry["file"])
        (x0, y0), (w, h) = entry["offset"], entry["size"]
        assert patch.shape == (h, w, 4)
        assert np.array_equal(patch[..., 3], exported["mask"][i][y0:y0 + h, x0:x0 + w])  # the matte is the mask
        back = composite(exported["real"][i], patch, (x0, y0))
        matte = np.zeros(back.shape[:2], bool)
        matte[y0:y0 + h, x0:x0 + w] = patch[..., 3] > 0
        # under the matte: the swapped frame (marked) within one level (the 8-bit matte) where the matte is
        # at least half, but where the mark pushed a face near 255 (or 0) beyond what an 8-bit patch can
        # reach through the blend (1.2 % of those pixels here, an inverted face); under a faint edge the
        # blend cannot reach all of the mark either (alpha 1/255 moves the plate by one level at most);
        # both within the mark's amplitude. Elsewhere the plate, exactly.
        d = _diff(back, exported["fake"][i])
        half = np.zeros_like(matte)
        half[y0:y0 + h, x0:x0 + w] = patch[..., 3] >= 128
        assert (d[half] <= 1).mean() > 0.97 and d[matte].max() <= noise + 1
        assert np.array_equal(back[~matte], exported["real"][i][~matte])
        opaque = patch[..., 3] == 255
        assert np.array_equal(patch[..., :3][opaque], exported["fake"][i][y0:y0 + h, x0:x0 + w][opaque])
        # one face per frame here; its aligned square (64 px) lands on the patch
        (face,) = entry["faces"]
        m = np.array(face["aligned_to_frame"])
        cx, cy = m @ np.array([32.0, 32.0, 1.0])
        assert isinstance(face["track"], int) and x0 < cx < x0 + w and y0 < cy < y0 + h


def test_unblend_keeps_faint_edges_near_the_face_and_reproduces_the_blend():
    """Under a faint alpha the face is not determined by the blend; unblend picks the value nearest the
    opaque face's colour among those that reproduce it, where dividing by alpha would amplify rounding."""
    rng = np.random.default_rng(0)
    h, w = 40, 40
    real = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    face = np.full((h, w, 3), (200, 120, 60), np.uint8)
    ramp = np.clip(np.linspace(1.3, -0.3, w), 0, 1)[None, :].repeat(h, 0)
    alpha = np.round(ramp * 255).astype(np.uint8)
    a = alpha[..., None] / 255.0
    swapped = np.clip(real + a * (face.astype(float) - real) + 0.5, 0, 255).astype(np.uint8)
    got = unblend(real, swapped, alpha)
    patch = np.dstack([got, alpha])
    assert _diff(composite(real, patch, (0, 0)), swapped).max() <= 1
    seen = alpha > 0
    assert np.abs(got[seen].astype(int) - face[seen]).max() <= 3  # the face, even under a 1/255 alpha


def test_every_rejections_and_old_tables(conversion, tmp_path):
    """A stride exports every k-th frame; a frame whose mask is unreadable is rejected and the rest
    goes on; a table from before the matrices were recorded is refused by name for patches only."""
    table = pq.read_table(conversion["table"])
    masks = table.column("mask").to_pylist()
    k = next(i for i in range(5, N, 5) if masks[i])  # a swapped frame the stride exports
    masks[k] = b"not a png"
    bad = tmp_path / "bad.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index("mask"), "mask", pa.array(masks, pa.binary())), bad)
    rejections = Rejections(tmp_path / "out", "export")
    stats = export_video(conversion["target"], conversion["frames"], bad, conversion["record"], tmp_path / "out",
                         Export(enabled=True, every=5), "clip", rejections)  # fmt: skip
    rejections.close()
    expected = [i for i in range(0, N, 5) if i != k]
    names = sorted(p.name for p in folders(tmp_path / "out", "clip")["masks"].iterdir())
    assert names == [f"{i:04d}.png" for i in expected] and stats.exported == len(expected)
    rows = [json.loads(line) for line in (tmp_path / "out/rejected.jsonl").read_text().splitlines()]
    assert [(r["item"], r["stage"], r["reason"]) for r in rows] == [(f"clip/{k:04d}", "export", "mask_unreadable")]
    old = tmp_path / "old.parquet"
    pq.write_table(table.drop_columns(["face_tracks", "face_matrices"]), old)
    with pytest.raises(Rejected, match="face_matrices, face_tracks column"):
        export_video(conversion["target"], conversion["frames"], old, conversion["record"], tmp_path / "o2",
                     Export(enabled=True), "clip", Rejections(tmp_path / "o2", "export"))  # fmt: skip
    stats = export_video(conversion["target"], conversion["frames"], old, conversion["record"], tmp_path / "o3",
                         Export(enabled=True, patches=False, every=10), "clip",
                         Rejections(tmp_path / "o3", "export"))  # fmt: skip
    assert stats.exported == len(range(0, N, 10)) and stats.patches == 0
    assert not (folders(tmp_path / "o3", "clip")["patches"] / "transforms.json").exists()


def test_a_frame_the_table_lacks_is_rejected_and_the_rest_exported(conversion, tmp_path):
    short = tmp_path / "short.parquet"
    table = pq.read_table(conversion["table"])
    pq.write_table(table.slice(0, N - 1), short)
    rejections = Rejections(tmp_path / "out", "export")
    stats = export_video(conversion["target"], conversion["frames"], short, conversion["record"], tmp_path / "out",
                         Export(enabled=True, patches=False), "clip", rejections)  # fmt: skip
    rejections.close()
    assert stats.exported == N - 1 and stats.rejected == 1
    (row,) = [json.loads(line) for line in (tmp_path / "out/rejected.jsonl").read_text().splitlines()]
    assert row["item"] == f"clip/{N - 1:04d}" and row["reason"] == "frame_missing" and "table" in row["message"]


def test_frames_too_small_for_the_mark_are_rejected_not_exported_unmarked(tmp_path):
    """No synthetic frame leaves unmarked: a clip smaller than the mark's grid exports nothing."""
    clip = tmp_path / "tiny.mp4"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=32x24:rate=25:duration=0.2", "-pix_fmt", "yuv420p", ffmpeg_input(clip)],
                   check=True, timeout=60)  # fmt: skip
    convert_video(clip, tmp_path / "frames.mkv", invert, 64, Convert(batch=4), table=tmp_path / "frames.parquet")
    rejections = Rejections(tmp_path / "out", "export")
    record = {"watermark": {"mark_id": "0" * 12}}
    stats = export_video(clip, tmp_path / "frames.mkv", tmp_path / "frames.parquet", record, tmp_path / "out",
                         Export(enabled=True), "tiny", rejections)  # fmt: skip
    assert stats.frames == 5 and stats.exported == 0
    assert [r["reason"] for r in rejections.rows] == ["too_small_to_mark"] * 5
    assert not any(folders(tmp_path / "out", "tiny")["manipulated"].iterdir())
