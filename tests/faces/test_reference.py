"""References of a person: an image, a clip frame, and what params accept; the faces are real
(the astronaut portrait, a frame of the sample footage)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from facedag.faces.identity import Embedder, cosine
from facedag.faces.reference import ReferenceError, describe, parse_group, reference_embeddings
from facedag.params import Reference, ReferenceClip
from tests.faces.test_identity import portraits
from tests.stages.test_extract import SAMPLES


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def write(path: Path, rgb: np.ndarray) -> str:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return str(path)


def test_image_and_mirror_references_agree(tmp_path: Path, embedder: Embedder) -> None:
    astro = portraits()["astronaut"]
    a = write(tmp_path / "a.png", astro)
    b = write(tmp_path / "b.jpg", np.ascontiguousarray(astro[:, ::-1]))
    emb = reference_embeddings([a, b], embedder)
    assert emb.shape == (2, 128) and cosine(emb[0], emb[1]) > 0.85
    assert describe([a, ReferenceClip(uri="x.mp4", time=2)]) == f"{a}, x.mp4@2s"


def test_unusable_references_say_why(tmp_path: Path, embedder: Embedder) -> None:
    with pytest.raises(ReferenceError, match="not found"):
        reference_embeddings(str(tmp_path / "gone.png"), embedder)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ReferenceError, match="does not decode"):
        reference_embeddings(str(tmp_path / "junk.png"), embedder)
    blank = write(tmp_path / "blank.png", np.full((120, 100, 3), 200, np.uint8))
    with pytest.raises(ReferenceError, match="no face"):
        reference_embeddings(blank, embedder)


@pytest.mark.skipif(not (SAMPLES / "video_01.mp4").exists(), reason="../shared/samples/video_01.mp4 is absent")
def test_clip_frame_reference(embedder: Embedder) -> None:
    emb = reference_embeddings(ReferenceClip(uri=str(SAMPLES / "video_01.mp4"), time=1.0), embedder)
    assert emb.shape == (1, 128)
    with pytest.raises(ReferenceError, match="no frame"):
        reference_embeddings(ReferenceClip(uri=str(SAMPLES / "video_01.mp4"), time=60.0), embedder)


def test_params_forms() -> None:
    adapter = TypeAdapter(Reference)
    assert parse_group(adapter.validate_python("group:3")) == 3
    assert parse_group(adapter.validate_python("me.png")) is None
    assert isinstance(adapter.validate_python([{"uri": "a.mp4", "time": 1.5}, "b.png"])[0], ReferenceClip)
    for bad in ("group:three", ["group:1", "a.png"], {"uri": "a.mp4", "time": -1}):
        with pytest.raises(ValidationError):
            adapter.validate_python(bad)


def test_a_reference_needs_policy_identity(tmp_path: Path) -> None:
    import yaml

    from facedag.params import load_params
    from facedag.records import StageFailed
    from tests.stages.test_extract import REPO

    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["identities"]["src"]["reference"] = "group:2"
    data["extract"]["policy"] = "largest"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(StageFailed, match=r"params.yaml: identities.src.reference is set, so extract.policy must be"):
        load_params(tmp_path / "params.yaml")
    data["extract"]["policy"] = "identity"
    data["target"]["reference"] = [{"uri": "t.mp4", "time": 3}]
    data["convert"]["policy"] = "center"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(StageFailed, match=r"target.reference is set, so convert.policy must be identity"):
        load_params(tmp_path / "params.yaml")
