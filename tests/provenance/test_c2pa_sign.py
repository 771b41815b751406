"""C2PA signing of the rendered MP4 with the real c2pa-python library, read back the way a C2PA
reader would: a generated CA chain signs a small real H.264 MP4 (ffmpeg testsrc), then the
manifest is checked, the file is tampered with, and bad credentials are refused."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import c2pa
import pytest

from facedag.provenance.c2pa_sign import (
    DIGITAL_SOURCE_TYPE,
    PROVENANCE_LABEL,
    SigningConfig,
    read_manifest,
    sign_video,
)
from facedag.sources.media import ffmpeg_input, probe, run_ffmpeg
from tests.certs import make_chain, self_signed

TARGET_SHA = "a" * 64
CLIP_SHAS = ("b" * 64, "c" * 64)
RECORD: dict[str, Any] = {
    "description": "AI-generated face swap (facedag): test",
    "watermark": {"mark_id": "0123456789ab", "method": "test"},
    "params_sha256": "d" * 64,
    "model": {"path": "models/model.safetensors", "sha256": "e" * 64},
}
INGREDIENTS = [
    {"title": "target.mp4", "sha256": TARGET_SHA, "role": "target", "uri": "file:target.mp4"},
    {"title": "ALICE_0001.mp4", "sha256": CLIP_SHAS[0], "role": "source"},
    {"title": "ALICE_0002.mp4", "sha256": CLIP_SHAS[1], "role": "source"},
]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("c2pa")


@pytest.fixture(scope="module")
def chain(work: Path) -> tuple[Path, Path, Path]:
    return make_chain(work / "certs")


@pytest.fixture(scope="module")
def video(work: Path) -> Path:
    """A 2 s H.264 MP4 with the moov box first, as render writes it."""
    dst = work / "unsigned.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:duration=2", "-c:v", "libx264",
                "-pix_fmt", "yuv420p", "-movflags", "+faststart", ffmpeg_input(dst)])  # fmt: skip
    return dst


@pytest.fixture(scope="module")
def signed(work: Path, video: Path, chain: tuple[Path, Path, Path]) -> tuple[Path, dict[str, Any]]:
    cert, key, _ = chain
    dst = work / "signed.mp4"
    summary = sign_video(video, dst, SigningConfig(cert, key), title="output.mp4", ingredients=INGREDIENTS,
                         record=RECORD)  # fmt: skip
    return dst, summary


def _top_level_boxes(path: Path) -> list[tuple[str, int, int, int]]:
    """(type, offset, size, header size) of each top-level BMFF box, walked independently of the code under test."""
    data = path.read_bytes()
    boxes, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[pos + 8 : pos + 16])[0], 16
        elif size == 0:
            size = len(data) - pos
        boxes.append((kind.decode("latin-1"), pos, size, header))
        pos += size
    return boxes


def test_signed_video_carries_the_manifest(signed: tuple[Path, dict[str, Any]], video: Path) -> None:
    path, summary = signed
    got = read_manifest(path)
    assert got["present"] and got["error"] is None
    assert got["active_manifest"] == summary["manifest_label"]
    assert got["actions"] == ["c2pa.created"]
    assert got["digital_source_type"] == DIGITAL_SOURCE_TYPE
    assert any(label.startswith("c2pa.actions") for label in got["assertions"])
    assert any(label.startswith("c2pa.hash.bmff") for label in got["assertions"])  # the hard binding
    assert PROVENANCE_LABEL in got["assertions"]
    assert got["provenance"]["mark_id"] == "0123456789ab"
    assert got["provenance"]["model_sha256"] == "e" * 64 and got["provenance"]["synthetic"] is True
    assert got["ingredients"] == ["target.mp4", "ALICE_0001.mp4", "ALICE_0002.mp4"]
    # A private CA is not on any trust list: that, and nothing else, is reported.
    assert got["validation_state"] == "Valid"
    assert got["validation_status"] == ["signingCredential.untrusted"]
    assert got["signature"]["alg"] == "es256" and got["signature"]["common_name"] == "facedag test signer"
    assert summary["alg"] == "es256" and "CN=facedag test CA" in summary["cert_issuer"]
    # The manifest box sits before the media data and the video still plays as before.
    kinds = [kind for kind, *_ in _top_level_boxes(path)]
    assert "uuid" in kinds and kinds.index("uuid") < kinds.index("mdat")
    before, after = probe(video), probe(path)
    assert (after.width, after.height, after.frames) == (before.width, before.height, before.frames)


def test_ingredients_carry_role_and_sha256(signed: tuple[Path, dict[str, Any]]) -> None:
    path, _ = signed
    with open(path, "rb") as fh, c2pa.Reader("video/mp4", fh) as reader:
        manifest = reader.get_active_manifest()
    by_title = {i["title"]: i for i in manifest["ingredients"]}
    assert by_title["target.mp4"]["relationship"] == "componentOf"
    assert by_title["target.mp4"]["metadata"]["org.facedag.sha256"] == TARGET_SHA
    assert {by_title[t]["relationship"] for t in ("ALICE_0001.mp4", "ALICE_0002.mp4")} == {"inputTo"}
    assert by_title["ALICE_0002.mp4"]["metadata"]["org.facedag.sha256"] == CLIP_SHAS[1]
    actions = next(a for a in manifest["assertions"] if a["label"].startswith("c2pa.actions"))["data"]["actions"]
    linked = actions[0]["parameters"]["ingredients"]  # the created action points at all three ingredients
    assert len(linked) == 3, json.dumps(actions)
    assert actions[0]["softwareAgent"]["name"] == "facedag"


def test_trusted_when_the_ca_is_an_anchor(signed: tuple[Path, dict[str, Any]], chain: tuple[Path, Path, Path]) -> None:
    got = read_manifest(signed[0], trust_anchors=chain[2])
    assert got["validation_state"] == "Trusted"
    assert got["validation_status"] == []


def test_one_flipped_media_byte_is_a_hash_mismatch(signed: tuple[Path, dict[str, Any]], work: Path) -> None:
    tampered = work / "tampered.mp4"
    shutil.copyfile(signed[0], tampered)
    (_, offset, size, header) = next(b for b in _top_level_boxes(tampered) if b[0] == "mdat")
    at = offset + header + (size - header) // 2  # the middle of the media data, far from the manifest box
    with open(tampered, "r+b") as fh:
        fh.seek(at)
        byte = fh.read(1)
        fh.seek(at)
        fh.write(bytes([byte[0] ^ 0xFF]))
    got = read_manifest(tampered)
    assert got["present"] and got["error"] is None
    assert got["validation_state"] == "Invalid"
    assert "assertion.bmffHash.mismatch" in got["validation_status"]


def test_a_broken_manifest_box_is_present_with_the_error(signed: tuple[Path, dict[str, Any]], work: Path) -> None:
    data = bytearray(signed[0].read_bytes())
    (_, offset, size, _) = next(b for b in _top_level_boxes(signed[0]) if b[0] == "uuid")
    at = data.index(b"jumd", offset)  # the description box of the manifest store's JUMBF superbox
    assert at < offset + size
    data[at : at + 4] = b"jumX"
    broken = work / "broken.mp4"
    broken.write_bytes(data)
    got = read_manifest(broken)
    assert got["present"] is True and got["error"]
    assert got["validation_state"] is None and got["active_manifest"] is None


def test_unsigned_and_unparsable_files(video: Path, work: Path) -> None:
    got = read_manifest(video)
    assert got["present"] is False and got["error"] is None and got["active_manifest"] is None
    junk = work / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 8)
    got = read_manifest(junk)
    assert got["present"] is False and got["error"]
    got = read_manifest(work / "missing.mp4")
    assert got["present"] is False and "cannot read" in got["error"]


def test_self_signed_certificate_is_refused(video: Path, work: Path) -> None:
    cert, key = self_signed(work / "self")
    dst = work / "refused.mp4"
    with pytest.raises(ValueError, match="self-signed"):
        sign_video(video, dst, SigningConfig(cert, key), title="o.mp4", ingredients=[], record=RECORD)
    assert not dst.exists()


def test_bad_credentials_are_refused_with_one_line(video: Path, work: Path, chain: tuple[Path, Path, Path]) -> None:
    cert, key, _ = chain
    _, other_key, _ = make_chain(work / "other")
    dst = work / "refused.mp4"
    cases = [
        (SigningConfig(cert, work / "nope.key"), r"private key .*nope\.key cannot be read"),
        (SigningConfig(cert, other_key), "does not belong"),
        (SigningConfig(cert, key, alg="es384x"), "algorithm"),
        (SigningConfig(key, key), "no PEM certificate"),
    ]
    for cfg, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            sign_video(video, dst, cfg, title="o.mp4", ingredients=[], record=RECORD)
        assert "\n" not in str(info.value)
        assert not dst.exists()
    with pytest.raises(ValueError, match="ingredient 0"):
        sign_video(video, dst, SigningConfig(cert, key), title="o.mp4", ingredients=[{"title": "t.mp4"}],
                   record=RECORD)  # fmt: skip


def test_wrong_algorithm_for_the_key_is_a_library_error(
    video: Path, work: Path, chain: tuple[Path, Path, Path]
) -> None:
    """A P-256 key named es384: only the library knows; its message still comes back as one ValueError line."""
    cert, key, _ = chain
    dst = work / "refused.mp4"
    with pytest.raises(ValueError, match=r"C2PA signing of unsigned\.mp4 failed") as info:
        sign_video(video, dst, SigningConfig(cert, key, alg="es384"), title="o.mp4", ingredients=[], record=RECORD)
    assert "\n" not in str(info.value)
    assert not dst.exists()


_PEAK_RSS = """
import json, resource, sys
from pathlib import Path
from facedag.provenance.c2pa_sign import SigningConfig, sign_video
src, dst, cert, key = map(Path, sys.argv[1:5])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sign_video(src, dst, SigningConfig(cert=cert, key=key), title="big.mp4",
           ingredients=[{"title": "target.mp4", "sha256": "a" * 64, "role": "target"}], record={})
