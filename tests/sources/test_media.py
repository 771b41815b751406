"""facedag.sources.media on good and bad inputs: probe, streamed decoding, sampling, cuts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facedag.records import Rejected
from facedag.sources.media import Frame, cut_clip, ffmpeg_exe, iter_frames, probe, scan_frames
from tests import badinputs as bad


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("media")
    made = {name: fn(folder) for name, (fn, _expected) in bad.ALL.items()}
    made["long"] = bad.good(folder, "long.mp4", dur=2.0, rate=25)
    return made


def test_ffmpeg_exe_runs() -> None:
    assert ffmpeg_exe()
    bad.ffmpeg("-version")


@pytest.mark.parametrize("name", [n for n, (_, e) in bad.ALL.items() if e])
def test_probe_rejects_bad_inputs(inputs: dict, name: str) -> None:
    with pytest.raises(Rejected) as err:
        probe(inputs[name])
    assert err.value.reason == bad.ALL[name][1]


def test_probe_missing_file(tmp_path) -> None:
    with pytest.raises(Rejected) as err:
        probe(tmp_path / "nope.mp4")
    assert err.value.reason == "not_found"


def test_probe_too_short(inputs: dict) -> None:
    with pytest.raises(Rejected) as err:
        probe(inputs["no_audio"], min_duration=5.0)
    assert err.value.reason == "too_short"


def test_probe_good_and_awkward(inputs: dict) -> None:
    info = probe(inputs["long"])
    assert (info.width, info.height, info.fps, info.codec, info.has_audio) == (160, 120, 25.0, "h264", True)
    assert abs(info.duration - 2.0) < 0.05 and info.frames == 50
    rot = probe(inputs["rotated"])
    assert (rot.rotation, rot.width, rot.height, rot.coded_size) == (90, 120, 160, (160, 120))
    assert probe(inputs["no_audio"]).has_audio is False
    assert probe(inputs["ten_bit"]).pix_fmt.startswith("yuv420p10")
    assert (probe(inputs["odd_size"]).width, probe(inputs["odd_size"]).height) == (321, 241)
    assert probe(inputs["name_leading_dash"]).duration > 0.5


def test_iter_frames_every_frame_rgb(inputs: dict) -> None:
    frames = list(iter_frames(inputs["long"]))
    assert len(frames) == 50
    first = frames[0]
    assert isinstance(first, Frame) and first.image.dtype == np.uint8 and first.image.shape == (120, 160, 3)
    assert [f.index for f in frames] == list(range(50))
    assert np.allclose(np.diff([f.time for f in frames]), 0.04, atol=1e-3)


def test_iter_frames_rotated_upright(inputs: dict) -> None:
    frame = next(iter(iter_frames(inputs["rotated"])))
    assert frame.image.shape == (160, 120, 3)


def test_iter_frames_gray_tenbit_odd(inputs: dict) -> None:
    for name, shape in (("grayscale", (120, 160, 3)), ("ten_bit", (120, 160, 3)), ("odd_size", (241, 321, 3))):
        frames = list(iter_frames(inputs[name], fps=5))
        assert frames and frames[0].image.shape == shape and frames[0].image.dtype == np.uint8


def test_iter_frames_sampling_by_time(inputs: dict) -> None:
    times = [f.time for f in iter_frames(inputs["long"], fps=5)]
    assert times == pytest.approx([0.2 * k for k in range(10)], abs=1e-3)
    # VFR: 10 fps for 0.7 s then 30 fps; sampling at 10 fps gives one frame per 0.1 s throughout
    vfr = [f.time for f in iter_frames(inputs["vfr"], fps=10)]
    assert np.allclose(np.diff(vfr), 0.1, atol=0.034) and len(vfr) == 16


def test_iter_frames_start_end(inputs: dict) -> None:
    frames = list(iter_frames(inputs["long"], start=0.5, end=1.0))
    assert len(frames) == 12  # 0.52, 0.56, ..., 0.96 (0.5 falls between frames)
    assert frames[0].time == pytest.approx(0.52, abs=0.021) and frames[-1].time < 1.0
    sampled = [f.time for f in iter_frames(inputs["long"], fps=4, start=1.0, end=2.0)]
    # the first frame at or after each point of the 0.25 s grid (frames are 0.04 s apart)
    assert sampled == pytest.approx([1.0, 1.28, 1.52, 1.76], abs=1e-3)


def test_iter_frames_rejects_bad(inputs: dict) -> None:
    with pytest.raises(Rejected) as err:
        list(iter_frames(inputs["audio_only"]))
    assert err.value.reason == "no_video_stream"


def test_cut_clip_is_exact(inputs: dict, tmp_path) -> None:
    out = tmp_path / "cut -x.mp4"
    cut_clip(inputs["long"], out, 0.4, 1.2)
    info = probe(out)
    assert info.frames == 20 and abs(info.duration - 0.8) < 0.03
    src = {round(f.time, 2): f.image for f in iter_frames(inputs["long"], start=0.4, end=1.2)}
    cut = list(iter_frames(out))
    assert len(cut) == 20
    # the first frame of the cut is the source frame at 0.4 s (up to coding noise)
    diffs = {t: np.abs(cut[0].image.astype(int) - img.astype(int)).mean() for t, img in src.items()}
    assert min(diffs, key=diffs.get) == pytest.approx(0.4)
    with pytest.raises(Rejected) as err:
        cut_clip(inputs["long"], tmp_path / "e.mp4", 1.0, 1.0)
    assert err.value.reason == "empty_cut"


def _with_bframes(folder: Path) -> Path:
    """2 s at 25 fps, x264 with B-frames (as cameras and video sites encode)."""
    out = folder / "bframes.mp4"
    bad.ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=2", "-c:v", "libx264", "-preset",
               "veryfast", "-bf", "3", "-g", "50", "-pix_fmt", "yuv420p", f"file:{out}")  # fmt: skip
    return out


def test_scan_frames_reference_only_small_and_sampled(tmp_path) -> None:
    src = _with_bframes(tmp_path)
    every = list(scan_frames(src, width=128, sample_fps=2.0, reference_only=False))
    refs = list(scan_frames(src, width=128, sample_fps=2.0, reference_only=True))
    assert len(every) == 50 and 10 <= len(refs) < 40  # the B-frames were never decoded
    assert [f.number for f in every] == list(range(50))
    assert all(f.number == round(f.time * 25) for f in refs)
    for frames in (every, refs):
        assert all(f.small.shape == (96, 128, 3) for f in frames)
        full = [f for f in frames if f.full is not None]
        assert all(f.full.shape == (240, 320, 3) for f in full)
        assert len(full) == 4 and full[0].time == 0.0  # one per half second: at or just after 0, .5, 1, 1.5
        assert all(abs(f.time - k * 0.5) < 0.15 for k, f in enumerate(full))
    rgb = next(iter_frames(src)).image  # the small image is the same picture, in BGR
    assert np.abs(every[0].small[..., ::-1].astype(int).mean() - rgb.astype(int).mean()) < 4


def test_scan_frames_rotated_and_damaged(inputs: dict) -> None:
    frames = list(scan_frames(inputs["rotated"], width=60, sample_fps=1.0))
    assert frames[0].small.shape == (80, 60, 3) and frames[0].full.shape == (160, 120, 3)


def test_scan_frames_reads_past_damage(tmp_path) -> None:
    src = bad.corrupt_middle(tmp_path)
    frames = list(scan_frames(src, width=80, sample_fps=2.0, reference_only=False))
    assert frames[-1].time > 1.8  # on past the damaged middle to the end
    with pytest.raises(Rejected) as err:
        list(scan_frames(bad.truncated(tmp_path)))
    assert err.value.reason == "undecodable"
