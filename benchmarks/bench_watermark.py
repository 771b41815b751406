"""Watermark cost and invisibility on the 640x480 sample (../shared/samples/video_02.mp4, 17 s).

Figures (see benchmarks/common.py for the format):
- `watermark_fps`: frames per second of the loop render will run, PyAV decode as yuv420p +
  `Embedder.mark_y` on the Y plane, over the whole clip. Baseline, in the same run: the same
  loop without marking (decode only). `mark_only_fps` is the embedder alone (time inside mark_y).
- `verify_seconds`: `detect_file` on a 10 s marked clip (the first 10 s of the sample, marked,
  encoded with libx264 CRF 18 preset medium and a black box over a corner like the label): v1's
  reader and v2's, registration included. Baseline: decoding those 10 s alone (PyAV, Y plane of
  every frame), what any verify must pay. `ratio`: the two divided (goal <= 3). detect_file
  stops after 2 s when the mark it reads there is clear (`frames`: how many it read), so beside
  it: `full_read_seconds`, the same with `early=False` (all 10 s read and registered), and
  `unmarked_seconds`, the unmarked 10 s (read to the end after a look at 2 s that finds nothing:
  the slowest case), each with its ratio to decoding.
- `verify_reframed_seconds`: the same on that clip reframed to 9:16 (the middle 56 % of the
  width, scaled to 720x1280, CRF 28): registration has a scale and an offset to find here.
  Baseline: decoding that file alone. `full_read_seconds` as above.
- `watermark_psnr_db`: mean PSNR of the marked Y planes against the unmarked ones over the whole
  clip (`min_db`: the worst frame). Baseline: the PSNR that the CRF 18 encode of the same,
  unmarked 10 s costs on its own, to set the mark's change beside what render already does.
- `watermark_file_mb`: size of that marked 10 s clip. Baseline: the same 10 s encoded the same
  way (CRF 18, corner box) without the mark: x264 spends bits on the flipping mark.

Best of `REPEATS` passes each, interleaved, because the machine is shared.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from benchmarks.common import SAMPLES, figure

CLIP = SAMPLES / "video_02.mp4"
REPEATS = 3
VERIFY_SECONDS = 10.0
REFRAME = "crop=trunc(iw*0.56/2)*2:ih,scale=720:1280"  # the 9:16 reframe of a short-video feed
MARK_ID = "0123456789ab"
LABEL_BOX = "drawbox=x=iw*0.7:y=ih*0.9:w=iw*0.3:h=ih*0.1:color=black:t=fill"


def _planes(path: Path, limit: float = float("inf")) -> Iterator[np.ndarray]:
    """yuv420p frames of `path` as (H*3/2, W) uint8 arrays, for at most `limit` seconds."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if frame.time is not None and frame.time >= limit:
                break
            yield frame.to_ndarray(format="yuv420p")


def _embed_pass(path: Path, mark: bool) -> tuple[int, float, float]:
    """(frames, seconds for the whole loop, seconds inside mark_y)."""
    from facedag.provenance.watermark import Embedder

    embedder = None
    n, in_mark = 0, 0.0
    t = time.perf_counter()
    for planes in _planes(path):
        height = planes.shape[0] * 2 // 3
        if mark:
            embedder = embedder or Embedder(MARK_ID, planes.shape[1], height)
            t0 = time.perf_counter()
            embedder.mark_y(planes[:height], n)
            in_mark += time.perf_counter() - t0
        n += 1
    return n, time.perf_counter() - t, in_mark


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _mark_psnrs(path: Path) -> list[float]:
    from facedag.provenance.watermark import Embedder

    out, embedder = [], None
    for n, planes in enumerate(_planes(path)):
        height = planes.shape[0] * 2 // 3
        embedder = embedder or Embedder(MARK_ID, planes.shape[1], height)
        clean = planes[:height].copy()
        out.append(_psnr(embedder.mark_y(planes[:height], n), clean))
    return out


