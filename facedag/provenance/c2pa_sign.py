"""C2PA Content Credentials on the rendered video, and reading them back.

The visible label and output.json say the video is synthetic, but both come apart from the
file: a label can be cropped and a JSON file left behind. A C2PA manifest travels inside the
MP4 and is signed, so any C2PA reader (c2patool, Content Credentials viewers) can tell that
the video is a composite made with a trained model, what went into it (each ingredient named
by title and sha256), and whether a single byte changed since signing (the BMFF hard binding).

What is written (c2pa-python, which wraps the reference c2pa-rs):
- `c2pa.actions`: one `c2pa.created` action, digitalSourceType
  `compositeWithTrainedAlgorithmicMedia` (IPTC), softwareAgent facedag, linked to the ingredients;
- one ingredient per input: the target video as `componentOf` (the output is the target with
  a face composited in; C2PA forbids a `parentOf` ingredient on a `c2pa.created` manifest) and
  each source clip as `inputTo` (they trained the model that made the face); the sha256 is in
  the ingredient's metadata because the manifest references inputs, it does not embed them;
- `org.facedag.provenance`: a small summary of the provenance record (mark id, params and
  model sha256). Not the output's sha256: that changes when the manifest is embedded.

Signing must be the very last write: any re-encode or remux drops or invalidates the manifest.
The credential is an end-entity certificate issued by a CA (C2PA refuses self-signed signers);
with a private CA readers report `signingCredential.untrusted`, which is expected and is not an
integrity failure. Reading never goes to the network (no remote manifests, no OCSP).
"""

from __future__ import annotations

import datetime as dt
import json
import mimetypes
import re
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import facedag

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
PROVENANCE_LABEL = "org.facedag.provenance"
SHA256_KEY = "org.facedag.sha256"  # ingredient metadata field holding the input's sha256
RELATIONSHIPS = {"target": "componentOf", "source": "inputTo"}
ALGORITHMS = ("es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519")

# The UUID of the top-level BMFF box that holds a C2PA manifest store (C2PA spec, BMFF embedding).
_C2PA_BOX_UUID = bytes.fromhex("d8fec3d61b0e483c92975828877ec481")
_MAX_TOP_LEVEL_BOXES = 10_000  # a real MP4 has a handful; this only bounds a hostile file
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
# The library writes the signed file through a backing store that stays in memory up to this
# size (default: large enough for a whole video), then goes to a temp file. With the default,
# signing a 443 MB MP4 peaked at 912 MB of RSS (the file twice); with 16 MB, at 479 MB (once:
# the library still reads the source whole). tests/provenance/test_c2pa_sign.py measures it.
SIGN_MEMORY_MB = 16
_SIGN_SETTINGS = {"core": {"backing_store_memory_threshold_in_mb": SIGN_MEMORY_MB}}


@dataclass(frozen=True)
class SigningConfig:
    """Where the signing credential is (params `render.c2pa`).

    `cert`: PEM, the end-entity certificate followed by its CA chain; `key`: its PEM private key;
    `alg`: one of ALGORITHMS, matching the key; `tsa_url`: an RFC 3161 time-stamp authority, or
    None for no trusted signing time (the signature is then only as dated as the certificate).
    """

    cert: Path
    key: Path
    alg: str = "es256"
    tsa_url: str | None = None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _read_pem(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"C2PA {what} {path} cannot be read: {e.strerror or _one_line(e)}") from None


def _load_credentials(cfg: SigningConfig) -> tuple[bytes, bytes, x509.Certificate]:
    """Read and check the credential before anything is written.

    The library only finds some mistakes while signing, and words them for C2PA experts ("the
    certificate is invalid" for a self-signed one); these checks name the file and the fix.
    """
    if cfg.alg not in ALGORITHMS:
        raise ValueError(f"C2PA signing algorithm {cfg.alg!r} is not one of {', '.join(ALGORITHMS)}")
    cert_pem = _read_pem(cfg.cert, "certificate chain")
    key_pem = _read_pem(cfg.key, "private key")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise ValueError(f"C2PA certificate chain {cfg.cert} holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise ValueError(f"C2PA private key {cfg.key} is not an unencrypted PEM key: {_one_line(e)}") from None
    leaf = chain[0]
    if leaf.issuer == leaf.subject:
        raise ValueError(
            f"C2PA certificate {cfg.cert} is self-signed; C2PA needs a certificate issued by a CA, "
            "followed by that CA's certificate in the same file"
        )
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, public) != leaf.public_key().public_bytes(
        serialization.Encoding.DER, public
    ):
        raise ValueError(f"C2PA private key {cfg.key} does not belong to the first certificate in {cfg.cert}")
    now = dt.datetime.now(dt.UTC)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise ValueError(
            f"C2PA certificate {cfg.cert} is not valid now (valid {leaf.not_valid_before_utc:%Y-%m-%d} "
            f"to {leaf.not_valid_after_utc:%Y-%m-%d})"
        )
    return cert_pem, key_pem, leaf