print(json.dumps({"grew_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before}))
"""


def test_signing_a_large_video_holds_it_in_memory_once_at_most(work: Path, chain: tuple[Path, Path, Path]) -> None:
    """A ~110 MB MP4 (a 1 s noisy clip, stream-copied 8 times over): signing it grows the process by
    less than 1.4 x the file (the library's default in-memory backing store held it twice, 1.95 x)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    cert, key, _ca = chain
    clip, big = work / "noisy.mp4", work / "big.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=640x480:rate=25:duration=1", "-vf", "noise=alls=60:allf=t",
                "-c:v", "libx264", "-preset", "ultrafast", "-qp", "5", "-pix_fmt", "yuv420p", ffmpeg_input(clip)],
               timeout=300)  # fmt: skip
    run_ffmpeg(["-stream_loop", "7", "-i", ffmpeg_input(clip), "-c", "copy", "-movflags", "+faststart",
                ffmpeg_input(big)], timeout=300)  # fmt: skip
    size_kb = big.stat().st_size / 1024
    assert size_kb > 60 * 1024
    signed = work / "big.signed.mp4"
    proc = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(big), str(signed), str(cert), str(key)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    grew_kb = json.loads(proc.stdout.strip().splitlines()[-1])["grew_kb"]
    assert grew_kb < 1.4 * size_kb, (grew_kb, size_kb)
    assert read_manifest(signed)["present"]
    big.unlink()
    signed.unlink()
