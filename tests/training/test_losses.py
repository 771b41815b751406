"""The loss: zero for identical faces, blind outside the face mask, heavier on eyes and mouth."""

from __future__ import annotations

import torch

from facedag.faces.align import template
from facedag.quality.ssim import ssim_map
from facedag.training.losses import masked_loss, masked_ssim, weight_map

S = 64


def faces(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, S, S, generator=g)


def test_identical_images_give_zero() -> None:
    x = faces()
    w = weight_map(S, 3.0)
    loss, parts = masked_loss(x, x.clone(), w)
    assert float(loss) < 1e-6 and float(parts["dssim"]) < 1e-6 and float(parts["l1"]) == 0.0
    assert torch.allclose(ssim_map(x, x), torch.ones_like(x), atol=1e-5)
    assert float(masked_ssim(x, x, w).min()) > 0.9999


def test_mask_weighting() -> None:
    w = weight_map(S, 3.0)
    assert float(w[..., 0, 0]) == 0.0  # corner: outside the face
    x = faces()
    outside, inside = x.clone(), x.clone()
    outside[..., :6, :] = 1.0 - outside[..., :6, :]  # top rows: above the face mask
    t = template(S)
    cy = round(float(t[2, 1]))
    inside[..., cy - 3 : cy + 3, :] = 1.0 - inside[..., cy - 3 : cy + 3, :]  # across the nose
    loss_out, _ = masked_loss(outside, x, w)
    loss_in, _ = masked_loss(inside, x, w)
    assert float(loss_out) < 1e-3 < float(loss_in)


def test_eyes_and_mouth_weigh_more() -> None:
    t = template(S)
    x = torch.full((1, 3, S, S), 0.5)
    eye, cheek = x.clone(), x.clone()
    ex, ey = (round(float(v)) for v in t[0])
    eye[..., ey - 1 : ey + 2, ex - 1 : ex + 2] = 1.0
    cx, cy = round(float(t[0, 0])), round(float(t[0, 1] + t[3, 1]) / 2)  # below the eye, above the mouth corner
    cheek[..., cy - 1 : cy + 2, cx - 1 : cx + 2] = 1.0
    plain = weight_map(S, 1.0)
    heavy = weight_map(S, 4.0)
    assert float(heavy[0, 0, ey, ex]) > 3.0 * float(heavy[0, 0, cy, cx])
    l_eye, _ = masked_loss(eye, x, heavy)
    l_cheek, _ = masked_loss(cheek, x, heavy)
    assert float(l_eye) > 2.0 * float(l_cheek)
    l_eye_plain, _ = masked_loss(eye, x, plain)
    assert float(l_eye) > 1.3 * float(l_eye_plain)  # normalised by total weight, so less than 4x


def test_mesh_weight_map_follows_each_faces_own_features(tmp_path) -> None:
    """Per-face weights from a real mesh (the portrait set's): heavy on its eyes and lips, 1 on the
    cheek, 0 outside its oval; a face moved in the aligned square moves its weights with it."""
    import numpy as np

    from facedag.faces.mesh import regions
    from facedag.training.dataset import read_faces
    from facedag.training.losses import mesh_weight_map
    from facedag.training.portrait_set import write_portrait_dataset

    path = tmp_path / "dataset.parquet"
    write_portrait_dataset(path, "astronaut", S, tracks=1, per_track=3)
    weights = read_faces(path, S, 3.0).weights
    assert weights is not None and weights.shape == (3, 1, S, S)
    import pyarrow.parquet as pq

    meshes = [np.asarray(m, dtype=np.float64).reshape(478, 2) for m in pq.read_table(path).column("mesh").to_pylist()]
    r = regions()
    for w, mesh in zip(weights[:, 0], meshes, strict=True):
        eye = np.round(mesh[r["eye_l"]].mean(0)).astype(int)
        lips = np.round(mesh[r["lips"]].mean(0)).astype(int)
        cheek = np.round(0.5 * mesh[r["eye_l"]].mean(0) + 0.5 * mesh[r["lips"]][np.argmin(mesh[r["lips"], 0])]
                         - (0.12 * S, 0)).astype(int)  # fmt: skip
        assert w[eye[1], eye[0]] > 2.0 and w[lips[1], lips[0]] > 2.0
        assert 0.5 < w[cheek[1], cheek[0]] < 1.5
        assert w[0, 0] == 0 and w[-1, -1] == 0
    shifted = mesh_weight_map(meshes[0] + (4, 0), S, 3.0)
    assert np.allclose(shifted[:, 8:-8], np.asarray(mesh_weight_map(meshes[0], S, 3.0))[:, 4:-12], atol=1e-4)
    # five-point faces (no mesh) get the template's map
    assert read_faces(path, S).weights is None
