"""Consent gates: no training on, and no conversion into, a face without a consent or licence record.

The data stages run without one (gathering footage comes first); train and convert call
`require_consent` before any work, so a missing or expired record stops them with one line
that names the identity or the target.
"""

from __future__ import annotations

from datetime import UTC, datetime

from facedag.params import Consent, Params
from facedag.records import StageFailed


def _check(record: Consent | None, who: str) -> None:
    if record is None:
        raise StageFailed(f"no consent record for {who}: add {who}.consent (subject, basis, evidence, scope) "
                          f"to params.yaml")
    if record.expires is not None and record.expires < datetime.now(UTC).date():
        raise StageFailed(f"the consent record for {who} expired on {record.expires.isoformat()}")


def require_consent(params: Params, identities: list[str], target: bool) -> None:
    """Raise StageFailed unless each named identity (and the target, when asked) has a valid record."""
    for name in identities:
        if name not in params.identities:
            raise StageFailed(f"identity {name!r} is not in params.yaml (have: {', '.join(params.identities)})")
        _check(params.identities[name].consent, f"identities.{name}")
    if target:
        _check(params.target.consent, "target")