def _codec_psnr(coded: Path, src: Path) -> float:
    """Mean Y PSNR of the encoded `coded` against the first VERIFY_SECONDS of `src`."""
    values = [_psnr(a[: a.shape[0] * 2 // 3], b[: b.shape[0] * 2 // 3])
              for a, b in zip(_planes(coded), _planes(src, VERIFY_SECONDS), strict=True)]  # fmt: skip
    return float(np.mean(values))


def _encode(path: Path, dst: Path, mark: bool, box: bool) -> None:
    """The first VERIFY_SECONDS of `path` encoded like render (CRF 18, medium), marked or not, with
    or without a black box over a corner standing in for the label."""
    from facedag.provenance.watermark import Embedder
    from facedag.sources.media import ffmpeg_exe, ffmpeg_input

    proc = embedder = None
    for index, planes in enumerate(_planes(path, VERIFY_SECONDS)):
        height, width = planes.shape[0] * 2 // 3, planes.shape[1]
        if proc is None:
            label = [LABEL_BOX] if box else []
            cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "rawvideo",
                   "-pix_fmt", "yuv420p", "-s", f"{width}x{height}", "-r", "30000/1001", "-i", "pipe:0",
                   "-vf", ",".join([*label, "format=yuv420p"]), "-c:v", "libx264", "-crf", "18", "-preset", "medium",
                   ffmpeg_input(dst)]  # fmt: skip
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
            embedder = Embedder(MARK_ID, width, height) if mark else None
        if embedder is not None:
            embedder.mark_y(planes[:height], index)
        assert proc.stdin is not None
        proc.stdin.write(planes.tobytes())
    assert proc is not None and proc.stdin is not None
    proc.stdin.close()
    if proc.wait(timeout=300) != 0:
        raise RuntimeError(f"ffmpeg failed encoding {dst}")


def _decode_y(path: Path) -> int:
    """Decode `path` up to VERIFY_SECONDS and touch every Y plane, as detect_file does."""
    import av

    n = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if frame.time is not None and frame.time >= VERIFY_SECONDS:
                break
            np.asarray(frame.planes[0]).sum()
            n += 1
    return n


def run() -> dict[str, dict]:
    if not CLIP.exists():
        print(f"bench_watermark: {CLIP} is absent, no figures")
        return {}
    from facedag.provenance.watermark import detect_file
    from facedag.sources.media import ffmpeg_input, run_ffmpeg

    with tempfile.TemporaryDirectory(prefix="bench_watermark.") as tmp:
        work = Path(tmp)
        marked, unmarked, plain = work / "marked.mp4", work / "unmarked.mp4", work / "plain.mp4"
        _encode(CLIP, marked, mark=True, box=True)
        _encode(CLIP, unmarked, mark=False, box=True)
        _encode(CLIP, plain, mark=False, box=False)  # the codec's own loss, without the box
        reframed = work / "reframed.mp4"
        run_ffmpeg(["-i", ffmpeg_input(marked), "-vf", REFRAME, "-c:v", "libx264", "-crf", "28", "-an",
                    ffmpeg_input(reframed)], timeout=600, what="reframe")  # fmt: skip
        sizes = {"marked": marked.stat().st_size / 1e6, "unmarked": unmarked.stat().st_size / 1e6}
        codec_psnr = _codec_psnr(plain, CLIP)
        psnrs = _mark_psnrs(CLIP)

        _embed_pass(CLIP, mark=True)  # warm up: page cache, lazy imports
        best = {"mark": 0.0, "decode": 0.0, "mark_only": 0.0, "verify": float("inf"), "decode10": float("inf"),
                "verify_reframed": float("inf"), "decode_reframed": float("inf"), "verify_full": float("inf"),
                "verify_unmarked": float("inf"), "verify_reframed_full": float("inf")}  # fmt: skip
        timed = {"verify_full": (marked, False), "verify_unmarked": (unmarked, True),
                 "verify_reframed_full": (reframed, False)}  # fmt: skip
        frames = 0
        detection = reframed_detection = None
        for _ in range(REPEATS):
            frames, dt, in_mark = _embed_pass(CLIP, mark=True)
            best["mark"] = max(best["mark"], frames / dt)
            best["mark_only"] = max(best["mark_only"], frames / in_mark)
            n, dt, _ = _embed_pass(CLIP, mark=False)
            best["decode"] = max(best["decode"], n / dt)
            t = time.perf_counter()
            detection = detect_file(marked, max_seconds=VERIFY_SECONDS)
            best["verify"] = min(best["verify"], time.perf_counter() - t)
            t = time.perf_counter()
            decoded = _decode_y(marked)
            best["decode10"] = min(best["decode10"], time.perf_counter() - t)
            t = time.perf_counter()
            reframed_detection = detect_file(reframed, max_seconds=VERIFY_SECONDS)
            best["verify_reframed"] = min(best["verify_reframed"], time.perf_counter() - t)
            t = time.perf_counter()
            _decode_y(reframed)
            best["decode_reframed"] = min(best["decode_reframed"], time.perf_counter() - t)
            for name, (path, early) in timed.items():
                t = time.perf_counter()
                detect_file(path, max_seconds=VERIFY_SECONDS, early=early)
                best[name] = min(best[name], time.perf_counter() - t)
    assert detection is not None and reframed_detection is not None
    return {
        "watermark_fps": figure(
            best["mark"], "frames/s", "the same loop without marking (PyAV decode only)", best["decode"],
            clip=CLIP.name, frames=frames, size="640x480", mark_only_fps=round(best["mark_only"], 1),
            note=f"PyAV decode (yuv420p) + Embedder.mark_y per frame, best of {REPEATS}",
        ),
        "verify_seconds": figure(
            best["verify"], "s", f"decoding the same {VERIFY_SECONDS:g} s alone (PyAV, Y planes)", best["decode10"],
            frames=detection.frames, decoded_frames=decoded, found=detection.found,
            mark_ok=detection.mark_id == MARK_ID, score=detection.score, threshold=detection.threshold,
            bit_errors=detection.bit_errors, method=detection.method, ratio=round(best["verify"] / best["decode10"], 2),
            full_read_seconds=round(best["verify_full"], 3),
            full_read_ratio=round(best["verify_full"] / best["decode10"], 2),
            unmarked_seconds=round(best["verify_unmarked"], 3),
            unmarked_ratio=round(best["verify_unmarked"] / best["decode10"], 2),
            note=f"detect_file (v1 + v2 with registration; stops at 2 s on a clear mark) on {VERIFY_SECONDS:g} s of "
                 f"{CLIP.name} marked, CRF 18 + corner box, best of {REPEATS}",
        ),
        "verify_reframed_seconds": figure(
            best["verify_reframed"], "s", f"decoding the same reframed {VERIFY_SECONDS:g} s alone (PyAV, Y planes)",
            best["decode_reframed"], size="720x1280", found=reframed_detection.found,
            frames=reframed_detection.frames, mark_ok=reframed_detection.mark_id == MARK_ID,
            score=reframed_detection.score,
            bit_errors=reframed_detection.bit_errors, registration=reframed_detection.registration,
            ratio=round(best["verify_reframed"] / best["decode_reframed"], 2),
            full_read_seconds=round(best["verify_reframed_full"], 3),
            full_read_ratio=round(best["verify_reframed_full"] / best["decode_reframed"], 2),
            note=f"detect_file on the marked {VERIFY_SECONDS:g} s reframed to 9:16 ({REFRAME}, CRF 28), "
                 f"best of {REPEATS}",
        ),
        "watermark_psnr_db": figure(
            float(np.mean(psnrs)), "dB", f"the CRF 18 encode of the same unmarked {VERIFY_SECONDS:g} s (Y PSNR)",
            codec_psnr, min_db=round(min(psnrs), 3), frames=len(psnrs),
            note="marked vs unmarked Y plane per frame, mean over the clip",
        ),
        "watermark_file_mb": figure(
            sizes["marked"], "MB", f"the same {VERIFY_SECONDS:g} s encoded the same way without the mark",
            sizes["unmarked"], ratio=round(sizes["marked"] / sizes["unmarked"], 3),
            note="libx264 CRF 18 preset medium with the corner box: the bits the flipping mark costs",
        ),
    }  # fmt: skip


def main() -> int:
    for key, fig in run().items():
        print(key, json.dumps(fig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
