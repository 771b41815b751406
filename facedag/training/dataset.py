"""The training set: every identity's training and held-out faces as one uint8 tensor, and a hash.

Faces are decoded once and kept as uint8 (N, 3, S, S) on the training device (1/4 of float32;
2000 faces at 256 px are 390 MB), and turned into float batches there, so under CUDA no image
crosses the bus after the start.

The split is dedupe's (stages/dedupe.py): data/dedupe/<ID>/dataset.parquet holds the training
faces and holdout.parquet the faces of whole held-out shots, of which no near-copy was kept
for training. Training only evaluates on the held-out faces. When an identity has none (one
shot only, or a holdout.parquet from before the split moved to dedupe), there is nothing honest
to hold out; evaluation then uses training faces and says so (`holdout_is_train`).

The dataset hash covers what the training run consumes: each identity's name and the sha256
of its dataset.parquet and holdout.parquet, and the face size. A checkpoint from another hash
is stale: training starts fresh and moves it aside (facedag.training.checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import pyarrow.parquet as pq
import torch

from facedag.records import StageFailed, sha256_file
from facedag.tables import decode_image
from facedag.training.losses import mesh_region, mesh_weight_map, weight_map
from facedag.training.occluders import template_region

HOLDOUT_AS_TRAIN = 16  # training faces evaluated on when an identity has no held-out face


def dataset_path(root: str | os.PathLike[str], identity: str) -> Path:
    """Where the data half leaves an identity's training faces."""
    return Path(root) / "data" / "dedupe" / identity / "dataset.parquet"


def holdout_path(root: str | os.PathLike[str], identity: str) -> Path:
    """Where the data half leaves an identity's held-out faces (same columns as dataset.parquet)."""
    return Path(root) / "data" / "dedupe" / identity / "holdout.parquet"


@dataclass
class FaceSet:
    identity: str
    images: torch.Tensor  # uint8 (N, 3, S, S), on the training device: training faces, then held-out ones
    groups: list[str]  # "<clip>#<track>" per face
    train_idx: torch.Tensor  # int64 indices into images
    holdout_idx: torch.Tensor
    holdout_is_train: bool  # no held-out face: evaluation uses training faces
    skipped: int  # rows whose image did not decode
    note: str = ""  # why there is no held-out face, for the log
    weights: torch.Tensor | None = None  # float16 (N, 1, S, S) per-face loss weights, as images
    regions: torch.Tensor | None = None  # uint8 (N, 1, S, S) per-face face region (255 inside), as images
    yaw: torch.Tensor | None = None  # float32 (N,) degrees per face, NaN where unknown (CPU; train.uniform_yaw)

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """Float (B, 3, S, S) in [0, 1] for the given indices, on the images' device (indices go
        there in a pinned, non-blocking copy under CUDA: no wait for the GPU to drain)."""
        dev = self.images.device
        if dev.type == "cuda" and idx.device.type == "cpu":
            idx = idx.pin_memory().to(dev, non_blocking=True)
        return self.images.index_select(0, idx.to(dev)).float().div_(255.0)

    def batch_weights(self, idx: torch.Tensor, default: torch.Tensor) -> torch.Tensor:
        """Float (B, 1, S, S) loss weights of the given faces, or `default` (1, 1, S, S) without them."""
        if self.weights is None:
            return default
        return self.weights.index_select(0, idx.to(self.weights.device)).float()

    def batch_regions(self, idx: torch.Tensor, default: torch.Tensor) -> torch.Tensor:
        """Float (B, 1, S, S) face regions in [0, 1] of the given faces (the learned mask's target
        before the occluders come off), or `default` (1, 1, S, S) without them."""
        if self.regions is None:
            return default
        return self.regions.index_select(0, idx.to(self.regions.device)).float().div_(255.0)


class Faces(NamedTuple):
    """What read_faces reads from a dataset.parquet (see there)."""

    images: np.ndarray  # uint8 (N, S, S, 3) RGB
    groups: list[str]  # "<clip>#<track>" per face
    skipped: int  # rows whose image did not decode
    weights: np.ndarray | None  # float32 (N, 1, S, S) loss weights, with eyes_mouth_weight
    regions: np.ndarray | None  # uint8 (N, 1, S, S) face regions, with eyes_mouth_weight
    yaw: np.ndarray  # float32 (N,) degrees, NaN where unknown


