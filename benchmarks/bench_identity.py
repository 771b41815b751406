"""Identity (SFace): the cost of an embedding, and of telling people apart in extract.

Figures (see benchmarks/common.py for the format):
- `sface_ms_per_face`: milliseconds per face of facedag.faces.identity.Embedder (OpenCV's classic
  DNN engine, batches of 8) on real aligned faces of ../shared/samples/video_01.mp4 (five
  people), beside onnxruntime on the same file and faces (batch 1: the file's input is fixed
  to one face; its 29 stray weight inputs are fed zeros, which gives the same embedding),
  both at the same thread count.
- `extract_identity_fps`: frames per second of extract's per-frame work on video_01.mp4 with
  `extract.policy: identity` (every face tracked, a few per track embedded), beside policy
  `largest` (one face followed) in the same run (benchmarks.bench_extract.extract_pass);
  min_size 20 so that all five people are found.

Best of `REPEATS` passes each, interleaved, as the machine is shared.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import SAMPLES, figure

CLIP = SAMPLES / "video_01.mp4"
REPEATS = 3


def _faces(n: int = 32) -> list[np.ndarray]:
    from facedag.faces.detect import FaceDetector
    from facedag.faces.identity import align_112
    from facedag.sources.media import iter_frames

    det, out = FaceDetector(min_size=20), []
    for frame in iter_frames(CLIP, fps=10):
        out += [align_112(frame.image, d.landmarks) for d in det.detect(frame.image)]
        if len(out) >= n:
            break
    return out[:n]


def _ort_session(threads: int):
    import onnxruntime as ort

    from facedag.faces.identity import model_path

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(str(model_path()), opts, providers=["CPUExecutionProvider"])


def run() -> dict[str, dict]:
    if not CLIP.exists():
        print(f"bench_identity: {CLIP} is absent, no figures")
        return {}
    import cv2

    from benchmarks.bench_extract import extract_pass
    from facedag.faces.detect import default_threads
    from facedag.faces.identity import Embedder
    from facedag.params import Extract

    threads = default_threads()
    faces = _faces()
    embedder = Embedder(batch=8, threads=threads)
    session = _ort_session(threads)
    stray = {i.name: np.zeros(i.shape, np.float32) for i in session.get_inputs()[1:]}
    blobs = [cv2.dnn.blobFromImage(f, 1.0, (112, 112), (0, 0, 0), swapRB=False) for f in faces]
    embedder.embed(faces[:8])
    session.run(None, {"data": blobs[0], **stray})
    best_dnn = best_ort = float("inf")
    for _ in range(REPEATS):
        t = time.perf_counter()
        embedder.embed(faces)
        best_dnn = min(best_dnn, (time.perf_counter() - t) / len(faces))
        t = time.perf_counter()
        for b in blobs:
            session.run(None, {"data": b, **stray})
        best_ort = min(best_ort, (time.perf_counter() - t) / len(faces))

    who, largest = Extract(policy="identity", min_size=20), Extract(policy="largest", min_size=20)
    extract_pass(CLIP, who)  # warm up
    best_who = best_largest = 0.0
    frames = faces_who = faces_largest = 0
    for _ in range(REPEATS):
        frames, faces_who, dt = extract_pass(CLIP, who)
        best_who = max(best_who, frames / dt)
        frames, faces_largest, dt = extract_pass(CLIP, largest)
        best_largest = max(best_largest, frames / dt)
    return {
        "sface_ms_per_face": figure(1000 * best_dnn, "ms/face", "onnxruntime, batch 1", 1000 * best_ort,
                                    faces=len(faces), threads=threads, batch=8),
        "extract_identity_fps": figure(best_who, "frames/s", "policy largest", best_largest, clip=CLIP.name,
                                       frames=frames, faces=faces_who, faces_largest=faces_largest,
                                       note=f"extract+align per-frame work, min_size 20, best of {REPEATS}"),
    }