def _ingredient(index: int, spec: dict[str, Any]) -> dict[str, Any]:
    """One ingredient of the manifest definition from {"title", "sha256", "role"[, "uri"]}."""
    title, sha256, role = spec.get("title"), spec.get("sha256"), spec.get("role")
    if not title or role not in RELATIONSHIPS or not isinstance(sha256, str) or not _SHA256_RE.fullmatch(sha256):
        raise ValueError(
            f"ingredient {index} needs a title, a lowercase hex sha256 and role target or source, got {spec!r}"
        )
    metadata = {SHA256_KEY: sha256}
    if spec.get("uri"):
        metadata["org.facedag.uri"] = str(spec["uri"])
    out: dict[str, Any] = {
        "title": str(title),
        "relationship": RELATIONSHIPS[role],
        "label": f"facedag.ingredient.{index}",  # only pairs the ingredient with the action
        "metadata": metadata,
    }
    media_type = mimetypes.guess_type(str(title))[0]
    if media_type:
        out["format"] = media_type
    return out


def _provenance_summary(record: dict[str, Any]) -> dict[str, Any]:
    """The part of the provenance record that fits in the manifest and is known before signing.

    `record` has the shape of facedag.provenance.record.build_record's (only these keys are read).
    """
    watermark = record.get("watermark") or {}
    return {
        "synthetic": True,
        "description": record.get("description"),
        "mark_id": watermark.get("mark_id"),
        "params_sha256": record.get("params_sha256"),
        "model_sha256": (record.get("model") or {}).get("sha256"),
    }


def _manifest_definition(title: str, ingredients: list[dict[str, Any]], record: dict[str, Any]) -> dict[str, Any]:
    agent = {"name": "facedag", "version": facedag.__version__}
    parts = [_ingredient(i, spec) for i, spec in enumerate(ingredients)]
    action: dict[str, Any] = {
        "action": "c2pa.created",
        "digitalSourceType": DIGITAL_SOURCE_TYPE,
        "softwareAgent": agent,
    }
    if parts:
        action["parameters"] = {"ingredientIds": [p["label"] for p in parts]}
    return {
        "claim_generator_info": [agent],
        "title": title,
        "ingredients": parts,
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [action]}},
            {"label": PROVENANCE_LABEL, "data": _provenance_summary(record)},
        ],
    }


def sign_video(
    src: Path, dst: Path, cfg: SigningConfig, *, title: str, ingredients: list[dict[str, Any]], record: dict[str, Any]
) -> dict[str, Any]:
    """Write a copy of `src` with a signed C2PA manifest to `dst`; return a summary of what was signed.

    `dst` must not be `src` (the library streams from one to the other): pass a temp path beside
    the final one and os.replace() it, so a failure never leaves a half-signed video in place.
    `ingredients`: {"title", "sha256", "role": "target" | "source", optional "uri"} per input.
    `record`: the provenance record (facedag.provenance.record.build_record); a summary of it is signed.
    Raises ValueError with one line for anything wrong with the inputs or the credential
    (checked before `dst` is opened); a `dst` the library wrote in part is removed.
    """
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise ValueError(f"C2PA signing needs a destination other than the source {src}")
    if not src.is_file():
        raise ValueError(f"cannot sign {src}: no such file")
    media_type = mimetypes.guess_type(src.name)[0]
    if media_type is None:
        raise ValueError(f"cannot sign {src}: unknown media type for its extension")
    cert_pem, key_pem, leaf = _load_credentials(cfg)
    definition = _manifest_definition(title, ingredients, record)
    label = f"urn:c2pa:{uuid.uuid4()}"  # chosen here so the summary can name it without re-reading dst
    definition["label"] = label
    try:
        with (
            c2pa.Signer.from_info(c2pa.C2paSignerInfo(cfg.alg, cert_pem, key_pem, cfg.tsa_url)) as signer,
            c2pa.Context.from_dict(_SIGN_SETTINGS) as context,
            c2pa.Builder(definition, context=context) as builder,
            open(src, "rb") as src_fh,
            open(dst, "w+b") as dst_fh,
        ):
            manifest = builder.sign(signer, media_type, src_fh, dst_fh)
    except (c2pa.C2paError, OSError) as e:
        dst.unlink(missing_ok=True)
        raise ValueError(f"C2PA signing of {src.name} failed: {_one_line(e)}") from e
    return {
        "manifest_label": label,
        "alg": cfg.alg,
        "cert_subject": leaf.subject.rfc4514_string(),
        "cert_issuer": leaf.issuer.rfc4514_string(),
        "tsa_url": cfg.tsa_url,
        "digital_source_type": DIGITAL_SOURCE_TYPE,
        "assertions": ["c2pa.actions", PROVENANCE_LABEL],
        "ingredients": [p["title"] for p in definition["ingredients"]],
        "manifest_bytes": len(manifest),
    }


