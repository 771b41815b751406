"""A small, real training set without footage, for tests and benchmarks: the demo's portraits
aligned a few ways. The train stage never uses it (so it is none of its code deps)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facedag.faces.align import align_face, aligned_matrix, loose_crop, transform_points
from facedag.faces.detect import FaceDetector
from facedag.faces.landmarkers import LANDMARKERS
from facedag.faces.measure import blendshape_expression
from facedag.sources.demo import load_portrait
from facedag.tables import ALIGNED_SCHEMA, FEATURES, TableWriter, encode_image


def write_portrait_dataset(path: str | os.PathLike[str], portrait: str, face_size: int, tracks: int = 3,
                           per_track: int = 6, seed: int = 0, first_track: int = 0) -> int:
    """A small, real dataset.parquet without footage (tests and benchmarks): one of the demo's
    public-domain portraits (facedag.sources.demo.load_portrait), its landmarks found by RetinaFace and its
    mesh by MediaPipe, then
    aligned `tracks` x `per_track` times with jittered landmarks (roll +-8 degrees, scale +-6 %,
    shift +-4 % of the eye distance) and a brightness change per track, each track its own clip,
    numbered from `first_track` (a holdout.parquet beside takes other numbers). Returns the row
    count.
    """
    image, landmarks, mesh, blend = _portrait_landmarks(portrait, face_size)
    rng = np.random.default_rng(seed)
    eye_d = float(np.hypot(*(landmarks[1] - landmarks[0])))
    centre = landmarks.mean(0)
    h, w = image.shape[:2]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with TableWriter(out, ALIGNED_SCHEMA) as writer:
        for track in range(first_track, first_track + tracks):
            gain = 1.0 + 0.12 * (track - first_track - (tracks - 1) / 2)
            for k in range(per_track):
                a = np.radians(rng.uniform(-8, 8))
                sc = 1.0 + rng.uniform(-0.06, 0.06)
                rot = sc * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
                shift = rng.uniform(-0.04, 0.04, 2) * eye_d
                lm = (landmarks - centre) @ rot.T + centre + shift
                m = aligned_matrix(lm, face_size)
                face_mesh = transform_points((mesh - centre) @ rot.T + centre + shift, m)
                face = np.clip(align_face(image, m, face_size).astype(np.float32) * gain, 0, 255).astype(np.uint8)
                x0, y0 = lm.min(0)
                x1, y1 = lm.max(0)
                writer.add(face=f"{portrait}#{track}#{k}", clip=f"{portrait}_{track:04d}.mp4", frame=k, time=k / 25.0,
                           frame_width=w, frame_height=h, track=track, score=0.99,
                           bbox=[float(x0 - eye_d), float(y0 - eye_d), float(x1 + eye_d), float(y1 + eye_d)],
                           landmarks=[float(v) for v in lm.ravel()], face_size=face_size,
                           matrix=[float(v) for v in m.ravel()], **{f: 0.0 for f in FEATURES},
                           image=encode_image(face, "png"), image_format="png", landmarks_from="mesh",
                           mesh=face_mesh.ravel().tolist(), blendshapes=blend.tolist(),
                           smile=blendshape_expression(blend)["smile"])
                n += 1
    return n


_LANDMARKS: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}


def _portrait_landmarks(portrait: str, face_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(image, five points, 478-point mesh in frame px, blendshapes) of a portrait, found once."""
    if portrait not in _LANDMARKS:
        image = load_portrait(portrait)
        dets = FaceDetector(threads=1).detect(image)
        if not dets:
            raise ValueError(f"no face found in portrait {portrait!r}")
        five = np.asarray(dets[0].landmarks, np.float64)
        crop, cm = loose_crop(image, five, face_size)
        with LANDMARKERS.get("mediapipe")() as landmarker:
            found = landmarker(crop, cm, five)
        if not found.dense or found.blendshapes is None:
            raise ValueError(f"the mesh landmarker found no face in portrait {portrait!r}")
        _LANDMARKS[portrait] = (image, five, found.points, found.blendshapes)
    return _LANDMARKS[portrait]