def read_faces(path: str | os.PathLike[str], face_size: int, eyes_mouth_weight: float | None = None,
               ) -> Faces:  # fmt: skip
    """The faces of a dataset.parquet and what training needs beside them (Faces).

    Faces stored at another size are resized (INTER_AREA down, cubic up), so a model can train
    at a size other than the one the data half aligned at. With `eyes_mouth_weight`, each
    face's loss weights too (float32 (N, 1, S, S), facedag.training.losses: from its mesh, or the
    template's map where align had five points only), and each face's region, uint8 (N, 1, S, S),
    255 inside its mesh's face oval (the template's face mask for a five-point face): the
    learned mask's target (facedag.training.occluders); else None for both. Always each face's
    yaw (float32 degrees, align's; NaN where the table has none), for train.uniform_yaw.
    """
    schema = pq.read_schema(path).names
    columns = ["clip", "track", "image", *(["yaw"] if "yaw" in schema else [])]
    with_mesh = eyes_mouth_weight is not None and "mesh" in schema
    table = pq.read_table(path, columns=[*columns, "mesh"] if with_mesh else columns)
    clips = table.column("clip").to_pylist()
    tracks = table.column("track").to_pylist()
    images = table.column("image").to_pylist()
    meshes = table.column("mesh").to_pylist() if with_mesh else [None] * len(images)
    yaws = table.column("yaw").to_pylist() if "yaw" in columns else [None] * len(images)
    out: list[np.ndarray] = []
    groups: list[str] = []
    maps: list[np.ndarray] = []
    regions: list[np.ndarray] = []
    kept_yaw: list[float] = []
    skipped = 0
    for clip, track, data, mesh, yaw in zip(clips, tracks, images, meshes, yaws, strict=True):
        img = decode_image(data)
        if img is None or img.shape[0] != img.shape[1]:
            skipped += 1
            continue
        stored = img.shape[0]
        if stored != face_size:
            interp = cv2.INTER_AREA if stored > face_size else cv2.INTER_CUBIC
            img = cv2.resize(img, (face_size, face_size), interpolation=interp)
        out.append(img)
        groups.append(f"{clip}#{track}")
        kept_yaw.append(math.nan if yaw is None else float(yaw))
        if eyes_mouth_weight is not None:
            if mesh is None:
                maps.append(np.asarray(weight_map(face_size, eyes_mouth_weight))[0, 0])
                regions.append(template_region(face_size))
            else:
                k = face_size / stored  # pixel centres: x' = (x + 0.5) k - 0.5
                pts = (np.asarray(mesh, dtype=np.float64).reshape(-1, 2) + 0.5) * k - 0.5
                maps.append(mesh_weight_map(pts, face_size, eyes_mouth_weight))
                regions.append(mesh_region(pts, face_size))
    faces = np.stack(out) if out else np.zeros((0, face_size, face_size, 3), np.uint8)
    weights = face_regions = None
    if eyes_mouth_weight is not None:
        weights = np.stack(maps)[:, None] if maps else np.zeros((0, 1, face_size, face_size), np.float32)
        face_regions = np.stack(regions)[:, None] if regions else np.zeros((0, 1, face_size, face_size), np.uint8)
    return Faces(faces, groups, skipped, weights, face_regions, np.asarray(kept_yaw, np.float32))


def dataset_hash(root: str | os.PathLike[str], identities: list[str], face_size: int) -> str:
    """sha256 (hex) of what a training run consumes (see the module docstring)."""
    def digest(path: Path) -> str | None:
        return sha256_file(path) if path.exists() else None

    record = {
        "identities": [[name, sha256_file(dataset_path(root, name)), digest(holdout_path(root, name))]
                       for name in identities],
        "face_size": int(face_size),
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def _clip(group: str) -> str:
    return group.rsplit("#", 1)[0]


def load_dataset(root: str | os.PathLike[str], identities: list[str], face_size: int,
                 device: str | torch.device = "cpu", eyes_mouth_weight: float | None = None) -> dict[str, FaceSet]:
    """Every identity's FaceSet; StageFailed (one line naming the identity) when one has no usable
    face, or when a clip is on both sides of the split (a hand-made or mixed-up data folder).
    With `eyes_mouth_weight`, each face's loss weights and face region come with it
    (FaceSet.weights, FaceSet.regions)."""
    sets: dict[str, FaceSet] = {}
    for name in identities:
        path, hold_path = dataset_path(root, name), holdout_path(root, name)
        if not path.exists():
            raise StageFailed(f"{path} not found: run the data stages for identity {name!r} first (dedupe@{name})")
        faces, groups, skipped, weights, regions, yaw = read_faces(path, face_size, eyes_mouth_weight)
        if len(faces) == 0:
            raise StageFailed(f"identity {name!r} has no usable face in {path}")
        note = ""
        if hold_path.exists():
            held, hold_groups, hold_skipped, held_weights, held_regions, _ = read_faces(hold_path, face_size,
                                                                                        eyes_mouth_weight)
            skipped += hold_skipped
            if not held.size:
                note = f"dedupe held out no shot (see data/dedupe/{name}/metrics.json)"
        else:
            held, hold_groups, held_weights = faces[:0], [], None if weights is None else weights[:0]
            held_regions = None if regions is None else regions[:0]
            note = f"no {hold_path}: rerun dedupe@{name}"
        shared = sorted({_clip(g) for g in hold_groups} & {_clip(g) for g in groups})
        if shared:
            raise StageFailed(f"clip {shared[0]} of identity {name!r} is both in {path} and in {hold_path}: "
                              f"rerun dedupe@{name}")
        train_idx = torch.arange(len(faces))
        holdout_is_train = len(held) == 0
        if holdout_is_train:
            hold_idx = train_idx[:HOLDOUT_AS_TRAIN]
        else:
            hold_idx = torch.arange(len(faces), len(faces) + len(held))
        images = torch.from_numpy(np.concatenate([faces, held])).permute(0, 3, 1, 2).contiguous().to(device)
        face_weights = face_regions = None
        if weights is not None and held_weights is not None:
            face_weights = torch.from_numpy(np.concatenate([weights, held_weights])).to(torch.float16).to(device)
        if regions is not None and held_regions is not None:
            face_regions = torch.from_numpy(np.concatenate([regions, held_regions])).to(device)
        sets[name] = FaceSet(name, images, groups + hold_groups, train_idx, hold_idx, holdout_is_train, skipped,
                             note, face_weights, face_regions, torch.from_numpy(yaw))
    return sets
