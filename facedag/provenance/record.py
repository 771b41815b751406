"""The provenance record of a rendered video (`data/render/output.json`).

A swapped video must say what it is and where it came from, in a form a person and a script
can check: every input is named by its sha256, so "was this made from that clip?" is a hash
comparison, not a matter of trust. The record holds:

- `synthetic`: true, and a one-line `description`;
- `output`: the video's path and sha256;
- `target`: the target's uri, sha256, licence and consent record;
- `sources`: per identity, every clip the model was trained from (data/download/<ID>/
  manifest.parquet: uri, clip sha256, licence, cut), checked against the clip files where
  they are present;
- `consent`: the consent record of every identity (and the target), as in params.yaml, with
  the evidence's sha256 and whether the file still matches it (`evidence_check`);
- `swap`: which identity's face was put in (`convert.swap_to`) in place of which (`convert.replace`);
- `model`: sha256 of model.safetensors and the model's config (models/model.json);
- `params_sha256`: sha256 of the validated params (canonical JSON), and the params themselves;
- `code`: facedag's version and the git commit (with `dirty` when the tree has changes);
- `created`: UTC time, ISO 8601;
- `label`: whether the visible label is on, its text, and, when off, who turned it off
  (`render.label: false` in params.yaml);
- `watermark`: the mark id carried invisibly by every frame (facedag.provenance.watermark) and the method;
- `c2pa`: whether output.mp4 is signed with a C2PA manifest, and by which certificate.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

import facedag
from facedag.params import Consent, Params
from facedag.provenance.consent import check_evidence
from facedag.records import sha256_file


def params_sha256(params: Params) -> str:
    """sha256 of the params as canonical JSON (sorted keys): equal params, equal hash."""
    text = json.dumps(params.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def code_version(root: str | os.PathLike[str] = ".") -> dict[str, Any]:
    """facedag's version, and the git commit of `root` when it is a git checkout."""
    out: dict[str, Any] = {"facedag": facedag.__version__, "git_commit": None, "dirty": None}
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10,
                              check=False, stdin=subprocess.DEVNULL)  # fmt: skip
        if head.returncode == 0:
            out["git_commit"] = head.stdout.strip()
            status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=30, check=False,
                                    stdin=subprocess.DEVNULL)  # fmt: skip
            out["dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        pass
    return out


def source_clips(
    params: Params, download_dir: str | os.PathLike[str], root: str | os.PathLike[str] = "."
) -> dict[str, list[dict[str, Any]]]:
    """Per identity, the sources download used (from its manifest.parquet): the sha256 of each
    source as fetched (`source_sha256`) and of the clip stored from it (`sha256`).

    Raises ValueError when a clip file present on disk does not match its manifest's sha256
    (the record must not vouch for a file that changed).
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for ident in params.identities:
        manifest = Path(download_dir) / ident / "manifest.parquet"
        rows: list[dict[str, Any]] = []
        if manifest.exists():
            table = pd.read_parquet(manifest)
            for rec in table.to_dict("records"):
                path = Path(root) / str(rec.get("path") or "")
                if rec.get("path") and path.is_file():
                    actual = sha256_file(path)
                    if actual != rec["sha256"]:
                        raise ValueError(f"clip {rec['path']} does not match its manifest's sha256")
                rows.append({
                    "uri": rec.get("uri"), "source_sha256": rec.get("source_sha256"),
                    "sha256": rec.get("sha256"), "path": rec.get("path"),
                    "licence": rec.get("licence"), "start": _num(rec.get("start")), "end": _num(rec.get("end")),
                })  # fmt: skip
        out[ident] = rows
    return out


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if f != f else f  # NaN -> None


def consent_entry(record: Consent | None, root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A consent record as in params.yaml, plus `evidence_check`: `verified` (the file matches its
    sha256 now), `url` (not fetched), or the problem found."""
    if record is None:
        return None
    try:
        check = check_evidence(record, root)
    except ValueError as exc:
        check = f"failed: {exc}"
    return {**record.model_dump(mode="json"), "evidence_check": check}


def build_record(
    params: Params,
    *,
    output: str | os.PathLike[str],
    target: str | os.PathLike[str],
    model: str | os.PathLike[str] | None,
    download_dir: str | os.PathLike[str] = "data/download",
    root: str | os.PathLike[str] = ".",
    render_info: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The provenance record (see the module docstring) of the rendered video `output`."""
    model_path = Path(model) if model is not None else None
    model_json = model_path.with_suffix(".json") if model_path is not None else None
    model_info: dict[str, Any] = {"path": os.fspath(model_path) if model_path else None, "sha256": None}
    if model_path is not None and model_path.is_file():
        model_info["sha256"] = sha256_file(model_path)
    if model_json is not None and model_json.is_file():
        try:
            meta = json.loads(model_json.read_text())
            model_info["config"] = meta.get("config")
            model_info["step"] = meta.get("step")
        except (OSError, ValueError):
            pass
    rcfg = params.render
    label: dict[str, Any] = {"visible": rcfg.label, "text": rcfg.label_text if rcfg.label else None}
    if rcfg.label:
        label.update(position=rcfg.label_position, size=rcfg.label_size)
    else:
        label["turned_off_by"] = "render.label: false in params.yaml"
    consent: dict[str, Any] = {ident: consent_entry(spec.consent, root) for ident, spec in params.identities.items()}
    consent["target"] = consent_entry(params.target.consent, root)
    return {
        "synthetic": True,
        "description": "AI-generated face swap (facedag): the face of "
        f"{params.convert.replace!r} in the target is replaced by {params.convert.swap_to!r}",
        "output": {"path": os.fspath(output), "sha256": sha256_file(output)},
        "target": {"uri": params.target.uri, "sha256": sha256_file(target), "licence": params.target.licence},
        "sources": source_clips(params, download_dir, root),
        "consent": consent,
        "swap": {"swap_to": params.convert.swap_to, "replace": params.convert.replace},
        "model": model_info,
        "params_sha256": params_sha256(params),
        "params": params.model_dump(mode="json"),
        "code": code_version(root),
        "created": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
        "label": label,
        "watermark": (render_info or {}).get("watermark"),
        "c2pa": (render_info or {}).get("c2pa", {"signed": False}),
        "render": {k: v for k, v in (render_info or {}).items() if k not in ("watermark", "c2pa")},
    }