def _has_c2pa_box(fh: IO[bytes]) -> bool:
    """Whether a BMFF file has a top-level C2PA manifest box (reads box headers only).

    Tells "damaged manifest" from "no manifest" when the library cannot parse what is there.
    """
    fh.seek(0, 2)
    end = fh.tell()
    pos = 0
    for _ in range(_MAX_TOP_LEVEL_BOXES):
        if pos + 8 > end:
            return False
        fh.seek(pos)
        size, kind = struct.unpack(">I4s", fh.read(8))
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", fh.read(8))[0], 16
        elif size == 0:
            size = end - pos
        if kind == b"uuid" and fh.read(16) == _C2PA_BOX_UUID:
            return True
        if size < header:
            return False
        pos += size
    return False


def _empty_report() -> dict[str, Any]:
    return {
        "present": False,
        "active_manifest": None,
        "assertions": [],
        "actions": [],
        "digital_source_type": None,
        "ingredients": [],
        "provenance": None,
        "validation_state": None,
        "validation_status": [],
        "signature": None,
        "error": None,
    }


def _read_context(trust_anchors: Path | None) -> c2pa.Context:
    settings: dict[str, Any] = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
    if trust_anchors is not None:
        settings["trust"] = {"trust_anchors": _read_pem(trust_anchors, "trust anchors").decode("ascii", "replace")}
    return c2pa.Context.from_dict(settings)


def _fill(report: dict[str, Any], store: dict[str, Any]) -> None:
    """Copy what facedag checks from the library's manifest-store JSON into `report`."""
    label = store.get("active_manifest")
    manifest = (store.get("manifests") or {}).get(label) or {}
    report["active_manifest"] = label
    report["validation_state"] = store.get("validation_state")
    report["validation_status"] = [s.get("code") for s in store.get("validation_status") or []]
    assertions = manifest.get("assertions") or []
    report["assertions"] = [a.get("label") for a in assertions]
    for assertion in assertions:
        name, data = assertion.get("label") or "", assertion.get("data") or {}
        if name == "c2pa.actions" or name.startswith("c2pa.actions.v"):
            for action in data.get("actions") or []:
                report["actions"].append(action.get("action"))
                if report["digital_source_type"] is None and action.get("digitalSourceType"):
                    report["digital_source_type"] = action["digitalSourceType"]
        elif name == PROVENANCE_LABEL:
            report["provenance"] = data
    report["ingredients"] = [i.get("title") for i in manifest.get("ingredients") or []]
    info = manifest.get("signature_info")
    if info:
        report["signature"] = {
            "issuer": info.get("issuer"),
            "common_name": info.get("common_name"),
            "alg": str(info.get("alg") or "").lower() or None,
            "time": info.get("time"),
        }


def _read_store(fh: IO[bytes], context: c2pa.Context, media_type: str | None, report: dict[str, Any]) -> dict[str, Any]:
    try:
        with c2pa.Reader(media_type, fh, None, context) as reader:
            store = json.loads(reader.json())
    except c2pa.C2paError.ManifestNotFound:
        return report
    except c2pa.C2paError as e:
        report["present"] = _has_c2pa_box(fh)
        report["error"] = _one_line(e)
        return report
    report["present"] = True
    _fill(report, store)
    return report


def read_manifest(path: Path, *, trust_anchors: Path | None = None) -> dict[str, Any]:
    """What a C2PA reader sees in `path`: presence, assertions, ingredients and validation.

    `validation_state` is the library's word ("Invalid", "Valid", or "Trusted" when the signer
    chains to `trust_anchors`, a PEM file of CA certificates); `validation_status` lists its
    failure codes (e.g. `signingCredential.untrusted`, `assertion.bmffHash.mismatch`). An
    unsigned file is `present: False` with no error; a manifest the library cannot parse is
    `present: True` with the library's message in `error`; an unreadable file is `present:
    False` with `error` set.
    """
    report = _empty_report()
    path = Path(path)
    try:
        with open(path, "rb") as fh, _read_context(trust_anchors) as context:
            return _read_store(fh, context, mimetypes.guess_type(path.name)[0], report)
    except OSError as e:
        report["error"] = f"cannot read {path}: {e.strerror or _one_line(e)}"
        return report
