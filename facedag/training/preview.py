"""Preview grids (models/previews): each identity rebuilt, and the swaps, as training goes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from facedag.records import atomic_write_bytes
from facedag.training.model import FaceSwapModel

PREVIEW_FACES = 4  # faces per row


def preview_rows(identities: list[str]) -> list[tuple[str, str]]:
    """(from, to) rows: each identity to itself, then every other identity to the first (src)."""
    rows = [(name, name) for name in identities]
    rows += [(name, identities[0]) for name in identities[1:]]
    return rows


def render_preview(model: FaceSwapModel, faces: dict[str, torch.Tensor], identities: list[str]) -> np.ndarray:
    """RGB uint8 grid: one row per (from, to), columns (input, output, learned mask) triplets (pairs
    for a mask-less model), a label strip on the left."""
    s = model.cfg.face_size
    gap = 2
    rows = []
    with torch.no_grad():
        for src, dst in preview_rows(identities):
            x = faces[src]
            y, mask = model.forward_masked(x, dst)
            shown = [x, y.float()] + ([] if mask is None else [mask.float().expand(-1, 3, -1, -1)])
            cells = [torch.cat(list(parts), dim=2) for parts in zip(*shown, strict=True)]  # (3, S, 3S) triplets
            row = (torch.cat(cells, dim=2).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
            label = np.full((s, max(s, 64), 3), 32, np.uint8)
            scale = max(0.3, s / 128 * 0.5)
            cv2.putText(label, f"{src}>", (4, s // 2 - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1)
            cv2.putText(label, dst, (4, s // 2 + int(14 * scale / 0.5)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                        (255, 255, 255), 1)
            rows.append(np.concatenate([label, row], axis=1))
    width = max(r.shape[1] for r in rows)
    out = np.full((len(rows) * (s + gap) - gap, width, 3), 0, np.uint8)
    for i, r in enumerate(rows):
        out[i * (s + gap) : i * (s + gap) + s, : r.shape[1]] = r
    return out


def write_preview(previews_dir: Path, step: int, grid: np.ndarray) -> Path:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    path = previews_dir / f"step-{step:09d}.png"
    atomic_write_bytes(path, buf.tobytes())
    atomic_write_bytes(previews_dir / "latest.png", buf.tobytes())
    return path


