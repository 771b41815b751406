"""Does the output look like `src`? Identity figures of a swapped video, as face-swap papers
report them (FaceShifter, SimSwap, HifiFace: ID retrieval on FaceForensics++).

- `id_retrieval`: the share of swapped frames whose output face is nearer (SFace cosine) to
  `src`'s mean embedding than to every other identity's. A swap that returns the target
  untouched scores 0; pasting src's own faces scores about 1.
- `id_margin`: the mean of (cosine to src) - (cosine to dst) over those frames: how far past
  the boundary the output is, which id_retrieval's yes/no hides.

Each identity's mean embedding comes from its dedupe dataset (data/dedupe/<ID>/dataset.parquet:
the faces train fitted), up to `per_identity` faces spread over the table's rank order. The
aligned faces there are warped again to SFace's template through their stored matrix.
Training never uses SFace, so the scorer is not one the model was fitted to.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from facedag.faces.align import transform_points
from facedag.faces.identity import Embedder, align_112, cosine, mean_embedding
from facedag.tables import decode_image


def dataset_centre(table: Path, embedder: Embedder, per_identity: int = 64) -> np.ndarray | None:
    """The mean SFace embedding of up to `per_identity` faces of a dedupe dataset (None: no usable face)."""
    if not table.is_file():
        return None
    data = pq.read_table(table, columns=["image", "landmarks", "matrix"])
    n = data.num_rows
    if n == 0:
        return None
    pick = np.unique(np.linspace(0, n - 1, min(n, per_identity)).round().astype(int))
    rows = data.take(pick).to_pylist()
    faces = []
    for row in rows:
        image = decode_image(row["image"])
        if image is None:
            continue
        lm = transform_points(np.asarray(row["landmarks"], np.float64).reshape(5, 2),
                              np.asarray(row["matrix"], np.float64).reshape(2, 3))  # fmt: skip
        try:
            faces.append(align_112(image, lm))
        except ValueError:
            continue
    return mean_embedding(embedder.embed(faces)) if faces else None


def identity_centres(dedupe_dir: Path, identities: Sequence[str], embedder: Embedder,
                     per_identity: int = 64) -> dict[str, np.ndarray]:  # fmt: skip
    """{identity: mean embedding} for the identities whose dataset has faces."""
    out = {}
    for name in identities:
        centre = dataset_centre(dedupe_dir / name / "dataset.parquet", embedder, per_identity)
        if centre is not None:
            out[name] = centre
    return out


class IdentityScorer:
    """Scores output faces against the identities' centres; `result()` is the summary."""

    def __init__(self, centres: dict[str, np.ndarray], src: str, dst: str, embedder: Embedder) -> None:
        if src not in centres:
            raise ValueError(f"no face of {src!r} to score against (its dedupe dataset is missing or empty)")
        self.names = list(centres)
        self.matrix = np.stack([centres[n] for n in self.names])
        self.src, self.dst = src, dst
        self.embedder = embedder
        self._src: list[float] = []
        self._dst: list[float] = []
        self._hit: list[bool] = []

    def score(self, images: Sequence[np.ndarray], landmarks: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        """Per face (the output face in `images[k]` at `landmarks[k]`): id_src, id_dst, id_retrieved."""
        faces, keep = [], []
        for k, (image, lm) in enumerate(zip(images, landmarks, strict=True)):
            try:
                faces.append(align_112(image, lm))
                keep.append(k)
            except ValueError:
                continue
        out: list[dict[str, Any]] = [{} for _ in images]
        if not faces:
            return out
        sims = cosine(self.embedder.embed(faces), self.matrix)
        s, d = self.names.index(self.src), self.names.index(self.dst) if self.dst in self.names else None
        for k, row in zip(keep, sims, strict=True):
            # nearer to src than to every other identity (ties are not a retrieval)
            hit = bool(all(row[s] > row[j] for j in range(len(self.names)) if j != s))
            to_dst = float(row[d]) if d is not None else None
            out[k] = {"id_src": float(row[s]), "id_dst": to_dst, "id_retrieved": int(hit)}
            self._src.append(float(row[s]))
            if to_dst is not None:
                self._dst.append(to_dst)
            self._hit.append(hit)
        return out

    def result(self) -> dict[str, Any]:
        n = len(self._hit)
        margin = (float(np.mean(np.array(self._src) - np.array(self._dst)))
                  if n and len(self._dst) == n else None)  # fmt: skip
        return {
            "id_retrieval": float(np.mean(self._hit)) if n else None,
            "id_margin": margin,
            "id_cos_src": float(np.mean(self._src)) if n else None,
            "id_cos_dst": float(np.mean(self._dst)) if self._dst else None,
            "id_frames": n,
            "id_identities": len(self.names),
        }
