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
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import torch

from facedag.records import StageFailed, sha256_file
from facedag.tables import decode_image

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

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """Float (B, 3, S, S) in [0, 1] for the given indices, on the images' device (indices go
        there in a pinned, non-blocking copy under CUDA: no wait for the GPU to drain)."""
        dev = self.images.device
        if dev.type == "cuda" and idx.device.type == "cpu":
            idx = idx.pin_memory().to(dev, non_blocking=True)
        return self.images.index_select(0, idx.to(dev)).float().div_(255.0)


def read_faces(path: str | os.PathLike[str], face_size: int) -> tuple[np.ndarray, list[str], int]:
    """(uint8 (N, S, S, 3) RGB faces, group per face, undecodable count) from a dataset.parquet.

    Faces stored at another size are resized (INTER_AREA down, cubic up), so a model can train
    at a size other than the one the data half aligned at.
    """
    table = pq.read_table(path, columns=["clip", "track", "image"])
    clips = table.column("clip").to_pylist()
    tracks = table.column("track").to_pylist()
    images = table.column("image").to_pylist()
    out: list[np.ndarray] = []
    groups: list[str] = []
    skipped = 0
    for clip, track, data in zip(clips, tracks, images, strict=True):
        img = decode_image(data)
        if img is None or img.shape[0] != img.shape[1]:
            skipped += 1
            continue
        if img.shape[0] != face_size:
            interp = cv2.INTER_AREA if img.shape[0] > face_size else cv2.INTER_CUBIC
            img = cv2.resize(img, (face_size, face_size), interpolation=interp)
        out.append(img)
        groups.append(f"{clip}#{track}")
    faces = np.stack(out) if out else np.zeros((0, face_size, face_size, 3), np.uint8)
    return faces, groups, skipped


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
                 device: str | torch.device = "cpu") -> dict[str, FaceSet]:
    """Every identity's FaceSet; StageFailed (one line naming the identity) when one has no usable
    face, or when a clip is on both sides of the split (a hand-made or mixed-up data folder)."""
    sets: dict[str, FaceSet] = {}
    for name in identities:
        path, hold_path = dataset_path(root, name), holdout_path(root, name)
        if not path.exists():
            raise StageFailed(f"{path} not found: run the data stages for identity {name!r} first (dedupe@{name})")
        faces, groups, skipped = read_faces(path, face_size)
        if len(faces) == 0:
            raise StageFailed(f"identity {name!r} has no usable face in {path}")
        note = ""
        if hold_path.exists():
            held, hold_groups, hold_skipped = read_faces(hold_path, face_size)
            skipped += hold_skipped
            if not held.size:
                note = f"dedupe held out no shot (see data/dedupe/{name}/metrics.json)"
        else:
            held, hold_groups = faces[:0], []
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
        sets[name] = FaceSet(name, images, groups + hold_groups, train_idx, hold_idx, holdout_is_train, skipped,
                             note)
    return sets
