"""Consent gates: no training on, and no conversion into, a face without a consent or licence record.

A record (facedag.params.Consent) names the subject, the basis, the evidence (a file in the
project, or a URL) with its sha256, the scope and an optional expiry. The schema catches a
malformed record when params.yaml is read. The data stages run without one (gathering
footage comes first). Train and convert call `require_consent` before any work. It stops
with one line naming the identity or the target when the record is missing or expired, or
when its evidence file is missing or no longer matches its sha256: a record must not vouch
for a form that has changed since it was signed.

The records, their hashes included, are params of train and convert in dvc.yaml (the
`identities` and `target` sections), so a changed record reruns them, and render copies
them into the provenance record with the result of the evidence check (`check_evidence`).
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

from facedag.params import Consent, Params
from facedag.records import StageFailed, sha256_file

_URL = re.compile(r"^https?://", re.IGNORECASE)


def check_evidence(record: Consent, root: str | os.PathLike[str] = ".") -> str:
    """`verified` when the evidence file's sha256 matches the record, `url` for evidence at a URL
    (not fetched: runs are offline; its sha256 is carried as given). Raises ValueError naming
    the problem when the file is missing or differs."""
    if _URL.match(record.evidence):
        return "url"
    path = Path(root) / record.evidence
    if not path.is_file():
        raise ValueError(f"evidence file not found: {record.evidence}")
    actual = sha256_file(path)
    if actual != record.evidence_sha256:
        raise ValueError(f"evidence {record.evidence} has sha256 {actual[:12]}..., not the recorded "
                         f"{record.evidence_sha256[:12]}...: it changed since the record was made")  # fmt: skip
    return "verified"


def _check(record: Consent | None, who: str, root: str | os.PathLike[str]) -> None:
    if record is None:
        raise StageFailed(f"no consent record for {who}: add {who}.consent (subject, basis, evidence, "
                          f"evidence_sha256, scope) to params.yaml")  # fmt: skip
    if record.expires is not None and record.expires < datetime.now(UTC).date():
        raise StageFailed(f"the consent record for {who} expired on {record.expires.isoformat()}")
    try:
        check_evidence(record, root)
    except ValueError as exc:
        raise StageFailed(f"{who}.consent: {exc}") from None


def require_consent(
    params: Params, identities: list[str], target: bool, root: str | os.PathLike[str] = "."
) -> None:
    """Raise StageFailed unless each named identity (and the target, when asked) has a valid record."""
    for name in identities:
        if name not in params.identities:
            raise StageFailed(f"identity {name!r} is not in params.yaml (have: {', '.join(params.identities)})")
        _check(params.identities[name].consent, f"identities.{name}", root)
    if target:
        _check(params.target.consent, "target", root)
