"""`mediapipe`: MediaPipe Face Landmarker, 478 points, head pose and 52 blendshapes per face.

The model (facedag.faces.mesh.model_path, sha256-checked) runs in IMAGE mode on each face's
loose crop, so every face is landmarked on its own and the result does not depend on the
order faces come in (VIDEO mode tracks between calls and would make a resumed stage differ
from an uninterrupted one). It may find two faces in a crop that also shows a neighbour: the
one whose five points lie nearest the detector's is taken. Where it finds none (a face that
fills the crop to its edges, a profile it cannot fit), the crop is tried once more inside a
black border half its size each side; then the detector's five points are returned
(`source == "five_points"`), and align records which.

Pose is the canonical mesh fitted to the 478 points with depth (facedag.faces.mesh.head_pose);
expression is the blendshapes. About 20 ms per face on one core.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import numpy as np

from facedag.faces.align import invert_affine, transform_points
from facedag.faces.landmarkers import MESH, FaceLandmarks, five_point_landmarks
from facedag.faces.mesh import BLENDSHAPES, POINTS, five_points, head_pose, model_path

PAD = 0.5  # the retry's border, a fraction of the crop's side


@contextmanager
def _quiet_stderr() -> Any:
    """Silence fd 2 while MediaPipe sets up: its C++ side logs a dozen lines per model load
    that say nothing to a user (and would be read as errors in a stage's log)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class Landmarker:
    def __init__(self) -> None:
        from mediapipe.tasks.python import BaseOptions
        from mediapipe.tasks.python.vision import FaceLandmarker, FaceLandmarkerOptions, RunningMode

        options = FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(model_path())),
            running_mode=RunningMode.IMAGE, num_faces=2, output_face_blendshapes=True,
            min_face_detection_confidence=0.3, min_face_presence_confidence=0.3,
        )  # fmt: skip
        with _quiet_stderr():
            self._model = FaceLandmarker.create_from_options(options)

    def __enter__(self) -> Landmarker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()

    def close(self) -> None:
        self._model.close()

    def __call__(self, crop: np.ndarray, crop_matrix: np.ndarray, points: np.ndarray) -> FaceLandmarks:
        cm = np.asarray(crop_matrix, dtype=np.float64).reshape(2, 3)
        want = transform_points(np.asarray(points, dtype=np.float64).reshape(5, 2), cm)  # crop px
        found = self._landmark(np.ascontiguousarray(crop), want)
        if found is None:
            pad = max(1, round(PAD * crop.shape[0]))
            padded = np.pad(crop, ((pad, pad), (pad, pad), (0, 0)))
            found = self._landmark(padded, want + pad)
            if found is not None:
                found = (found[0] - (pad, pad, 0), found[1])
        if found is None:
            return five_point_landmarks(points)
        mesh_crop, blend = found
        # crop px -> frame px: the crop matrix is a scale and a shift, so depth scales as x
        inv = invert_affine(cm)
        xy = transform_points(mesh_crop[:, :2], inv)
        z = mesh_crop[:, 2] * float(np.hypot(*inv[:, 0]))
        mesh = np.column_stack([xy, z])
        return FaceLandmarks(points=xy, five=five_points(xy), source=MESH, pose=head_pose(mesh), blendshapes=blend)

    def _landmark(self, image: np.ndarray, want: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(478 x (x, y, z) in image px, 52 blendshapes) of the face nearest `want`, or None."""
        import mediapipe as mp

        h, w = image.shape[:2]
        result = self._model.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=image))
        best: tuple[float, int] | None = None
        meshes = []
        for i, marks in enumerate(result.face_landmarks):
            if len(marks) != POINTS:
                continue
            # normalised coordinates: x * width is the continuous position; pixel centres sit at +0.5
            pts = np.array([(p.x * w - 0.5, p.y * h - 0.5, p.z * w) for p in marks], dtype=np.float64)
            meshes.append((i, pts))
            err = float(np.abs(five_points(pts[:, :2]) - want).mean())
            if best is None or err < best[0]:
                best = (err, len(meshes) - 1)
        if best is None:
            return None
        i, pts = meshes[best[1]]
        eye = float(np.hypot(*(want[1] - want[0])))
        if best[0] > max(0.5 * eye, 2.0):  # a face, but not the detector's
            return None
        blend = np.zeros(len(BLENDSHAPES), np.float32)
        if result.face_blendshapes and i < len(result.face_blendshapes):
            for k, cat in enumerate(result.face_blendshapes[i][: len(BLENDSHAPES)]):
                blend[k] = cat.score
        return pts, blend
